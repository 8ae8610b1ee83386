"""Image deltas, the making side: per-layer binary deltas from an old image to a new one,
as OCI artifacts that refer to the new image's manifest (``subject``).

The format is defined once, in ``forge/delta_apply.py`` (the device-side applier, which may
import nothing of forge); this module writes it and reads nothing it does not share with
that file. README "Edge deltas" describes it for other tools.

Making a delta (``make_image_delta``):

1. the target's layers whose diff_id the old image lacks are the layers to send;
2. every layer of both images involved is decompressed once into a scratch directory,
   each checked against its diff_id, and its member paths listed;
3. for each layer to send, the *sources* are the old layers that share a path with it (a
   rebuilt step rewrites the files an older build of that step wrote; a package added to a
   base rewrites the base's dpkg status), in the old image's order, up to
   ``MAX_SOURCE_BYTES`` (the applier holds them in memory); with none, the delta is a plain
   compression of the tar by the codec;
4. the codec writes the delta of the new tar against the concatenated sources; a delta that
   is not smaller than the layer's own blob is dropped (the applier pulls that layer
   plainly, which costs no more);
5. the artifact manifest: an empty config, the target manifest and config as its first two
   layers (a delta in a layout is then self-contained), one layer per delta with the
   diff_id it reconstructs, the target layer it stands for, its sources and the tar size.

Codecs are plugins (``forge_register_delta_codecs``); ``delta_codecs`` collects them for a
workspace. A codec's ``fingerprint`` (library version, level, window) decides its bytes
together with the inputs, so it is what enters the key of a delta action.
"""

from __future__ import annotations

import json
import tarfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from forge import delta_apply as fmt
from forge.core.canonical import canonical_json
from forge.core.cas import CAS, Descriptor, sha256_digest, split_digest
from forge.core.errors import ActionFailed, ConfigError, did_you_mean
from forge.core.oci import compression as comp
from forge.core.oci import media
from forge.core.oci.image import Image, Layer

MAX_SOURCE_BYTES = 1 << 30  # old layer bytes one delta may read (the applier holds them in memory)

ARTIFACT_TYPE = fmt.ARTIFACT_TYPE
DELTA_INDEX_TYPE = media.OCI_INDEX


class DeltaError(ActionFailed):
    """A delta cannot be made (a layer that does not verify, a codec that fails)."""


@runtime_checkable
class DeltaCodec(Protocol):
    """A way to write one layer's delta (a plugin registers it with
    ``forge_register_delta_codecs``). ``name`` is what BUILD files say (``codec = "zstd"``),
    ``media_type`` the delta blob's type (what the applier dispatches on)."""

    name: str
    media_type: str

    def fingerprint(self, level: int | None) -> str:
        """Everything besides the input bytes that decides the delta's bytes (library
        version, level, window): it enters the delta action's key."""
        ...

    def make(self, sources: Sequence[Path], target: Path, out: BinaryIO, level: int | None) -> None:
        """Write to ``out`` the delta that rebuilds the tar ``target`` from the concatenation
        of the tars ``sources`` (possibly none)."""
        ...

    def apply(self, prefix: bytes, delta: Path, out: BinaryIO) -> None:
        """Write to ``out`` the tar rebuilt from ``prefix`` (the source tars, concatenated)
        and the delta file (``forge apply-delta`` uses it for media types the standalone
        applier does not know)."""
        ...


class DeltaCodecRegistry:
    """The codecs plugins registered, by name; a duplicate name is refused."""

    def __init__(self) -> None:
        self._codecs: dict[str, DeltaCodec] = {}

    def add(self, codec: DeltaCodec) -> None:
        if not isinstance(codec, DeltaCodec):
            raise ConfigError(f"{codec!r} is not a delta codec (name, media_type, fingerprint, make, apply)")
        other = self._codecs.get(codec.name)
        if other is not None and other is not codec:
            raise ConfigError(f"delta codec {codec.name!r} registered twice: {other!r} and {codec!r}")
        self._codecs[codec.name] = codec

    def get(self, name: str) -> DeltaCodec:
        try:
            return self._codecs[name]
        except KeyError:
            raise ConfigError(f"unknown delta codec {name!r}{did_you_mean(name, self._codecs)}; "
                              f"codecs: {', '.join(sorted(self._codecs)) or 'none'}") from None

    def names(self) -> list[str]:
        return sorted(self._codecs)

    def by_media_type(self) -> dict[str, DeltaCodec]:
        return {c.media_type: c for c in self._codecs.values()}


