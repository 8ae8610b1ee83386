"""Actions, their results, and the one place that turns an action into a cache key.

An ``Action`` is a frozen description of one unit of work. Its key is blake3 over a
canonical JSON encoding built in ``key_manifest`` — read that function before changing
anything that enters a key: every field there is a promise that changing it re-runs the
action, and every field left out is a promise that it does not.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import blake3

from forge.core.canonical import canonical_json
from forge.core.cas import Descriptor
from forge.core.errors import CacheError
from forge.core.labels import Label
from forge.core.platforms import Platform

# The forge-wide output format: bump it whenever anything shared by many rules changes
# the bytes they write (the layer writer, the image/config writer, the layout of a
# result record). It enters every key, so two forge versions that would write different
# bytes never share a cache entry, locally or in a remote cache.
# 3: one canonical JSON (core/canonical.py) with ensure_ascii=False, so non-ASCII params,
#    inputs and result metadata hash as UTF-8 rather than \u escapes.
OUTPUT_FORMAT = 3

if TYPE_CHECKING:
    from forge.core.execution import RunContext


class InputDigester(Protocol):
    """What ``compute_key`` needs to read a source file: ``core.digests.FileDigests``."""

    def digest(self, src: SourceFile) -> InputDigest: ...


def _reject_float(text: str) -> Any:
    # Floats have more than one spelling; a key must not depend on repr().
    raise TypeError(f"action parameter {text} is a float; use an int or a string")


def _freeze_params(params: Mapping[str, Any]) -> str:
    try:
        text = canonical_json(dict(params)).decode()
    except ValueError as exc:  # NaN / infinity: allow_nan=False refuses them first
        raise TypeError(f"action parameter is a non-finite float ({exc}); use an int or a string") from None
    json.loads(text, parse_float=_reject_float)  # C-speed scan: only floats call back
    return text


@dataclass(frozen=True)
class SourceFile:
    """A file an action reads: where it is now, and the name that enters the key."""

    abspath: str  # on this machine: never in a key
    relpath: str  # relative to the package: the key uses this
    follow: bool = False  # a symlink is read through (content keyed), not kept as a link

    def __init__(self, path: str | Path, relpath: str, follow: bool = False):
        object.__setattr__(self, "abspath", str(path))
        object.__setattr__(self, "relpath", relpath)
        object.__setattr__(self, "follow", follow)

    @property
    def path(self) -> Path:
        return Path(self.abspath)

    def __str__(self) -> str:
        return self.relpath


def check_pure(fn: Callable[..., Any], what: str) -> None:
    """Refuse a function that carries values outside the key (STYLE 17).

    An action's run function may receive only its declared params, inputs and dependency
    results (through ``RunContext``). A ``functools.partial``, a closure, a bound method or
    a lambda can smuggle in a value the key never saw — the class of bug that gives false
    cache hits — so only plain module-level functions are accepted.
    """
    name = getattr(fn, "__qualname__", repr(fn))
    if isinstance(fn, functools.partial):
        raise TypeError(f"{what} is functools.partial({fn.func.__qualname__}, ...): bound "
                        "values are outside the action key; pass them as params")
    if not inspect.isfunction(fn):
        raise TypeError(f"{what} {name!r} must be a plain module-level function "
                        f"(got {type(fn).__name__}): bound state is outside the action key")
    if fn.__closure__ or "<locals>" in fn.__qualname__ or fn.__name__ == "<lambda>":
        raise TypeError(f"{what} {fn.__module__}.{name} is a closure or lambda: values it "
                        "captures are outside the action key; use a module-level function "
                        "and pass them as params")


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
    epoch: int | None = None  # in the key when set: the SOURCE_DATE_EPOCH the action writes
    executor: str | None = None  # not in the key: where it runs does not change what it makes
    hermetic: bool = True  # in the key: a non-hermetic result is never shared as hermetic
    # not in the key (BuildKit's rule: a secret or an SSH agent is a credential, not an
    # input; a build that bakes one into its output is wrong): (id, source) pairs, a
    # source being a path or env:NAME, and the SSH agent ids to forward. Never logged.
    secrets: tuple[tuple[str, str], ...] = ()
    ssh: tuple[str, ...] = ()
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
    check_pure(kwargs["run"], f"action {kwargs.get('mnemonic')} of {kwargs.get('label')}: run")
    if kwargs.get("materialize") is not None:
        check_pure(kwargs["materialize"], f"action {kwargs.get('mnemonic')}: materialize")
    params = kwargs.pop("params", None) or {}
    kwargs["params_json"] = _freeze_params(params)
    kwargs["inputs"] = tuple(kwargs.get("inputs", ()))
    kwargs["deps"] = tuple(kwargs.get("deps", ()))
    kwargs["secrets"] = tuple(sorted(dict(kwargs.get("secrets", ())).items()))
    kwargs["ssh"] = tuple(kwargs.get("ssh", ()))
    return Action(**kwargs)


RESULT_FORMAT = 2  # the action-cache / remote record layout; older records read as misses


@dataclass(frozen=True)
class ActionResult:
    """What an action made: named output descriptors plus every blob they need.

    ``outputs`` names the blobs that are the action's product (an image's manifest, a
    layer, a report), each an OCI ``Descriptor`` (digest, size, media type; diff_id for
    layers; platform for manifests). ``blobs`` is every blob that must be present for the
    result to be usable (outputs included, an image's config and layers too), so a cache
    hit can check them all and a remote cache can move them with their real media types.
    ``metadata`` holds small deterministic facts for providers and the summary.
    """

    outputs: dict[str, Descriptor]
    blobs: tuple[Descriptor, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    log: str | None = None

    @staticmethod
    def make(outputs: Mapping[str, Descriptor], blobs: Iterable[Descriptor] = (),
             metadata: Mapping[str, Any] | None = None, log: str | None = None) -> ActionResult:
        """Normalize: blobs unique, sorted by digest, outputs included."""
        by_digest: dict[str, Descriptor] = {}
        for d in (*blobs, *outputs.values()):
            seen = by_digest.get(d.digest)
            if seen is not None and seen.size != d.size:
                raise CacheError(f"blob {d.digest} listed with sizes {seen.size} and {d.size}")
            if seen is None or seen.media_type == "application/octet-stream":
                by_digest[d.digest] = d
        return ActionResult(dict(outputs), tuple(by_digest[k] for k in sorted(by_digest)),
                            dict(metadata or {}), log)

    @property
    def identity(self) -> dict[str, Any]:
        """Everything a consumer can read from this result: every output descriptor (so a
        media type or compression change re-keys dependents) and the metadata. Not the
        log, and not where the bytes are."""
        return {"outputs": {k: d.to_json() for k, d in self.outputs.items()},
                "metadata": self.metadata}

    @property
    def digest(self) -> str:
        """What downstream keys see: the hash of ``identity``, so equal products cut
        rebuilds off and any difference a consumer could observe re-keys it."""
        return blake3.blake3(canonical_json(self.identity)).hexdigest()

    @property
    def sizes(self) -> dict[str, int]:
        return {d.digest: d.size for d in self.blobs}

    def all_blobs(self) -> list[str]:
        return [d.digest for d in self.blobs]

    def with_log(self, log: str | None) -> ActionResult:
        return ActionResult(self.outputs, self.blobs, self.metadata, log)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "outputs": {k: d.to_json() for k, d in self.outputs.items()},
            "blobs": [d.to_json() for d in self.blobs],
            "metadata": self.metadata,
            "log": self.log,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ActionResult:
        """Parse a record; anything malformed or of another format raises CacheError."""
        try:
            if data.get("format") != RESULT_FORMAT:
                raise CacheError(f"result record format {data.get('format')!r} is not {RESULT_FORMAT}")
            outputs = {str(k): Descriptor.from_json(v) for k, v in data["outputs"].items()}
            blobs = [Descriptor.from_json(v) for v in data["blobs"]]
            metadata = data.get("metadata", {})
            log = data.get("log")
            if not isinstance(metadata, dict) or not (log is None or isinstance(log, str)):
                raise CacheError("result record metadata/log malformed")
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise CacheError(f"malformed result record: {exc!r}") from None
        result = cls.make(outputs, blobs, metadata, log)
        if set(result.all_blobs()) != {d.digest for d in blobs}:
            raise CacheError("result record's blobs do not include its outputs")
        return result


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
    - epoch: the SOURCE_DATE_EPOCH an action writes into mtimes and `created`, only for
      actions that write timestamps (declared with ``timestamps=True``): changing the epoch
      re-runs exactly those, and a pulled base or an index does not re-run.
    - format: forge's OUTPUT_FORMAT, so a forge whose shared writers changed never reuses
      another version's results.
    """
    return {
        "format": OUTPUT_FORMAT,
        "epoch": action.epoch,
        "mnemonic": action.mnemonic,
        "version": action.version,
        "params": json.loads(action.params_json),
        "platform": action.platform.key if action.platform else None,
        "inputs": [
            [i.relpath, i.executable, i.digest] + ([i.symlink] if i.symlink is not None else [])
            for i in sorted(inputs, key=lambda i: (i.relpath, i.executable, i.digest, i.symlink or ""))
        ],
        "deps": list(dep_results),
        "hermetic": action.hermetic,
    }


def action_key(manifest: Mapping[str, Any]) -> str:
    return blake3.blake3(canonical_json(dict(manifest))).hexdigest()


@dataclass(frozen=True)
class ActionKey:
    """An action's key and what it was computed from (for keys.json, explain, and the
    scheduler's after-the-run check that the inputs did not change)."""

    key: str
    manifest: dict[str, Any]  # what was hashed; ``key == action_key(manifest)``
    inputs: tuple[InputDigest, ...]  # in ``action.inputs`` order


def compute_key(action: Action, digests: InputDigester,
                dep_results: Mapping[Action, ActionResult]) -> ActionKey:
    """The key of ``action``: its inputs' digests and its dependencies' result digests,
    through ``key_manifest``. Shared by the scheduler and ``forge explain``.

    Pure apart from reading the inputs through ``digests`` (stat-memoized): no session,
    no cache, no bookkeeping. ``dep_results`` must hold a result for every one of
    ``action.deps`` (the caller walks the graph in topological order); a missing one is
    a KeyError. A missing or unreadable input raises BuildFileError.
    """
    inputs = tuple(digests.digest(src) for src in action.inputs)
    manifest = key_manifest(action, list(inputs), [dep_results[d].digest for d in action.deps])
    return ActionKey(action_key(manifest), manifest, inputs)
