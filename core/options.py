"""The command line's choices for one build, frozen: ``BuildOptions``.

A read-only mapping (so ``options.get("jobs")`` and ``{**options}`` work for plugins)
with typed properties for the keys forge itself reads. Nobody can write into it: a hook
or command that wants other options makes new ones (``options.replace(jobs=1)``), so what
one plugin sees cannot change under another. Values are frozen too (lists become tuples);
None means "not given" and is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

# What forge's own CLI sets, for the record (plugins may add keys of their own):
KNOWN = {
    "jobs": "-j: actions at once",
    "keep_going": "-k: go on after a failure",
    "platform": "--platform: the default platform",
    "overrides": "--set / --build-arg, parsed (core/overrides.py)",
    "secrets": "--secret id=ID,src=PATH|env=NAME: (id, source) pairs for every Dockerfile step",
    "ssh": "--ssh ID[=SOCKET]: SSH agents forwarded to every Dockerfile step",
    "remote_cache_url": "--remote-cache",
    "remote_cache_write": "--remote-cache-write",
    "no_remote_cache": "--no-remote-cache",
    "remote_cache_required": "--remote-cache-required",
}


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


class BuildOptions(Mapping[str, Any]):
    """Frozen build options: a read-only mapping with typed views of forge's own keys."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None, **more: Any):
        merged = {**(values or {}), **more}
        self._values = MappingProxyType({k: _freeze(v) for k, v in merged.items() if v is not None})

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "_values" or hasattr(self, "_values"):
            raise AttributeError("BuildOptions are frozen; make new ones with .replace(...)")
        object.__setattr__(self, name, value)

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

    def __repr__(self) -> str:
        return f"BuildOptions({dict(self._values)!r})"

    def replace(self, **changes: Any) -> BuildOptions:
        """New options with ``changes`` (a None value removes the key)."""
        merged = {**self._values, **changes}
        return BuildOptions({k: v for k, v in merged.items() if v is not None})

    @property
    def jobs(self) -> int | None:
        return self.get("jobs")

    @property
    def keep_going(self) -> bool:
        return bool(self.get("keep_going"))

    @property
    def platform(self) -> str | None:
        return self.get("platform")

    @property
    def overrides(self) -> tuple[Any, ...]:
        return tuple(self.get("overrides") or ())

    @property
    def secrets(self) -> tuple[tuple[str, str], ...]:
        return tuple(self.get("secrets") or ())

    @property
    def ssh(self) -> tuple[str, ...]:
        return tuple(self.get("ssh") or ())

    @property
    def remote_cache_required(self) -> bool:
        return bool(self.get("remote_cache_required"))
