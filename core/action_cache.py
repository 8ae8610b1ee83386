"""The action cache: action key -> ActionResult, one small JSON file per key.

An entry is written only after every blob of the result is in the CAS, with temp file +
rename, so a reader sees a whole entry or none; an entry whose blobs are missing or have
the wrong size is treated as a miss (and removed), so a crash, a ``gc`` or a corrupt blob
can cost a rebuild but never a wrong result.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from forge.core.actions import ActionResult, canonical_json
from forge.core.cas import CAS
from forge.core.errors import CacheError
from forge.core.fsutil import write_atomic


class ActionCache:
    def __init__(self, root: Path, cas: CAS):
        self.root = Path(root)
        self.cas = cas
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def lookup(self, key: str) -> ActionResult | None:
        """Return the result when the entry exists and every blob it needs is present."""
        path = self._path(key)
        try:
            data = json.loads(path.read_bytes())
            result = ActionResult.from_json(data["result"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, CacheError):
            self.remove(key)  # unreadable, or an older record format: never trust it
            return None
        for digest in result.all_blobs():
            expected = result.sizes.get(digest)
            try:
                actual = self.cas.size(digest)
            except Exception:
                self.remove(key)
                return None
            if expected is not None and actual != expected:
                self.cas.evict(digest)
                self.remove(key)
                return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recency for `forge cache gc`, which evicts whole results
        return result

    def record(self, key: str, result: ActionResult, info: dict[str, Any] | None = None, *,
               replace: bool = False) -> ActionResult:
        """Record ``result`` under ``key`` unless a valid entry is there: the first writer
        wins (two forge processes sharing a cache that ran one action at once), and the
        result the cache holds afterwards is returned, so that every process keys the
        dependents on that one. An entry that no longer verifies is replaced; ``replace``
        (``--no-cache``: the user asked for this run's result) replaces any entry."""
        entry = canonical_json({"key": key, "result": result.to_json(), "info": info or {},
                                "time": int(time.time())})
        path = self._path(key)
        if replace:
            write_atomic(path, entry)
            return result
        for _ in range(3):
            try:
                write_atomic(path, entry, exclusive=True)
                return result
            except FileExistsError:
                held = self.lookup(key)  # removes an entry that does not verify
                if held is not None:
                    return held
        write_atomic(path, entry)  # it kept vanishing under us: ours, plainly
        return result

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def iter_entries(self):
        for sub in self.root.iterdir() if self.root.exists() else ():
            if sub.is_dir():
                yield from sub.glob("*.json")
