"""Read-only views for people: ``forge rules`` and ``forge explain``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from forge.core.actions import Action
from forge.core.errors import ForgeError, did_you_mean
from forge.core.explain import diff_manifests
from forge.core.registry import RuleRegistry

if TYPE_CHECKING:
    from forge.core.session import Session


def describe_rules(registry: RuleRegistry, names: list[str]) -> str:
    wanted = names or registry.names()
    out: list[str] = []
    for name in wanted:
        if name not in registry.names():
            raise ForgeError(f"unknown rule '{name}'{did_you_mean(name, registry.names())}")
        rule = registry.get(name)
        out.append(f"{name}(name, {', '.join(rule.attrs)})")
        doc = (rule.doc or rule.__doc__ or "").strip()
        if doc:
            out.extend(f"    {line}" for line in doc.splitlines())
        for attr_name, attr in rule.attrs.items():
            out.append(f"  {attr_name:22} {attr.kind:12} {attr.describe_default()}")
            if attr.doc:
                out.append(f"      {attr.doc}")
            if attr.example:
                out.append(f"      e.g. {attr.example}")
        out.append("")
    return "\n".join(out)


def rules_markdown(registry: RuleRegistry) -> str:
    """The README's rule reference, generated from the schemas (a test keeps them equal)."""
    out: list[str] = []
    for name, rule in registry.items():
        doc = (rule.doc or rule.__doc__ or "").strip().split("\n\n")[0]
        out.append(f"### `{name}`\n")
        if doc:
            out.append(" ".join(doc.split()) + "\n")
        out.append("| attribute | type | default | doc | example |")
        out.append("| --- | --- | --- | --- | --- |")
        for attr_name, attr in rule.attrs.items():
            example = f"`{attr.example}`" if attr.example else ""
            doc_text = attr.doc.replace("|", "\\|")
            out.append(f"| `{attr_name}` | {attr.kind} | `{attr.describe_default()}` | {doc_text} | "
                       f"{example.replace('|', chr(92) + '|')} |")
        out.append("")
    return "\n".join(out)


def action_name(action: Action) -> str:
    """How explain names an action: its id, and what it is when the rule says (the
    Dockerfile of a chain step), since an index alone (DockerBuild.2) names no file."""
    return f"{action.id} ({action.description})" if action.description else action.id


def explain_target(session: Session, text: str) -> Iterator[str]:
    """For each action of the target and its dependencies: up to date, or what changed.

    Nothing runs: a walk in topological order keys each action with the scheduler's own
    ``compute_key``, its dependencies' results read from the action cache by their keys.
    An action whose dependency is not cached would rebuild, and so is not keyed. The
    status of each action's last build (keys.json) tells a failed run from a lost result."""
    from forge.core.dryrun import plan

    previous = session.previous_keys()
    # the walk of `forge aquery`, local cache only: one keyed walk for both views
    for item in plan(session, [text], remote=False):
        yield from _explain_one(session, previous, item)
        # an action's own word on why its key is wider than it might be (params
        # "key_notes": a Dockerfile COPY whose source is not known before the build)
        for note in item.action.params.get("key_notes", []):
            yield f"    note: {note}"


def _explain_one(session: Session, previous: dict[str, Any], item: Any) -> Iterator[str]:
    """One action of the plan: up to date, or what changed."""
    from forge.core.dryrun import WAITS, WOULD_RUN

    action, key, manifest = item.action, item.key, item.manifest
    flag = "" if action.hermetic else "  [non-hermetic: uses the network]"
    head = f"{action_name(action)}{flag}"
    if item.would == WAITS:
        yield f"{head}: would rebuild (a dependency would rebuild)"
        return
    old = previous.get(action.id)
    dep_names = [action_name(d) for d in action.deps]
    if item.would != WOULD_RUN:
        if old and old.get("key") == key and old.get("status") == "built" and old.get("previous"):
            reasons = diff_manifests(old["previous"]["manifest"], manifest, dep_names)
            yield f"{head}: up to date; it rebuilt last time because:"
            yield from (f"    - {r}" for r in reasons)
        else:
            yield f"{head}: up to date (cached, key {key[:12]})"
        return
    reasons = diff_manifests(old["manifest"] if old else None, manifest, dep_names)
    if old and old.get("status") == "failed":  # it ran and failed: nothing was recorded
        log = session.log_path(action)
        where = f" (log: {log})" if log.exists() else ""
        if old.get("key") == key:
            reasons = [f"the last build of it failed{where}; nothing was recorded"]
        else:
            reasons = [*reasons, f"its last build, before these changes, failed{where}"]
    elif old and old.get("key") == key:
        reasons = ["its result is no longer in the cache (gc, clean or a corrupt blob)"]
    yield f"{head}: would rebuild because:"
    yield from (f"    - {r}" for r in reasons or ["no previous record to compare"])
