"""docker-archive export/import and rootfs tarball import (no engine needed here)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile

import pytest

from forge.core.oci.docker_archive import (
    DockerArchiveError,
    import_docker_archive,
    write_docker_archive,
)
from forge.core.oci.rootfs_tar import import_rootfs_tar
from forge.core.oci.validate import validate_image
from forge.core.platforms import parse_platform

from .conftest import BUSYBOX, build_image, tar_members


def _archive(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_round_trip(tmp_path, cas, fresh_cas, busybox_image):
    path = tmp_path / "image.tar"
    write_docker_archive(cas, busybox_image, path, repo_tags=["forge-test/busybox:1"])
    with tarfile.open(path) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        layer_name = manifest[0]["Layers"][0]
        layer_tar = tf.extractfile(layer_name).read()
    assert manifest[0]["Config"] == busybox_image.config_digest.split(":")[1] + ".json"
    assert manifest[0]["RepoTags"] == ["forge-test/busybox:1"]
    assert "sha256:" + hashlib.sha256(layer_tar).hexdigest() == busybox_image.diff_ids[0]
    stream = io.BytesIO()
    write_docker_archive(cas, busybox_image, stream, repo_tags=["forge-test/busybox:1"])
    assert stream.getvalue() == path.read_bytes()  # deterministic, to a file or a stream

    imported = import_docker_archive(fresh_cas, path)
    assert imported.config_digest == busybox_image.config_digest
    assert imported.diff_ids == busybox_image.diff_ids
    assert imported.digest == busybox_image.digest  # same layer bytes, same gzip: same blobs
    validate_image(fresh_cas, imported.digest)


def test_legacy_layout_with_compressed_layer(tmp_path, cas, fresh_cas):
    """Docker 1.10-24: ``<id>/layer.tar``, ``<id>/json``, ``repositories``; layers may be gzip."""
    image = build_image(cas)
    stream = io.BytesIO()
    write_docker_archive(cas, image, stream)
    stream.seek(0)
    with tarfile.open(fileobj=stream) as tf:
        layer = tf.extractfile(tf.getmembers()[2]).read()
    config = cas.read_bytes(image.config_digest)
    v1 = "f" * 64
    path = tmp_path / "legacy.tar"
    path.write_bytes(_archive({
        f"{v1}/VERSION": b"1.0",
        f"{v1}/json": b"{}",
        f"{v1}/layer.tar": gzip.compress(layer),
        "config.json": config,
        "repositories": b'{"a":{"1":"' + v1.encode() + b'"}}',
        "manifest.json": json.dumps([{"Config": "config.json", "RepoTags": ["a:1"],
                                      "Layers": [f"{v1}/layer.tar"]}]).encode(),
    }))
    imported = import_docker_archive(fresh_cas, path)
    assert imported.diff_ids == image.diff_ids and imported.config_digest == image.config_digest
    validate_image(fresh_cas, imported.digest)


def test_known_layers_are_reused(tmp_path, cas, fresh_cas):
    image = build_image(cas)
    path = tmp_path / "image.tar"
    write_docker_archive(cas, image, path)
    known = {layer.diff_id: layer for layer in image.layers}
    imported = import_docker_archive(cas, path, known_layers=known, compression="zstd")
    assert imported.layers == image.layers  # not re-compressed as zstd


def test_archive_errors(tmp_path, cas):
    image = build_image(cas)
    config = cas.read_bytes(image.config_digest)
    bad = tmp_path / "bad.tar"
    bad.write_bytes(_archive({"c.json": config, "l.tar": _archive({"x": b"other"}),
                              "manifest.json": b'[{"Config":"c.json","Layers":["l.tar"]}]'}))
    with pytest.raises(DockerArchiveError, match="the layer files hash to diff_ids"):
        import_docker_archive(cas, bad)
    two = tmp_path / "two.tar"
    two.write_bytes(_archive({"manifest.json": json.dumps([
        {"Config": "c.json", "RepoTags": ["a:1"], "Layers": []},
        {"Config": "c.json", "RepoTags": ["b:1"], "Layers": []}]).encode()}))
    with pytest.raises(DockerArchiveError, match=r"holds 2 images; pick one by tag \(a:1, b:1\)"):
        import_docker_archive(cas, two)
    with pytest.raises(DockerArchiveError, match="no image tagged 'c:1'"):
        import_docker_archive(cas, two, tag="c:1")
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(_archive({"bin/x": b"x"}))
    with pytest.raises(DockerArchiveError, match="has no manifest.json"):
        import_docker_archive(cas, rootfs)


def test_rootfs_import_is_deterministic(tmp_path, cas, fresh_cas):
    tree = tmp_path / "rootfs"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "busybox").write_bytes(BUSYBOX.read_bytes())
    (tree / "bin" / "busybox").chmod(0o755)
    (tree / "bin" / "sh").symlink_to("busybox")
    (tree / "tmp").mkdir()
    (tree / "tmp").chmod(0o1777)
    plain = tmp_path / "a.tar"
    squashed = tmp_path / "b.tar.gz"
    owned = tmp_path / "c.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(plain), "."], check=True)
    subprocess.run(["tar", "-C", str(tree), "--sort=name", "--mtime=@999", "--owner=0", "--group=0",
                    "--numeric-owner", "-czf", str(squashed), "tmp", "bin"], check=True)
    subprocess.run(["tar", "-C", str(tree), "--owner=5", "-cf", str(owned), "."], check=True)
    a = import_rootfs_tar(cas, plain, "linux/arm64")
    b = import_rootfs_tar(fresh_cas, squashed, parse_platform("aarch64"))
    assert a == b  # order, mtimes, names, compression and "./" prefixes are not content
    assert a.platform == parse_platform("linux/arm64/v8")
    assert a.config["history"][0]["created_by"] == "forge: import rootfs tarball"
    assert import_rootfs_tar(cas, owned, "linux/arm64").diff_ids != a.diff_ids  # owners are
    validate_image(cas, a.digest)
    validate_image(fresh_cas, b.digest)
    members = tar_members(gzip.decompress(cas.read_bytes(a.layers[0].digest)))
    assert members["tmp"].mode == 0o1777
    assert members["bin/sh"].issym()
