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
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from forge.core.errors import CacheError

CHUNK = 1 << 20
BLOB_MODE = 0o444  # blobs are immutable content: nobody writes them in place
EXPOSED_MEMO = "exposed.json"  # stat data of the copies forge-out holds (see copy_out)


def _stat_sig(path: Path) -> list[int] | None:
    """(size, mtime_ns, inode, ctime_ns, device) of a regular file, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, st.st_dev]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


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


OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class Descriptor:
    """An OCI descriptor of a blob: digest, size and media type, plus what consumers read
    beside them — a layer's ``diff_id`` (its uncompressed digest) and a manifest's
    ``platform``. The CAS itself knows only digest and size; whoever names a blob's kind
    (a rule's result, an image) types it with ``typed``.
    """

    digest: str
    size: int
    media_type: str = OCTET_STREAM
    diff_id: str | None = None
    platform: str | None = None

    def typed(self, media_type: str, *, diff_id: str | None = None,
              platform: str | None = None) -> Descriptor:
        return Descriptor(self.digest, self.size, media_type, diff_id, platform)

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.diff_id is not None:
            out["diffID"] = self.diff_id
        if self.platform is not None:
            out["platform"] = self.platform
        return out

    @classmethod
    def from_json(cls, data: dict) -> Descriptor:
        digest, size, media_type = data["digest"], data["size"], data["mediaType"]
        split_digest(digest)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise CacheError(f"descriptor of {digest} has a bad size {size!r}")
        if not isinstance(media_type, str) or not media_type:
            raise CacheError(f"descriptor of {digest} has no media type")
        return cls(digest, size, media_type, data.get("diffID"), data.get("platform"))


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
        self._exposed: dict[str, list] | None = None
        self._exposed_dirty = False

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

    def copy_out(self, digest: str, dest: Path) -> None:
        """Put a verified copy of a blob at ``dest`` (forge-out, an OCI layout).

        Never a hard link: a file the user can write must not share its inode with the
        store, or editing ``forge-out`` in place would corrupt the cache (and, as root,
        mode bits protect nothing). The copy is hashed as it is written, so a corrupt blob
        is evicted instead of handed out. An existing ``dest`` is kept when its stat data
        is what forge last wrote or verified there; otherwise it is re-hashed, and replaced
        when it no longer matches. Atomic: temp file + rename.
        """
        dest = Path(dest)
        sig = _stat_sig(dest)
        if sig is not None and not self._shares_inode(digest, sig):
            memo = self._exposed_memo()
            if memo.get(str(dest)) == [*sig, digest]:
                return
            if _sha256_file(dest) == digest:
                self._remember(dest, digest)
                return
        src = self.path(digest)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        try:
            h = hashlib.sha256()
            if not os.path.isfile(src):
                raise BlobMissing(f"blob {digest} is not in the cache; cannot write {dest}")
            with open(src, "rb") as fh, os.fdopen(fd, "wb") as out:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            if "sha256:" + h.hexdigest() != digest:
                self.evict(digest)
                raise BlobMissing(f"blob {digest} was corrupt and has been evicted; cannot write {dest}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._remember(dest, digest)

    def _shares_inode(self, digest: str, sig: list[int]) -> bool:
        """True for a hard link into the store (what forge-out held before copies)."""
        try:
            st = os.stat(self._str(digest))
        except FileNotFoundError:
            return False
        return st.st_ino == sig[2] and st.st_dev == sig[4]

    def _exposed_memo(self) -> dict[str, list]:
        if self._exposed is None:
            try:
                self._exposed = json.loads((self.root / EXPOSED_MEMO).read_bytes())
            except (FileNotFoundError, ValueError):
                self._exposed = {}
        return self._exposed

    def _remember(self, dest: Path, digest: str) -> None:
        sig = _stat_sig(dest)
        if sig is not None:
            self._exposed_memo()[str(dest)] = [*sig, digest]
            self._exposed_dirty = True

    def save(self) -> None:
        """Persist what forge knows of the copies it wrote (a cache: losing it costs a
        re-hash of forge-out, never a wrong file)."""
        if self._exposed_dirty and self._exposed is not None:
            from forge.core.fsutil import write_atomic

            write_atomic(self.root / EXPOSED_MEMO, json.dumps(self._exposed).encode())
            self._exposed_dirty = False

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
