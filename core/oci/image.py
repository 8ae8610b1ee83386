"""Images, layers and indexes as immutable values (after go-containerregistry's v1 model).

An ``Image`` *is* its two JSON documents, the manifest and the config, kept as the exact
bytes that were read or written: the digest of a pulled image is the registry's, and a
value cannot drift from what is stored. Everything else (layers, platform, digests) is
derived from those bytes. Operations never mutate: ``append_layers`` and ``with_config``
return new images, ``make_index`` a new index; ``EMPTY_IMAGE`` is scratch.

Documents forge writes are canonical JSON (sorted keys, no spaces) with OCI media types,
and every timestamp in them is the explicit ``epoch`` argument (default 0,
1970-01-01T00:00:00Z), so the same layers and settings give the same manifest digest on
every machine. Nothing here reads ``SOURCE_DATE_EPOCH``: the session reads it once and
actions declared with ``timestamps=True`` get it (``rc.epoch``) with it in their key.

Blobs live in the CAS: ``store_image`` writes the manifest and config of a value whose
layers are already there; ``load_image`` / ``load_index`` / ``load`` read them back.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from forge.core.canonical import canonical_json
from forge.core.cas import CAS, sha256_digest
from forge.core.errors import (
    AnalysisError,
    AttributeError_,
    PlatformError,
    did_you_mean,
)
from forge.core.oci import media
from forge.core.oci.media import ImageFormatError
from forge.core.platforms import Platform, from_oci, parse_platform


def source_date_epoch(epoch: int | None = None) -> int:
    """The timestamp forge writes: ``epoch`` as given, else 0. Never the environment:
    writers get the epoch from their action (``rc.epoch``), where it is in the key."""
    return 0 if epoch is None else int(epoch)


def rfc3339(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_json(data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise ImageFormatError(f"{what} is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ImageFormatError(f"{what} is not a JSON object")
    return obj


def _descriptor(obj: Any, what: str) -> tuple[str, str, int]:
    """(mediaType, digest, size) of a descriptor, checked for shape."""
    if not isinstance(obj, dict):
        raise ImageFormatError(f"{what} is not a descriptor object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise ImageFormatError(f"{what} has digest {digest!r}; expected sha256:<64 hex>")
    if not isinstance(size, int) or size < 0:
        raise ImageFormatError(f"{what} has size {size!r}; expected a non-negative integer")
    if not isinstance(media_type, str):
        raise ImageFormatError(f"{what} ({digest}) has no mediaType")
    return media_type, digest, size


def _document_media_type(doc: dict, what: str) -> str:
    """The media type of a manifest or index document (OCI lets ``mediaType`` be absent)."""
    if doc.get("schemaVersion") != 2:
        raise media.UnsupportedMediaType(
            f"{what} has schemaVersion {doc.get('schemaVersion')!r}; forge reads schema 2 only"
        )
    media_type = doc.get("mediaType")
    if media_type is None:
        return media.OCI_INDEX if "manifests" in doc else media.OCI_MANIFEST
    return media_type


@dataclass(frozen=True)
class Layer:
    """A layer blob: its digest (compressed), diff_id (uncompressed tar), size, media type."""

    digest: str
    diff_id: str
    size: int
    media_type: str = media.OCI_LAYER_GZIP

    @property
    def compression(self) -> str:
        return media.layer_compression(self.media_type)

    def descriptor(self) -> dict:
        """The manifest entry forge writes for this layer (OCI media type)."""
        return {"mediaType": media.to_oci(self.media_type), "digest": self.digest, "size": self.size}


class _Manifested:
    """What images and indexes share: they are named by their manifest's bytes."""

    manifest_bytes: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def size(self) -> int:
        return len(self.manifest_bytes)


