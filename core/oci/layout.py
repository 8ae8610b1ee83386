"""OCI image layout directories: write an image or index from the CAS, read one into it.

A layout is ``oci-layout``, ``index.json`` and ``blobs/sha256/<hex>``; it is what
``forge-out/`` holds per image and what ``oci_import`` accepts. Blobs are verified copies
of the CAS's (``CAS.copy_out``), never hard links: editing a layout in place cannot reach
the store. A blob already in the layout is re-hashed only when its stat data changed, and
replaced when it no longer matches; every write is temp file + rename.

Reading copies blobs into the CAS verified: a blob whose content does not match its name
is not stored, and the layout is reported.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from forge.core.cas import CAS, BlobMissing, sha256_digest, split_digest
from forge.core.errors import CacheError
from forge.core.fsutil import write_atomic
from forge.core.oci import media
from forge.core.oci.image import Image, Index, canonical_json, load
from forge.core.oci.media import ImageFormatError

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}


class LayoutError(ImageFormatError):
    """An OCI layout directory that is incomplete, ambiguous or corrupt."""


def write_layout(cas: CAS, value: Image | Index, dest: Path, *, ref_name: str | None = None) -> Path:
    """Write ``value`` (its blobs, then ``index.json`` naming it) as a layout at ``dest``.

    ``index.json`` lists exactly ``value`` (with ``ref_name`` as its
    ``org.opencontainers.image.ref.name``); blobs of earlier contents stay.
    """
    dest = Path(dest)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    images = value.images if isinstance(value, Index) else (value,)
    sizes: dict[str, int] = {}
    for image in images:
        sizes.update(image.blobs())
        sizes[image.digest] = image.size
    # Copies are hashed as they are written: several at once (hashing and the copy's
    # system calls release the GIL), largest first; index.json is written after all.
    order = sorted(sizes, key=lambda d: -sizes[d])
    with ThreadPoolExecutor(max_workers=min(4, len(order)) or 1, thread_name_prefix="forge-layout") as pool:
        list(pool.map(lambda digest: _place_blob(cas, digest, blobs), order))
    if isinstance(value, Index):
        _place_blob(cas, value.digest, blobs)
    write_atomic(dest / "oci-layout", canonical_json(LAYOUT_VERSION))
    entry = value.descriptor()
    if ref_name:
        entry["annotations"] = {REF_NAME: ref_name}
    index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [entry]}
    write_atomic(dest / "index.json", canonical_json(index))
    return dest


def _place_blob(cas: CAS, digest: str, blobs: Path) -> None:
    cas.copy_out(digest, blobs / split_digest(digest)[1])


def read_layout(cas: CAS, src: Path, *, ref_name: str | None = None) -> Image | Index:
    """Copy the image or index a layout names into the CAS and return it.

    A layout naming one manifest needs no ``ref_name``; with several, ``ref_name`` picks
    one by its ``org.opencontainers.image.ref.name``.
    """
    src = Path(src)
    try:
        index = json.loads((src / "index.json").read_bytes())
    except FileNotFoundError:
        raise LayoutError(f"{src} is not an OCI layout: no index.json") from None
    except ValueError as e:
        raise LayoutError(f"{src}/index.json is not JSON: {e}") from None
    entries = index.get("manifests") or []
    names = [(e.get("annotations") or {}).get(REF_NAME) for e in entries]
    if ref_name is not None:
        chosen = [e for e, n in zip(entries, names, strict=True) if n == ref_name]
        if not chosen:
            raise LayoutError(f"{src} has no manifest named {ref_name!r}; names: {_names(names)}")
    else:
        chosen = entries
        if len(entries) != 1:
            raise LayoutError(
                f"{src}/index.json lists {len(entries)} manifests; pick one with ref_name "
                f"(names: {_names(names)})"
            )
    digest = chosen[0].get("digest", "")
    _import_manifest(cas, src, digest)
    return load(cas, digest)


def _names(names: list[str | None]) -> str:
    return ", ".join(n for n in names if n) or "none"


def _import_manifest(cas: CAS, src: Path, digest: str) -> None:
    """Copy a manifest and everything under it; the manifest itself goes in last."""
    if cas.has(digest):
        return
    data = _read_blob(src, digest)
    doc = json.loads(data)
    media_type = doc.get("mediaType") or (media.OCI_INDEX if "manifests" in doc else media.OCI_MANIFEST)
    if media.manifest_kind(media_type) == "index":
        for entry in doc.get("manifests") or []:
            _import_manifest(cas, src, entry.get("digest", ""))
    else:
        for desc in (doc.get("config") or {}, *(doc.get("layers") or [])):
            _import_blob(cas, src, desc.get("digest", ""))
    cas.put_bytes(data)


def _blob_path(src: Path, digest: str) -> Path:
    try:
        alg, hexpart = split_digest(digest)
    except CacheError:
        raise LayoutError(f"{src}: bad digest {digest!r}") from None
    path = src / "blobs" / alg / hexpart
    if not path.is_file():
        raise LayoutError(f"{src} is incomplete: blob {digest} is missing")
    return path


def _read_blob(src: Path, digest: str) -> bytes:
    data = _blob_path(src, digest).read_bytes()
    if sha256_digest(data) != digest:
        raise LayoutError(f"{src}: blob {digest} is corrupt (content hashes to {sha256_digest(data)})")
    return data


def _import_blob(cas: CAS, src: Path, digest: str) -> None:
    if cas.has(digest):
        return
    path = _blob_path(src, digest)
    try:
        with open(path, "rb") as fh, cas.writer(expected=digest) as out:
            shutil.copyfileobj(fh, out, 1 << 20)
    except BlobMissing as e:
        raise LayoutError(f"{src}: blob {digest} is corrupt ({e})") from None
