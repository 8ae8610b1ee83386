"""``LayeredRootFS``: an image's root filesystem read straight from its layer blobs.

Layers are applied in order, base first, with the OCI image-spec rules:

* ``dir/.wh.NAME`` deletes ``dir/NAME`` (and everything under it) from the *lower*
  layers; ``dir/.wh..wh..opq`` hides every lower-layer child of ``dir``. A whiteout never
  hides an entry of its own layer, so each layer's whiteouts are applied before its
  entries are added.
* An entry replaces what a lower layer had at the same path, except that a directory
  over a directory merges (the upper one's mode wins); parents that a layer does not
  list are created as directories.
* A hard link shares the content of the entry it names (looked up literally, in this
  layer or below), so it reads the same bytes.

Only headers are kept in memory; contents are read on demand with ``pread`` at the
member's data offset. A gzip or zstd stream has no random access, and listing its members
(which whiteouts in upper layers make necessary for every layer) already decompresses all
of it, so that one pass writes the decompressed tar to a temporary directory: a later read
is a ``pread`` instead of a second decompression of the layer. Plain tars are read in
place. ``close()`` (or leaving a ``with`` block) removes the temporary files.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import weakref
from collections.abc import Sequence
from typing import BinaryIO

from forge.core.elf.rootfs import DIR, FILE, OTHER, SYMLINK, Entry, RootFS, RootFSError, split

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class LayerError(RootFSError):
    """A layer blob is missing, truncated, or not a (gzip/zstd-compressed) tar."""

    exit_code = 1


class _Node:
    __slots__ = ("kind", "mode", "size", "target", "blob", "offset", "children")

    def __init__(self, kind: str, mode: int = 0, size: int = 0, target: str = "",
                 blob: int = -1, offset: int = 0) -> None:
        self.kind = kind
        self.mode = mode
        self.size = size
        self.target = target
        self.blob = blob
        self.offset = offset
        self.children: dict[str, _Node] | None = {} if kind == DIR else None


class _Slice(io.RawIOBase):
    """A read-only, seekable window ``[offset, offset+size)`` of a file descriptor."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd, self._offset, self._size, self._pos = fd, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buf) -> int:  # type: ignore[override]
        n = max(0, min(len(buf), self._size - self._pos))
        data = os.pread(self._fd, n, self._offset + self._pos) if n else b""
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _decompressor(magic: bytes, src: BinaryIO) -> BinaryIO | None:
    if magic[:2] == _GZIP_MAGIC:
        try:
            from isal import igzip  # ISA-L inflates several times faster than zlib
        except ImportError:  # pragma: no cover - isal is a declared dependency
            import gzip as igzip
        return igzip.open(src, "rb")  # type: ignore[return-value]
    if magic == _ZSTD_MAGIC:
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
    return None


