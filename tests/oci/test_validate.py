"""validate_image finds every way an image can disagree with itself."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from forge.core.oci.image import (
    EMPTY_IMAGE,
    Index,
    append_layers,
    canonical_json,
    make_index,
    store_image,
    with_config,
)
from forge.core.oci.layer_writer import LayerEntry, write_layer
from forge.core.oci.validate import InvalidImage, validate_image

from .conftest import build_image


def _image_with(cas, layer):
    image = with_config(append_layers(EMPTY_IMAGE, layer), platform="amd64")
    store_image(cas, image)
    return image


def test_a_good_image_and_index_pass(cas):
    image = build_image(cas)
    assert validate_image(cas, image.digest) == image
    index = store_image(cas, make_index([image, build_image(cas, "arm64", b"arm")]))
    assert validate_image(cas, index.digest) == index


def test_wrong_diff_id(cas):
    layer = write_layer(cas, [LayerEntry.file("a", b"a")])
    wrong = replace(layer, diff_id="sha256:" + "ab" * 32)
    image = _image_with(cas, wrong)
    with pytest.raises(InvalidImage, match="config rootfs.diff_ids says sha256:abab"):
        validate_image(cas, image.digest)


def test_missing_blob(cas):
    image = build_image(cas)
    cas.evict(image.layers[0].digest)
    with pytest.raises(InvalidImage, match="blob is missing"):
        validate_image(cas, image.digest)


def test_wrong_size(cas):
    layer = write_layer(cas, [LayerEntry.file("a", b"a")])
    image = _image_with(cas, replace(layer, size=layer.size + 1))
    with pytest.raises(InvalidImage, match=f"manifest says {layer.size + 1} bytes; the blob has {layer.size}"):
        validate_image(cas, image.digest)


def test_corrupt_blob_is_reported_and_evicted(cas):
    image = build_image(cas)
    path = cas.path(image.layers[0].digest)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC: decompression fails too
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidImage, match="layer 0 .*evicted from the CAS"):
        validate_image(cas, image.digest)
    assert not cas.has(image.layers[0].digest)


def test_not_decompressible(cas):
    plain = write_layer(cas, [LayerEntry.file("a", b"a")], compression="none")
    image = _image_with(cas, replace(plain, media_type="application/vnd.oci.image.layer.v1.tar+gzip"))
    with pytest.raises(InvalidImage, match="does not decompress as gzip"):
        validate_image(cas, image.digest)


def test_missing_platform(cas):
    layer = write_layer(cas, [LayerEntry.file("a", b"a")])
    image = store_image(cas, append_layers(EMPTY_IMAGE, layer))
    with pytest.raises(InvalidImage, match="has no architecture"):
        validate_image(cas, image.digest)


def test_all_problems_in_one_message(cas):
    layer = write_layer(cas, [LayerEntry.file("a", b"a")])
    other = write_layer(cas, [LayerEntry.file("b", b"b")])
    image = store_image(cas, append_layers(EMPTY_IMAGE, replace(layer, size=1), replace(other, diff_id=layer.diff_id)))
    with pytest.raises(InvalidImage) as info:
        validate_image(cas, image.digest)
    text = str(info.value)
    assert "no architecture" in text and "layer 0" in text and "layer 1" in text


def test_index_entry_platform_must_match_config(cas):
    image = build_image(cas, "amd64")
    doc = json.loads(make_index([image]).manifest_bytes)
    doc["manifests"][0]["platform"] = {"architecture": "arm64", "os": "linux"}
    index = store_image(cas, Index(canonical_json(doc), (image,)))
    with pytest.raises(InvalidImage, match="says linux/arm64/v8; its config says linux/amd64"):
        validate_image(cas, index.digest)


def test_unparseable_manifest(cas):
    digest = cas.put_bytes(b"not json").digest
    with pytest.raises(InvalidImage, match="not JSON"):
        validate_image(cas, digest)
    missing = "sha256:" + "0" * 64
    with pytest.raises(InvalidImage, match="not in the cache"):
        validate_image(cas, missing)
