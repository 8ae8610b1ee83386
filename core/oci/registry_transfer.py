"""Whole images and indexes to and from a registry, built on the client's blob and
manifest calls: ``RegistryClient.push`` / ``pull`` by repository (``oci_pull``, the delta
push) and ``push_image`` / ``pull_image`` by reference (``forge push``).

A push uploads only the blobs the repository lacks, then child manifests by digest, then
the top one. Everything pulled is verified before it gets a name in the CAS
(``CAS.writer(expected=)``); a manifest is stored after its config and layers, so a
manifest in the CAS means the whole image is there. A pull that fails stores no manifest,
no config, no bad blob. forge pulls by digest only: a tag alone is refused with the digest
to pin.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from forge.core.cas import CAS
from forge.core.errors import RegistryError, UnpinnedReference
from forge.core.oci import media
from forge.core.oci.image import Image, Index, load
from forge.core.oci.media import ImageFormatError
from forge.core.oci.reference import parse_reference
from forge.core.oci.registry_client import PUSH_THREADS, RegistryClient
from forge.core.platforms import Platform, from_oci, parse_platform


def push_to_repository(client: RegistryClient, cas: CAS, value: Image | Index, repo: str,
                       tag: str | None = None, *, threads: int = PUSH_THREADS) -> str:
    """``RegistryClient.push``: every blob first, so no manifest names a blob the registry
    lacks, then the child manifests of an index, then the top one."""
    images = value.images if isinstance(value, Index) else (value,)
    blobs = list(dict.fromkeys(d for image in images for d, _ in image.blobs()))
    missing = [d for d in blobs if not cas.has(d)]
    if missing:
        raise RegistryError(f"push to {client.host}/{repo}: blob(s) not in the local CAS: {', '.join(missing)}")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda d: client.push_blob(cas, repo, d), blobs))
    if isinstance(value, Index):
        for image in images:
            client.push_manifest(repo, image.digest, image.manifest_bytes, image.media_type)
    return client.push_manifest(repo, tag or value.digest, value.manifest_bytes, value.media_type)


def pull_from_repository(client: RegistryClient, cas: CAS, repo: str, digest: str,
                         platform: Platform | str | None = None, *, threads: int = PUSH_THREADS
                         ) -> Image | Index:
    """``RegistryClient.pull``: the manifest, then each image under it, then (for an index
    pulled whole) the index itself, so the top manifest is stored last."""
    want = parse_platform(platform) if isinstance(platform, str) else platform
    where = f"{client.host}/{repo}@{digest}"
    try:
        data, media_type, _ = client.get_manifest(repo, digest)
        if media.manifest_kind(media_type) == "image":
            image = _pull_manifest(client, cas, repo, data, threads)
            if want is not None and image.platform != want:
                raise RegistryError(f"{where} is for {image.platform}, not {want}")
            return image
        entries = json.loads(data).get("manifests") or []
        if want is not None:
            child, _, _ = client.get_manifest(repo, _entry_for(entries, want, where))
            return _pull_manifest(client, cas, repo, child, threads)
        for entry in entries:
            child, child_type, _ = client.get_manifest(repo, entry.get("digest", ""))
            if media.manifest_kind(child_type) != "image":
                raise media.UnsupportedMediaType(f"index entry {entry.get('digest')} is a nested index")
            _pull_manifest(client, cas, repo, child, threads)
        cas.put_bytes(data)
        return load(cas, digest)
    except ImageFormatError as e:
        raise RegistryError(f"pull of {where}: {e}") from None


def _pull_manifest(client: RegistryClient, cas: CAS, repo: str, data: bytes, threads: int) -> Image:
    """Check an image manifest and its config in memory, then fetch layers, then store."""
    doc = json.loads(data)
    config_desc = doc.get("config") or {}
    media.check_config_type(config_desc.get("mediaType", ""))
    for layer in doc.get("layers") or []:
        media.layer_compression(layer.get("mediaType", ""))
    config_bytes = client.read_blob(repo, config_desc.get("digest", ""))
    image = Image(data, config_bytes)  # every format check before the first layer byte
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda layer: client.pull_blob(cas, repo, layer.digest), image.layers))
    cas.put_bytes(config_bytes)
    cas.put_bytes(data)
    return image


def push_image(cas: CAS, value: Image | Index, ref: str, *, client: RegistryClient | None = None) -> str:
    """Push to ``host/repo[:tag]`` (see ``RegistryClient.push``); return the digest."""
    r = parse_reference(ref)
    if r.digest and r.digest != value.digest:
        raise RegistryError(f"push to {ref}: the image is {value.digest}, not {r.digest}")
    return (client or RegistryClient(r.registry)).push(cas, value, r.repository, r.tag)


def pull_image(
    cas: CAS,
    ref: str,
    digest: str | None = None,
    platform: Platform | str | None = None,
    *,
    client: RegistryClient | None = None,
) -> Image | Index:
    """Pull ``host/repo`` at ``digest`` (or the reference's ``@digest``) into the CAS.

    A tag alone is refused with UnpinnedReference, whose message gives the digest to pin.
    See ``RegistryClient.pull`` for ``platform``.
    """
    r = parse_reference(ref)
    client = client or RegistryClient(r.registry)
    if digest and r.digest and digest != r.digest:
        raise RegistryError(f"pull of {ref}: the reference says {r.digest} but {digest} was asked for")
    digest = digest or r.digest
    if digest is None:
        tag = r.tag or "latest"
        now = client.resolve_tag(r.repository, tag)
        raise UnpinnedReference(
            f"{r.registry}/{r.repository}:{tag} is a tag, and forge pulls by digest only; "
            f"pin what it names now: {r.registry}/{r.repository}@{now}"
        )
    return client.pull(cas, r.repository, digest, platform)


def _entry_for(entries: Iterable[dict], want: Platform, what: str) -> str:
    have = []
    for entry in entries:
        p = entry.get("platform") or {}
        platform = from_oci(p.get("architecture", ""), p.get("os", ""), p.get("variant", ""))
        if platform == want:
            return entry.get("digest", "")
        have.append(str(platform))
    raise RegistryError(f"{what} has no image for {want}; it has: {', '.join(have) or 'none'}")

