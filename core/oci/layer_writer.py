"""Deterministic tar layers: same entries and contents → same bytes, on any machine.

Everything that differs between checkouts, users and machines is normalized away, and
nothing else is (each is a rule other code can rely on, e.g. for action keys):

- order: entries sorted by path (code point order = UTF-8 byte order, locale-free), every
  missing parent directory added (mode 0755), so the tar never depends on walk order;
- time: every mtime is ``SOURCE_DATE_EPOCH`` (default 0), and the tar format carries no
  other time: tarfile's PAX format writes a plain ustar header per entry and an extended
  header only for what ustar cannot hold (long or non-ASCII names, xattrs), never
  atime/ctime, and an integer mtime always fits the ustar field;
- owner: uid/gid from ``owner`` (default ``0:0``) unless an entry says otherwise; user and
  group *names* are empty, since they mean nothing inside the image;
- mode: see :func:`normalized_mode`: umask and checkout noise go, the exec bit stays;
- links: hard links are stored as regular files (a checkout can't promise them).

The layer is streamed: the tar goes through sha256 (the diff_id) and, on a second
thread, through the compressor into ``CAS.writer()``, which hashes the compressed bytes
(the blob digest) — one pass over the input, memory bounded by a few CHUNKs.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import queue
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from forge.core.cas import CAS
from forge.core.errors import ActionFailed
from forge.core.oci import compression as comp
from forge.core.oci.image import Layer, source_date_epoch
from forge.core.oci.media import layer_media_type

FILE, DIR, SYMLINK, CHARDEV, BLOCKDEV, FIFO = "file", "dir", "symlink", "chardev", "blockdev", "fifo"
_TAR_TYPE = {
    FILE: tarfile.REGTYPE,
    DIR: tarfile.DIRTYPE,
    SYMLINK: tarfile.SYMTYPE,
    CHARDEV: tarfile.CHRTYPE,
    BLOCKDEV: tarfile.BLKTYPE,
    FIFO: tarfile.FIFOTYPE,
}


class LayerError(ActionFailed):
    """The entries of a layer are contradictory (a path twice, a file used as a directory…)."""


def normalize_path(path: str) -> str:
    """``/usr//bin/./x`` → ``usr/bin/x``; a path that leaves the root is an error."""
    norm = posixpath.normpath("/" + path.replace("\\", "/")).lstrip("/")
    if ".." in path.split("/") or norm in ("", "."):
        raise LayerError(f"layer path {path!r} is empty or leaves the image root")
    return norm


def normalized_mode(kind: str, st_mode: int | None = None) -> int:
    """The mode forge writes for an entry without an explicit one.

    Files: 0755 if the source has any exec bit, else 0644 (a checkout's umask and group
    bits are noise; the exec bit is what git keeps). Directories 0755, symlinks 0777,
    devices and FIFOs 0644. setuid/setgid/sticky need an explicit mode.
    """
    if kind == FILE:
        return 0o755 if st_mode is not None and st_mode & 0o111 else 0o644
    if kind == DIR:
        return 0o755
    if kind == SYMLINK:
        return 0o777
    return 0o644


Source = Path | bytes | Callable[[], BinaryIO] | None


@dataclass(frozen=True)
class LayerEntry:
    """One path in a layer.

    ``source`` for a file is a host path (read when the layer is written), the bytes, or a
    callable returning a readable stream of exactly ``size`` bytes. ``mode``/``uid``/``gid``
    None means normalized / the writer's ``owner``. ``xattrs`` are written as PAX
    ``SCHILY.xattr.*`` records (kept from imported tars, e.g. file capabilities).
    """

    path: str
    kind: str = FILE
    source: Source = None
    size: int | None = None
    target: str = ""
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", normalize_path(self.path))
        if self.kind not in _TAR_TYPE:
            raise LayerError(f"{self.path}: unknown entry kind {self.kind!r}")
        if self.kind == FILE and self.source is None:
            raise LayerError(f"{self.path}: a file entry needs a source")
        if callable(self.source) and self.size is None:
            raise LayerError(f"{self.path}: a stream source needs a size")
        if self.kind == SYMLINK and not self.target:
            raise LayerError(f"{self.path}: a symlink entry needs a target")

    @classmethod
    def file(cls, path: str, source: Path | str | bytes, *, mode: int | None = None,
             uid: int | None = None, gid: int | None = None) -> LayerEntry:
        src = Path(source) if isinstance(source, str) else source
        return cls(path, FILE, src, mode=mode, uid=uid, gid=gid)

    @classmethod
    def directory(cls, path: str, *, mode: int | None = None, uid: int | None = None,
                  gid: int | None = None) -> LayerEntry:
        return cls(path, DIR, mode=mode, uid=uid, gid=gid)

    @classmethod
    def symlink(cls, path: str, target: str, *, uid: int | None = None,
                gid: int | None = None) -> LayerEntry:
        return cls(path, SYMLINK, target=target, uid=uid, gid=gid)


