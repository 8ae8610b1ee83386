"""Media types: what kinds of OCI content forge reads, and which of them it writes.

Reading accepts both families, OCI and Docker schema 2, because base images come from
registries and ``docker save`` that still serve Docker types. Writing is OCI only: every
manifest, index, config and layer forge creates carries an OCI type, and a Docker-typed
layer that ends up in a manifest forge writes is re-labelled with its OCI twin (the bytes
are the same format, so the digest does not change).
"""

from __future__ import annotations

from forge.core.errors import CacheError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# layer media type -> compression ("gzip", "zstd", "none"); see forge.core.oci.compression
LAYER_COMPRESSION: dict[str, str] = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    DOCKER_LAYER: "none",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_LAYER_FOREIGN_GZIP: "gzip",
}

_OCI_LAYER_FOR = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}

# Docker type -> the OCI type forge writes for the same bytes. Non-distributable (foreign)
# layers keep their type: re-labelling them would make registries expect to host them.
_TO_OCI = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_MANIFEST_LIST: OCI_INDEX,
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER: OCI_LAYER,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER_ZSTD: OCI_LAYER_ZSTD,
}


class ImageFormatError(CacheError):
    """Image content (manifest, index, config, layer) that is malformed or contradicts itself."""


class UnsupportedMediaType(ImageFormatError):
    """Content of a media type forge does not read (an artifact, a schema 1 manifest …)."""


def _unsupported(kind: str, media_type: str, known: frozenset[str] | dict) -> UnsupportedMediaType:
    return UnsupportedMediaType(
        f"unsupported {kind} media type {media_type!r}; forge reads: {', '.join(sorted(known))}"
    )


def layer_compression(media_type: str) -> str:
    """The compression of a layer of this media type; UnsupportedMediaType for non-layers."""
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise _unsupported("layer", media_type, LAYER_COMPRESSION) from None


def layer_media_type(compression: str) -> str:
    """The OCI layer media type forge writes for ``compression``."""
    return _OCI_LAYER_FOR[compression]


def to_oci(media_type: str) -> str:
    """The OCI twin of a Docker media type (OCI types and foreign layers map to themselves)."""
    return _TO_OCI.get(media_type, media_type)


def check_config_type(media_type: str) -> None:
    if media_type not in CONFIG_TYPES:
        raise _unsupported("config", media_type, CONFIG_TYPES)


def manifest_kind(media_type: str) -> str:
    """``"image"`` or ``"index"``; UnsupportedMediaType for anything else."""
    if media_type in MANIFEST_TYPES:
        return "image"
    if media_type in INDEX_TYPES:
        return "index"
    raise _unsupported("manifest", media_type, MANIFEST_TYPES | INDEX_TYPES)
