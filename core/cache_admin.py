"""``forge cache stats`` and ``forge cache gc``: size accounting and LRU trimming.

Recency is the action-cache entry's mtime, refreshed on every hit, so gc removes what no
recent build used — a whole result at a time (see ``gc``).
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
    """Trim the store to ``max_size`` bytes by whole result closures, least recently used
    first: an action-cache entry is removed, then its outputs (a manifest, an index), then
    the rest of its blobs that no remaining entry needs. So "a manifest in the CAS means its
    whole image is there" holds at every step, even when gc is interrupted, and no
    surviving entry ever points at a blob gc removed. Blobs no entry names go first.
    Returns (blobs removed, bytes freed, entries dropped)."""
    from forge.core.actions import ActionResult
    from forge.core.errors import CacheError

    cas = session.cas
    sizes = {digest: st.st_size for digest, st in cas.iter_blobs()}
    total = sum(sizes.values())
    entries: list[tuple[int, Any, list[str]]] = []  # (recency, path, closure: outputs first)
    refs: dict[str, int] = {}
    for path in session.action_cache.iter_entries():
        try:
            result = ActionResult.from_json(json.loads(path.read_bytes())["result"])
            mtime = path.stat().st_mtime_ns
        except (ValueError, KeyError, OSError, CacheError):
            path.unlink(missing_ok=True)  # unreadable: never trusted anyway
            continue
        outputs = [d.digest for d in result.outputs.values()]
        closure = list(dict.fromkeys([*outputs, *result.all_blobs(), *([result.log] if result.log else [])]))
        entries.append((mtime, path, closure))
        for digest in closure:
            refs[digest] = refs.get(digest, 0) + 1
    removed = freed = dropped = 0

    def evict(digest: str) -> None:
        nonlocal total, removed, freed
        if digest in sizes:
            cas.evict(digest)
            size = sizes.pop(digest)
            total -= size
            freed += size
            removed += 1

    for digest in sorted(d for d in sizes if d not in refs):
        if total <= max_size:
            break
        evict(digest)
    for _mtime, path, closure in sorted(entries, key=lambda e: (e[0], str(e[1]))):
        if total <= max_size:
            break
        path.unlink(missing_ok=True)
        dropped += 1
        for digest in closure:
            refs[digest] -= 1
            if refs[digest] == 0:
                evict(digest)
    return removed, freed, dropped