# -- building entry lists -----------------------------------------------------------------


def entries_from_directory(root: Path, *, prefix: str = "") -> list[LayerEntry]:
    """Every directory, file and symlink under ``root`` (not ``root`` itself), under ``prefix``.

    Symlinks are kept as symlinks (not followed); sockets, FIFOs and devices are refused,
    because a source tree that holds one is almost surely not what was meant.
    """
    root = Path(root)
    out: list[LayerEntry] = []
    if not root.is_dir():
        raise LayerError(f"{root} is not a directory")

    def place(rel: str) -> str:
        return posixpath.join(prefix, rel) if prefix else rel

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in (*dirnames, *sorted(filenames)):
            host = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else posixpath.join(rel_dir.replace(os.sep, "/"), name)
            out.append(_entry_for_host_path(place(rel), Path(host), dereference=False))
    return out


def entries_from_files(files: Mapping[str, Path | str], *, dereference: bool = False) -> list[LayerEntry]:
    """Entries for a ``{path in image: host path}`` map; host directories are taken whole.

    ``dereference`` stores what a symlink points to instead of the link.
    """
    out: list[LayerEntry] = []
    for dest, src in files.items():
        src = Path(src)
        entry = _entry_for_host_path(dest, src, dereference=dereference)
        out.append(entry)
        if entry.kind == DIR:
            out.extend(entries_from_directory(src, prefix=entry.path))
    return out


def _entry_for_host_path(dest: str, host: Path, *, dereference: bool) -> LayerEntry:
    try:
        st = os.stat(host) if dereference else os.lstat(host)
    except FileNotFoundError:
        raise LayerError(f"{host} (for {dest}) does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        return LayerEntry.symlink(dest, os.readlink(host))
    if stat.S_ISDIR(st.st_mode):
        return LayerEntry.directory(dest)
    if stat.S_ISREG(st.st_mode):
        return LayerEntry.file(dest, host)
    raise LayerError(f"{host} (for {dest}) is not a file, directory or symlink")


def entries_from_tar(tf: tarfile.TarFile) -> list[LayerEntry]:
    """The entries of an existing tar, keeping its modes, owners and xattrs.

    Only what a rootfs tarball says about itself is kept; mtimes, names and order are
    normalized when written. A later member of the same path replaces an earlier one (as
    extraction would); hard links become regular files with the target's content; the
    root entry ``./`` is dropped.
    """
    by_path: dict[str, LayerEntry] = {}
    members: dict[str, tarfile.TarInfo] = {}
    for m in tf:
        name = posixpath.normpath("/" + m.name).lstrip("/")
        if name in ("", "."):
            continue
        members[name] = m
        common = {
            "mode": stat.S_IMODE(m.mode),
            "uid": m.uid,
            "gid": m.gid,
            "xattrs": tuple(sorted(
                (k, v) for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")
            )),
        }
        if m.isreg() or m.islnk():
            data = m
            if m.islnk():
                target = posixpath.normpath("/" + m.linkname).lstrip("/")
                if target not in members:
                    raise LayerError(f"hard link {m.name} -> {m.linkname}: target not in the tar before it")
                data = members[target]
            entry = LayerEntry(name, FILE, _tar_reader(tf, data), size=data.size, **common)
        elif m.issym():
            entry = LayerEntry(name, SYMLINK, target=m.linkname, **common)
        elif m.isdir():
            entry = LayerEntry(name, DIR, **common)
        elif m.ischr() or m.isblk():
            kind = CHARDEV if m.ischr() else BLOCKDEV
            entry = LayerEntry(name, kind, devmajor=m.devmajor, devminor=m.devminor, **common)
        elif m.isfifo():
            entry = LayerEntry(name, FIFO, **common)
        else:
            raise LayerError(f"tar member {m.name}: unsupported type {m.type!r}")
        by_path[name] = entry
    return list(by_path.values())


def _tar_reader(tf: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], BinaryIO]:
    def open_member() -> BinaryIO:
        fh = tf.extractfile(member)
        assert fh is not None  # regular members always have data
        return fh

    return open_member


