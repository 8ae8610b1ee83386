"""A signed remote cache: writers sign each result record, a reader with trusted_keys
restores only records one of its keys signed; anything else is a miss with a warning that
names the key and the signer, and the action builds."""

from __future__ import annotations

import json
import uuid

import pytest

import forge
from forge.core.cas import CAS
from tests.services import require_registry, testdata
from tests.supply.util import BUSYBOX, make_key, workspace_files

pytestmark = pytest.mark.integration

APP = ["//:app#Image.0", "//:base#Image.0", "//:bb#OciImport.0", "//:conf#Layer.0", "//:dpkg#Layer.0"]


def cache_ws(forge_workspace, tmp_path, name: str, url: str, extra: str):
    config = f'[remote_cache]\nurl = "{url}"\n{extra}'
    return forge_workspace(workspace_files(testdata(BUSYBOX), config=config), name=name,
                           cache=tmp_path / f"cache-{name}")


def warnings(out) -> list[str]:
    return [e["message"] for e in out.events if e.get("event") == "warning"]


def key_id(path) -> str:
    return forge.supply.signing.load_public_key(str(path)).key_id


def test_signed_entries_are_restored_only_by_readers_that_trust_the_signer(forge_workspace, tmp_path):
    url = f"{require_registry()}/forge-test/signed-cache-{uuid.uuid4().hex[:12]}"
    a_private, a_public = make_key(tmp_path / "keys", "a")
    _, b_public = make_key(tmp_path / "keys", "b")
    writer = cache_ws(forge_workspace, tmp_path, "writer", url, f'write = true\nsigning_key = "{a_private}"\n')
    writer.run("build", "//:app", "--json").assert_success()

    # trusts only B: every entry is a miss naming A as the signer, and everything builds
    only_b = cache_ws(forge_workspace, tmp_path, "only-b", url, f'trusted_keys = ["{b_public}"]\n')
    out = only_b.run("build", "//:app", "--json").assert_success()
    assert out.executed() == APP
    refused = [w for w in warnings(out) if "is unusable, building it locally" in w]
    assert len(refused) == len(APP)
    assert all(f"signed by key {key_id(a_public)}, which is not trusted" in w and key_id(b_public) in w
               for w in refused), refused

    # trusts A: every entry is restored
    trusts_a = cache_ws(forge_workspace, tmp_path, "trusts-a", url,
                        f'trusted_keys = ["{b_public}", "{a_public}"]\n')
    out = trusts_a.run("build", "//:app", "--json").assert_success()
    assert set(out.statuses().values()) == {"cached-remote"} and not warnings(out)
    assert out.executed() == []


def test_unsigned_and_tampered_records_are_refused(forge_workspace, tmp_path):
    registry = require_registry()
    url = f"{registry}/forge-test/signed-cache-{uuid.uuid4().hex[:12]}"
    a_private, a_public = make_key(tmp_path / "keys", "a")
    unsigned = cache_ws(forge_workspace, tmp_path, "unsigned", url, "write = true\n")
    unsigned.run("build", "//:conf").assert_success()
    reader = cache_ws(forge_workspace, tmp_path, "reader", url, f'trusted_keys = ["{a_public}"]\n')
    out = reader.run("build", "//:conf", "--json").assert_success()
    assert out.executed() == ["//:conf#Layer.0"]
    assert any("the entry is unsigned, and this cache trusts only records signed by "
               f"{key_id(a_public)}" in w for w in warnings(out)), warnings(out)

    # a signed entry whose record someone with push rights changed (valid digests, old signature)
    url2 = f"{registry}/forge-test/signed-cache-{uuid.uuid4().hex[:12]}"
    signer = cache_ws(forge_workspace, tmp_path, "signer", url2, f'write = true\nsigning_key = "{a_private}"\n')
    signer.run("build", "//:conf", "//:dpkg").assert_success()
    key = json.loads((signer.root / "forge-out/.forge/keys.json").read_bytes())["//:conf#Layer.0"]["key"]
    repo = url2.split("/", 1)[1]
    client = forge.oci.RegistryClient(registry)
    manifest = json.loads(client.get_manifest(repo, key)[0])
    record = json.loads(client.read_blob(repo, manifest["config"]["digest"]))
    record["result"]["metadata"]["swapped"] = "by a registry writer"
    cas = CAS(tmp_path / "evil-cas")
    new = cas.put_bytes(forge.canonical_json(record))
    client.push_blob(cas, repo, new.digest)
    manifest["config"].update(digest=new.digest, size=new.size)
    assert "dev.forge.record.signature" in manifest["annotations"]
    client.push_manifest(repo, key, forge.canonical_json(manifest), forge.oci.media.OCI_MANIFEST)
    reader2 = cache_ws(forge_workspace, tmp_path, "reader2", url2, f'trusted_keys = ["{a_public}"]\n')
    out = reader2.run("build", "//:conf", "--json").assert_success()
    assert out.executed() == ["//:conf#Layer.0"]
    assert any(f"the signature by key {key_id(a_public)}" in w and "does not match the entry's record" in w
               for w in warnings(out)), warnings(out)
    # the signer's own untouched entries still restore for a reader that trusts it
    reader3 = cache_ws(forge_workspace, tmp_path, "reader3", url2, f'trusted_keys = ["{a_public}"]\n')
    out = reader3.run("build", "//:dpkg", "--json").assert_success()
    assert out.statuses() == {"//:dpkg#Layer.0": "cached-remote"}
