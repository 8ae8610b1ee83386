"""OCI image layout directories: write from the CAS, read back into another."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from forge.core.cas import CAS
from forge.core.oci.image import Index, make_index, store_image
from forge.core.oci.layout import LayoutError, read_layout, write_layout
from forge.core.oci.validate import validate_image

from .conftest import build_image


def test_image_layout_round_trip(tmp_path, cas, fresh_cas):
    image = build_image(cas)
    dest = write_layout(cas, image, tmp_path / "layout", ref_name="app:1")
    assert json.loads((dest / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((dest / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": "app:1"}
    blobs = {p.name for p in (dest / "blobs" / "sha256").iterdir()}
    assert blobs == {d.split(":")[1] for d in (image.digest, image.config_digest, image.layers[0].digest)}
    assert read_layout(fresh_cas, dest) == image
    validate_image(fresh_cas, image.digest)


def test_index_layout_round_trip(tmp_path, cas, fresh_cas):
    index = store_image(cas, make_index([build_image(cas, "amd64", b"a"), build_image(cas, "arm64", b"b")]))
    dest = write_layout(cas, index, tmp_path / "layout")
    value = read_layout(fresh_cas, dest)
    assert isinstance(value, Index) and value == index
    validate_image(fresh_cas, index.digest)


def test_blobs_are_copies_never_rewritten_and_repaired_when_edited(tmp_path, cas):
    """Regression (issue 11, bug 4): a layout never shares an inode with the CAS, so
    flipping a byte in it cannot corrupt the store; an edited layout blob of the same size
    is found (its stat data changed) and replaced; an untouched one is never rewritten."""
    image = build_image(cas)
    dest = write_layout(cas, image, tmp_path / "layout")
    digest = image.layers[0].digest
    layer_path = dest / "blobs" / "sha256" / digest.split(":")[1]
    assert layer_path.stat().st_ino != cas.path(digest).stat().st_ino
    before = layer_path.stat()
    other = build_image(cas, extra=b"second")
    write_layout(cas, other, dest)
    assert layer_path.stat().st_mtime_ns == before.st_mtime_ns  # same blob: left alone
    assert json.loads((dest / "index.json").read_text())["manifests"][0]["digest"] == other.digest

    data = bytearray(layer_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer_path.write_bytes(bytes(data))  # same size, other bytes
    assert cas.verify(digest)  # the store is untouched
    write_layout(cas, image, dest)
    assert hashlib.sha256(layer_path.read_bytes()).hexdigest() == digest.split(":")[1]


def test_old_hard_links_into_the_cas_are_replaced_by_copies(tmp_path, cas):
    image = build_image(cas)
    dest = tmp_path / "layout" / "blobs" / "sha256"
    dest.mkdir(parents=True)
    digest = image.layers[0].digest
    os.link(cas.path(digest), dest / digest.split(":")[1])  # what forge-out held before
    write_layout(cas, image, tmp_path / "layout")
    assert (dest / digest.split(":")[1]).stat().st_ino != cas.path(digest).stat().st_ino


def test_corrupt_layout_blob_is_not_stored(tmp_path, cas, fresh_cas):
    image = build_image(cas)
    dest = write_layout(cas, image, tmp_path / "layout")
    layer_path = dest / "blobs" / "sha256" / image.layers[0].digest.split(":")[1]
    layer_path.write_bytes(b"not the layer")
    with pytest.raises(LayoutError, match="corrupt"):
        read_layout(fresh_cas, dest)
    assert not fresh_cas.has(image.layers[0].digest)
    assert not fresh_cas.has(image.digest)


def test_incomplete_and_ambiguous_layouts(tmp_path, cas, fresh_cas):
    with pytest.raises(LayoutError, match="no index.json"):
        read_layout(fresh_cas, tmp_path)
    a, b = build_image(cas, extra=b"a"), build_image(cas, extra=b"b")
    dest = write_layout(cas, a, tmp_path / "layout", ref_name="a")
    index = json.loads((dest / "index.json").read_text())
    write_layout(cas, b, dest, ref_name="b")
    both = json.loads((dest / "index.json").read_text())
    both["manifests"] += index["manifests"]
    (dest / "index.json").write_text(json.dumps(both))
    with pytest.raises(LayoutError, match="lists 2 manifests; pick one with ref_name"):
        read_layout(fresh_cas, dest)
    assert read_layout(fresh_cas, dest, ref_name="a") == a
    with pytest.raises(LayoutError, match="no manifest named 'c'; names: b, a"):
        read_layout(fresh_cas, dest, ref_name="c")
    (dest / "blobs" / "sha256" / b.config_digest.split(":")[1]).unlink()
    with pytest.raises(LayoutError, match=f"blob {b.config_digest} is missing"):
        read_layout(CAS(tmp_path / "third-cas"), dest, ref_name="b")