@dataclass(frozen=True)
class Image(_Manifested):
    """One platform's image: the manifest and config bytes, and what follows from them."""

    manifest_bytes: bytes
    config_bytes: bytes
    media_type: str = field(init=False, compare=False, repr=False)
    layers: tuple[Layer, ...] = field(init=False, compare=False, repr=False)
    _config: dict = field(init=False, compare=False, repr=False)
    _config_descriptor: tuple[str, str, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        manifest = _parse_json(self.manifest_bytes, "image manifest")
        media_type = _document_media_type(manifest, "image manifest")
        if media.manifest_kind(media_type) != "image":
            raise ImageFormatError(f"manifest has media type {media_type!r}: an index, not an image")
        config_type, config_digest, config_size = _descriptor(manifest.get("config"), "config descriptor")
        media.check_config_type(config_type)
        actual = sha256_digest(self.config_bytes)
        if (config_digest, config_size) != (actual, len(self.config_bytes)):
            raise ImageFormatError(
                f"manifest names config {config_digest} ({config_size} bytes); "
                f"the config given is {actual} ({len(self.config_bytes)} bytes)"
            )
        config = _parse_json(self.config_bytes, f"config {config_digest}")
        rootfs = config.get("rootfs") or {}
        diff_ids = rootfs.get("diff_ids") or []
        raw_layers = manifest.get("layers") or []
        if not isinstance(raw_layers, list) or not isinstance(diff_ids, list):
            raise ImageFormatError("manifest layers or config rootfs.diff_ids is not a list")
        if len(diff_ids) != len(raw_layers):
            raise ImageFormatError(
                f"manifest lists {len(raw_layers)} layers but config {config_digest} "
                f"has {len(diff_ids)} rootfs.diff_ids"
            )
        layers = []
        for i, (desc, diff_id) in enumerate(zip(raw_layers, diff_ids, strict=True)):
            layer_type, digest, size = _descriptor(desc, f"layer {i}")
            media.layer_compression(layer_type)
            layers.append(Layer(digest, diff_id, size, layer_type))
        object.__setattr__(self, "media_type", media_type)
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_config_descriptor", (config_type, config_digest, config_size))

    def __repr__(self) -> str:
        return f"Image({self.digest}, platform={self.platform}, layers={len(self.layers)})"

    @property
    def config(self) -> dict:
        """A copy of the config document (changing it changes nothing here)."""
        return json.loads(self.config_bytes)

    @property
    def config_digest(self) -> str:
        return self._config_descriptor[1]

    @property
    def config_size(self) -> int:
        return self._config_descriptor[2]

    @property
    def config_media_type(self) -> str:
        return self._config_descriptor[0]

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(layer.diff_id for layer in self.layers)

    @property
    def platform(self) -> Platform | None:
        """The config's architecture/os/variant; None for an image without an architecture."""
        arch = self._config.get("architecture") or ""
        if not arch:
            return None
        return from_oci(arch, self._config.get("os") or "", self._config.get("variant") or "")

    def descriptor(self) -> dict:
        """This manifest as an index entry (with the platform, when the image has one)."""
        desc = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            desc["platform"] = self.platform.oci()
        return desc

    def blobs(self) -> tuple[tuple[str, int], ...]:
        """(digest, size) of the blobs the manifest references: layers, then config."""
        return (*((layer.digest, layer.size) for layer in self.layers), (self.config_digest, self.config_size))


@dataclass(frozen=True)
class Index(_Manifested):
    """A multi-platform image index and the images it lists (in its order)."""

    manifest_bytes: bytes
    images: tuple[Image, ...]
    media_type: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        doc = _parse_json(self.manifest_bytes, "index")
        media_type = _document_media_type(doc, "index")
        if media.manifest_kind(media_type) != "index":
            raise ImageFormatError(f"index has media type {media_type!r}: an image manifest")
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ImageFormatError("index has no manifests list")
        if len(entries) != len(self.images):
            raise ImageFormatError(f"index lists {len(entries)} manifests; {len(self.images)} images given")
        for i, (entry, image) in enumerate(zip(entries, self.images, strict=True)):
            entry_type, digest, size = _descriptor(entry, f"index entry {i}")
            if media.manifest_kind(entry_type) != "image":
                raise media.UnsupportedMediaType(
                    f"index entry {i} ({digest}) is a nested index; forge reads one level"
                )
            if (digest, size) != (image.digest, image.size):
                raise ImageFormatError(
                    f"index entry {i} names {digest} ({size} bytes); image given is "
                    f"{image.digest} ({image.size} bytes)"
                )
        object.__setattr__(self, "media_type", media_type)

    def __repr__(self) -> str:
        return f"Index({self.digest}, platforms=[{', '.join(map(str, self.platforms))}])"

    @property
    def entries(self) -> list[dict]:
        """The index's manifest descriptors, as written (a copy)."""
        return json.loads(self.manifest_bytes)["manifests"]

    @property
    def platforms(self) -> tuple[Platform | None, ...]:
        """Each entry's platform (from the entry, else the image's config)."""
        out = []
        for entry, image in zip(self.entries, self.images, strict=True):
            p = entry.get("platform")
            out.append(
                from_oci(p.get("architecture", ""), p.get("os", ""), p.get("variant", ""))
                if p
                else image.platform
            )
        return tuple(out)

    def image(self, platform: Platform | str) -> Image:
        """The image for ``platform``; PlatformError naming the platforms there are."""
        want = parse_platform(platform) if isinstance(platform, str) else platform
        for have, image in zip(self.platforms, self.images, strict=True):
            if have == want:
                return image
        names = [str(p) for p in self.platforms if p]
        raise PlatformError(
            f"index {self.digest} has no image for {want}{did_you_mean(str(want), names)}; "
            f"it has: {', '.join(names) or 'none'}"
        )

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class DuplicatePlatformError(AnalysisError):
    """Two images of one platform were given to one index."""


def assemble_image(config_bytes: bytes, layers: Sequence[Layer]) -> Image:
    """An OCI manifest around a config kept byte for byte (its digest, e.g. a Docker image
    ID, stays); the config's rootfs.diff_ids must already list ``layers``."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": {
            "mediaType": media.OCI_CONFIG,
            "digest": sha256_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [layer.descriptor() for layer in layers],
    }
    return Image(canonical_json(manifest), config_bytes)


def _make_image(config: dict, layers: Sequence[Layer]) -> Image:
    """An OCI image from a config document and its layers (rootfs is set here)."""
    config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
    return assemble_image(canonical_json(config), layers)


# Scratch: no layers, no platform (``with_config(EMPTY_IMAGE, platform=...)`` gives one).
EMPTY_IMAGE = _make_image(
    {"architecture": "", "os": "linux", "config": {}, "created": rfc3339(0), "history": []}, []
)


def append_layers(
    base: Image,
    *layers: Layer,
    history: str | Sequence[str] | None = None,
    epoch: int | None = None,
) -> Image:
    """``base`` with ``layers`` on top; one history entry per layer (``created_by`` text).

    ``history`` is one text for every new layer or one per layer; it enters the config, so
    keep host paths and times out of it.
    """
    if isinstance(history, str) or history is None:
        texts = [history or "forge"] * len(layers)
    else:
        texts = list(history)
        if len(texts) != len(layers):
            raise ValueError(f"{len(layers)} layers but {len(texts)} history entries")
    created = rfc3339(source_date_epoch(epoch))
    config = base.config
    config["created"] = created
    config["history"] = [
        *(config.get("history") or []),
        *({"created": created, "created_by": text} for text in texts),
    ]
    return _make_image(config, (*base.layers, *layers))


def _merge_env(current: Iterable[str], updates: Iterable[str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in (*current, *updates):
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise AttributeError_(f"env entry {item!r} is not KEY=VALUE")
        merged[key] = item
    return list(merged.values())


def with_config(
    image: Image,
    *,
    env: Sequence[str] | None = None,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    workdir: str | None = None,
    user: str | None = None,
    labels: Mapping[str, str | None] | None = None,
    platform: Platform | str | None = None,
    epoch: int | None = None,
) -> Image:
    """``image`` with its runtime settings changed; arguments left None stay as they are.

    ``env`` entries (``KEY=VALUE``) replace entries of the same key and add the others;
    ``labels`` merge the same way (a None value removes the label). As in a Dockerfile,
    setting ``entrypoint`` without ``cmd`` clears the inherited ``cmd``.
    """
    config = image.config
    run = dict(config.get("config") or {})
    if env is not None:
        run["Env"] = _merge_env(run.get("Env") or [], env)
    if entrypoint is not None:
        run["Entrypoint"] = list(entrypoint)
        if cmd is None:
            run.pop("Cmd", None)
    if cmd is not None:
        run["Cmd"] = list(cmd)
    if workdir is not None:
        run["WorkingDir"] = workdir
    if user is not None:
        run["User"] = user
    if labels is not None:
        merged = dict(run.get("Labels") or {})
        for key, value in labels.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        run["Labels"] = merged
    config["config"] = run
    if platform is not None:
        p = parse_platform(platform) if isinstance(platform, str) else platform
        config["architecture"], config["os"] = p.architecture, p.os
        if p.variant:
            config["variant"] = p.variant
        else:
            config.pop("variant", None)
    config["created"] = rfc3339(source_date_epoch(epoch))
    return _make_image(config, image.layers)


def make_index(images: Iterable[Image], *, annotations: Mapping[str, str] | None = None) -> Index:
    """An OCI index of per-platform images, entries sorted by platform.

    Sorting makes the digest independent of the order the images were listed in.
    """
    by_platform: dict[Platform, Image] = {}
    for image in images:
        if image.platform is None:
            raise AnalysisError(f"image {image.digest} has no platform; an index entry needs one")
        other = by_platform.get(image.platform)
        if other is not None and other.digest != image.digest:
            raise DuplicatePlatformError(
                f"two images for {image.platform} in one index: {other.digest} and {image.digest}"
            )
        by_platform[image.platform] = image
    ordered = [by_platform[p] for p in sorted(by_platform)]
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media.OCI_INDEX,
        "manifests": [image.descriptor() for image in ordered],
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    return Index(canonical_json(doc), tuple(ordered))


def store_image(cas: CAS, value: Image | Index) -> Image | Index:
    """Write the manifest(s) and config(s) of ``value`` into the CAS; its layers must be there.

    The manifest goes in last, so a manifest in the CAS means its whole image is there.
    """
    if isinstance(value, Index):
        for image in value.images:
            store_image(cas, image)
    else:
        missing = [layer.digest for layer in value.layers if not cas.has(layer.digest)]
        if missing:
            raise ImageFormatError(
                f"image {value.digest}: layer blob(s) not in the CAS: {', '.join(missing)}"
            )
        cas.put_bytes(value.config_bytes)
    cas.put_bytes(value.manifest_bytes)
    return value


def load(cas: CAS, digest: str) -> Image | Index:
    """The image or index stored under manifest ``digest`` (Docker schema 2 types accepted)."""
    data = cas.read_bytes(digest)
    doc = _parse_json(data, f"manifest {digest}")
    if media.manifest_kind(_document_media_type(doc, f"manifest {digest}")) == "index":
        entries = doc.get("manifests") or []
        images = tuple(load_image(cas, _descriptor(e, f"index entry of {digest}")[1]) for e in entries)
        return Index(data, images)
    config_digest = _descriptor(doc.get("config"), f"config of {digest}")[1]
    return Image(data, cas.read_bytes(config_digest))


def load_image(cas: CAS, digest: str) -> Image:
    value = load(cas, digest)
    if not isinstance(value, Image):
        raise ImageFormatError(f"{digest} is an index ({', '.join(map(str, value.platforms))}), not an image")
    return value


def load_index(cas: CAS, digest: str) -> Index:
    value = load(cas, digest)
    if not isinstance(value, Index):
        raise ImageFormatError(f"{digest} is an image manifest, not an index")
    return value
