"""``forge cache stats`` and ``forge cache gc``: size accounting and LRU trimming.

Recency is the action-cache entry's mtime, refreshed on every hit, so gc removes what no
recent build used — a whole result at a time (see ``gc``). gc first collects ``cas/tmp``
debris (``CAS.collect_debris``): temp files and work directories of forge processes that
died are removed whatever their age (their owner's lock is free), entries with no owner
in their name once older than ``debris_max_age`` (1 hour by default); a running build's
temp files are never touched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from forge.core.cas import DEBRIS_MAX_AGE, Debris
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


@dataclass
class GcReport:
    """What ``collect`` did: blobs removed and bytes freed, action results dropped, and the
    ``cas/tmp`` debris removed."""

    removed: int = 0
    freed: int = 0
    dropped: int = 0
    debris: Debris = field(default_factory=Debris)


_DURATION_UNITS = {"": 1, "S": 1, "M": 60, "H": 3600, "D": 86400}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"30m"``, ``"1h"``, ``"2d"`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([SMHD]?)\s*", text.upper())
    if not m:
        raise UsageError(f"age {text!r} should look like 90s, 30m, 1h or 2d")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def collect(session: Session, max_size: int, *, debris_max_age: float = DEBRIS_MAX_AGE) -> GcReport:
    """``forge cache gc``: collect ``cas/tmp`` debris (see the module docstring), then trim
    the store to ``max_size`` (see ``gc``). The report's debris is all the session's CAS
    removed, including what it collected when it was opened."""
    session.cas.collect_debris(debris_max_age)
    removed, freed, dropped = _trim(session, max_size)
    return GcReport(removed, freed, dropped, session.cas.debris)


def gc(session: Session, max_size: int, *, debris_max_age: float = DEBRIS_MAX_AGE) -> tuple[int, int, int]:
    """``collect``, returning (blobs removed, bytes freed, entries dropped); the debris
    removed is in ``collect``'s report."""
    report = collect(session, max_size, debris_max_age=debris_max_age)
    return report.removed, report.freed, report.dropped


def _trim(session: Session, max_size: int) -> tuple[int, int, int]:
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
