"""``forge-out/.forge/keys.json``: what the last build keyed, for ``forge explain`` and
``forge graph`` to compare against.

One record per action id: its key, the shown key manifest (build-arg values hashed), its
deps, its status, and — when the key changed — the previous key, manifest and deps, so
explain can say why an action rebuilt last time. Merged, never overwritten whole: a build
of one target keeps every other target's records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from forge.core.canonical import canonical_json
from forge.core.fsutil import write_atomic


class KeysRecord:
    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, Any]:
        """The records of the last builds (empty when there are none, or unreadable)."""
        try:
            return json.loads(self.path.read_bytes())
        except (FileNotFoundError, ValueError):
            return {}

    def save(self, manifests: dict[str, Any]) -> None:
        """Merge this build's records in; an action whose key changed keeps the previous
        one under ``previous``."""
        if not manifests:
            return
        previous = self.load()
        merged = dict(previous)
        for ident, record in manifests.items():
            old = previous.get(ident)
            if old is not None and old.get("key") != record["key"]:
                record = {**record, "previous": {k: old[k] for k in ("key", "manifest", "deps") if k in old}}
            elif old is not None and "previous" in old:
                record = {**record, "previous": old["previous"]}
            merged[ident] = record
        if merged != previous:
            write_atomic(self.path, canonical_json(merged))
