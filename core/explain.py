"""Why an action rebuilt, or would: the difference between two key manifests.

The last build's key manifests are kept in ``forge-out/.forge/keys.json`` (with the one
before when the key changed), so ``forge explain`` can name the input, parameter,
platform or dependency that changed — the question Bazel users answer by diffing
execution logs by hand.
"""

from __future__ import annotations

from typing import Any


def diff_manifests(old: dict[str, Any] | None, new: dict[str, Any], dep_names: list[str] | None = None) -> list[str]:
    """Human-readable reasons, one per changed field; empty when nothing changed."""
    if old is None:
        return ["never built before in this workspace"]
    reasons: list[str] = []
    for field in ("format", "mnemonic", "version", "platform", "epoch", "hermetic"):
        if old.get(field) != new.get(field):
            reasons.append(f"{field} changed: {old.get(field)!r} -> {new.get(field)!r}")
    old_params, new_params = old.get("params", {}), new.get("params", {})
    for key in sorted(set(old_params) | set(new_params)):
        if old_params.get(key) != new_params.get(key):
            reasons.append(f"parameter '{key}' changed: {_short(old_params.get(key))} -> "
                           f"{_short(new_params.get(key))}")
    old_in = {i[0]: i for i in old.get("inputs", [])}
    new_in = {i[0]: i for i in new.get("inputs", [])}
    for path in sorted(set(old_in) | set(new_in)):
        a, b = old_in.get(path), new_in.get(path)
        if a == b:
            continue
        if a is None:
            reasons.append(f"input {path} added")
        elif b is None:
            reasons.append(f"input {path} removed")
        elif a[1] != b[1]:
            reasons.append(f"input {path} executable bit changed: {a[1]} -> {b[1]}")
        elif a[3:] != b[3:]:
            reasons.append(f"input {path} symlink target changed: {a[3:]} -> {b[3:]}")
        else:
            reasons.append(f"input {path} content changed ({a[2][:12]} -> {b[2][:12]})")
    old_deps, new_deps = old.get("deps", []), new.get("deps", [])
    for i in range(max(len(old_deps), len(new_deps))):
        a = old_deps[i] if i < len(old_deps) else None
        b = new_deps[i] if i < len(new_deps) else None
        if a != b:
            name = dep_names[i] if dep_names and i < len(dep_names) else f"dependency #{i}"
            reasons.append(f"output of {name} changed")
    return reasons


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
