"""Image, Layer and Index values: round trips, immutability, canonical documents."""

from __future__ import annotations

import json

import pytest

from forge.core.cas import sha256_digest
from forge.core.errors import PlatformError
from forge.core.oci import media
from forge.core.oci.image import (
    EMPTY_IMAGE,
    DuplicatePlatformError,
    Image,
    Index,
    append_layers,
    canonical_json,
    load,
    load_image,
    load_index,
    make_index,
    store_image,
    with_config,
)
from forge.core.oci.layer_writer import LayerEntry, write_layer
from forge.core.oci.media import ImageFormatError, UnsupportedMediaType
from forge.core.oci.validate import validate_image
from forge.core.platforms import parse_platform

from .conftest import build_image


def test_round_trip_through_the_cas(cas, fresh_cas):
    image = build_image(cas)
    assert load_image(cas, image.digest) == image
    assert load(cas, image.digest).config == image.config
    doc = json.loads(image.manifest_bytes)
    assert doc["mediaType"] == media.OCI_MANIFEST
    assert doc["config"] == {"mediaType": media.OCI_CONFIG, "digest": image.config_digest,
                             "size": image.config_size}
    assert image.manifest_bytes == canonical_json(doc)
    assert image.config_bytes == canonical_json(image.config)
    config = image.config
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["created"] == "1970-01-01T00:00:00Z"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [image.layers[0].diff_id]}
    assert config["history"] == [{"created": "1970-01-01T00:00:00Z", "created_by": "test layer"}]
    with pytest.raises(Exception, match="not in the cache"):
        load_image(fresh_cas, image.digest)


def test_operations_return_new_values(cas):
    layer = write_layer(cas, [LayerEntry.file("a", b"a")])
    base = with_config(EMPTY_IMAGE, platform="arm64", env=["A=1", "B=2"], labels={"x": "1"})
    before = (base.manifest_bytes, base.config_bytes)
    grown = append_layers(base, layer)
    changed = with_config(grown, env=["B=3", "C=4"], labels={"x": None, "y": "2"}, workdir="/w", user="1000")
    assert (base.manifest_bytes, base.config_bytes) == before
    assert base.layers == () and grown.layers == (layer,) and changed.layers == (layer,)
    assert EMPTY_IMAGE.layers == () and EMPTY_IMAGE.platform is None
    run = changed.config["config"]
    assert run["Env"] == ["A=1", "B=3", "C=4"]
    assert run["Labels"] == {"y": "2"}
    assert (run["WorkingDir"], run["User"]) == ("/w", "1000")
    assert grown.config["config"]["Env"] == ["A=1", "B=2"]
    changed.config["config"]["Env"].append("D=5")  # a copy: the value does not change
    assert changed.config["config"]["Env"] == ["A=1", "B=3", "C=4"]
    assert str(changed.platform) == "linux/arm64/v8"
    assert changed.config["variant"] == "v8"
    assert "variant" not in with_config(changed, platform="amd64").config


def test_entrypoint_clears_inherited_cmd_like_a_dockerfile():
    image = with_config(EMPTY_IMAGE, cmd=["/bin/sh"])
    assert with_config(image, entrypoint=["/app"]).config["config"].get("Cmd") is None
    both = with_config(image, entrypoint=["/app"], cmd=["--flag"]).config["config"]
    assert (both["Entrypoint"], both["Cmd"]) == (["/app"], ["--flag"])


def test_bad_env_entry():
    with pytest.raises(Exception, match="not KEY=VALUE"):
        with_config(EMPTY_IMAGE, env=["JUSTAKEY"])


def test_epoch_sets_created_and_the_environment_does_not(monkeypatch, cas):
    """Regression (issue 11, bug 1): writers never read SOURCE_DATE_EPOCH themselves (an
    output would then depend on a value outside its key); they take the epoch explicitly."""
    assert with_config(EMPTY_IMAGE, platform="amd64", epoch=86400).config["created"] == "1970-01-02T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    assert with_config(EMPTY_IMAGE, platform="amd64").config["created"] == "1970-01-01T00:00:00Z"


def test_bad_source_date_epoch_is_a_config_error():
    from forge.core.workspace import source_date_epoch

    assert source_date_epoch(None) == source_date_epoch("") == 0
    assert source_date_epoch(" 86400 ") == 86400
    for bad in ("yesterday", "-1", "1.5"):
        with pytest.raises(Exception, match="SOURCE_DATE_EPOCH"):
            source_date_epoch(bad)