# -- writing ----------------------------------------------------------------------------


class _BlobSink:
    """Tar bytes in; diff_id out, and the compressed stream written to ``out``.

    The input is re-cut into CHUNK pieces (ISA-L's output depends on the cut) and
    hashed here; compression and the CAS write run on a worker thread, since ISA-L and
    zstd release the GIL.
    """

    def __init__(self, out: Any, kind: str, level: int | None):  # out: a CAS.writer() sink
        self._out = out
        self._compressor = comp.new_compressor(kind, level)
        self._diff = hashlib.sha256()
        self._pending = bytearray()
        self._offset = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | bytearray | memoryview | None] = queue.Queue(maxsize=4)
        self._worker: threading.Thread | None = None
        if kind != comp.NONE:
            self._worker = threading.Thread(target=self._work, name="forge-layer-compress", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(self._compressor.compress(chunk))
                except BaseException as e:  # re-raised in the writing thread
                    self._error = e

    def _emit(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._worker is None:  # uncompressed: the CAS writer's hash is the diff_id
            self._out.write(chunk)
            return
        self._diff.update(chunk)
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def write(self, data: bytes) -> int:
        """Cut into CHUNKs copying as little as possible: whole CHUNKs of an immutable
        ``bytes`` go on as views, only the bytes around them pass through ``_pending``."""
        size = len(data)
        self._offset += size
        view = memoryview(data if isinstance(data, bytes) else bytes(data))
        if self._pending:
            fill = comp.CHUNK - len(self._pending)
            self._pending += view[:fill]
            view = view[fill:]
            if len(self._pending) < comp.CHUNK:
                return size
            self._emit(self._pending)
            self._pending = bytearray()
        while len(view) >= comp.CHUNK:
            self._emit(view[: comp.CHUNK])
            view = view[comp.CHUNK :]
        self._pending += view
        return size

    def tell(self) -> int:
        return self._offset

    def finish(self) -> str:
        """Flush everything; return the diff_id."""
        if self._pending:
            self._emit(self._pending)
            self._pending = bytearray()
        self.stop()
        if self._error is not None:
            raise self._error
        if self._worker is None:
            return self._out.digest
        self._out.write(self._compressor.flush())
        return "sha256:" + self._diff.hexdigest()

    def stop(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()


def _parse_owner(owner: str) -> tuple[int, int]:
    uid, sep, gid = owner.partition(":")
    if not sep or not uid.isdigit() or not gid.isdigit():
        raise LayerError(f"owner {owner!r} is not UID:GID (numbers, e.g. 0:0)")
    return int(uid), int(gid)


def _complete(entries: Iterable[LayerEntry]) -> list[LayerEntry]:
    """Entries by path, parents added, sorted; contradictions are errors."""
    by_path: dict[str, LayerEntry] = {}
    for entry in entries:
        if entry.path in by_path:
            raise LayerError(f"{entry.path} is given twice for one layer")
        by_path[entry.path] = entry
    for path in list(by_path):
        parent = posixpath.dirname(path)
        while parent:
            have = by_path.get(parent)
            if have is None:
                by_path[parent] = LayerEntry.directory(parent)
            elif have.kind != DIR:
                raise LayerError(f"{path} is under {parent}, which is a {have.kind}, not a directory")
            parent = posixpath.dirname(parent)
    return [by_path[p] for p in sorted(by_path)]


def write_layer(
    cas: CAS,
    entries: Iterable[LayerEntry],
    *,
    compression: str = comp.GZIP,
    level: int | None = None,
    owner: str = "0:0",
    epoch: int | None = None,
) -> Layer:
    """Write ``entries`` as one deterministic layer blob into the CAS.

    ``compression`` is ``gzip`` (ISA-L, level 0-3, default 2), ``zstd`` (level 1-22,
    default 3) or ``none``; ``epoch`` overrides ``SOURCE_DATE_EPOCH`` for mtimes.
    """
    level = comp.check(compression, level)
    default_uid, default_gid = _parse_owner(owner)
    mtime = source_date_epoch(epoch)
    ordered = _complete(entries)
    with cas.writer() as out:
        sink = _BlobSink(out, compression, level)
        try:
            with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT,
                              encoding="utf-8", copybufsize=comp.CHUNK) as tf:  # type: ignore[call-overload]
                for entry in ordered:
                    _add(tf, entry, mtime, default_uid, default_gid)
            diff_id = sink.finish()
        finally:
            sink.stop()
    return Layer(out.digest, diff_id, out.size, layer_media_type(compression))


def _add(tf: tarfile.TarFile, entry: LayerEntry, mtime: int, uid: int, gid: int) -> None:
    info = tarfile.TarInfo(entry.path)
    info.type = _TAR_TYPE[entry.kind]
    info.mtime = mtime
    info.uid = uid if entry.uid is None else entry.uid
    info.gid = gid if entry.gid is None else entry.gid
    info.uname = info.gname = ""
    info.linkname = entry.target
    info.devmajor, info.devminor = entry.devmajor, entry.devminor
    if entry.xattrs:
        info.pax_headers = dict(entry.xattrs)
    if entry.kind != FILE:
        info.mode = normalized_mode(entry.kind) if entry.mode is None else entry.mode
        tf.addfile(info)
        return
    src = entry.source
    if isinstance(src, bytes):
        info.size = len(src)
        info.mode = normalized_mode(FILE) if entry.mode is None else entry.mode
        tf.addfile(info, io.BytesIO(src))
    elif isinstance(src, Path):
        with open(src, "rb") as fh:
            st = os.fstat(fh.fileno())
            info.size = st.st_size
            info.mode = normalized_mode(FILE, st.st_mode) if entry.mode is None else entry.mode
            tf.addfile(info, fh)
    else:
        assert callable(src) and entry.size is not None
        info.size = entry.size
        info.mode = normalized_mode(FILE) if entry.mode is None else entry.mode
        with src() as fh:
            tf.addfile(info, fh)


def store_tar(cas: CAS, fh: BinaryIO, *, compression: str = comp.GZIP, level: int | None = None) -> Layer:
    """Store an existing uncompressed tar stream as a layer, unchanged (same diff_id).

    For tars whose content must stay byte-for-byte (a ``docker save`` layer named by its
    diff_id in the config); to normalize a tar, use ``write_layer(entries_from_tar(...))``.
    """
    level = comp.check(compression, level)
    with cas.writer() as out:
        sink = _BlobSink(out, compression, level)
        try:
            while chunk := fh.read(comp.CHUNK):
                sink.write(chunk)
            diff_id = sink.finish()
        finally:
            sink.stop()
    return Layer(out.digest, diff_id, out.size, layer_media_type(compression))


def clamp_mtimes(cas: CAS, layer: Layer, epoch: int, *, compression: str = comp.GZIP,
                 level: int | None = None) -> Layer:
    """``layer`` with every entry's mtime clamped to ``epoch`` (BuildKit's
    rewrite-timestamp): names, modes, owners, xattrs, links and content stay, the order
    stays; only mtimes later than ``epoch`` become ``epoch`` (sub-second PAX mtimes and
    atime/ctime records are dropped). The result is a new tar (new diff_id), the same on
    every machine that made the same files, whenever it made them."""
    with cas.open(layer.digest) as blob, cas.writer() as out:
        source = comp.open_decompressed(blob, layer.compression)
        sink = _BlobSink(out, compression, comp.check(compression, level))
        try:
            with tarfile.open(fileobj=source, mode="r|") as tin, \
                    tarfile.open(fileobj=_SinkFile(sink), mode="w|", format=tarfile.PAX_FORMAT) as tout:
                for member in tin:
                    member.mtime = min(int(member.mtime), epoch)
                    for record in ("mtime", "atime", "ctime"):
                        member.pax_headers.pop(record, None)
                    tout.addfile(member, tin.extractfile(member) if member.isreg() else None)
            diff_id = sink.finish()
        finally:
            sink.stop()
    return Layer(out.digest, diff_id, out.size, layer_media_type(compression))


class _SinkFile:
    """A write-only file over a _BlobSink (tarfile's stream mode needs ``write``)."""

    def __init__(self, sink: _BlobSink):
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        return len(data)
