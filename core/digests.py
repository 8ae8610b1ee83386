"""Source file digests, memoized by stat data so that an unchanged build reads no file.

The memo maps an absolute path to (size, mtime_ns, inode, ctime_ns) and the blake3 of
the content. A file whose stat tuple is unchanged is trusted without opening it; any
change — content edit, ``touch``, a rename over it — re-hashes it. ctime is included
because it changes on every write even when a tool restores mtime. The memo is a cache
of this machine's files, so it lives in the cache dir, keyed by workspace path; it is
never shared and never enters a key.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import blake3

from forge.core.actions import InputDigest, SourceFile
from forge.core.errors import BuildFileError
from forge.core.fsutil import write_atomic

CHUNK = 1 << 20


def hash_file(path: Path | str) -> str:
    h = blake3.blake3()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class FileDigests:
    def __init__(self, memo_path: Path | None):
        self._path = memo_path
        self._memo: dict[str, list] = {}
        self._dirty = False
        self._lock = threading.Lock()
        if memo_path is not None:
            try:
                self._memo = json.loads(memo_path.read_bytes())
            except (FileNotFoundError, ValueError):
                self._memo = {}
        self.hashed = 0  # files whose content was read in this build (for tests/benchmarks)

    def digest(self, src: SourceFile) -> InputDigest:
        path = src.abspath
        try:
            st = os.stat(path) if src.follow else os.lstat(path)
        except FileNotFoundError:
            raise BuildFileError(f"input file {src.relpath} ({path}) does not exist") from None
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            return InputDigest(src.relpath, False, "symlink", symlink=target)
        if not stat.S_ISREG(st.st_mode):
            raise BuildFileError(f"input {src.relpath} is not a regular file or symlink")
        sig = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        executable = bool(st.st_mode & 0o111)
        memo_key = path if not src.follow else "follow:" + path  # a link's text vs its target's bytes
        entry = self._memo.get(memo_key)
        if entry is not None and entry[:4] == sig:
            return InputDigest(src.relpath, executable, entry[4])
        digest = hash_file(path)
        with self._lock:
            self.hashed += 1
            self._memo[memo_key] = [*sig, digest]
            self._dirty = True
        return InputDigest(src.relpath, executable, digest)

    def save(self) -> None:
        if self._dirty and self._path is not None:
            write_atomic(self._path, json.dumps(self._memo, separators=(",", ":")).encode())
            self._dirty = False
