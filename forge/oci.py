"""``forge.oci``: OCI content beyond the image values ``forge`` exports at top level —
media types, registries, importers and exporters — for rules and plugins.

    import forge

    client = forge.oci.RegistryClient("registry.example.com")
    image = client.pull(rc.cas, "base/debian", "sha256:…", platform=rc.platform)

The image values themselves (``Image``, ``Layer``, ``Index``, ``append_layers``,
``with_config``, ``write_layer``, …) are ``forge.<name>``. Names resolve on first use, so
importing this module loads neither the registry client nor oras.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forge._lazy import lazy_getattr

_LAZY: dict[str, tuple[str, str | None]] = {
    # media types: the constants (OCI_MANIFEST, OCI_LAYER_GZIP, …) and their families
    "media": ("forge.core.oci.media", None),
    # stored images
    "load": ("forge.core.oci.image", "load"),
    "load_index": ("forge._documented", "load_index"),
    "sha256_digest": ("forge._documented", "sha256_digest"),
    # registries
    "RegistryClient": ("forge.core.oci.registry_client", "RegistryClient"),
    "Reference": ("forge.core.oci.reference", "Reference"),
    "parse_reference": ("forge.core.oci.reference", "parse_reference"),
    "Credentials": ("forge.core.oci.registry_auth", "Credentials"),
    "split_credentials": ("forge.core.oci.reference", "split_credentials"),
    "redact_url": ("forge.core.oci.reference", "redact_url"),
    "scrub": ("forge.core.oci.reference", "scrub"),
    "RegistryHTTPError": ("forge.core.errors", "RegistryHTTPError"),
    "ContentMismatch": ("forge.core.errors", "ContentMismatch"),
    # bringing images in and out
    "import_any": ("forge.core.oci.importers", "import_any"),
    "import_rootfs_tar": ("forge.core.oci.rootfs_tar", "import_rootfs_tar"),
    "import_docker_archive": ("forge.core.oci.docker_archive", "import_docker_archive"),
    "write_docker_archive": ("forge.core.oci.docker_archive", "write_docker_archive"),
    "chain_ids": ("forge.core.oci.docker_archive", "chain_ids"),
    "store_tar": ("forge.core.oci.layer_writer", "store_tar"),
    "clamp_mtimes": ("forge.core.oci.layer_writer", "clamp_mtimes"),
    "open_decompressed": ("forge.core.oci.compression", "open_decompressed"),
    "assemble_image": ("forge.core.oci.image", "assemble_image"),
    "write_layout": ("forge.core.oci.layout", "write_layout"),
    # image deltas (the format: forge.delta_apply, the device-side applier)
    "DeltaCodec": ("forge.core.oci.delta", "DeltaCodec"),
    "DeltaCodecRegistry": ("forge.core.oci.delta", "DeltaCodecRegistry"),
    "ImageDelta": ("forge.core.oci.delta", "ImageDelta"),
    "delta_codecs": ("forge.core.oci.delta", "delta_codecs"),
    "delta_codec": ("forge.core.oci.delta", "delta_codec"),
    "make_image_delta": ("forge.core.oci.delta", "make_image_delta"),
    "delta_index": ("forge.core.oci.delta", "delta_index"),
    "load_delta_index": ("forge.core.oci.delta", "load_delta_index"),
    "write_delta_layout": ("forge.core.oci.delta", "write_delta_layout"),
    "push_deltas": ("forge.core.oci.delta", "push_deltas"),
    "import_release": ("forge.core.oci.delta", "import_release"),
}

__all__ = ["compression_level", *_LAZY]


def compression_level(kind: str, level: int | None) -> int:
    """The level a layer of compression ``kind`` (``gzip``, ``zstd``, ``none``) is written
    with when ``level`` is asked for (None: the default); ValueError for an unknown kind or
    a level out of range. Two spellings of one output get one level, hence one key."""
    from forge.core.oci.compression import check

    return check(kind, level)


__getattr__ = lazy_getattr(globals(), "forge.oci", _LAZY)


if TYPE_CHECKING:  # for type checkers and IDEs
    from forge._documented import load_index, sha256_digest  # noqa: F401
    from forge.core.errors import ContentMismatch, RegistryHTTPError  # noqa: F401
    from forge.core.oci import media  # noqa: F401
    from forge.core.oci.compression import open_decompressed  # noqa: F401
    from forge.core.oci.delta import (  # noqa: F401
        DeltaCodec,
        DeltaCodecRegistry,
        ImageDelta,
        delta_codec,
        delta_codecs,
        delta_index,
        import_release,
        load_delta_index,
        make_image_delta,
        push_deltas,
        write_delta_layout,
    )
    from forge.core.oci.docker_archive import (  # noqa: F401
        chain_ids,
        import_docker_archive,
        write_docker_archive,
    )
    from forge.core.oci.image import assemble_image, load  # noqa: F401
    from forge.core.oci.importers import import_any  # noqa: F401
    from forge.core.oci.layer_writer import clamp_mtimes, store_tar  # noqa: F401
    from forge.core.oci.layout import write_layout  # noqa: F401
    from forge.core.oci.reference import (  # noqa: F401
        Reference,
        parse_reference,
        redact_url,
        scrub,
        split_credentials,
    )
    from forge.core.oci.registry_auth import Credentials  # noqa: F401
    from forge.core.oci.registry_client import RegistryClient  # noqa: F401
    from forge.core.oci.rootfs_tar import import_rootfs_tar  # noqa: F401
