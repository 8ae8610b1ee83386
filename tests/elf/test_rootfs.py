"""RootFS: paths resolve inside the image root as the kernel would resolve them there;
LayeredRootFS merges OCI layers with whiteouts, opaque directories and hard links."""

from __future__ import annotations

import errno
import os
import tarfile
from pathlib import Path

import pytest

from forge.core.elf.layered import LayeredRootFS, LayerError
from forge.core.elf.rootfs import (
    DIR,
    FILE,
    SYMLINK,
    DirectoryRootFS,
    NoSuchPathError,
    RootFSError,
)
from tests.elf.util import tar_layer


@pytest.fixture
def tree(tmp_path: Path) -> DirectoryRootFS:
    root = tmp_path / "root"
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "usr/bin").mkdir()
    (root / "etc/conf.d").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu/libz.so.1.2.13").write_bytes(b"zlib")
    (root / "usr/lib/x86_64-linux-gnu/libz.so.1").symlink_to("libz.so.1.2.13")
    (root / "lib").symlink_to("usr/lib")
    # absolute: on the host this would point at the host's /usr
    (root / "usr/bin/abs").symlink_to("/usr/lib/x86_64-linux-gnu/libz.so.1")
    (root / "usr/bin/hostonly").symlink_to("/usr/bin/env")  # exists on the host only
    (root / "usr/bin/up").symlink_to("../../../../../../etc")  # cannot leave the root
    (root / "usr/bin/loop").symlink_to("loop2")
    (root / "usr/bin/loop2").symlink_to("/usr/bin/loop")
    (root / "usr/bin/dangling").symlink_to("nowhere")
    (root / "etc/conf.d/a.conf").write_text("a")
    (root / "etc/conf.d/b.conf").write_text("b")
    (root / "etc/conf.d/.hidden.conf").write_text("h")
    (root / "etc/x.conf").write_text("x")
    return DirectoryRootFS(root)


def test_symlinks_resolve_inside_the_root(tree: DirectoryRootFS) -> None:
    found = tree.resolve("/lib/x86_64-linux-gnu/libz.so.1")
    assert found is not None
    assert found.path == "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"
    assert found.links == ("/lib", "/usr/lib/x86_64-linux-gnu/libz.so.1")
    assert tree.realpath("/usr/bin/abs") == "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"
    assert tree.read_bytes("/usr/bin/abs") == b"zlib"
    assert tree.resolve("/usr/bin/hostonly") is None  # never the host's /usr/bin/env
    assert os.path.exists("/usr/bin/env")


def test_dotdot_is_clamped_at_the_root_and_taken_physically(tree: DirectoryRootFS) -> None:
    assert tree.realpath("/usr/bin/up/x.conf") == "/etc/x.conf"
    assert tree.realpath("/../../../etc/x.conf") == "/etc/x.conf"
    # /lib is a link to usr/lib, so /lib/.. is /usr, as the kernel resolves it
    assert tree.realpath("/lib/../bin/abs") == "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"
    assert tree.realpath("etc/x.conf") == "/etc/x.conf"  # relative paths start at /


def test_loops_dangling_links_and_files_used_as_directories(tree: DirectoryRootFS) -> None:
    assert tree.lookup("/usr/bin/loop") == errno.ELOOP
    assert tree.lookup("/usr/bin/dangling") == errno.ENOENT
    assert tree.lookup("/etc/x.conf/y") == errno.ENOTDIR
    assert tree.resolve("/usr/bin/loop") is None
    assert not tree.exists("/usr/bin/dangling")
    with pytest.raises(NoSuchPathError, match="did you mean 'x.conf'"):
        tree.realpath("/etc/x.cnf")


def test_entries_listing_and_reading(tree: DirectoryRootFS) -> None:
    link = tree.lstat("/usr/bin/abs")
    assert link is not None and link.kind == SYMLINK
    assert link.target == "/usr/lib/x86_64-linux-gnu/libz.so.1"
    target = tree.stat("/usr/bin/abs")
    assert target is not None and target.kind == FILE and target.size == 4
    assert tree.lstat("/lib/x86_64-linux-gnu").kind == DIR  # parents are followed
    assert tree.lstat("/nope") is None
    assert tree.listdir("/lib/x86_64-linux-gnu") == ["libz.so.1", "libz.so.1.2.13"]
    assert tree.is_dir("/lib") and not tree.is_file("/lib")
    with pytest.raises(RootFSError, match="not a regular file"):
        tree.open("/usr")
    assert list(tree.walk_files("/etc")) == [
        "/etc/conf.d/.hidden.conf", "/etc/conf.d/a.conf", "/etc/conf.d/b.conf", "/etc/x.conf"]


