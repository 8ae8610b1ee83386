"""Actions, their results, and the one place that turns an action into a cache key.

An ``Action`` is a frozen description of one unit of work. Its key is blake3 over a
canonical JSON encoding built in ``key_manifest`` — read that function before changing
anything that enters a key: every field there is a promise that changing it re-runs the
action, and every field left out is a promise that it does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import blake3

from forge.core.labels import Label
from forge.core.platforms import Platform

if TYPE_CHECKING:
    from forge.core.execution import RunContext


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, no floats: the same value always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _reject_float(text: str) -> Any:
    # Floats have more than one spelling; a key must not depend on repr().
    raise TypeError(f"action parameter {text} is a float; use an int or a string")


def _freeze_params(params: Mapping[str, Any]) -> str:
    text = canonical_json(dict(params)).decode()
    json.loads(text, parse_float=_reject_float)  # C-speed scan: only floats call back
    return text


@dataclass(frozen=True)
class SourceFile:
    """A file an action reads: where it is now, and the name that enters the key."""

    abspath: str  # on this machine: never in a key
    relpath: str  # relative to the package: the key uses this

    def __init__(self, path: str | Path, relpath: str):
        object.__setattr__(self, "abspath", str(path))
        object.__setattr__(self, "relpath", relpath)

    @property
    def path(self) -> Path:
        return Path(self.abspath)

    def __str__(self) -> str:
        return self.relpath


@dataclass(frozen=True, eq=False)
class Action:
    """One unit of work. Identity-hashed: two declarations are two graph nodes."""

    label: Label  # the target that declared it; not in the key
    mnemonic: str  # in the key
    run: Callable[[RunContext], ActionResult] = field(repr=False)
    version: int = 1  # in the key: bump when the implementation's output changes
    params_json: str = "{}"  # in the key
    inputs: tuple[SourceFile, ...] = ()  # in the key: relpath, exec bit, content
    deps: tuple[Action, ...] = ()  # in the key: their result digests, in order
    platform: Platform | None = None  # in the key when set
    executor: str | None = None  # not in the key: where it runs does not change what it makes
    hermetic: bool = True  # in the key: a non-hermetic result is never shared as hermetic
    index: int = 0  # position among its target's actions; names it in explain
    description: str = ""
    materialize: Callable[..., None] | None = field(default=None, repr=False)

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    @cached_property
    def id(self) -> str:
        """A stable name for this action across builds (target label + mnemonic + index)."""
        return f"{self.label}#{self.mnemonic}.{self.index}"

    def __str__(self) -> str:
        return f"{self.mnemonic} {self.label}" + (f" ({self.description})" if self.description else "")


def make_action(**kwargs: Any) -> Action:
    params = kwargs.pop("params", None) or {}
    kwargs["params_json"] = _freeze_params(params)
    kwargs["inputs"] = tuple(kwargs.get("inputs", ()))
    kwargs["deps"] = tuple(kwargs.get("deps", ()))
    return Action(**kwargs)


@dataclass(frozen=True)
class ActionResult:
    """What an action made: named output blobs in the CAS plus every blob they need.

    ``outputs`` names the blobs that are the action's product (an image's manifest, a
    layer, a report); ``blobs`` lists every blob that must be present for the result to
    be usable (an image's config and layers too), so a cache hit can check them all.
    ``metadata`` holds small deterministic facts for providers and the summary.
    """

    outputs: dict[str, str]
    blobs: tuple[str, ...] = ()
    sizes: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    log: str | None = None

    @property
    def digest(self) -> str:
        """What downstream keys see: the product's identity, so equal products cut rebuilds off.

        The identity is ``metadata["identity"]`` when the rule gives one, else the outputs.
        Image rules give the *uncompressed* identity (a layer's diff_id, an image's config
        digest): gzip output can differ between compressor builds and CPUs, and a key
        must not, or two CI machines would never share a downstream cache entry.
        """
        identity = self.metadata.get("identity")
        return blake3.blake3(canonical_json(self.outputs if identity is None else identity)).hexdigest()

    def all_blobs(self) -> list[str]:
        return sorted(set(self.outputs.values()) | set(self.blobs))

    def to_json(self) -> dict[str, Any]:
        return {
            "outputs": self.outputs,
            "blobs": list(self.blobs),
            "sizes": self.sizes,
            "metadata": self.metadata,
            "log": self.log,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ActionResult:
        return cls(
            outputs=dict(data["outputs"]),
            blobs=tuple(data.get("blobs", ())),
            sizes=dict(data.get("sizes", {})),
            metadata=dict(data.get("metadata", {})),
            log=data.get("log"),
        )


@dataclass(frozen=True)
class InputDigest:
    """What the key records of one input file."""

    relpath: str
    executable: bool
    digest: str  # blake3 of the content, or of "symlink:" + target for a symlink
    symlink: str | None = None


def key_manifest(
    action: Action, inputs: list[InputDigest], dep_results: list[str]
) -> dict[str, Any]:
    """The canonical description whose hash is the action key.

    Decisions, one per field:
    - mnemonic + version: a new implementation must not reuse old results.
    - params: everything the rule passed that changes the output (rules choose them).
    - platform: only when the action has one; layer writing has none, so an amd64 and an
      arm64 image share their pure data layers.
    - inputs: package-relative path, executable bit only (umask and checkout tools change
      the other mode bits; BuildKit users suffer from keying on them), content digest or
      symlink target. Never the absolute path, mtime, owner or host.
    - deps: the result digests of the actions this one reads, in declaration order:
      if a dependency rebuilds to the same outputs, this action does not re-run.
    - hermetic: a network-using action's result is kept apart from a hermetic one.
    """
    return {
        "mnemonic": action.mnemonic,
        "version": action.version,
        "params": json.loads(action.params_json),
        "platform": action.platform.key if action.platform else None,
        "inputs": [
            [i.relpath, i.executable, i.digest] + ([i.symlink] if i.symlink is not None else [])
            for i in sorted(inputs, key=lambda i: i.relpath)
        ],
        "deps": list(dep_results),
        "hermetic": action.hermetic,
    }


def action_key(manifest: Mapping[str, Any]) -> str:
    return blake3.blake3(canonical_json(dict(manifest))).hexdigest()
