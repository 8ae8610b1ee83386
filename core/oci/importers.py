"""One entry point for ``oci_import``: tell a rootfs tarball, a docker-archive and an
OCI layout apart by their content, not their file name, and import accordingly."""

from __future__ import annotations

import tarfile
from pathlib import Path

from forge.core.cas import CAS
from forge.core.oci import compression as comp
from forge.core.oci.image import Image, Index, store_image, with_config
from forge.core.platforms import Platform


def kind_of(path: Path, cas: CAS) -> str:
    """``oci-layout``, ``docker-archive`` or ``rootfs``."""
    if path.is_dir():
        return "oci-layout"
    with comp.uncompressed_file(path, cas.tempdir) as plain, tarfile.open(plain) as tf:
        names = set()
        for i, member in enumerate(tf):
            names.add(member.name.lstrip("./"))
            if i > 64:
                break
    if "oci-layout" in names and "index.json" in names:
        return "oci-layout-tar"
    if "manifest.json" in names:
        return "docker-archive"
    return "rootfs"


def import_any(cas: CAS, path: Path, platform: Platform, *, epoch: int = 0) -> Image:
    """Import ``path`` as an image of ``platform`` (an index yields that platform's image)."""
    from forge.core.oci.docker_archive import import_docker_archive
    from forge.core.oci.layout import read_layout
    from forge.core.oci.rootfs_tar import import_rootfs_tar

    kind = kind_of(Path(path), cas)
    if kind == "rootfs":
        return import_rootfs_tar(cas, path, platform, epoch=epoch)
    if kind == "oci-layout":
        value = read_layout(cas, path)
        image = value.image(platform) if isinstance(value, Index) else value
    elif kind == "docker-archive":
        image = import_docker_archive(cas, path)
    else:
        from forge.core.oci.layout import LayoutError

        raise LayoutError(f"{path} is a tarred OCI layout: unpack it and import the directory")
    if image.platform is None or image.platform != platform:
        # An archive may carry no or the wrong platform; the target's platform is the truth.
        image = with_config(image, platform=platform, epoch=epoch)
        store_image(cas, image)
    return image
