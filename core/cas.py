"""The local content-addressed store: blobs at ``blobs/sha256/<hex>``.

sha256 and not blake3, because the blobs are OCI blobs (layers, configs, manifests) and
their sha256 digest *is* their name in every registry and image layout; one name per blob
means an image layer is stored once whether a Dockerfile step, a pull or the remote cache
brought it. A blob that exists is never written twice; every write is temp file + rename,
so two forge processes can share one store. ``open_verified``/``verify`` re-hash on read;
a blob whose content does not match its name is deleted (evicted) and reported missing,
so the action that made it runs again.

Debris. Half-written blobs (``tmp/.tmp-<owner>-*``) and action work directories
(``tmp/work-<owner>-*``) of a process that was killed stay behind. Several forge processes
share one store, so age alone cannot tell a dead build's temp file from a live one's (a
layer can take an hour to write). Each CAS instance therefore owns its temp entries: before
its first one it takes ``locks/<owner>.lock`` (``<owner>`` = ``<pid>-<8 random hex>``,
unique per instance, so two processes never wait on each other) and holds an exclusive
``fcntl.flock`` on it for its lifetime; the kernel drops the lock when the process dies,
however it dies. ``collect_debris`` removes every entry whose owner's lock it can take (the
owner is dead) or whose lock is gone (the owner finished and the entry was left over), then
the dead owner's lock file. Entries of a live owner are never touched. Entries without an
owner in their name (written by an older forge) are removed once older than ``max_age_s``.
Every CAS collects when it is opened (``DEBRIS_MAX_AGE``, 1 hour, for unowned entries), so
the next build cleans up after a killed one; ``forge cache gc`` collects too. Lock files
live outside ``tmp/``, so an empty ``tmp/`` still means nothing is half-written. Another CAS
of the same process is known live without asking flock (``_LIVE_OWNERS``: on NFS flock is
a POSIX lock, which does not exclude its own process); a pid is not enough, since a
container gives a build the same pid every run. On a filesystem without flock temp entries
carry no owner, and only age makes them debris.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from forge.core.errors import CacheError

CHUNK = 1 << 20
BLOB_MODE = 0o444  # blobs are immutable content: nobody writes them in place
EXPOSED_MEMO = "exposed.json"  # stat data of the copies forge-out holds (see copy_out)
DEBRIS_MAX_AGE = 3600.0  # seconds after which a temp entry with no owner in its name is debris
# ".tmp-<owner>-…" and "work-<owner>-…"; an older forge wrote ".tmp-<8 chars>" and
# "work-<8 chars>" (mkstemp's alphabet has no "-"), which do not match.
_OWNED = re.compile(r"(?:\.tmp|work)-(?P<owner>[0-9]+-[0-9a-f]{8})-")
_LOCK = re.compile(r"(?P<owner>[0-9]+-[0-9a-f]{8})\.lock")


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


@dataclass
class Debris:
    """What ``collect_debris`` removed: temp entries (files and work directories) and
    their bytes, and the lock files of dead owners."""

    entries: int = 0
    bytes: int = 0
    locks: int = 0


# Owners of this process's live CAS instances. Another CAS of the same process never
# takes their locks for dead ones (flock would say so, but on NFS, where flock becomes a
# POSIX lock, a process's own locks do not exclude it). A pid alone would not do: in a
# container a build gets the same pid every run, and the killed run's debris would look live.
_LIVE_OWNERS: set[str] = set()


def _release_owner(fd: int, path: str, pid: int, owner: str) -> None:
    """Drop an owner's lock (finalizer of its CAS). A forked child that inherited the CAS
    leaves the parent's lock alone."""
    _LIVE_OWNERS.discard(owner)
    if os.getpid() == pid:
        with contextlib.suppress(OSError):
            os.unlink(path)
    with contextlib.suppress(OSError):
        os.close(fd)


def _tree_size_and_mtime(path: str) -> tuple[int, float]:
    """Bytes under ``path`` and the newest mtime in it (a live writer touches its files)."""
    st = os.lstat(path)
    size, newest = st.st_size, st.st_mtime
    if stat.S_ISDIR(st.st_mode):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    sub = os.lstat(os.path.join(root, name))
                    size += sub.st_size if not stat.S_ISDIR(sub.st_mode) else 0
                    newest = max(newest, sub.st_mtime)
    return size, newest


def _force_remove(func, path: str, _exc_info) -> None:  # noqa: ANN001 - rmtree's onerror
    """rmtree's second try: a work directory may hold read-only directories (an unpacked
    rootfs); make the parent writable and retry once, else leave the entry."""
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(path), 0o700)
        if func is not os.rmdir and os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
        func(path)


def _remove(path: str) -> int:
    """Delete a temp file or directory tree; the bytes it held (0 if it was gone)."""
    try:
        size, _ = _tree_size_and_mtime(path)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=_force_remove)
        else:
            os.unlink(path)
    except FileNotFoundError:
        return 0
    return size


