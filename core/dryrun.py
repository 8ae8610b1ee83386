"""``forge aquery`` / ``forge build --dry-run``: every action of a build, keyed, run never.

The walk is the scheduler's: topological order, each action keyed with the pure
``compute_key`` from its inputs' digests and its dependencies' results. A dependency's
result comes from the local action cache, else from a remote cache's record (its blobs
are not fetched); an action below one that would run cannot be keyed before it runs
(its key hashes that result), so it is listed with ``key: null`` and the dependencies it
waits for — forge never guesses a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import networkx as nx

from forge.core.actions import Action, ActionResult, compute_key
from forge.core.analysis import action_graph

if TYPE_CHECKING:
    from forge.core.session import Session

WOULD_HIT_LOCAL, WOULD_HIT_REMOTE, WOULD_RUN, WAITS = "cached-local", "cached-remote", "run", "waits"


@dataclass
class Planned:
    """One action as a dry run sees it."""

    action: Action
    key: str | None
    would: str  # cached-local, cached-remote, run, or waits (for a dependency that runs)
    manifest: dict[str, Any] = field(default_factory=dict)
    waits_for: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        a = self.action
        return {
            "event": "action", "id": a.id, "label": str(a.label), "mnemonic": a.mnemonic,
            "description": a.description, "platform": str(a.platform) if a.platform else None,
            "executor": a.executor, "hermetic": a.hermetic,
            "inputs": [f.relpath for f in a.inputs], "deps": [d.id for d in a.deps],
            "params": self.manifest.get("params", {}),
            "key": self.key, "would": self.would, "waits_for": self.waits_for,
        }


def plan(session: Session, patterns: list[str], *, no_cache: frozenset[Action] = frozenset(),
         remote: bool = True) -> list[Planned]:
    """Every action the build of ``patterns`` would consider, keyed where a key can be
    known without running anything, with what the build would do with it."""
    from forge.core.execution import shown_manifest

    targets, _ = session.analyze(patterns)
    graph = action_graph(targets)
    backends = [b for b in session.remote_caches() if hasattr(b, "lookup_record")] if remote else []
    results: dict[Action, ActionResult] = {}
    blocked: dict[Action, list[str]] = {}
    out = []
    for action in nx.lexicographical_topological_sort(graph, key=lambda a: a.id):
        waits = sorted({w for d in action.deps if d in blocked for w in (blocked[d] or [d.id])})
        if waits:
            blocked[action] = waits
            out.append(Planned(action, None, WAITS, waits_for=waits))
            continue
        keyed = compute_key(action, session.file_digests, results)
        manifest = shown_manifest(keyed.manifest)
        hit = None if action in no_cache else session.action_cache.lookup(keyed.key)
        would = WOULD_HIT_LOCAL
        if hit is None and action not in no_cache:
            hit, would = _remote_record(backends, keyed.key), WOULD_HIT_REMOTE
        if hit is None:
            blocked[action] = []
            out.append(Planned(action, keyed.key, WOULD_RUN, manifest))
            continue
        results[action] = hit
        out.append(Planned(action, keyed.key, would, manifest))
    return out


def _remote_record(backends: list[Any], key: str) -> ActionResult | None:
    for backend in backends:
        try:
            found = backend.lookup_record(key)
        except Exception:  # noqa: BLE001 - a dry run never fails on a remote
            continue
        if found is not None:
            return found
    return None