def _close_all(fds: dict[int, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


class LayeredRootFS(RootFS):
    """The merged root filesystem of OCI layer tarballs (gzip, zstd or plain), in order.

    ``layer_paths`` are blob files, base layer first, as listed in the image manifest.
    ``tmpdir`` is where decompressed layers go (default: the system temp directory).
    """

    def __init__(self, layer_paths: Sequence[str | os.PathLike[str]], *,
                 tmpdir: str | None = None) -> None:
        super().__init__()
        self.layers = tuple(os.fspath(p) for p in layer_paths)
        self._root = _Node(DIR, stat.S_IFDIR | 0o755)
        self._blobs: list[str] = []
        self._fds: dict[int, int] = {}
        self._dirs: dict[str, _Node | None] = {}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._tmpdir = tmpdir
        self._finalizer = weakref.finalize(self, _close_all, self._fds)
        try:
            for path in self.layers:
                self._apply(path)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"LayeredRootFS({len(self.layers)} layers)"

    __str__ = __repr__

    def __enter__(self) -> LayeredRootFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the layer files and delete the decompressed copies."""
        self._finalizer()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- construction ---------------------------------------------------------------
    def _plain_tar(self, path: str) -> str:
        """A seekable plain tar with ``path``'s content: ``path`` itself or a temp copy."""
        try:
            with open(path, "rb") as src:
                magic = src.read(4)
                src.seek(0)
                dec = _decompressor(magic, src)
                if dec is None:
                    return path
                if self._tmp is None:
                    self._tmp = tempfile.TemporaryDirectory(prefix="forge-rootfs-",
                                                            dir=self._tmpdir)
                out = os.path.join(self._tmp.name, f"layer-{len(self._blobs)}.tar")
                with dec, open(out, "wb") as dst:
                    shutil.copyfileobj(dec, dst, 1 << 20)
                return out
        except OSError as exc:
            raise LayerError(f"layer {path}: cannot read: {exc}") from exc
        except Exception as exc:  # zlib/zstd errors have no common base class
            raise LayerError(f"layer {path}: corrupt compressed stream: {exc}") from exc

    def _apply(self, path: str) -> None:
        plain = self._plain_tar(path)
        try:
            with tarfile.open(plain, mode="r:") as tf:
                members = tf.getmembers()
        except (tarfile.TarError, OSError) as exc:
            raise LayerError(f"layer {path}: not a tar archive ({exc})") from exc
        blob = len(self._blobs)
        self._blobs.append(plain)
        entries = []
        for m in members:
            parts = split(m.name)
            if ".." in parts:
                continue  # would escape the root; no well-formed layer has it
            if parts and parts[-1].startswith(WHITEOUT):
                self._whiteout(parts)
            else:
                entries.append((parts, m))
        for parts, m in entries:
            self._add(parts, m, blob)

    def _lookup(self, parts: list[str]) -> _Node | None:
        node: _Node | None = self._root
        for name in parts:
            if node is None or node.children is None:
                return None
            node = node.children.get(name)
        return node

    def _whiteout(self, parts: list[str]) -> None:
        parent = self._lookup(parts[:-1])
        if parent is None or parent.children is None:
            return
        if parts[-1] == OPAQUE:
            parent.children.clear()
        else:
            parent.children.pop(parts[-1][len(WHITEOUT):], None)

    def _parent(self, parts: list[str]) -> _Node:
        node = self._root
        for name in parts:
            assert node.children is not None
            child = node.children.get(name)
            if child is None or child.kind != DIR:
                child = node.children[name] = _Node(DIR, stat.S_IFDIR | 0o755)
            node = child
        return node

    def _add(self, parts: list[str], m: tarfile.TarInfo, blob: int) -> None:
        mode = m.mode
        if not parts:
            self._root.mode = stat.S_IFDIR | mode
            return
        parent = self._parent(parts[:-1])
        assert parent.children is not None
        name = parts[-1]
        if m.isdir():
            old = parent.children.get(name)
            if old is not None and old.kind == DIR:
                old.mode = stat.S_IFDIR | mode
            else:
                parent.children[name] = _Node(DIR, stat.S_IFDIR | mode)
        elif m.issym():
            parent.children[name] = _Node(SYMLINK, stat.S_IFLNK | 0o777, len(m.linkname),
                                          m.linkname)
        elif m.islnk():
            src = self._lookup(split(m.linkname))
            if src is not None and src.kind == FILE:
                parent.children[name] = _Node(FILE, src.mode, src.size, "", src.blob,
                                              src.offset)
            else:
                parent.children[name] = _Node(OTHER)  # dangling hard link
        elif m.isreg() and not m.issparse():
            parent.children[name] = _Node(FILE, stat.S_IFREG | mode, m.size, "", blob,
                                          m.offset_data)
        else:  # devices, fifos, and GNU sparse files (no contiguous data to pread)
            parent.children[name] = _Node(OTHER, mode)

    # --- primitives -----------------------------------------------------------------
    def _dir(self, directory: str) -> _Node | None:
        try:
            return self._dirs[directory]
        except KeyError:
            node = self._dirs[directory] = self._lookup(split(directory))
            return node

    def _kind(self, directory: str, name: str) -> str | None:
        node = self._dir(directory)
        if node is None or node.children is None:
            return None
        child = node.children.get(name)
        return None if child is None else child.kind

    def _names(self, directory: str) -> list[str]:
        node = self._dir(directory)
        return [] if node is None or node.children is None else list(node.children)

    def _node(self, path: str) -> _Node:
        node = self._lookup(split(path))
        if node is None:
            raise RootFSError(f"{self}: no such file: {path}")
        return node

    def _stat(self, path: str) -> Entry:
        node = self._node(path)
        return Entry(node.kind, node.mode, node.size, node.target)

    def _open(self, path: str) -> BinaryIO:
        node = self._node(path)
        fd = self._fds.get(node.blob)
        if fd is None:
            fd = self._fds[node.blob] = os.open(self._blobs[node.blob], os.O_RDONLY)
        return io.BufferedReader(_Slice(fd, node.offset, node.size))  # type: ignore[return-value]
