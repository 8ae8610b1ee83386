"""docker-archive tarballs (the ``docker save`` / ``docker load`` format), both ways.

Why this exists: Debian's dockerd 20.10 loads only this format, not OCI layouts, so
``--load`` and the Docker executor hand images over as a docker-archive.

Writing: ``manifest.json`` (Config, RepoTags, Layers), the config byte for byte as
``<config hex>.json`` (so the engine's image ID is forge's config digest), and each layer
*uncompressed* as ``<diff_id hex>/layer.tar``. Streamed: layers are decompressed from the
CAS straight into the output, never held in memory; since a tar header needs the size
first, each compressed layer is read twice (once to count and check its diff_id).

Reading: ``manifest.json`` picks the config and layer files (the ``<id>/layer.tar``
layout of Docker 1.10-24 and the ``blobs/sha256/...`` one of Docker 25+ alike); each
layer is stored unchanged, compressed with forge's deterministic gzip. Layer digests
then differ from the ones a registry would show for the same image; diff_ids and the
config (the image ID) do not.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from forge.core.cas import CAS, sha256_digest, split_digest
from forge.core.fsutil import atomic_writer
from forge.core.oci import compression as comp
from forge.core.oci.image import Image, Layer, assemble_image, canonical_json, store_image
from forge.core.oci.layer_writer import store_tar
from forge.core.oci.media import ImageFormatError


class DockerArchiveError(ImageFormatError):
    """A docker-archive that cannot be read, or an image that cannot become one."""


class _CountingWriter:
    """Lets tarfile write directly (``mode="w"`` needs ``tell``) to pipes and sockets too."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The engine's name for each layer *in its place*: ``chain[0] = diff_id[0]``,
    ``chain[i] = sha256(chain[i-1] + " " + diff_id[i])`` (the image-spec's ChainID). An
    engine that holds chain ``i`` holds every layer below it too."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256_digest(f"{out[-1]} {diff_id}".encode()))
    return out


def write_docker_archive(
    cas: CAS, image: Image, out: Path | BinaryIO, *, repo_tags: Sequence[str] = (),
    omit: Collection[str] = (), gzip_as_is: bool = False,
) -> int:
    """Write ``image`` as a docker-archive to a path (atomically) or a writable stream;
    returns the layer bytes written.

    ``omit`` lists diff_ids whose ``layer.tar`` is left out: the manifest still names them,
    and ``docker load`` (20.10 and later) reads a layer file only when the engine lacks
    that layer's chain, so an archive of a config alone loads an image whose layers the
    engine already has (an image built there, or the base of one).

    ``gzip_as_is`` writes gzip layers as they are stored: ``docker load`` decompresses a
    layer file itself, so the archive is smaller and the CAS blob is read once instead
    of twice (a tar header needs the uncompressed size first). Not for ``docker load``
    of engines before 1.10, nor for other readers of the format.
    """
    if isinstance(out, (str, Path)):
        with atomic_writer(Path(out)) as fh:
            return _write(cas, image, fh, repo_tags, set(omit), gzip_as_is)
    return _write(cas, image, out, repo_tags, set(omit), gzip_as_is)


def _write(cas: CAS, image: Image, fh: BinaryIO, repo_tags: Sequence[str], omit: set[str],
           gzip_as_is: bool = False) -> int:
    config_name = split_digest(image.config_digest)[1] + ".json"
    layer_names = [split_digest(layer.diff_id)[1] + "/layer.tar" for layer in image.layers]
    manifest = [{"Config": config_name, "RepoTags": list(repo_tags), "Layers": layer_names}]
    config_bytes = cas.read_bytes(image.config_digest)
    sent = 0
    with tarfile.open(fileobj=_CountingWriter(fh), mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      copybufsize=comp.CHUNK) as tf:
        _add_bytes(tf, "manifest.json", canonical_json(manifest))
        _add_bytes(tf, config_name, config_bytes)
        written = set()
        for layer, name in zip(image.layers, layer_names, strict=True):
            if name in written or layer.diff_id in omit:
                continue
            written.add(name)
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if gzip_as_is and layer.compression == comp.GZIP:
                info.size = cas.size(layer.digest)
                with cas.open(layer.digest) as blob:
                    tf.addfile(info, blob)
            else:
                info.size = _uncompressed_size(cas, image, layer)
                with cas.open(layer.digest) as blob:
                    tf.addfile(info, comp.open_decompressed(blob, layer.compression))
            sent += info.size
    return sent


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _uncompressed_size(cas: CAS, image: Image, layer) -> int:
    """Count the layer's tar bytes, checking them against the diff_id on the way."""
    if layer.compression == comp.NONE:
        return cas.size(layer.digest)
    with cas.open(layer.digest) as blob:
        tar = comp.HashingReader(comp.open_decompressed(blob, layer.compression))
        try:
            tar.drain()
        except comp.DECOMPRESSION_ERRORS as e:
            raise DockerArchiveError(f"image {image.digest}: layer {layer.digest} is corrupt: {e}") from e
    if tar.digest != layer.diff_id:
        raise DockerArchiveError(
            f"image {image.digest}: layer {layer.digest} decompresses to {tar.digest}, "
            f"not its diff_id {layer.diff_id}; run validate_image"
        )
    return tar.size


def import_docker_archive(
    cas: CAS,
    path: Path,
    *,
    tag: str | None = None,
    compression: str = comp.GZIP,
    level: int | None = None,
    known_layers: Mapping[str, Layer] | None = None,
) -> Image:
    """Bring the image of a ``docker save`` tarball into the CAS (stored, not validated).

    An archive of several images needs ``tag`` (one of their RepoTags). ``known_layers``
    maps diff_ids to layers already in the CAS (a build's base image): those are reused,
    not compressed again, so exporting step N of a chain only compresses step N's layers.
    """
    path = Path(path)
    known = dict(known_layers or {})
    with comp.uncompressed_file(path, cas.tempdir) as plain, tarfile.open(plain) as tf:
        entry = _choose(path, _read_json(tf, path, "manifest.json"), tag)
        config_bytes = _member(tf, path, entry["Config"]).read()
        try:
            listed = json.loads(config_bytes)["rootfs"]["diff_ids"]
        except (ValueError, KeyError, TypeError):
            listed = []
        layers = []
        for i, name in enumerate(entry.get("Layers") or []):
            reuse = known.get(listed[i]) if i < len(listed) else None
            if reuse is not None and cas.has(reuse.digest):
                layers.append(reuse)
                continue
            member = _member(tf, path, name)
            kind = comp.sniff(member.peek(4)[:4])
            layers.append(store_tar(cas, comp.open_decompressed(member, kind),
                                    compression=compression, level=level))
    try:
        config = json.loads(config_bytes)
        diff_ids = config["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError):
        raise DockerArchiveError(f"{path}: config {entry['Config']} has no rootfs.diff_ids") from None
    got = [layer.diff_id for layer in layers]
    if got != diff_ids:
        raise DockerArchiveError(
            f"{path}: the layer files hash to diff_ids {got}, the config lists {diff_ids}"
        )
    cas.put_bytes(config_bytes)
    image = assemble_image(config_bytes, layers)
    store_image(cas, image)
    return image


def _read_json(tf: tarfile.TarFile, path: Path, name: str):
    try:
        return json.load(_member(tf, path, name))
    except ValueError as e:
        raise DockerArchiveError(f"{path}: {name} is not JSON: {e}") from None


def _member(tf: tarfile.TarFile, path: Path, name: str) -> io.BufferedReader:
    try:
        fh = tf.extractfile(name)
    except KeyError:
        hint = " (not a docker-archive, or one from before Docker 1.10)" if name == "manifest.json" else ""
        raise DockerArchiveError(f"{path} has no {name}{hint}") from None
    if fh is None:
        raise DockerArchiveError(f"{path}: {name} is not a file")
    return fh  # type: ignore[return-value]


def _choose(path: Path, manifest, tag: str | None) -> dict:
    if not isinstance(manifest, list) or not manifest:
        raise DockerArchiveError(f"{path}: manifest.json lists no image")
    tags = [t for e in manifest for t in (e.get("RepoTags") or [])]
    if tag is not None:
        for e in manifest:
            if tag in (e.get("RepoTags") or []):
                return e
        raise DockerArchiveError(f"{path} has no image tagged {tag!r}; tags: {', '.join(tags) or 'none'}")
    if len(manifest) > 1:
        raise DockerArchiveError(
            f"{path} holds {len(manifest)} images; pick one by tag ({', '.join(tags) or 'untagged'})"
        )
    return manifest[0]