def test_index_sorted_and_stored(cas):
    arm = build_image(cas, "arm64", b"arm")
    amd = build_image(cas, "amd64", b"amd")
    index = make_index([arm, amd])
    assert make_index([amd, arm]).digest == index.digest
    assert [str(p) for p in index.platforms] == ["linux/amd64", "linux/arm64/v8"]
    assert index.image("aarch64") == arm
    with pytest.raises(PlatformError, match="it has: linux/amd64, linux/arm64/v8"):
        index.image("armv7")
    entries = index.entries
    assert entries[1]["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    store_image(cas, index)
    assert load_index(cas, index.digest) == index
    assert validate_image(cas, index.digest) == index
    with pytest.raises(ImageFormatError, match="is an index"):
        load_image(cas, index.digest)


def test_index_refuses_two_images_of_one_platform(cas):
    one = build_image(cas, "amd64", b"1")
    two = build_image(cas, "x86_64", b"2")
    with pytest.raises(DuplicatePlatformError, match="two images for linux/amd64"):
        make_index([one, two])
    with pytest.raises(Exception, match="no platform"):
        make_index([EMPTY_IMAGE])


def test_store_refuses_an_image_whose_layers_are_missing(cas, fresh_cas):
    image = build_image(cas)
    with pytest.raises(ImageFormatError, match="not in the CAS"):
        store_image(fresh_cas, image)


def _docker_image(cas) -> tuple[bytes, bytes]:
    """Docker schema 2 documents, written the way Docker writes them (not canonical)."""
    layer = write_layer(cas, [LayerEntry.file("d", b"docker")])
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}, indent=3).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": media.DOCKER_MANIFEST,
        "config": {"mediaType": media.DOCKER_CONFIG, "size": len(config), "digest": sha256_digest(config)},
        "layers": [{"mediaType": media.DOCKER_LAYER_GZIP, "size": layer.size, "digest": layer.digest}],
    }, indent=3).encode()
    return manifest, config


def test_docker_schema2_is_read_and_kept_byte_for_byte(cas):
    manifest, config = _docker_image(cas)
    cas.put_bytes(config)
    digest = cas.put_bytes(manifest).digest
    image = load_image(cas, digest)
    assert image.digest == digest and image.media_type == media.DOCKER_MANIFEST
    assert image.layers[0].media_type == media.DOCKER_LAYER_GZIP
    validate_image(cas, digest)
    derived = with_config(image, env=["X=1"])  # what forge writes is OCI
    assert derived.media_type == media.OCI_MANIFEST
    assert derived.layers[0].media_type == media.OCI_LAYER_GZIP
    assert derived.layers[0].digest == image.layers[0].digest


def test_docker_manifest_list_is_read(cas):
    image = build_image(cas)
    doc = {"schemaVersion": 2, "mediaType": media.DOCKER_MANIFEST_LIST,
           "manifests": [{**image.descriptor()}]}
    digest = cas.put_bytes(json.dumps(doc).encode()).digest
    assert load_index(cas, digest).images == (image,)


def test_unknown_media_types_are_refused(cas):
    image = build_image(cas)
    doc = json.loads(image.manifest_bytes)
    doc["layers"][0]["mediaType"] = "application/vnd.example.blob"
    with pytest.raises(UnsupportedMediaType, match="unsupported layer media type"):
        Image(canonical_json(doc), image.config_bytes)
    doc = json.loads(image.manifest_bytes)
    doc["mediaType"] = "application/vnd.example.manifest"
    with pytest.raises(UnsupportedMediaType, match="unsupported manifest media type"):
        Image(canonical_json(doc), image.config_bytes)
    with pytest.raises(UnsupportedMediaType, match="schemaVersion 1"):
        Image(b'{"schemaVersion": 1}', image.config_bytes)


def test_manifest_and_config_must_agree(cas):
    image = build_image(cas)
    with pytest.raises(ImageFormatError, match="the config given is"):
        Image(image.manifest_bytes, image.config_bytes + b" ")
    other = build_image(cas, extra=b"other")
    with pytest.raises(ImageFormatError, match="image given is"):
        Index(make_index([image]).manifest_bytes, (other,))


def test_platform_normalization_in_values():
    assert with_config(EMPTY_IMAGE, platform="armhf").platform == parse_platform("linux/arm/v7")
