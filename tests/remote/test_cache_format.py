"""The remote cache's wire format (plugins/cache_format.py, pure) against README "Remote
cache format": the document other tools read is the one forge writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from forge.core.actions import ActionResult
from forge.core.cas import Descriptor
from forge.plugins import cache_format as fmt

README = (Path(__file__).parents[2] / "README.md").read_text()
SECTION = README[README.index("## Remote cache format"):]
SECTION = SECTION[:SECTION.find("\n## ", 3)] if "\n## " in SECTION[3:] else SECTION


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def example_manifest() -> dict:
    block = re.search(r"```json\n(.*?)```", SECTION, re.S).group(1)
    return json.loads(block.replace("…", "0" * 64).replace("<key>", "k" * 64))


def written_manifest(signed: bool = False) -> dict:
    config = Descriptor(digest(1), 1022, "application/vnd.oci.image.config.v1+json")
    layer = Descriptor(digest(2), 33571234, "application/vnd.oci.image.layer.v1.tar+gzip", diff_id=digest(9))
    manifest = Descriptor(digest(3), 735, "application/vnd.oci.image.manifest.v1+json", platform="linux/amd64")
    log = Descriptor(digest(4), 812, fmt.LOG_MEDIA_TYPE)
    result = ActionResult.make({"manifest": manifest}, [config, layer], {"platform": "linux/amd64"}, log.digest)
    key = "a" * 64
    record = Descriptor(digest(5), len(fmt.record_bytes(key, result)), fmt.RESULT_MEDIA_TYPE)
    signature = ("sha256:" + "b" * 64, b"\x30\x01") if signed else None
    return json.loads(fmt.manifest_bytes(key, result, record, log, signature=signature))


def test_every_name_of_the_format_is_documented():
    for name in ("RESULT_MEDIA_TYPE", "LOG_MEDIA_TYPE", "KEY_ANNOTATION", "FORMAT_ANNOTATION",
                 "SIGNER_ANNOTATION", "SIGNATURE_ANNOTATION", "TITLE_ANNOTATION"):
        assert getattr(fmt, name) in SECTION, f"README does not name {name} = {getattr(fmt, name)!r}"
    assert f"format version {fmt.FORMAT_VERSION}" in SECTION


def test_the_readme_example_is_the_shape_forge_writes():
    ours, documented = written_manifest(), example_manifest()
    assert set(ours) == set(documented)
    assert ours["config"]["mediaType"] == documented["config"]["mediaType"] == fmt.RESULT_MEDIA_TYPE
    assert ours["artifactType"] == documented["artifactType"]
    assert set(ours["annotations"]) == set(documented["annotations"])
    assert [layer["mediaType"] for layer in ours["layers"]] == [layer["mediaType"] for layer in documented["layers"]]
    titles = [layer.get("annotations", {}).get(fmt.TITLE_ANNOTATION) for layer in ours["layers"]]
    assert titles == [layer.get("annotations", {}).get(fmt.TITLE_ANNOTATION) for layer in documented["layers"]]
    signed = written_manifest(signed=True)["annotations"]
    assert {fmt.SIGNER_ANNOTATION, fmt.SIGNATURE_ANNOTATION} <= set(signed)


def test_the_record_is_what_the_readme_says():
    result = ActionResult.make({"out": Descriptor(digest(7), 3, "application/octet-stream")})
    record = json.loads(fmt.record_bytes("c" * 64, result))
    assert set(record) == {"format", "key", "result"} and record["format"] == fmt.FORMAT_VERSION
    assert set(record["result"]) == {"format", "outputs", "blobs", "metadata", "log"}
    assert fmt.parse_record(fmt.record_bytes("c" * 64, result), "c" * 64, "here") == result
