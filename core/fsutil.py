"""Atomic file writes: the one way forge puts a file where another process may read it.

A reader either sees no file or the whole file, never a half-written one, because every
write goes to a temporary file in the same directory and is renamed into place; a crash
or SIGKILL leaves only a stray ``.tmp-*`` file that nothing trusts.

Every "write these bytes atomically" goes through here (action-cache entries, keys.json,
the digest memo, action logs, OCI layout files, docker archives). The CAS keeps its own
temp + rename in two places, on purpose: ``CAS.writer`` names a blob only after hashing
what was streamed in, and ``CAS.copy_out`` hashes the copy as it writes and evicts a
corrupt blob; neither is a plain write of known bytes to a known path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _read_umask() -> int:
    mask = os.umask(0o022)  # read once, at import (single-threaded): umask is process-wide
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "wb", *, fsync: bool = False,
                  exclusive: bool = False) -> Iterator[IO]:
    """Open a temp file beside ``path``; rename it to ``path`` only if the block succeeds.
    ``exclusive``: link it there instead, so an existing ``path`` is kept and
    FileExistsError raised (the first of concurrent writers wins)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        # mkstemp makes 0600; forge's files (layouts, logs, keys.json) are for others to
        # read too, like any file a build tool writes: 0644 less the umask.
        os.fchmod(fd, 0o644 & ~_UMASK)
        with os.fdopen(fd, mode) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            finally:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temp file renamed over it);
    ``exclusive``: keep an existing ``path`` and raise FileExistsError."""
    with atomic_writer(path, exclusive=exclusive) as fh:
        fh.write(data)


def read_utf8(path: Path, shown: str, error: type[Exception], what: str) -> str:
    """A text file forge parses (BUILD, .star, WORKSPACE.toml): unreadable or not UTF-8 is
    ``error`` naming ``shown`` and, for bad bytes, the line and byte offset; a UTF-8 byte
    order mark is dropped."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{shown}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{shown}:{line}: not UTF-8 at byte {exc.start} (0x{data[exc.start]:02x}); "
                    f"{what} must be UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text