def test_glob_matches_like_glob3(tree: DirectoryRootFS) -> None:
    assert tree.glob("/etc/conf.d/*.conf") == ["/etc/conf.d/a.conf", "/etc/conf.d/b.conf"]
    assert tree.glob("/etc/conf.d/.*.conf") == ["/etc/conf.d/.hidden.conf"]
    assert tree.glob("/e*/*.d/[ab].conf") == ["/etc/conf.d/a.conf", "/etc/conf.d/b.conf"]
    assert tree.glob("/lib/*/libz.so.?") == ["/lib/x86_64-linux-gnu/libz.so.1"]
    assert tree.glob("/etc/x.conf") == ["/etc/x.conf"]
    assert tree.glob("/etc/none/*.conf") == []


def test_a_missing_root_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(NoSuchPathError):
        DirectoryRootFS(tmp_path / "absent")


# --- LayeredRootFS ----------------------------------------------------------------------


@pytest.mark.parametrize("compress", ["", "gzip", "zstd"])
def test_layers_merge_in_order(tmp_path: Path, compress: str) -> None:
    base = tar_layer(tmp_path / "base.tar", {
        "usr": None, "usr/lib": None,
        "usr/lib/libz.so.1.2.13": b"zlib-1",
        "usr/lib/libz.so.1": "libz.so.1.2.13",
        "usr/lib/liba.so": b"a" * 5000,
        "lib": "usr/lib",
        "etc/gone/inner": b"x",
        "etc/keep": b"k",
        "opt/d/old": b"old",
    }, compress=compress)
    top = tar_layer(tmp_path / "top.tar", {
        "usr/lib/libz.so.1.2.13": b"zlib-2",  # replaces
        "etc/.wh.gone": b"",  # deletes a directory and its content
        "opt/d/.wh..wh..opq": b"",  # hides old, keeps new
        "opt/d/new": b"new",
        "usr/lib/.wh.liba.so": b"",
        "usr/lib/liba.so": b"same layer",  # a whiteout never hides its own layer
        "srv/deep/file": b"parents are implied",
    }, compress=compress)
    with LayeredRootFS([base, top]) as fs:
        assert fs.read_bytes("/lib/libz.so.1") == b"zlib-2"
        assert fs.resolve("/lib/libz.so.1").links == ("/lib", "/usr/lib/libz.so.1")
        assert fs.lstat("/etc/gone") is None and fs.lstat("/etc/gone/inner") is None
        assert fs.read_bytes("/etc/keep") == b"k"
        assert fs.listdir("/opt/d") == ["new"]
        assert fs.read_bytes("/usr/lib/liba.so") == b"same layer"
        assert fs.is_dir("/srv/deep")
        assert fs.stat("/usr/lib/libz.so.1").size == 6
        with fs.open("/usr/lib/libz.so.1.2.13") as fh:
            fh.seek(2)
            assert fh.read(2) == b"ib" and fh.tell() == 4
            assert fh.read() == b"-2"


def test_hard_links_and_replacements(tmp_path: Path) -> None:
    path = tmp_path / "l.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in (("bin/busybox", b"BB"), ("dir/sub/x", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, __import__("io").BytesIO(data))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.LNKTYPE, "bin/busybox"
        tf.addfile(link)
    top = tar_layer(tmp_path / "top.tar", {"dir": "/bin", "bin/busybox": "sh"})
    second = tmp_path / "second.tar"
    with tarfile.open(second, "w") as tf:
        link = tarfile.TarInfo("bin/ls")
        link.type, link.linkname = tarfile.LNKTYPE, "bin/sh"  # a hard link into a lower layer
        tf.addfile(link)
    with LayeredRootFS([path, second]) as fs:
        assert fs.read_bytes("/bin/sh") == b"BB" and fs.read_bytes("/bin/ls") == b"BB"
    with LayeredRootFS([path, top]) as fs:
        assert fs.lstat("/dir").kind == SYMLINK  # a link replaces a directory and its tree
        assert fs.listdir("/dir") == ["busybox", "sh"]
        assert fs.read_bytes("/bin/busybox") == b"BB"  # busybox -> sh, sh is a hard link


def test_members_escaping_the_root_are_ignored(tmp_path: Path) -> None:
    layer = tar_layer(tmp_path / "evil.tar", {"../evil": b"x", "./ok": b"ok"})
    with LayeredRootFS([layer]) as fs:
        assert fs.listdir("/") == ["ok"]


def test_bad_layers_are_reported(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(LayerError, match="not a tar archive"):
        LayeredRootFS([tmp_path / "junk"])
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(LayerError, match="corrupt"):
        LayeredRootFS([tmp_path / "bad.gz"])
    with pytest.raises(LayerError, match="cannot read"):
        LayeredRootFS([tmp_path / "absent"])


def test_close_removes_the_decompressed_copies(tmp_path: Path) -> None:
    layer = tar_layer(tmp_path / "l.tar", {"a": b"a"}, compress="zstd")
    fs = LayeredRootFS([layer], tmpdir=str(tmp_path))
    assert fs.read_bytes("/a") == b"a"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("forge-rootfs-")]
    fs.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("forge-rootfs-")]
