"""The one JSON encoding forge hashes and writes: keys, result records, image manifests.

Sorted keys and no whitespace, so the same value always gives the same bytes. Decisions:

- ``ensure_ascii=False``: text is written as UTF-8, not ``\\uXXXX`` escapes. Image
  manifests and configs have always been written this way (their digests are pinned by
  tests and by every registry that holds them), so this is the encoding that cannot change;
  keys follow it (OUTPUT_FORMAT 3 in core/actions.py re-keyed them when they did).
- ``allow_nan=False``: NaN and infinity are not JSON; refusing them (ValueError) keeps a
  non-standard token out of a blob another tool must parse. Finite floats are encoded;
  action params refuse them separately (``_freeze_params``: a float has many spellings).
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: the same value always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()
