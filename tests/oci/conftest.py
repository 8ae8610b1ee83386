"""Fixtures for the OCI tests: a fresh CAS, small trees to layer, a busybox image.

Services (registry, engine) come from ``tests.services``: skipped when absent, failed
under ``CI=true``. Every image a test builds is checked with ``validate_image``.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid
from pathlib import Path

import pytest

from forge.core.cas import CAS
from forge.core.oci.image import EMPTY_IMAGE, Image, append_layers, store_image, with_config
from forge.core.oci.layer_writer import LayerEntry, write_layer
from forge.core.oci.validate import validate_image

BUSYBOX = Path("/bin/busybox")  # busybox-static: runs in an empty rootfs
HELLO = b"hello from a forge layer\n"


@pytest.fixture
def cas(tmp_path: Path) -> CAS:
    return CAS(tmp_path / "cas")


@pytest.fixture
def fresh_cas(tmp_path: Path) -> CAS:
    """A second, empty CAS (where pulls and imports land)."""
    return CAS(tmp_path / "fresh-cas")


@pytest.fixture
def repo_name() -> str:
    """A repository name no other test (or earlier run) used."""
    return f"forge-test/oci-{uuid.uuid4().hex[:12]}"


def busybox_entries() -> list[LayerEntry]:
    return [
        LayerEntry.file("bin/busybox", BUSYBOX, mode=0o755),
        LayerEntry.symlink("bin/sh", "busybox"),
        LayerEntry.file("etc/forge-hello", HELLO),
    ]


def build_image(cas: CAS, platform: str = "linux/amd64", extra: bytes = b"") -> Image:
    """A stored, validated one-layer image; ``extra`` makes its layer unique."""
    entries = [LayerEntry.file("etc/forge-hello", HELLO), LayerEntry.file("etc/extra", extra)]
    layer = write_layer(cas, entries)
    image = with_config(append_layers(EMPTY_IMAGE, layer, history="test layer"),
                        platform=platform, cmd=["/bin/sh"])
    store_image(cas, image)
    validate_image(cas, image.digest)
    return image


@pytest.fixture
def busybox_image(cas: CAS) -> Image:
    if not os.access(BUSYBOX, os.X_OK):
        pytest.fail(f"{BUSYBOX} is missing: install busybox-static (scripts/services.sh does)")
    layer = write_layer(cas, busybox_entries())
    image = with_config(append_layers(EMPTY_IMAGE, layer, history="busybox"), platform="linux/amd64",
                        cmd=["/bin/sh", "-c", "cat /etc/forge-hello"])
    store_image(cas, image)
    validate_image(cas, image.digest)
    return image


def tar_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    """The members of an uncompressed tar, by name."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: m for m in tf.getmembers()}