class CAS:
    """Content-addressed blob store rooted at ``root`` (``<cache dir>/cas``).

    Opening one collects the debris of dead processes (see the module docstring);
    ``collect=False`` opens it without.
    """

    def __init__(self, root: Path, *, collect: bool = True):
        self.root = Path(root)
        self._blobs = self.root / "blobs" / "sha256"
        self._tmp = self.root / "tmp"
        self._locks = self.root / "locks"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._blobs_str = str(self._blobs)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._exposed: dict[str, list] | None = None
        self._exposed_lock = threading.Lock()
        self._exposed_dirty = False
        self._owner: str | None = None  # set by the first temp entry (_temp_prefix)
        self._owner_lock = threading.Lock()
        self.debris = Debris()  # what this instance's collect_debris calls removed in all
        if collect:
            self.collect_debris(DEBRIS_MAX_AGE)

    # -- temp entries and their owner ---------------------------------------------------
    def _temp_prefix(self, kind: str) -> str:
        """``.tmp-<owner>-`` or ``work-<owner>-``: the owner's lock is taken on first use
        (see the module docstring); plain ``.tmp-``/``work-`` where no lock can be had."""
        if self._owner is None:
            with self._owner_lock:
                if self._owner is None:
                    self._owner = self._take_owner_lock()
        return f"{kind}-{self._owner}-" if self._owner else f"{kind}-"

    def _take_owner_lock(self) -> str:
        """A fresh owner name whose lock this instance now holds; "" when the filesystem
        has no flock (then temp entries carry no owner and only age makes them debris)."""
        for _ in range(20):
            owner = f"{os.getpid()}-{secrets.token_hex(4)}"
            path = str(self._locks / f"{owner}.lock")
            try:
                self._locks.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            except OSError:
                return ""
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a collector took the fresh file for a dead owner's
                os.close(fd)
                continue
            except OSError:  # ENOLCK, EOPNOTSUPP: no locks on this filesystem
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                return ""
            try:
                # A collector may have taken the fresh file for a dead owner's and removed
                # it between our open and our flock: then the lock we hold guards nothing.
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            _LIVE_OWNERS.add(owner)
            weakref.finalize(self, _release_owner, fd, path, os.getpid(), owner)
            return owner
        return ""

    def _owner_state(self, owner: str) -> tuple[str, int | None]:
        """("alive", None), ("gone", None) when the owner has no lock file, or ("dead", fd)
        with the dead owner's lock now held by us."""
        if owner == self._owner or owner in _LIVE_OWNERS:
            return "alive", None
        path = self._locks / f"{owner}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return "gone", None
        except OSError:
            return "alive", None  # cannot tell: keep
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EWOULDBLOCK: the owner holds it; anything else: keep, do not guess
            os.close(fd)
            return "alive", None
        return "dead", fd

    def collect_debris(self, max_age_s: float = DEBRIS_MAX_AGE) -> Debris:
        """Remove temp entries of dead owners, left-over entries of finished ones, and
        entries with no owner in their name older than ``max_age_s`` seconds; then the
        lock files of dead owners. Never raises: debris that cannot go stays."""
        out = Debris()
        try:
            names = os.listdir(self._tmp)
        except OSError:
            return out
        try:
            lock_names = os.listdir(self._locks)
        except OSError:
            lock_names = []
        owned: dict[str, list[str]] = {}
        unowned: list[str] = []
        for name in names:
            m = _OWNED.match(name)
            if m:
                owned.setdefault(m.group("owner"), []).append(name)
            else:
                unowned.append(name)
        for name in lock_names:
            m = _LOCK.fullmatch(name)
            if m:
                owned.setdefault(m.group("owner"), [])
        for owner, entries in sorted(owned.items()):
            state, fd = self._owner_state(owner)
            if state == "alive":
                continue
            try:
                for name in entries:
                    with contextlib.suppress(OSError):
                        freed = _remove(str(self._tmp / name))
                        out.entries += 1
                        out.bytes += freed
                if fd is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._locks / f"{owner}.lock")
                        out.locks += 1
            finally:
                if fd is not None:
                    os.close(fd)
        now = time.time()
        for name in unowned:
            path = str(self._tmp / name)
            with contextlib.suppress(OSError):
                size, newest = _tree_size_and_mtime(path)
                if now - newest > max_age_s:
                    _remove(path)
                    out.entries += 1
                    out.bytes += size
        self.debris.entries += out.entries
        self.debris.bytes += out.bytes
        self.debris.locks += out.locks
        return out

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
        # Not fsutil.atomic_writer: the name is known only after the bytes are hashed, the
        # temp file lives in tmp/ (owned, collectable debris), and an existing blob is kept.
        fd, tmp = tempfile.mkstemp(prefix=self._temp_prefix(".tmp"), dir=self._tmp)
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
        # Not fsutil.atomic_writer: the copy is hashed while it is written and a mismatch
        # evicts the blob (not just the temp file), so it keeps its own temp + rename.
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
        with self._exposed_lock:  # read once; copy_out from several threads shares it
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
        return Path(tempfile.mkdtemp(prefix=self._temp_prefix("work"), dir=self._tmp))

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

    def iter_blobs(self) -> Iterator[tuple[str, os.stat_result]]:
        for entry in os.scandir(self._blobs):
            if entry.is_file() and not entry.name.startswith("."):
                yield "sha256:" + entry.name, entry.stat()
