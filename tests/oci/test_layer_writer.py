"""The layer writer: same tree → same bytes, whatever the umask, mtimes or creation order."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import tarfile
from pathlib import Path

import pytest
import zstandard

from forge.core.oci import compression as comp
from forge.core.oci.layer_writer import (
    LayerEntry,
    LayerError,
    entries_from_directory,
    entries_from_files,
    entries_from_tar,
    store_tar,
    write_layer,
)

from .conftest import tar_members

BIG = random.Random(7).randbytes(3 * comp.CHUNK + 12345)  # crosses several compressor chunks


def make_tree(root: Path, *, umask: int, mtime: int, reverse: bool, script_mode: int) -> Path:
    """The same tree each time, written with a different umask, mtimes and order."""
    old = os.umask(umask)
    try:
        files = [
            ("usr/share/doc/readme.txt", b"read me\n"),
            ("usr/bin/tool", b"#!/bin/sh\necho tool\n"),
            ("opt/data/big.bin", BIG),
            ("opt/data/\u00e9t\u00e9.txt", b"non-ASCII name\n"),
            ("opt/" + "long-" * 30 + "name", b"a name over 100 bytes\n"),
        ]
        for rel, data in reversed(files) if reverse else files:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.chmod(root / "usr/bin/tool", script_mode)
        os.symlink("tool", root / "usr/bin/tool-link")
        (root / "empty-dir").mkdir()
        if reverse:
            os.link(root / "usr/share/doc/readme.txt", root / "usr/share/doc/README")
        else:
            (root / "usr/share/doc/README").write_bytes(b"read me\n")
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.utime(os.path.join(dirpath, name), (mtime, mtime), follow_symlinks=False)
    finally:
        os.umask(old)
    return root


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_same_tree_same_digest_across_umask_mtime_order(tmp_path, cas, compression):
    a = make_tree(tmp_path / "a", umask=0o077, mtime=1_000_000, reverse=False, script_mode=0o700)
    b = make_tree(tmp_path / "b", umask=0o002, mtime=1_700_000_000, reverse=True, script_mode=0o775)
    layer_a = write_layer(cas, entries_from_directory(a, prefix="srv"), compression=compression)
    layer_b = write_layer(cas, entries_from_directory(b, prefix="srv"), compression=compression)
    assert layer_a == layer_b
    again = write_layer(cas, entries_from_directory(a, prefix="srv"), compression=compression)
    assert again == layer_a


def _decompress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.decompress(data)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_one_pass_digests_match_independent_hashes(tmp_path, cas, compression):
    tree = make_tree(tmp_path / "t", umask=0o022, mtime=5, reverse=False, script_mode=0o755)
    layer = write_layer(cas, entries_from_directory(tree), compression=compression)
    blob = cas.path(layer.digest).read_bytes()
    assert layer.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert layer.size == len(blob)
    assert layer.diff_id == "sha256:" + hashlib.sha256(_decompress(blob, compression)).hexdigest()
    assert layer.media_type.endswith({"gzip": "+gzip", "zstd": "+zstd", "none": ".tar"}[compression])


def test_tar_is_normalized(tmp_path, cas, monkeypatch):
    tree = make_tree(tmp_path / "t", umask=0o077, mtime=99, reverse=True, script_mode=0o700)
    layer = write_layer(cas, entries_from_directory(tree, prefix="srv"), compression="none",
                        owner="1000:1001", epoch=1234567)
    raw = cas.path(layer.digest).read_bytes()
    members = list(tar_members(raw).values())
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names[0] == "srv"  # parents come first and are added when missing
    by_name = {m.name: m for m in members}
    assert by_name["srv/usr/bin/tool"].mode == 0o755  # exec bit kept, group/other normalized
    assert by_name["srv/usr/share/doc/readme.txt"].mode == 0o644
    assert by_name["srv/empty-dir"].isdir() and by_name["srv/empty-dir"].mode == 0o755
    assert by_name["srv/usr/bin/tool-link"].issym()
    assert by_name["srv/usr/bin/tool-link"].linkname == "tool"
    readme = by_name["srv/usr/share/doc/README"]  # a hard link in tree "t": a regular file
    assert readme.isreg() and readme.size == len(b"read me\n")
    for m in members:
        assert m.mtime == 1234567
        assert (m.uid, m.gid, m.uname, m.gname) == (1000, 1001, "", "")
        assert not {"mtime", "atime", "ctime"} & set(m.pax_headers)
    for key in (b"atime=", b"ctime=", b"mtime="):
        assert key not in raw


def test_gzip_header_has_no_name_and_no_time(cas):
    layer = write_layer(cas, [LayerEntry.file("a", b"x")])
    head = cas.path(layer.digest).read_bytes()[:10]
    assert head[:3] == b"\x1f\x8b\x08"
    assert head[3] == 0  # flags: no FNAME, no FCOMMENT, no FEXTRA
    assert head[4:8] == b"\0\0\0\0"  # mtime


def test_explicit_mode_and_owner_win(cas):
    layer = write_layer(cas, [
        LayerEntry.file("usr/bin/su", b"x", mode=0o4755),
        LayerEntry.directory("tmp", mode=0o1777),
        LayerEntry.file("home/me/f", b"y", uid=1000, gid=100),
    ], compression="none")
    members = tar_members(cas.read_bytes(layer.digest))
    assert members["usr/bin/su"].mode == 0o4755
    assert members["tmp"].mode == 0o1777
    assert (members["home/me/f"].uid, members["home/me/f"].gid) == (1000, 100)
    assert (members["home/me"].uid, members["home/me"].gid) == (0, 0)


def test_store_tar_matches_write_layer(cas):
    """The compressed bytes depend on the tar bytes only, not on how they were written."""
    entries = [LayerEntry.file("big", BIG), LayerEntry.file("small", b"s")]
    plain = write_layer(cas, entries, compression="none")
    for compression in ("gzip", "zstd"):
        written = write_layer(cas, entries, compression=compression)
        with cas.open(plain.digest) as fh:
            stored = store_tar(cas, fh, compression=compression)
        assert stored == written
        assert stored.diff_id == plain.digest


def test_entries_from_files(tmp_path, cas):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "lib.so").write_bytes(b"\x7fELF")
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "f").write_bytes(b"f")
    os.symlink("lib.so", tmp_path / "src" / "lib.so.1")
    entries = entries_from_files({
        "/usr/lib/lib.so": tmp_path / "src" / "lib.so",
        "usr/lib/lib.so.1": tmp_path / "src" / "lib.so.1",
        "usr/lib/deref.so": tmp_path / "src" / "lib.so",
        "opt/tree": tmp_path / "dir",
    })
    by_path = {e.path: e for e in entries}
    assert by_path["usr/lib/lib.so.1"].kind == "symlink"
    assert by_path["opt/tree"].kind == "dir"
    assert by_path["opt/tree/sub/f"].kind == "file"
    deref = entries_from_files({"x": tmp_path / "src" / "lib.so.1"}, dereference=True)
    assert deref[0].kind == "file"
    write_layer(cas, entries)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _info(name: str, kind: bytes, *, data: bytes = b"", mtime: int = 0, uname: str = "",
          mode: int = 0o644, linkname: str = "", uid: int = 0, pax: dict | None = None) -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.mtime, info.uname, info.mode, info.linkname, info.uid = kind, mtime, uname, mode, linkname, uid
    if pax:
        info.pax_headers = pax
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def test_entries_from_tar_keep_content_drop_noise(cas):
    cap = {"SCHILY.xattr.user.forge": "yes"}
    one = _tar([
        _info("./", tarfile.DIRTYPE, mode=0o755),
        _info("./bin/", tarfile.DIRTYPE, mode=0o755, mtime=10, uname="root"),
        _info("./bin/su", tarfile.REGTYPE, data=b"su", mode=0o4755, mtime=10, uname="root"),
        _info("./bin/su2", tarfile.LNKTYPE, linkname="./bin/su", mode=0o4755, mtime=10),
        _info("./tmp/", tarfile.DIRTYPE, mode=0o1777, mtime=10),
        _info("./var/mail/x", tarfile.REGTYPE, data=b"m", uid=8, mtime=10, pax=cap),
    ])
    two = _tar([  # other order, mtimes, user names, no hard link
        _info("var/mail/x", tarfile.REGTYPE, data=b"m", uid=8, mtime=99, uname="mail", pax=cap),
        _info("tmp", tarfile.DIRTYPE, mode=0o1777, mtime=99),
        _info("bin/su2", tarfile.REGTYPE, data=b"su", mode=0o4755, mtime=99),
        _info("bin/su", tarfile.REGTYPE, data=b"su", mode=0o4755, mtime=99, uname="toor"),
        _info("bin", tarfile.DIRTYPE, mode=0o755),
    ])
    layers = []
    for raw in (one, two):
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            layers.append(write_layer(cas, entries_from_tar(tf), compression="none"))
    assert layers[0] == layers[1]
    members = tar_members(cas.read_bytes(layers[0].digest))
    assert members["bin/su"].mode == 0o4755
    assert members["bin/su2"].isreg() and members["bin/su2"].size == 2
    assert members["tmp"].mode == 0o1777
    assert members["var/mail/x"].uid == 8
    assert members["var/mail/x"].pax_headers.get("SCHILY.xattr.user.forge") == "yes"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([LayerEntry.file("a", b"1"), LayerEntry.file("/a", b"2")], "given twice"),
        ([LayerEntry.file("a", b"1"), LayerEntry.file("a/b", b"2")], "not a directory"),
    ],
)
def test_contradictory_entries_are_errors(cas, entries, message):
    with pytest.raises(LayerError, match=message):
        write_layer(cas, entries)


def test_paths_may_not_leave_the_root():
    with pytest.raises(LayerError, match="leaves the image root"):
        LayerEntry.file("../etc/passwd", b"x")
    with pytest.raises(LayerError, match="leaves the image root"):
        LayerEntry.directory("/")


def test_bad_owner_and_compression(cas):
    with pytest.raises(LayerError, match="UID:GID"):
        write_layer(cas, [LayerEntry.file("a", b"1")], owner="root")
    with pytest.raises(ValueError, match="gzip level 9"):
        write_layer(cas, [LayerEntry.file("a", b"1")], level=9)


def test_a_failed_write_stores_nothing(tmp_path, cas):
    def broken():
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        write_layer(cas, [LayerEntry.file("big", BIG), LayerEntry("z", source=broken, size=3)])
    assert list(cas.iter_blobs()) == []
