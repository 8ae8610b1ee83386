"""``forge cache stats`` and ``forge cache gc``: size accounting and LRU trimming.

Recency is the blob file's mtime, refreshed on every cache hit (``CAS.touch``), so gc
removes what no recent build used. Action results whose blobs were removed become misses
on their own (the action cache checks blobs on lookup) and are dropped here too.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from forge.core.errors import UsageError

if TYPE_CHECKING:
    from forge.core.session import Session

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if not m:
        raise UsageError(f"size {text!r} should look like 500M, 10G or 1024")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def stats(session: Session) -> dict[str, Any]:
    blobs = list(session.cas.iter_blobs())
    return {
        "dir": str(session.cache_dir),
        "blobs": len(blobs),
        "bytes": sum(st.st_size for _, st in blobs),
        "actions": sum(1 for _ in session.action_cache.iter_entries()),
    }


def gc(session: Session, max_size: int) -> tuple[int, int, int]:
    cas = session.cas
    blobs = sorted(cas.iter_blobs(), key=lambda item: item[1].st_mtime_ns)
    total = sum(st.st_size for _, st in blobs)
    removed = freed = 0
    gone: set[str] = set()
    for digest, st in blobs:
        if total <= max_size:
            break
        cas.evict(digest)
        gone.add(digest)
        total -= st.st_size
        freed += st.st_size
        removed += 1
    dropped = 0
    if gone:
        for path in list(session.action_cache.iter_entries()):
            try:
                entry = json.loads(path.read_bytes())
                needs = set(entry["result"]["outputs"].values()) | set(entry["result"].get("blobs", []))
            except (ValueError, KeyError, OSError):
                needs = gone
            if needs & gone:
                path.unlink(missing_ok=True)
                dropped += 1
    return removed, freed, dropped
