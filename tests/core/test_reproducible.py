"""Reproducibility: the same targets in two checkouts, at different times, under different
umasks, give byte-identical layers and identical image digests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.services import testdata

FILES = {
    "p/BUILD": (
        'layer(name = "data", srcs = glob(["data/**"]), strip_prefix = "data", prefix = "/srv")\n'
        'layer(name = "tools", srcs = ["run.sh"], prefix = "/usr/local/bin", mode_map = {"run.sh": "0750"})\n'
        'layer(name = "z", srcs = glob(["data/**"]), compression = "zstd")\n'
    ),
    "p/data/a.txt": "alpha\n", "p/data/sub/b.txt": "beta\n", "p/run.sh": "#!/bin/sh\necho hi\n",
}


def checkout(tmp_path: Path, name: str, umask: int, mtime: int) -> Path:
    root = tmp_path / name
    old = os.umask(umask)
    try:
        for rel, content in {"WORKSPACE.toml": '[workspace]\nname = "r"\n', **FILES}.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            os.utime(path, (mtime, mtime))
        os.chmod(root / "p/run.sh", 0o777 & ~umask)
    finally:
        os.umask(old)
    return root


def build(root: Path, cache: Path, *targets: str) -> None:
    env = {**os.environ, "FORGE_CACHE": str(cache), "CI": "true"}
    subprocess.run([sys.executable, "-m", "forge.cli", "build", *targets], cwd=root, env=env, check=True,
                   capture_output=True)


def test_layers_are_byte_identical_across_checkouts(tmp_path):
    one = checkout(tmp_path, "one", 0o022, 1_000_000)
    two = checkout(tmp_path, "elsewhere/two", 0o002, 1_700_000_000)
    build(one, tmp_path / "cache1", "//p:all")
    build(two, tmp_path / "cache2", "//p:all")
    for name in ("data/layer.tar.gz", "tools/layer.tar.gz", "z/layer.tar.zst"):
        a = (one / "forge-out/p" / name).read_bytes()
        b = (two / "forge-out/p" / name).read_bytes()
        assert a == b, name
    import tarfile

    with tarfile.open(one / "forge-out/p/tools/layer.tar.gz") as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert members["usr/local/bin/run.sh"].mode == 0o750
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members.values())


def test_image_digest_is_identical_across_checkouts(tmp_path):
    tar = testdata("busybox-amd64.tar")
    extra = (
        'oci_import(name = "bb", src = "bb.tar", platform = "amd64")\n'
        'image(name = "img", base = ":bb", layers = [":data", ":tools"], env = {"A": "1"},'
        ' entrypoint = ["/usr/local/bin/run.sh"])\n'
    )
    digests = []
    for i, (umask, mtime) in enumerate(((0o022, 10), (0o077, 2_000_000))):
        root = checkout(tmp_path, f"co{i}", umask, mtime)
        (root / "p/BUILD").write_text(FILES["p/BUILD"] + extra)
        shutil.copy(tar, root / "p/bb.tar")
        build(root, tmp_path / f"cache{i}", "//p:img")
        index = (root / "forge-out/p/img/index.json").read_text()
        digests.append(index)
    assert digests[0] == digests[1]
