"""Layer compression: deterministic gzip (ISA-L) and zstd, and reading any of them back.

Why ISA-L and not zlib: ``isal`` compresses about six times faster than zlib at a size
within a few percent of ``gzip -6`` (see benchmarks/layer_speed.py), and layer writing
is on every build's critical path. Its levels run 0-3, not zlib's 1-9; forge uses 2
(python-isal's own default): level 3 costs a third more time for 2 % smaller blobs.

What makes the compressed bytes, and so the blob digest, reproducible:

- the gzip header: ISA-L writes no file name and mtime 0 (OS byte 0xff);
- the input is cut into fixed CHUNK-sized pieces before the compressor sees it, because
  ISA-L's output depends on how its input was split across calls;
- the same compressor build: a layer's blob digest is a function of (tar bytes,
  :func:`fingerprint`), so that string belongs in the key of any action that compresses.
  ISA-L picks SIMD code paths per CPU; on x86-64 every SSE4.2+ CPU gives one output.

The diff_id (digest of the uncompressed tar) depends on none of this.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import isal
import zstandard
from isal import igzip, isal_zlib

GZIP, ZSTD, NONE = "gzip", "zstd", "none"
KINDS = (GZIP, ZSTD, NONE)
DEFAULT_LEVEL = {GZIP: 2, ZSTD: 3, NONE: 0}
LEVELS = {GZIP: range(0, 4), ZSTD: range(1, 23), NONE: range(0, 1)}

# Input is fed to compressors in pieces of exactly this size (the last may be shorter).
CHUNK = 1 << 20

# What a corrupt or truncated stream raises while being decompressed.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, EOFError, ValueError, zstandard.ZstdError, isal_zlib.IsalError,
)

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Compressor(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes) -> bytes:
        return bytes(data)

    def flush(self) -> bytes:
        return b""


def check(kind: str, level: int | None) -> int:
    """Validate a compression kind and level; return the level to use."""
    if kind not in KINDS:
        raise ValueError(f"unknown compression {kind!r}; use one of {', '.join(KINDS)}")
    level = DEFAULT_LEVEL[kind] if level is None else level
    if level not in LEVELS[kind]:
        rng = LEVELS[kind]
        raise ValueError(f"{kind} level {level} out of range {rng.start}..{rng.stop - 1}")
    return level


def new_compressor(kind: str, level: int | None = None) -> Compressor:
    """A streaming compressor; feed it CHUNK-sized pieces for reproducible output."""
    level = check(kind, level)
    if kind == GZIP:
        # wbits 31 = gzip framing (16) + 32 KiB window (15).
        return isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)
    if kind == ZSTD:
        # Single-threaded, no checksum, no content size: the frame then depends only on
        # the input and the level.
        return zstandard.ZstdCompressor(level=level).compressobj()
    return _Identity()


def fingerprint(kind: str, level: int | None = None) -> str:
    """Everything besides the input that decides the compressed bytes (for action keys)."""
    level = check(kind, level)
    if kind == GZIP:
        return f"gzip/isal-{isal.__version__}/level-{level}/chunk-{CHUNK}"
    if kind == ZSTD:
        return f"zstd/libzstd-{zstandard.ZSTD_VERSION}/level-{level}/chunk-{CHUNK}"
    return "none"


def sniff(head: bytes) -> str:
    """The compression of a stream, from its first bytes (a tar has no magic at offset 0)."""
    if head.startswith(_GZIP_MAGIC):
        return GZIP
    if head.startswith(_ZSTD_MAGIC):
        return ZSTD
    return NONE


def open_decompressed(fh: BinaryIO, kind: str) -> BinaryIO:
    """A readable stream of ``fh``'s content decompressed (multi-member gzip included)."""
    if kind == GZIP:
        return igzip.IGzipFile(fileobj=fh, mode="rb")
    if kind == ZSTD:
        return zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
    if kind == NONE:
        return fh
    raise ValueError(f"unknown compression {kind!r}")


class HashingReader:
    """Wraps a readable stream, hashing (sha256) and counting what is read through it."""

    def __init__(self, fh: BinaryIO):
        self._fh = fh
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read to the end, so the digest covers bytes a decompressor left unread."""
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


@contextlib.contextmanager
def uncompressed_file(path: Path, make_scratch: Callable[[], Path]) -> Iterator[Path]:
    """``path`` itself if it is not compressed, else a decompressed copy.

    Tar readers seek backwards to reach members; in a compressed stream each backward
    seek decompresses from the start again, so a compressed tarball is unpacked once, into
    a directory from ``make_scratch`` (e.g. ``CAS.tempdir``), which is removed afterwards.
    """
    with open(path, "rb") as fh:
        kind = sniff(fh.read(4))
        if kind == NONE:
            yield Path(path)
            return
        fh.seek(0)
        scratch = make_scratch()
        try:
            plain = scratch / "plain.tar"
            with open(plain, "wb") as out:
                shutil.copyfileobj(open_decompressed(fh, kind), out, CHUNK)
            yield plain
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