_registries: dict[tuple[str, ...], DeltaCodecRegistry] = {}
_registries_lock = threading.Lock()


def delta_codecs(workspace_root: str | Path | None = None) -> DeltaCodecRegistry:
    """The delta codecs of the built-in plugins, entry points and (given a workspace root)
    the workspace's ``[plugins] modules``; collected once per module list."""
    from forge.core.registry import make_plugin_manager
    from forge.core.workspace import load_workspace

    modules = list(load_workspace(Path(workspace_root)).plugin_modules) if workspace_root else []
    key = tuple(modules)
    with _registries_lock:
        registry = _registries.get(key)
        if registry is None:
            registry = DeltaCodecRegistry()
            pm = make_plugin_manager(modules)
            pm.hook.forge_register_delta_codecs.call_historic(kwargs={"registry": registry})
            _registries[key] = registry
        return registry


def delta_codec(name: str, fingerprint: str | None = None, level: int | None = None) -> DeltaCodec:
    """The codec called ``name`` (whose fingerprint at ``level`` is ``fingerprint``, when
    given) among the registries this process collected; the built-in ones otherwise."""
    with _registries_lock:
        known = list(_registries.values())
    for registry in (*reversed(known), delta_codecs()):
        codec = registry._codecs.get(name)
        if codec is not None and (fingerprint is None or codec.fingerprint(level) == fingerprint):
            return codec
    raise ConfigError(f"no delta codec {name!r} with fingerprint {fingerprint!r} is registered here")


# -- making ------------------------------------------------------------------------------


@dataclass
class LayerTar:
    """A layer decompressed into the scratch directory, verified, with its member paths."""

    diff_id: str
    path: Path
    size: int
    members: frozenset[str]


@dataclass
class ImageDelta:
    """A made delta artifact: its manifest bytes, the descriptors of every blob it names
    (in the CAS), and facts for reports."""

    manifest_bytes: bytes
    blobs: list[Descriptor]
    layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    def descriptor(self) -> dict:
        """The artifact as an index entry (what a referrers list holds)."""
        doc = json.loads(self.manifest_bytes)
        return {"mediaType": media.OCI_MANIFEST, "digest": self.digest, "size": len(self.manifest_bytes),
                "artifactType": ARTIFACT_TYPE, "annotations": doc.get("annotations") or {}}


def unpack_layer(cas: CAS, layer: Layer, dest: Path) -> LayerTar:
    """Decompress a CAS layer into ``dest``, checked against its diff_id, listing members."""
    with cas.open(layer.digest) as fh, open(dest, "wb") as out:
        plain = comp.HashingReader(comp.open_decompressed(fh, layer.compression))
        try:
            while True:
                chunk = plain.read(comp.CHUNK)
                if not chunk:
                    break
                out.write(chunk)
        except comp.DECOMPRESSION_ERRORS as e:
            raise DeltaError(f"layer {layer.digest} does not decompress as {layer.compression}: {e}") from None
    if plain.digest != layer.diff_id:
        raise DeltaError(f"layer {layer.digest} decompresses to {plain.digest}, not its diff_id {layer.diff_id}")
    members = set()
    with tarfile.open(dest, "r:") as tf:
        for member in tf:
            if not member.isdir():
                members.add(member.name.removeprefix("./").lstrip("/"))
    return LayerTar(layer.diff_id, dest, plain.size, frozenset(members))


def choose_sources(new: LayerTar, old: Sequence[LayerTar], limit: int = MAX_SOURCE_BYTES) -> list[LayerTar]:
    """The old layers a delta of ``new`` reads: those sharing a path with it, in order, as
    many as fit in ``limit`` bytes (the most overlapping first when they do not all fit)."""
    sharing = [t for t in old if t.members & new.members]
    if sum(t.size for t in sharing) > limit:
        ranked = sorted(sharing, key=lambda t: -len(t.members & new.members))
        keep, total = set(), 0
        for t in ranked:
            if total + t.size <= limit:
                keep.add(t.diff_id)
                total += t.size
        sharing = [t for t in sharing if t.diff_id in keep]
    return sharing


