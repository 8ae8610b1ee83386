"""Attribute overrides from the command line: bake's ``--set`` and buildx's ``--build-arg``.

``--set TARGET.ATTR=VALUE`` replaces one attribute of the targets it names, before
analysis, exactly as if the BUILD file said so (so the value is checked by the
attribute's own type and enters keys the usual way):

- TARGET is a label (``//pkg:name``), a target name (``name`` or ``:name``: every target
  of that name) or ``*`` (every target whose rule has ATTR);
- ATTR is an attribute name; for a dict attribute ``ATTR.KEY=VALUE`` sets one entry
  (``*.build_args.VERSION=2``);
- VALUE is the text for string attributes, ``true``/``false`` for booleans, a number for
  integers, comma-separated items (or a JSON list) for lists, a JSON object for a whole
  dict.

``--build-arg K=V`` is ``--set '*.build_args.K=V'``. An override that names a target
whose rule has no such attribute is an error naming the valid ones; one that matches no
target built is an error too: a typo never passes silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from forge.core.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from forge.core.rule import TargetDef

LIST_KINDS = ("string_list", "label_list", "sources")


@dataclass(frozen=True)
class Override:
    target: str  # "*", "name" or "//pkg:name"
    attr: str
    key: str | None  # one entry of a dict attribute
    value: str
    text: str  # as given, for messages

    def matches(self, target: TargetDef) -> bool:
        if self.target == "*":
            return self.attr in target.rule.attrs
        if self.target.startswith("//"):
            return str(target.label) == self.target
        return target.label.name == self.target.lstrip(":")


def parse_set(text: str, flag: str = "--set") -> Override:
    """``TARGET.ATTR[.KEY]=VALUE``; UsageError naming the flag on a malformed one."""
    head, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"{flag} {text!r}: expected TARGET.ATTR=VALUE (e.g. '*.build_args.V=2')")
    # the target may hold dots only inside a label's package path: split after the name
    if head.startswith("//"):
        pkg, colon, rest = head.partition(":")
        if not colon:
            raise UsageError(f"{flag} {text!r}: a label needs :name (//pkg:name.attr=value)")
        name, dot, attr_path = rest.partition(".")
        target = f"{pkg}:{name}"
    else:
        target, dot, attr_path = head.partition(".")
    if not dot or not attr_path or not target:
        raise UsageError(f"{flag} {text!r}: expected TARGET.ATTR=VALUE (e.g. '*.build_args.V=2')")
    attr, _, key = attr_path.partition(".")
    return Override(target, attr, key or None, value, f"{flag} {text}")


def parse_build_arg(text: str) -> Override:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise UsageError(f"--build-arg {text!r}: expected KEY=VALUE")
    return Override("*", "build_args", name, value, f"--build-arg {text}")


def secret_source(value: str, where: str, base: str | None = None) -> str:
    """A secret's source as forge keeps it: ``env:NAME`` or an absolute path (``~``
    expanded; a relative path is taken from ``base``, else the current directory).
    Only where the secret is, never its value."""
    import os

    if value.startswith("env:"):
        name = value[4:]
        if not name or not name.replace("_", "a").isalnum():
            raise UsageError(f"{where}: env:{name} is not an environment variable name")
        return value
    if not value:
        raise UsageError(f"{where}: a secret needs a source (a file path or env:NAME)")
    path = os.path.expanduser(value)
    return os.path.abspath(os.path.join(base or os.getcwd(), path))


def parse_secret(text: str) -> tuple[str, str]:
    """``--secret id=ID,src=PATH`` | ``id=ID,env=NAME`` (buildx's spelling; ``source=``
    and ``type=file|env`` accepted) -> (id, source)."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"--secret {text!r}: expected id=ID,src=PATH or id=ID,env=NAME")
        fields[key.strip().lower()] = value.strip()
    unknown = sorted(set(fields) - {"id", "src", "source", "env", "type"})
    if unknown:
        raise UsageError(f"--secret: unknown field '{unknown[0]}'"
                         f"{did_you_mean(unknown[0], ['id', 'src', 'env', 'type'])}")
    ident = fields.get("id", "")
    if not ident:
        raise UsageError(f"--secret {text!r}: id= is missing")
    src = fields.get("src") or fields.get("source")
    if fields.get("type") == "env" or "env" in fields:
        return ident, secret_source(f"env:{fields.get('env') or src or ident}", "--secret")
    return ident, secret_source(src or "", f"--secret id={ident}")


def apply(target: TargetDef, overrides: list[Override]) -> TargetDef:
    """``target`` with the overrides that name it applied (checked by each attribute)."""
    mine = [o for o in overrides if o.matches(target)]
    if not mine:
        return target
    attrs = dict(target.attrs)
    for o in mine:
        spec = target.rule.attrs.get(o.attr)
        if spec is None:
            raise UsageError(f"{o.text}: {target.label} ({target.rule.name}) has no attribute "
                             f"'{o.attr}'{did_you_mean(o.attr, target.rule.attrs)}; "
                             f"its attributes: {', '.join(target.rule.attrs)}")
        where = f"{o.text} ({target.label})"
        if o.key is not None:
            if spec.kind != "string_dict":
                raise UsageError(f"{where}: '{o.attr}' is a {spec.kind}, not a dict; "
                                 f"write {o.target}.{o.attr}=VALUE")
            raw: Any = {**(attrs.get(o.attr) or {}), o.key: o.value}
        else:
            raw = _parse_value(spec.kind, o.value, where)
        attrs[o.attr] = spec.coerce(raw, target.label.package, where)
    return replace(target, attrs=attrs)


def check_used(overrides: list[Override], seen: list[TargetDef]) -> None:
    """Every override matched a target of the build (a typo never passes silently)."""
    for o in overrides:
        if not any(o.matches(t) for t in seen):
            what = f"no target has attribute '{o.attr}'" if o.target == "*" else f"no target {o.target}"
            raise UsageError(f"{o.text}: {what} in this build")


def _parse_value(kind: str, value: str, where: str) -> Any:
    if kind == "bool":
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise UsageError(f"{where}: expected true or false, got {value!r}")
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"{where}: expected an integer, got {value!r}") from None
    if kind in LIST_KINDS:
        if value.startswith("["):
            return _json(value, where)
        return [item.strip() for item in value.split(",") if item.strip()]
    if kind == "string_dict":
        return _json(value, where)
    return value


def _json(value: str, where: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as e:
        raise UsageError(f"{where}: not JSON: {e}") from None
