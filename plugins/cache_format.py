"""The remote cache's wire format, pure: what a result looks like in an OCI registry.

No I/O here: bytes in, bytes out, so the format can be read (and checked against README
"Remote cache format", tests/remote/test_cache_format.py) apart from the backend that
moves it (plugins/oci_cache.py). Same key and result (and signer) give the same bytes on
every machine.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import forge
from forge import (
    ActionResult,
    CacheError,
    Descriptor,
    RemoteCacheError,
    RemoteEntryInvalid,
    canonical_json,
)

FORMAT_VERSION = 2
RESULT_MEDIA_TYPE = "application/vnd.forge.action-result.v2+json"
LOG_MEDIA_TYPE = "text/plain"
KEY_ANNOTATION = "dev.forge.action-key"
FORMAT_ANNOTATION = "dev.forge.format"
# A signed record (writers with [remote_cache] signing_key): the key id of the signer and
# base64 of its DER ECDSA P-256 signature over the record blob's exact bytes.
SIGNER_ANNOTATION = "dev.forge.record.signer"
SIGNATURE_ANNOTATION = "dev.forge.record.signature"
TITLE_ANNOTATION = "org.opencontainers.image.title"
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_key(key: str) -> None:
    if not _TAG.fullmatch(key):
        raise RemoteCacheError(f"action key {key!r} is not a valid OCI tag")


def record_bytes(key: str, result: ActionResult) -> bytes:
    """The config blob: what other tools read to learn the result."""
    return canonical_json({"format": FORMAT_VERSION, "key": key, "result": result.to_json()})


def parse_record(data: bytes, key: str, where: str) -> ActionResult:
    """The result in a record, which must be of this format and of ``key``; anything else
    is RemoteEntryInvalid."""
    try:
        record = json.loads(data)
        if record.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT_VERSION}")
        if record.get("key") != key:
            raise ValueError(f"it is the record of key {record.get('key')!r}")
        return ActionResult.from_json(record["result"])
    except (CacheError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RemoteEntryInvalid(f"{where}: bad result record: {exc}") from None


def manifest_bytes(key: str, result: ActionResult, record: Descriptor, log: Descriptor | None = None,
                   *, artifact_type: bool = True, signature: tuple[str, bytes] | None = None) -> bytes:
    """The tagged manifest: same key + result (+ signer) -> same bytes, on any machine.
    ``record`` is the config blob's descriptor, ``log`` the log's (its digest is
    ``result.log``); ``signature`` is (key id, DER signature of the record bytes)."""
    if (log.digest if log else None) != result.log:
        raise ValueError(f"log descriptor {log} is not the result's log {result.log}")
    titles: dict[str, str] = {}
    for name, d in sorted(result.outputs.items()):
        titles.setdefault(d.digest, name)
    layers = []
    for d in result.blobs:
        desc: dict[str, Any] = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
        if d.digest in titles:
            desc["annotations"] = {TITLE_ANNOTATION: titles[d.digest]}
        layers.append(desc)
    if log is not None and log.digest not in result.sizes:
        layers.append({"mediaType": LOG_MEDIA_TYPE, "digest": log.digest, "size": log.size,
                       "annotations": {TITLE_ANNOTATION: "log"}})
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": forge.oci.media.OCI_MANIFEST,
        "config": {"mediaType": RESULT_MEDIA_TYPE, "digest": record.digest, "size": record.size},
        "layers": layers,
        "annotations": {KEY_ANNOTATION: key, FORMAT_ANNOTATION: str(FORMAT_VERSION)},
    }
    if signature is not None:
        doc["annotations"][SIGNER_ANNOTATION] = signature[0]
        doc["annotations"][SIGNATURE_ANNOTATION] = base64.b64encode(signature[1]).decode()
    if artifact_type:
        doc["artifactType"] = RESULT_MEDIA_TYPE
    return canonical_json(doc)
