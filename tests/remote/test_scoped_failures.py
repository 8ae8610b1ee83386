"""Scoped remote cache failures against the real registry: one bad entry costs one miss
(the backend stays in use), a broken registry costs the backend; under
``--remote-cache-required`` either stops the build cleanly. And the write side: the push
without ``artifactType`` only for a registry that refuses the field, first writer wins,
an invalid entry is replaced, a lost race is reported.

Faults are real registry states (a tag overwritten, a blob deleted or corrupted in the
registry's storage) or answers of ``FaultProxy``, a small proxy in front of the real
registry. No skopeo, no oras CLI: the reader runs with an empty ``PATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from forge.core.action_cache import ActionCache
from forge.core.actions import ActionResult, canonical_json
from forge.core.cas import CAS
from forge.core.oci import media
from forge.core.oci.registry import RegistryClient
from forge.plugins.cache_settings import CacheSettings
from forge.plugins.oci_cache import KeyConflict, OciCache
from tests.services import registry_storage_root, require_registry

from .conftest import FaultProxy, Seen, workspace_toml
from .test_oci_cache import ALL, A, B, C, D, chain_files, outputs, two_caches, warnings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO_ROOT = Path(__file__).resolve().parents[2]


def keys(out) -> dict[str, str]:
    return {e["id"]: e["key"] for e in out.actions()}


def client_repo(cache_url: str) -> tuple[RegistryClient, str]:
    host, repo = cache_url.split("/", 1)
    return RegistryClient(host), repo


def raw_manifest(host: str, repo: str, ref: str) -> bytes:
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{ref}",
                                 headers={"Accept": media.OCI_MANIFEST})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def delete(url: str) -> int:
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=10) as resp:
        return resp.status


def error(status: int, code: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"errors": [{"code": code, "message": code.lower(), "detail": None}]}).encode()
    return status, {"Content-Type": "application/json"}, body


# -- corrupting one entry -------------------------------------------------------------------

# kind -> what the warning says about it
KINDS = {
    "record-of-another-key": "record of key",
    "unparseable-record": "bad result record",
    "layer-missing-from-manifest": "is not a layer of the manifest",
    "blob-deleted": "registry does not have it",
    "blob-corrupt": "does not verify",
}


def corrupt(kind: str, cache_url: str, key: str, other_key: str, blob: str, scratch: Path):
    """Break the entry under ``key`` in one way; returns an undo function (or None)."""
    client, repo = client_repo(cache_url)
    host = cache_url.split("/", 1)[0]
    if kind == "blob-deleted":  # the registry forgets a blob the manifest lists: 404 BLOB_UNKNOWN
        assert delete(f"http://{host}/v2/{repo}/blobs/{blob}") == 202
        return None
    if kind == "blob-corrupt":  # same size, other content, in the registry's own storage
        hexpart = blob.split(":", 1)[1]
        data = registry_storage_root() / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
        good = data.read_bytes()
        data.write_bytes(bytes(c ^ 0x20 for c in good))
        return lambda: data.write_bytes(good)
    manifest = json.loads(raw_manifest(host, repo, key))
    cas = CAS(scratch)
    if kind == "layer-missing-from-manifest":
        manifest["layers"] = [d for d in manifest["layers"] if d["digest"] != blob]
    else:
        record = json.loads(client.read_blob(repo, manifest["config"]["digest"]))
        if kind == "record-of-another-key":
            record["key"] = other_key
            data = canonical_json(record)
        else:
            data = b'{"format": 2, "key": "' + key.encode() + b'", "result": {"format": 2}}'
        new = cas.put_bytes(data)
        client.push_blob(cas, repo, new.digest)
        manifest["config"].update(digest=new.digest, size=new.size)
    client.push_manifest(repo, key, json.dumps(manifest).encode(), media.OCI_MANIFEST)
    return None


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_one_corrupt_entry_is_one_miss_and_the_backend_stays(forge_workspace, tmp_path, cache_url, kind):
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(cache_url, write=True),
                      workspace_toml(cache_url))
    first = a.run("build", "//p:all", "--json").assert_success()
    k = keys(first)
    undo = corrupt(kind, cache_url, k[A], k[B], outputs(first)[A]["out"], tmp_path / "scratch")
    empty = tmp_path / "no-tools"
    empty.mkdir()
    try:
        # PATH holds nothing: no skopeo, no oras, no docker CLI is needed to restore
        out = b.run("build", "//p:all", "--json", env={"PATH": str(empty)}).assert_success()
    finally:
        if undo:
            undo()
    assert out.statuses() == {A: "built", B: "cached-remote", C: "cached-remote", D: "cached-remote"}
    assert outputs(out) == outputs(first)
    [warning] = warnings(out)
    assert k[A] in warning and cache_url in warning and KINDS[kind] in warning
    assert "unusable, building it locally" in warning
    cas_b = CAS(b.cache / "cas")
    assert list((cas_b.root / "tmp").iterdir()) == []  # nothing half-written
    assert all(cas_b.verify(d) for d in outputs(out)[A].values())


def test_lookup_raises_remote_entry_invalid_for_the_entry_only(tmp_path, cache_url):
    from forge.core.errors import RemoteEntryInvalid

    cas = CAS(tmp_path / "cas")
    backend = OciCache(CacheSettings(cache_url, write=True))
    good_key, bad_key = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    for k in (good_key, bad_key):
        backend.push(k, ActionResult.make({"out": cas.put_bytes(k.encode())}), cas)
    corrupt("record-of-another-key", cache_url, bad_key, good_key, "", tmp_path / "scratch")
    fresh = CAS(tmp_path / "fresh")
    with pytest.raises(RemoteEntryInvalid, match=f"{cache_url}:{bad_key}: bad result record: it is the record of key"):
        backend.lookup(bad_key, fresh)
    assert backend.lookup(good_key, fresh) is not None  # the same backend goes on serving


@pytest.mark.parametrize("where", ["manifests", "blobs"])
@pytest.mark.parametrize("status", [500, 403])
def test_a_failing_registry_costs_the_backend_not_an_entry(forge_workspace, tmp_path, registry_proxy,
                                                           where, status):
    url = proxied(registry_proxy)
    direct = f"{require_registry()}/{url.split('/', 1)[1]}"
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(direct, write=True),
                      workspace_toml(url))
    a.run("build", "//p:all", "--json").assert_success()
    registry_proxy.rules.append(
        lambda s: error(status, "DENIED" if status == 403 else "UNKNOWN")
        if s.method == "GET" and f"/{where}/" in s.path else None)
    out = b.run("build", "//p:all", "--json", "-j", "1").assert_success()
    assert out.executed() == ALL
    [warning] = warnings(out)
    assert f"remote cache {url} unusable, building locally" in warning
    assert f"HTTP {status}" in warning or (status == 403 and "refused access" in warning)
    # the first lookup failed and the backend was dropped: no other action asked it
    assert sum(1 for s in registry_proxy.seen if s.method == "GET" and "/manifests/" in s.path) == 1


# -- under --remote-cache-required ----------------------------------------------------------


def test_required_stops_on_a_corrupt_entry_and_records_nothing_of_it(forge_workspace, tmp_path, cache_url):
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(cache_url, write=True),
                      workspace_toml(cache_url))
    first = a.run("build", "//p:all", "--json").assert_success()
    k = keys(first)
    corrupt("record-of-another-key", cache_url, k[A], k[B], "", tmp_path / "scratch")
    out = b.run("build", "//p:c", "--json", "-j", "1", "--remote-cache-required")
    out.assert_failure(1)
    assert k[A] in out.stderr and "record of key" in out.stderr
    assert "Traceback" not in out.stderr
    cas_b = CAS(b.cache / "cas")
    ac = ActionCache(b.cache / "ac", cas_b)
    assert [ac.lookup(k[x]) for x in (A, B, C)] == [None, None, None]
    assert list((cas_b.root / "tmp").iterdir()) == []


def run_forge(ws, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """forge in a process of its own: a hang (a thread that never stops) is a timeout."""
    environ = {**os.environ, "FORGE_CACHE": str(ws.cache), "PYTHONPATH": str(REPO_ROOT), **env}
    return subprocess.run([sys.executable, "-c", "from forge.cli import main; main()", *args],
                          cwd=ws.root, env=environ, capture_output=True, text=True, timeout=timeout)


def test_required_stops_when_the_registry_dies_mid_build(forge_workspace, tmp_path, throwaway_registry):
    url = f"{throwaway_registry.host}/cache"
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(url, write=True),
                      workspace_toml(url))
    k = keys(a.run("build", "//p:all", "--json").assert_success())
    kill = {"FORGE_TEST_KILL_PID": str(throwaway_registry.process.pid), "FORGE_TEST_KILL_ON": A,
            "FORGE_TEST_KILL_PORT": str(throwaway_registry.port)}
    start = time.monotonic()
    proc = run_forge(b, "build", "//p:c", "-j", "1", "--remote-cache-required", env=kill)
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - start < 60
    assert f"remote cache {url} failed (--remote-cache-required)" in proc.stderr
    assert "connection refused" in proc.stderr and "Traceback" not in proc.stderr
    ac = ActionCache(b.cache / "ac", CAS(b.cache / "cas"))
    # A's record arrived before the registry died, its bytes did not (nothing read them
    # until B): nothing of it is recorded, nothing half-trusted is left behind
    assert ac.lookup(k[A]) is None
    assert ac.lookup(k[B]) is None and ac.lookup(k[C]) is None


# -- the manifest PUT: transport failures are not refusals ----------------------------------


def proxied(proxy: FaultProxy) -> str:
    return f"{proxy.host}/forge-cache-test/{uuid.uuid4().hex[:16]}"


@pytest.mark.parametrize(("status", "code", "puts"), [
    (500, "UNKNOWN", 1),
    (503, "UNAVAILABLE", 3),  # the client retries 502/503/504, never without artifactType
    (400, "MANIFEST_BLOB_UNKNOWN", 1),  # a refusal, but not of the field
])
def test_failed_manifest_put_degrades_without_a_second_push(forge_workspace, registry_proxy, status, code, puts):
    url = proxied(registry_proxy)
    registry_proxy.rules.append(lambda s: error(status, code) if s.is_manifest_put else None)
    ws = forge_workspace({"WORKSPACE.toml": workspace_toml(url, write=True), **chain_files()})
    out = ws.run("build", "//p:all", "--json", "-j", "1").assert_success()
    assert out.executed() == ALL
    [warning] = warnings(out)
    assert f"remote cache {url} unusable, building locally" in warning and f"HTTP {status}" in warning
    sent = registry_proxy.manifest_puts()
    assert len(sent) == puts  # the first upload fails, the backend is dropped: no more PUTs
    assert all(b'"artifactType"' in s.body for s in sent)
    assert all(s.headers.get("If-None-Match") == "*" for s in sent)


def test_timed_out_manifest_put_degrades_without_a_second_push(forge_workspace, registry_proxy, monkeypatch):
    monkeypatch.setattr("forge.core.oci.registry_client.READ_TIMEOUT", 0.5)
    url = proxied(registry_proxy)

    def hang(seen: Seen):
        if seen.is_manifest_put:
            time.sleep(1.5)
            return error(500, "UNKNOWN")  # to a client that gave up
        return None

    registry_proxy.rules.append(hang)
    ws = forge_workspace({"WORKSPACE.toml": workspace_toml(url, write=True), **chain_files()})
    out = ws.run("build", "//p:all", "--json", "-j", "1").assert_success()
    [warning] = warnings(out)
    assert "unusable, building locally" in warning and "timed out" in warning
    sent = registry_proxy.manifest_puts()
    assert len(sent) == 3 and all(b'"artifactType"' in s.body for s in sent)


def test_registry_refusing_artifact_type_gets_the_manifest_without_it(forge_workspace, tmp_path, registry_proxy):
    url = proxied(registry_proxy)
    registry_proxy.rules.append(
        lambda s: error(400, "MANIFEST_INVALID") if s.is_manifest_put and b'"artifactType"' in s.body else None)
    direct = f"{require_registry()}/{url.split('/', 1)[1]}"
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(url, write=True),
                      workspace_toml(direct))
    first = a.run("build", "//p:all", "--json").assert_success()
    assert warnings(first) == []
    sent = registry_proxy.manifest_puts()
    assert len(sent) == 8 and sum(b'"artifactType"' in s.body for s in sent) == 4
    restored = b.run("build", "//p:all", "--json").assert_success()
    assert set(restored.statuses().values()) == {"cached-remote"} and warnings(restored) == []
    host, repo = direct.split("/", 1)
    doc = json.loads(raw_manifest(host, repo, keys(first)[A]))
    assert "artifactType" not in doc and doc["config"]["mediaType"].startswith("application/vnd.forge.")


# -- first writer wins ----------------------------------------------------------------------


def two_results(cas: CAS) -> tuple[ActionResult, ActionResult]:
    """Two different results of one key: what a non-reproducible action makes."""
    one, two = (cas.put_bytes(f"{n} {uuid.uuid4()}".encode()) for n in ("one", "two"))
    return ActionResult.make({"out": one}), ActionResult.make({"out": two})


def test_a_valid_different_result_is_kept_and_counted(tmp_path, cache_url):
    cas = CAS(tmp_path / "cas")
    first, second = two_results(cas)
    key = uuid.uuid4().hex * 2
    writer = OciCache(CacheSettings(cache_url, write=True))
    assert writer.push(key, first, cas).results == 1
    client, repo = client_repo(cache_url)
    before = client.resolve_tag(repo, key)
    stats = OciCache(CacheSettings(cache_url, write=True)).push(key, second, cas)
    assert (stats.results, stats.present, stats.conflicts, stats.blobs) == (0, 1, 1, 0)
    assert client.resolve_tag(repo, key) == before
    assert writer.lookup(key, CAS(tmp_path / "fresh")) == first


def test_an_invalid_entry_is_replaced_and_lost_blobs_come_back(tmp_path, cache_url):
    cas = CAS(tmp_path / "cas")
    first, second = two_results(cas)
    host, repo = cache_url.split("/", 1)
    key, same = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    writer = OciCache(CacheSettings(cache_url, write=True))
    writer.push(key, first, cas)
    writer.push(same, first, cas)
    assert delete(f"http://{host}/v2/{repo}/blobs/{first.outputs['out'].digest}") == 202
    # a different result under a key whose entry lost a blob: the entry is replaced
    stats = OciCache(CacheSettings(cache_url, write=True)).push(key, second, cas)
    assert (stats.results, stats.repaired) == (1, 1)
    assert writer.lookup(key, CAS(tmp_path / "fresh")) == second
    # the same result again: the manifest stays, the lost blob goes up again
    stats = OciCache(CacheSettings(cache_url, write=True)).push(same, first, cas)
    assert (stats.results, stats.present, stats.blobs) == (0, 1, 1)
    assert writer.lookup(same, CAS(tmp_path / "fresh2")) == first


def test_a_registry_honouring_if_none_match_makes_the_first_writer_win(tmp_path, registry_proxy):
    """What a registry with conditional PUTs does (distribution 2.8 does not, see README):
    the proxy answers 412 to ``If-None-Match: *`` on a tag that exists, and hides the tag
    from the HEAD before it, as in a race."""
    url = proxied(registry_proxy)
    upstream = f"{registry_proxy.upstream}/{url.split('/', 1)[1]}"
    cas = CAS(tmp_path / "cas")
    first, second = two_results(cas)
    key = uuid.uuid4().hex * 2
    OciCache(CacheSettings(upstream, write=True)).push(key, first, cas)
    client, repo = client_repo(upstream)
    before = client.resolve_tag(repo, key)
    heads = []

    def race(seen: Seen):
        if seen.method == "HEAD" and seen.path.endswith(f"/manifests/{key}") and not heads:
            heads.append(seen)
            return 404, {}, b""
        if seen.is_manifest_put and seen.headers.get("If-None-Match") == "*" and client.has_manifest(repo, key):
            return error(412, "PRECONDITION_FAILED")
        return None

    registry_proxy.rules.append(race)
    stats = OciCache(CacheSettings(url, write=True)).push(key, second, cas)
    assert (stats.results, stats.present, stats.conflicts) == (0, 1, 1)
    assert client.resolve_tag(repo, key) == before
    assert len(registry_proxy.manifest_puts()) == 1


def test_a_lost_race_on_a_registry_without_conditional_puts_is_reported(tmp_path, registry_proxy):
    url = proxied(registry_proxy)
    upstream = f"{registry_proxy.upstream}/{url.split('/', 1)[1]}"
    cas = CAS(tmp_path / "cas")
    first, second = two_results(cas)
    key = uuid.uuid4().hex * 2
    client, repo = client_repo(upstream)
    other = OciCache(CacheSettings(upstream, write=True))
    other.push(key, second, cas)  # the other writer's blobs and manifest exist...
    theirs = raw_manifest(*upstream.split("/", 1), key)
    digest = client.resolve_tag(repo, key)
    assert delete(f"http://{registry_proxy.upstream}/v2/{repo}/manifests/{digest}") == 202
    assert not client.has_manifest(repo, key)  # ...and its tag lands just after ours

    def other_writer(seen: Seen, status: int) -> None:
        if seen.is_manifest_put and status == 201:
            client.push_manifest(repo, key, theirs, media.OCI_MANIFEST)

    registry_proxy.after.append(other_writer)
    with pytest.raises(KeyConflict, match=f"{url}:{key}: another writer stored a different result"):
        OciCache(CacheSettings(url, write=True)).push(key, first, cas)
    assert other.lookup(key, CAS(tmp_path / "fresh")) == second  # one complete result either way
