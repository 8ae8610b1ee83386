"""The local content-addressed store: blobs at ``blobs/sha256/<hex>``.

sha256 and not blake3, because the blobs are OCI blobs (layers, configs, manifests) and
their sha256 digest *is* their name in every registry and image layout; one name per blob
means an image layer is stored once whether a Dockerfile step, a pull or the remote cache
brought it. A blob that exists is never written twice; every write is temp file + rename,
so two forge processes can share one store. ``open_verified``/``verify`` re-hash on read;
a blob whose content does not match its name is deleted (evicted) and reported missing,
so the action that made it runs again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from forge.core.errors import CacheError

CHUNK = 1 << 20
BLOB_MODE = 0o644  # blobs are immutable content, readable by whoever reads forge-out links


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


_SHA256_RE = re.compile(r"sha256:([0-9a-f]{64})")


def split_digest(digest: str) -> tuple[str, str]:
    m = _SHA256_RE.fullmatch(digest) if isinstance(digest, str) else None
    if m is None:
        raise CacheError(f"not a sha256 digest: {digest!r}")
    return "sha256", m.group(1)


class BlobMissing(CacheError):
    """A blob the cache should hold is absent or was evicted for a bad digest."""


@dataclass(frozen=True)
class Descriptor:
    """What the CAS knows of a stored blob: its digest and size (OCI descriptor core)."""

    digest: str
    size: int


class _HashingWriter:
    """A file-like sink that hashes and counts what passes through it."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._fh.write(data)
        return len(data)

    def flush(self) -> None:
        self._fh.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class CAS:
    """Content-addressed blob store rooted at ``root`` (``<cache dir>/cas``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._blobs = self.root / "blobs" / "sha256"
        self._tmp = self.root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._blobs_str = str(self._blobs)
        self._tmp.mkdir(parents=True, exist_ok=True)

    # -- names -------------------------------------------------------------------------
    def path(self, digest: str) -> Path:
        """Where the blob lives (whether or not it is there)."""
        _, hexpart = split_digest(digest)
        return self._blobs / hexpart

    def _str(self, digest: str) -> str:
        """The blob's path as a string: the cheap form for hot stat/utime calls."""
        return f"{self._blobs_str}/{split_digest(digest)[1]}"

    def has(self, digest: str) -> bool:
        return os.path.isfile(self._str(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self._str(digest)).st_size
        except FileNotFoundError:
            raise BlobMissing(f"blob {digest} is not in the cache") from None

    # -- writing -----------------------------------------------------------------------
    def put_bytes(self, data: bytes) -> Descriptor:
        digest = sha256_digest(data)
        if not self.path(digest).exists():
            with self.writer(expected=digest) as w:
                w.write(data)
        return Descriptor(digest, len(data))

    @contextlib.contextmanager
    def writer(self, expected: str | None = None) -> Iterator[_HashingWriter]:
        """Stream a blob in; it is named by what was written, after the block ends.

        This is the one way content enters the store: a temp file in ``tmp/``, hashed as
        written, renamed to its name only when whole. With ``expected`` set, content that
        hashes differently is discarded and BlobMissing is raised: nothing unverified ever
        gets a name. The descriptor is available as ``w.digest``/``w.size`` afterwards.
        """
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as fh:
                w = _HashingWriter(fh)
                yield w
            if expected is not None and w.digest != expected:
                raise BlobMissing(f"content for {expected} hashed to {w.digest}; not stored")
            dest = self.path(w.digest)
            if dest.exists():
                os.unlink(tmp)
            else:
                os.chmod(tmp, BLOB_MODE)
                os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_file(self, src: Path, *, move: bool = False) -> Descriptor:
        """Store a file's content; ``move`` renames it in when it is ours to take."""
        if not move:
            with open(src, "rb") as fh, self.writer() as w:
                shutil.copyfileobj(fh, w, CHUNK)
            return Descriptor(w.digest, w.size)
        h = hashlib.sha256()
        size = 0
        with open(src, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
        digest = "sha256:" + h.hexdigest()
        dest = self.path(digest)
        if dest.exists():
            os.unlink(src)
        else:
            os.chmod(src, BLOB_MODE)
            os.replace(src, dest)
        return Descriptor(digest, size)

    def link_out(self, digest: str, dest: Path, *, keep_existing: bool = False) -> None:
        """Put a blob at ``dest`` (forge-out, an OCI layout): a hard link when the
        filesystem allows, else a copy; atomic either way. A ``dest`` that already is this
        blob (same inode), or any existing ``dest`` with ``keep_existing`` (a layout names
        blobs by digest), is left alone.
        """
        src = self.path(digest)
        try:
            src_ino = src.stat().st_ino
        except FileNotFoundError:
            raise BlobMissing(f"blob {digest} is not in the cache; cannot write {dest}") from None
        try:
            if keep_existing or dest.stat().st_ino == src_ino:
                dest.stat()  # raises when it does not exist
                return
        except FileNotFoundError:
            pass
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        os.close(fd)
        os.unlink(tmp)
        try:
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def tempdir(self) -> Path:
        """A private scratch directory on the store's filesystem (so renames are cheap)."""
        return Path(tempfile.mkdtemp(prefix="work-", dir=self._tmp))

    # -- reading -----------------------------------------------------------------------
    def read_bytes(self, digest: str) -> bytes:
        """Read a (small) blob and verify it; a mismatch evicts it."""
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(f"blob {digest} is not in the cache") from None
        if sha256_digest(data) != digest:
            self.evict(digest)
            raise BlobMissing(f"blob {digest} was corrupt and has been evicted")
        return data

    def open(self, digest: str) -> IO[bytes]:
        """Open a blob without verifying (callers that stream verify with ``verify``)."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobMissing(f"blob {digest} is not in the cache") from None

    def verify(self, digest: str) -> bool:
        """Re-hash a blob; evict it and return False when it does not match its name."""
        path = self.path(digest)
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            return False
        if "sha256:" + h.hexdigest() != digest:
            self.evict(digest)
            return False
        return True

    def evict(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    def touch(self, digest: str) -> None:
        """Mark a blob used now (for least-recently-used garbage collection)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._str(digest))

    def iter_blobs(self) -> Iterator[tuple[str, os.stat_result]]:
        for entry in os.scandir(self._blobs):
            if entry.is_file() and not entry.name.startswith("."):
                yield "sha256:" + entry.name, entry.stat()
