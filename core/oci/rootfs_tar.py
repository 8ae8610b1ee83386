"""A plain rootfs tarball (``debootstrap``, ``tar -C rootfs -c .``) as a one-layer image.

The tarball is re-written through the layer writer, so the image digest depends only on
what the tarball says about each path (content, type, mode, owner, xattrs) and not on its
member order, mtimes or user names: two tarballs of the same tree give the same digest.
Modes and owners are kept as given, not normalized: in a rootfs they are content (setuid
``su``, sticky ``/tmp``, ``/var/mail`` owned by group mail).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from forge.core.cas import CAS
from forge.core.oci import compression as comp
from forge.core.oci.image import EMPTY_IMAGE, Image, append_layers, store_image, with_config
from forge.core.oci.layer_writer import entries_from_tar, write_layer
from forge.core.platforms import Platform


def import_rootfs_tar(
    cas: CAS,
    path: Path,
    platform: Platform | str,
    *,
    compression: str = comp.GZIP,
    level: int | None = None,
    epoch: int | None = None,
) -> Image:
    """One-layer image of ``platform`` from a rootfs tarball (plain, gzip or zstd), stored."""
    with comp.uncompressed_file(Path(path), cas.tempdir) as plain, tarfile.open(plain) as tf:
        layer = write_layer(cas, entries_from_tar(tf), compression=compression, level=level, epoch=epoch)
    base = with_config(EMPTY_IMAGE, platform=platform, epoch=epoch)
    image = append_layers(base, layer, history="forge: import rootfs tarball", epoch=epoch)
    store_image(cas, image)
    return image