def layer_annotations(delta_target: Layer, tar: LayerTar, sources: Iterable[LayerTar]) -> dict[str, str]:
    return {
        fmt.A_DIFF_ID: tar.diff_id,
        fmt.A_LAYER_TO: delta_target.digest,
        fmt.A_SOURCES: ",".join(s.diff_id for s in sources),
        fmt.A_TAR_SIZE: str(tar.size),
    }


def make_image_delta(cas: CAS, target: Image, base: Image, codec: DeltaCodec, level: int | None,
                     scratch: Path, *, max_source_bytes: int = MAX_SOURCE_BYTES,
                     log=lambda line: None) -> ImageDelta:
    """The delta artifact from ``base`` to ``target`` (both in the CAS), its blobs stored;
    ``blobs[0]`` is the artifact manifest. ``log`` gets a line per layer."""
    import time

    have = set(base.diff_ids)
    to_send: list[Layer] = []
    for layer in target.layers:
        if layer.diff_id not in have and all(layer.diff_id != t.diff_id for t in to_send):
            to_send.append(layer)
    tars: dict[str, LayerTar] = {}

    def tar_of(layer: Layer) -> LayerTar:
        if layer.diff_id not in tars:
            tars[layer.diff_id] = unpack_layer(cas, layer, scratch / f"{split_digest(layer.diff_id)[1]}.tar")
        return tars[layer.diff_id]

    old = [tar_of(layer) for layer in _unique(base.layers)] if to_send else []
    blobs = [cas.put_bytes(fmt.EMPTY_JSON).typed(fmt.EMPTY_CONFIG_TYPE),
             cas.put_bytes(target.manifest_bytes).typed(target.media_type),
             cas.put_bytes(target.config_bytes).typed(target.config_media_type)]
    layer_descs = [
        {"mediaType": media.to_oci(target.media_type), "digest": target.digest, "size": target.size,
         "annotations": {fmt.TITLE: fmt.TARGET_MANIFEST_TITLE}},
        {"mediaType": media.OCI_CONFIG, "digest": target.config_digest, "size": target.config_size,
         "annotations": {fmt.TITLE: fmt.TARGET_CONFIG_TITLE}},
    ]
    facts = []
    for layer in to_send:
        new = tar_of(layer)
        sources = choose_sources(new, old, max_source_bytes)
        started = time.monotonic()
        with cas.writer() as out:
            codec.make([s.path for s in sources], new.path, out, level)
        digest, size = out.digest, out.size
        seconds = time.monotonic() - started
        fact = {"diff_id": layer.diff_id, "layer_size": layer.size, "tar_size": new.size,
                "delta_size": size, "sources": len(sources), "kept": size < layer.size}
        facts.append(fact)
        log(f"layer {layer.diff_id[:19]}: {new.size} tar bytes, blob {layer.size}, {codec.name} delta "
            f"{size} from {len(sources)} source layer(s) in {seconds:.2f} s"
            + ("" if fact["kept"] else " (not smaller than the layer: dropped, pulled plainly)"))
        if not fact["kept"]:
            continue
        blobs.append(Descriptor(digest, size, codec.media_type))
        layer_descs.append({"mediaType": codec.media_type, "digest": digest, "size": size,
                            "annotations": layer_annotations(layer, new, sources)})
    for t in tars.values():
        t.path.unlink(missing_ok=True)
    doc = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": fmt.EMPTY_CONFIG_TYPE, "digest": sha256_digest(fmt.EMPTY_JSON),
                   "size": len(fmt.EMPTY_JSON)},
        "subject": {"mediaType": media.to_oci(target.media_type), "digest": target.digest, "size": target.size},
        "layers": layer_descs,
        "annotations": {
            fmt.A_FROM: base.digest,
            fmt.A_FROM_CONFIG: base.config_digest,
            fmt.A_TO: target.digest,
            fmt.A_FORMAT: str(fmt.FORMAT_VERSION),
            "dev.forge.delta.codec": codec.name,
        },
    }
    manifest = canonical_json(doc)
    fmt.parse_delta_manifest(manifest)  # what this writes, the applier reads
    blobs.insert(0, cas.put_bytes(manifest).typed(media.OCI_MANIFEST))
    return ImageDelta(manifest, blobs, facts)


def _unique(layers: Iterable[Layer]) -> list[Layer]:
    seen: dict[str, Layer] = {}
    for layer in layers:
        seen.setdefault(layer.diff_id, layer)
    return list(seen.values())


def delta_index(deltas: Sequence[ImageDelta]) -> bytes:
    """An OCI index of delta artifacts (entries carry artifactType and annotations, as a
    referrers list does): the output of an ``image_delta`` target, and the ``index.json``
    of its layout, which the applier reads as a delta source."""
    entries = sorted((d.descriptor() for d in deltas), key=lambda e: e["digest"])
    return canonical_json({"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": entries})


def load_delta_index(cas: CAS, digest: str) -> list[ImageDelta]:
    """The delta artifacts of an index written by ``delta_index``, from the CAS."""
    doc = json.loads(cas.read_bytes(digest))
    out = []
    for entry in doc.get("manifests") or []:
        data = cas.read_bytes(entry["digest"])
        parsed = fmt.parse_delta_manifest(data)
        blobs = [Descriptor(d, s, mt) for mt, d, s in parsed.blobs()]
        out.append(ImageDelta(data, [Descriptor(parsed.digest, len(data), media.OCI_MANIFEST), *blobs]))
    return out


def write_delta_layout(cas: CAS, deltas: Sequence[ImageDelta], dest: Path) -> Path:
    """An OCI layout of the delta artifacts (what ``python -m forge.delta_apply DIR`` reads)."""
    from forge.core.fsutil import write_atomic

    blobs = Path(dest) / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for delta in deltas:
        for d in delta.blobs:
            cas.copy_out(d.digest, blobs / split_digest(d.digest)[1])
    write_atomic(Path(dest) / "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
    write_atomic(Path(dest) / "index.json", delta_index(deltas))
    return Path(dest)


def push_deltas(client: Any, cas: CAS, repo: str, deltas: Sequence[ImageDelta]) -> dict[str, int]:
    """Push delta artifacts to ``repo`` (a ``RegistryClient``) as referrers of their targets
    (``forge.core.referrers.push_referrer``: the referrers API when the registry has one,
    else the referrers tag schema ``sha256-<hex>``, which distribution 2.8 needs). The
    targets must be pushed first (a subject that exists, and layers to fall back to)."""
    from forge.core.referrers import Artifact, push_referrer

    stats = {"manifests": 0, "indexed_by_registry": 0}
    for delta in deltas:
        artifact = Artifact(delta.manifest_bytes, ARTIFACT_TYPE, delta.descriptor()["annotations"],
                            tuple(d.digest for d in delta.blobs[1:]))
        stats["indexed_by_registry"] += bool(push_referrer(client, cas, repo, artifact))
        stats["manifests"] += 1
    return stats


def import_release(cas: CAS, src: Path, digest: str | None = None, platform: Any = None) -> Image:
    """An earlier release from an OCI layout directory into the CAS: the manifest ``digest``
    (any manifest or index of the layout, pinned), else the one manifest ``index.json``
    names; an index gives its image for ``platform``. Every blob is verified as it is copied."""
    from forge.core.oci.image import Index, load
    from forge.core.oci.layout import LayoutError, _import_manifest

    src = Path(src)
    try:
        index = json.loads((src / "index.json").read_bytes())
    except (OSError, ValueError) as e:
        raise LayoutError(f"{src} is not an OCI layout (index.json: {e})") from None
    entries = [e.get("digest", "") for e in index.get("manifests") or []]
    if digest is None:
        if len(entries) != 1:
            raise LayoutError(f"{src}/index.json lists {len(entries)} manifests; pin one with "
                              f"{src.name}@sha256:…")
        digest = entries[0]
    elif digest not in entries and not (src / "blobs" / "sha256" / split_digest(digest)[1]).is_file():
        raise LayoutError(f"{src} has no manifest {digest}; index.json lists: {', '.join(entries) or 'none'}")
    _import_manifest(cas, src, digest)
    value = load(cas, digest)
    if isinstance(value, Index):
        if platform is None:
            raise LayoutError(f"{src}@{digest} is an index; a platform picks its image")
        value = value.image(platform)
    return value
