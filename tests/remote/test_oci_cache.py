"""The OCI remote cache against real registries, with the ``concat`` test rule (no images).

Each test has its own cache repository; the throwaway registry tests start and kill a
``docker-registry`` process of their own.
"""

from __future__ import annotations

import gzip
import json
import shutil
import uuid

import pytest

from forge.core.actions import ActionResult
from forge.core.cas import CAS, Descriptor, sha256_digest
from forge.core.errors import ConfigError, RegistryError, RemoteCacheError, RemoteEntryInvalid
from forge.core.oci import media
from forge.core.workspace import load_workspace
from forge.plugins.cache_format import RESULT_MEDIA_TYPE, manifest_bytes, parse_record, record_bytes
from forge.plugins.cache_settings import CacheSettings, settings_for, split_url
from forge.plugins.oci_cache import OciCache, refuses_field
from tests.services import (
    AUTH_PASSWORD,
    registry_storage_root,
    require_auth_registry,
    require_registry,
)

from .conftest import catalog, docker_config, tags, unique_repo, workspace_toml

integration = pytest.mark.integration

A, B, C, D = "//p:a#Concat.0", "//p:b#Concat.0", "//p:c#Concat.0", "//p:d#Concat.0"
ALL = sorted([A, B, C, D])


def chain_files(text: str | None = None) -> dict[str, str]:
    """a <- b <- c, and d on its own; ``text`` makes the keys unique to a test."""
    text = text or uuid.uuid4().hex
    return {
        "p/a.txt": "alpha\n",
        "p/d.txt": "delta\n",
        "p/BUILD": (
            f'concat(name = "a", srcs = ["a.txt"], text = "{text}")\n'
            f'concat(name = "b", deps = [":a"], text = "b-{text}")\n'
            f'concat(name = "c", deps = [":b"], text = "c-{text}")\n'
            f'concat(name = "d", srcs = ["d.txt"], text = "d-{text}")\n'
        ),
    }


def two_caches(forge_workspace, tmp_path, files, toml_a, toml_b=None):
    """Two checkouts of one workspace (as on two machines): cache dir A, empty cache dir B."""
    a = forge_workspace({"WORKSPACE.toml": toml_a, **files}, name="ws-a", cache=tmp_path / "cache-a")
    b = forge_workspace({"WORKSPACE.toml": toml_b or toml_a, **files}, name="ws-b", cache=tmp_path / "cache-b")
    return a, b


def warnings(out) -> list[str]:
    return [e["message"] for e in out.events if e.get("event") == "warning"]


def outputs(out) -> dict[str, dict[str, str]]:
    return {e["id"]: e.get("outputs") for e in out.actions()}


# -- settings and format (no service) ---------------------------------------------------------


def test_settings_from_workspace_and_flags(forge_workspace):
    ws = forge_workspace({"WORKSPACE.toml": workspace_toml("reg.example.com/team/cache", write=True)})
    w = load_workspace(ws.root)
    assert settings_for(w, {}) == CacheSettings("reg.example.com/team/cache", True, True, False)
    assert settings_for(w, {"no_remote_cache": True}) is None
    assert settings_for(w, {"remote_cache_write": False}).write is False
    flag = settings_for(w, {"remote_cache_url": "127.0.0.1:5000/other"})
    assert (flag.url, flag.read, flag.write) == ("127.0.0.1:5000/other", True, False)
    assert settings_for(w, {"remote_cache_url": "127.0.0.1:5000/o", "remote_cache_write": True}).write
    bare = load_workspace(forge_workspace({"WORKSPACE.toml": workspace_toml()}, name="bare").root)
    assert settings_for(bare, {}) is None
    off = forge_workspace({"WORKSPACE.toml": workspace_toml("r.example.com/c", extra="read = false\n")},
                          name="off")
    assert settings_for(load_workspace(off.root), {}) is None


def test_url_forms():
    assert split_url("reg.example.com/team/cache") == ("reg.example.com", "team/cache", None)
    assert split_url("http://10.0.0.5:5000/c") == ("10.0.0.5:5000", "c", True)
    assert split_url("oci://reg.example.com/c/") == ("reg.example.com", "c", None)
    with pytest.raises(ConfigError, match="names a tag or digest"):
        split_url("reg.example.com/c:latest")
    with pytest.raises(ConfigError, match="names no registry host"):
        split_url("cache")


def test_manifest_is_deterministic_and_carries_the_results_media_types(tmp_path):
    cas = CAS(tmp_path / "cas")
    layer = cas.put_bytes(gzip.compress(b"x" * 100, mtime=0)).typed(media.OCI_LAYER_GZIP, diff_id="sha256:" + "1" * 64)
    config = cas.put_bytes(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}').typed(media.OCI_CONFIG)
    manifest = cas.put_bytes(json.dumps({
        "schemaVersion": 2, "mediaType": media.OCI_MANIFEST,
        "config": {"mediaType": media.OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": media.OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}],
    }).encode()).typed(media.OCI_MANIFEST, platform="linux/amd64")
    # Nothing is sniffed: gzip bytes typed as a plain blob stay a plain blob, JSON stays JSON.
    opaque = cas.put_bytes(gzip.compress(b"not a layer", mtime=0))
    report = cas.put_bytes(b'{"mediaType": "application/vnd.oci.image.manifest.v1+json"}').typed("application/json")
    log = cas.put_bytes(b"step 1/1\n")
    result = ActionResult.make({"manifest": manifest, "report": report}, (config, layer, opaque),
                               {"platform": "linux/amd64"}, log.digest)
    key = "ab" * 32
    record = record_bytes(key, result)
    assert json.loads(record) == {"format": 2, "key": key, "result": result.to_json()}
    record_desc = Descriptor(sha256_digest(record), len(record), RESULT_MEDIA_TYPE)
    log_desc = log.typed("text/plain")
    one = manifest_bytes(key, result, record_desc, log_desc)
    assert one == manifest_bytes(key, result, record_desc, log_desc)
    doc = json.loads(one)
    assert doc["artifactType"] == doc["config"]["mediaType"] == RESULT_MEDIA_TYPE
    assert RESULT_MEDIA_TYPE == "application/vnd.forge.action-result.v2+json"
    assert doc["annotations"] == {"dev.forge.action-key": key, "dev.forge.format": "2"}
    types = {d["digest"]: d["mediaType"] for d in doc["layers"]}
    assert types == {
        manifest.digest: media.OCI_MANIFEST,
        config.digest: media.OCI_CONFIG,
        layer.digest: media.OCI_LAYER_GZIP,
        opaque.digest: "application/octet-stream",
        report.digest: "application/json",
        log.digest: "text/plain",
    }
    assert [d["digest"] for d in doc["layers"]] == [*result.all_blobs(), log.digest]
    titles = {d["digest"]: d.get("annotations", {}).get("org.opencontainers.image.title") for d in doc["layers"]}
    assert titles[manifest.digest] == "manifest" and titles[report.digest] == "report"
    assert titles[log.digest] == "log" and titles[layer.digest] is None
    assert "artifactType" not in json.loads(manifest_bytes(key, result, record_desc, log_desc,
                                                           artifact_type=False))
    assert parse_record(record, key, "here") == result
    with pytest.raises(RemoteEntryInvalid, match="record of key"):
        parse_record(record, "cd" * 32, "here")


def test_only_a_refusal_of_the_manifest_earns_the_push_without_artifact_type():
    from forge.core.oci.registry import RegistryAuthError, RegistryHTTPError

    assert refuses_field(RegistryHTTPError("x", 400, ("MANIFEST_INVALID",)))
    assert refuses_field(RegistryHTTPError("x", 400, ("UNSUPPORTED",)))
    assert refuses_field(RegistryHTTPError("x", 400))
    assert not refuses_field(RegistryHTTPError("x", 400, ("MANIFEST_BLOB_UNKNOWN",)))
    assert not refuses_field(RegistryHTTPError("x", 400, ("MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN")))
    for status in (500, 502, 503, 504, 404, 0):
        assert not refuses_field(RegistryHTTPError("x", status, ("MANIFEST_INVALID",)))
    assert not refuses_field(RegistryAuthError("x", 401))
    assert not refuses_field(RegistryError("timed out"))


# -- the round trip ---------------------------------------------------------------------------


@integration
def test_restore_into_empty_cache_then_only_downstream_of_an_edit(forge_workspace, tmp_path, cache_url):
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(cache_url, write=True),
                      workspace_toml(cache_url))
    first = a.run("build", "//p:all", "--json").assert_success()
    assert first.executed() == ALL
    host, repo = cache_url.split("/", 1)
    assert len(tags(host, repo)) == 4  # one tag per action key

    restored = b.run("build", "//p:all", "--json").assert_success()
    assert restored.executed() == []
    assert set(restored.statuses().values()) == {"cached-remote"}
    assert outputs(restored) == outputs(first)
    assert warnings(restored) == []

    (b.root / "p/a.txt").write_text("alpha edited\n")
    edited = b.run("build", "//p:all", "--json").assert_success()
    assert edited.executed() == sorted([A, B, C])
    assert edited.statuses()[D] == "cached-local"


@integration
def test_flag_enables_the_cache_read_only_and_write_with_flag(forge_workspace, tmp_path, cache_url):
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml())
    a.run("build", "//p:all", "--json", "--remote-cache", cache_url).assert_success()
    host, repo = cache_url.split("/", 1)
    assert tags(host, repo) is None  # read-only: the repository was never created
    a.run("build", "//p:all", "--json", "--remote-cache", cache_url, "--remote-cache-write").assert_success()
    assert tags(host, repo) is None  # everything was a local hit: nothing to upload
    b.run("build", "//p:all", "--json", "--remote-cache", cache_url, "--remote-cache-write").assert_success()
    assert len(tags(host, repo)) == 4
    out = b.run("build", "//p:all", "--json", "--remote-cache", cache_url, "--no-remote-cache")
    assert out.assert_success().executed() == []


@integration
def test_read_only_build_changes_no_repository_and_no_tag(forge_workspace, tmp_path, cache_url):
    host, repo = cache_url.split("/", 1)
    files = chain_files()
    a, b = two_caches(forge_workspace, tmp_path, files, workspace_toml(cache_url, write=True),
                      workspace_toml(cache_url, write=False))
    a.run("build", "//p:all", "--json").assert_success()
    repos, before = catalog(host), tags(host, repo)
    (b.root / "p/a.txt").write_text("something the cache has never seen\n")
    out = b.run("build", "//p:all", "--json").assert_success()
    assert out.executed() == sorted([A, B, C]) and out.statuses()[D] == "cached-remote"
    out = b.run("build", "//p:all", "--json", "--remote-cache", f"{host}/{unique_repo()}").assert_success()
    assert catalog(host) == repos
    assert tags(host, repo) == before


@integration
def test_two_writers_of_one_key_and_a_foreign_tag(tmp_path, cache_url):
    cas = CAS(tmp_path / "cas")
    out = cas.put_bytes(b"same content " + uuid.uuid4().bytes)
    result = ActionResult.make({"out": out})
    key = uuid.uuid4().hex * 2
    one, two = (OciCache(CacheSettings(cache_url, write=True)) for _ in range(2))
    assert one.push(key, result, cas).results == 1
    assert two.push(key, result, cas).present == 1  # the tag exists: nothing sent
    fresh = CAS(tmp_path / "fresh")
    assert one.lookup(key, fresh) == result and fresh.has(out.digest)
    assert one.lookup("cd" * 32, fresh) is None  # no such tag: a miss
    host, repo = cache_url.split("/", 1)
    # an ordinary image manifest under a key-shaped tag is not ours: a miss, not an error
    from forge.core.oci.registry import RegistryClient

    client = RegistryClient(host)
    cfg = cas.put_bytes(b"{}")
    client.push_blob(cas, repo, cfg.digest)
    foreign = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                     "digest": cfg.digest, "size": cfg.size}, "layers": []}).encode()
    client.push_manifest(repo, "ef" * 32, foreign, "application/vnd.oci.image.manifest.v1+json")
    assert one.lookup("ef" * 32, fresh) is None
    with pytest.raises(RemoteCacheError, match="read-only"):
        OciCache(CacheSettings(cache_url)).push(key, result, cas)


# -- failures -------------------------------------------------------------------------------


@integration
def test_closed_port_builds_locally_with_one_warning(forge_workspace, closed_port):
    ws = forge_workspace({"WORKSPACE.toml": workspace_toml(f"127.0.0.1:{closed_port}/cache", write=True),
                          **chain_files()})
    out = ws.run("build", "//p:all", "--json").assert_success()
    assert out.executed() == ALL
    assert len(warnings(out)) == 1
    assert f"remote cache 127.0.0.1:{closed_port}/cache unusable, building locally" in warnings(out)[0]
    assert "connection refused" in warnings(out)[0]


@integration
def test_required_remote_that_is_dead_fails_the_build(forge_workspace, closed_port):
    ws = forge_workspace({"WORKSPACE.toml": workspace_toml(), **chain_files()})
    out = ws.run("build", "//p:all", "--remote-cache", f"127.0.0.1:{closed_port}/cache",
                 "--remote-cache-required")
    out.assert_failure(1)
    assert f"127.0.0.1:{closed_port}" in out.stderr
    toml = workspace_toml(f"127.0.0.1:{closed_port}/cache", extra="required = true\n")
    ws2 = forge_workspace({"WORKSPACE.toml": toml, **chain_files()}, name="ws2")
    ws2.run("build", "//p:all").assert_failure(1)


@integration
def test_registry_stopped_between_builds(forge_workspace, tmp_path, throwaway_registry):
    url = f"{throwaway_registry.host}/cache"
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(url, write=True))
    first = a.run("build", "//p:all", "--json").assert_success()
    throwaway_registry.stop()
    out = b.run("build", "//p:all").assert_success()  # plain output: count the lines
    lines = [line for line in out.stderr.splitlines() if "WARNING" in line]
    assert len(lines) == 1, out.stderr
    assert f"remote cache {url} unusable, building locally" in lines[0]
    again = b.run("build", "//p:all", "--json").assert_success()
    assert outputs(again) == outputs(first)


@integration
def test_registry_killed_mid_build(forge_workspace, tmp_path, throwaway_registry):
    url = f"{throwaway_registry.host}/cache"
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(url, write=True),
                      workspace_toml(url))
    a.run("build", "//p:all", "--json").assert_success()
    kill = {"FORGE_TEST_KILL_PID": str(throwaway_registry.process.pid), "FORGE_TEST_KILL_ON": A,
            "FORGE_TEST_KILL_PORT": str(throwaway_registry.port)}
    out = b.run("build", "//p:c", "--json", "-j", "1", env=kill).assert_success()
    # A came as its record only; B, about to read A's bytes, found the registry dead: A's
    # bytes are lost with it, so A is built here too (never reported as a cached result
    # that is not there), then B and C; one warning
    assert out.statuses() == {A: "built", B: "built", C: "built"}
    assert len(warnings(out)) == 1


@integration
def test_registry_killed_while_uploading(forge_workspace, throwaway_registry):
    url = f"{throwaway_registry.host}/cache"
    ws = forge_workspace({"WORKSPACE.toml": workspace_toml(url, write=True), **chain_files()})
    kill = {"FORGE_TEST_KILL_PID": str(throwaway_registry.process.pid), "FORGE_TEST_KILL_ON": A,
            "FORGE_TEST_KILL_PORT": str(throwaway_registry.port)}
    out = ws.run("build", "//p:c", "--json", "-j", "1", env=kill).assert_success()
    assert out.executed() == sorted([A, B, C])
    assert len(warnings(out)) == 1


@integration
def test_corrupt_blob_in_registry_is_detected_not_stored_and_rebuilt(forge_workspace, tmp_path, cache_url):
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(cache_url, write=True),
                      workspace_toml(cache_url))
    first = a.run("build", "//p:all", "--json").assert_success()
    digest = outputs(first)[A]["out"]
    hexpart = digest.split(":", 1)[1]
    data = registry_storage_root() / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
    good = data.read_bytes()
    data.write_bytes(bytes(c ^ 0x20 for c in good))  # same size, other content
    try:
        fresh = CAS(tmp_path / "fresh")
        backend = OciCache(CacheSettings(cache_url))
        key = next(e["key"] for e in first.actions() if e["id"] == A)
        with pytest.raises(RemoteEntryInvalid, match=f"{key}: blob {digest} does not verify.*other content"):
            backend.lookup(key, fresh)
        assert not fresh.has(digest)
        assert list((fresh.root / "tmp").iterdir()) == []  # no temp file left behind

        out = b.run("build", "//p:a", "--json").assert_success()
        assert out.statuses() == {A: "built"}
        assert len(warnings(out)) == 1 and cache_url in warnings(out)[0]
        cas_b = CAS(b.cache / "cas")
        assert cas_b.verify(digest) and cas_b.read_bytes(digest) == good
    finally:
        data.write_bytes(good)


# -- credentials ------------------------------------------------------------------------------


@integration
def test_auth_registry_with_docker_config(forge_workspace, tmp_path):
    host, user, password = require_auth_registry()
    url = f"{host}/{unique_repo()}"
    config = docker_config(tmp_path / "docker", host, user, password)
    env = {"DOCKER_CONFIG": str(config)}
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(url, write=True),
                      workspace_toml(url))
    a.run("build", "//p:all", "--json", env=env).assert_success()
    out = b.run("build", "//p:all", "--json", env=env).assert_success()
    assert set(out.statuses().values()) == {"cached-remote"}
    assert warnings(out) == []
    assert len(tags(host, url.split("/", 1)[1], auth=(user, password))) == 4


@integration
def test_wrong_credentials_warn_naming_the_registry_never_the_password(forge_workspace, tmp_path):
    host, user, _ = require_auth_registry()
    wrong = "not-the-" + AUTH_PASSWORD
    config = docker_config(tmp_path / "docker", host, user, wrong)
    files = {"WORKSPACE.toml": workspace_toml(f"{host}/{unique_repo()}", write=True), **chain_files()}
    for i, args in enumerate((("--json",), ())):
        ws = forge_workspace(files, cache=tmp_path / f"cache-{i}")
        out = ws.run("build", "//p:all", *args, env={"DOCKER_CONFIG": str(config)}).assert_success()
        text = out.stdout + out.stderr
        assert host in text and "refused the credentials" in text
        for secret in (wrong, AUTH_PASSWORD, json.loads((config / "config.json").read_text())["auths"][host]["auth"]):
            assert secret not in text
    ws = forge_workspace(files, cache=tmp_path / "cache-required")
    out = ws.run("build", "//p:all", "--json", "--remote-cache-required",
                 env={"DOCKER_CONFIG": str(config)})
    out.assert_failure(1)
    assert host in out.stderr and wrong not in out.stdout + out.stderr
    empty = docker_config(tmp_path / "none", "elsewhere.example.com", "x", "y")
    ws = forge_workspace(files, cache=tmp_path / "cache-anonymous")
    out = ws.run("build", "//p:all", "--json", env={"DOCKER_CONFIG": str(empty)}).assert_success()
    assert "requires a login" in warnings(out)[0] and host in warnings(out)[0]


# -- forge cache push, forge doctor ------------------------------------------------------------


@integration
def test_cache_push_uploads_the_whole_graph(forge_workspace, tmp_path, cache_url):
    a, b = two_caches(forge_workspace, tmp_path, chain_files(), workspace_toml(cache_url),
                      workspace_toml(cache_url))
    a.run("build", "//p:c", "--json").assert_success()  # read-only: nothing uploaded
    host, repo = cache_url.split("/", 1)
    assert tags(host, repo) is None
    out = a.run("cache", "push", "//p:c", "//p:d").assert_success()
    assert "4 action results (1 built now): 4 pushed to " + cache_url in out.stdout
    assert len(tags(host, repo)) == 4
    out = a.run("cache", "push", "//p:all").assert_success()
    assert "0 pushed" in out.stdout and "4 already there" in out.stdout
    restored = b.run("build", "//p:all", "--json").assert_success()
    assert set(restored.statuses().values()) == {"cached-remote"}
    other = f"{host}/{unique_repo()}"
    out = a.run("cache", "push", "//p:a", "--remote-cache", other).assert_success()
    assert f"1 pushed to {other}" in out.stdout
    bare = forge_workspace({"WORKSPACE.toml": workspace_toml(), **chain_files()}, name="bare")
    assert "no remote cache to push to" in bare.run("cache", "push", "//p:a").assert_failure(2).stderr


@integration
def test_doctor_pings_the_remote_cache(forge_workspace, cache_url, closed_port):
    require_registry()
    ws = forge_workspace({"WORKSPACE.toml": workspace_toml(cache_url, write=True)})
    out = ws.run("doctor")
    assert f"remote cache {cache_url}: reachable (read-write)" in out.stdout
    ws = forge_workspace({"WORKSPACE.toml": workspace_toml(f"127.0.0.1:{closed_port}/c")}, name="dead")
    out = ws.run("doctor")
    assert "[FAIL] remote cache" in out.stdout and "connection refused" in out.stdout


# -- build without the bytes: records first, blobs when read, lost blobs re-run ------------


@integration
def test_intermediate_hits_bring_records_only_and_lost_blobs_rerun_their_producer(
        forge_workspace, tmp_path, throwaway_registry):
    url = f"{throwaway_registry.host}/cache"
    files = chain_files()
    a, b = two_caches(forge_workspace, tmp_path, files, workspace_toml(url, write=True),
                      workspace_toml(url))
    first = a.run("build", "//p:c", "--json").assert_success()
    want = outputs(first)

    # An empty cache asking for c: a and b come as records (nothing reads their bytes), c
    # with its blobs; only c is recorded locally.
    cas_b = CAS(b.cache / "cas")
    restored = b.run("build", "//p:c", "--json").assert_success()
    assert restored.statuses() == {A: "cached-remote", B: "cached-remote", C: "cached-remote"}
    assert not cas_b.has(want[A]["out"]) and not cas_b.has(want[B]["out"])
    assert cas_b.has(want[C]["out"])

    # The registry loses b's output blob; c is edited, so it must read b's bytes: b is
    # built here in the same build (from a's bytes, fetched), then c; one warning names b.
    blob = want[B]["out"].split(":")[1]
    shutil.rmtree(throwaway_registry.root / "data/docker/registry/v2/blobs/sha256" / blob[:2] / blob)
    (b.root / "p/BUILD").write_text(files["p/BUILD"].replace('text = "c-', 'text = "c2-'))
    edited = b.run("build", "//p:c", "--json").assert_success()
    assert edited.statuses() == {A: "cached-remote", B: "built", C: "built"}
    assert outputs(edited)[B] == want[B]  # the same bytes, made again
    lost = [w for w in warnings(edited) if "gone" in w]
    assert len(lost) == 1 and "//p:b" in lost[0], warnings(edited)
    assert cas_b.has(want[A]["out"]) and cas_b.has(want[B]["out"])
    again = b.run("build", "//p:c", "--json").assert_success()
    assert again.executed() == []


@integration
def test_a_download_cut_mid_blob_resumes_where_it_stopped(registry_proxy, tmp_path):
    """A link that breaks after 1 MiB of a 3 MiB blob: the client asks for the rest
    (Range), and the bytes it had are not fetched again."""
    import os
    import urllib.request

    from forge.core.oci.registry import RegistryClient

    from .conftest import CUT_HEADER

    repo = unique_repo()
    data = os.urandom(3 << 20)
    src = CAS(tmp_path / "src")
    digest = src.put_bytes(data).digest
    RegistryClient(require_registry(), insecure=True).push_blob(src, repo, digest)
    cut = {"done": False}

    def cut_first_get(seen):
        if seen.method == "GET" and seen.path.endswith(f"/blobs/{digest}") and not cut["done"]:
            cut["done"] = True
            url = f"http://{require_registry()}{seen.path}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = resp.read()
            return 200, {"Content-Type": "application/octet-stream", CUT_HEADER: str(1 << 20)}, body
        return None

    registry_proxy.rules.append(cut_first_get)
    dest = CAS(tmp_path / "dest")
    RegistryClient(registry_proxy.host, insecure=True).pull_blob(dest, repo, digest, len(data))
    assert dest.read_bytes(digest) == data
    gets = [s for s in registry_proxy.seen if s.method == "GET" and s.path.endswith(f"/blobs/{digest}")]
    assert len(gets) == 2
    ranges = [{k.lower(): v for k, v in g.headers.items()}.get("range") for g in gets]
    assert ranges[0] is None
    start = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 1 << 20  # resumed after what had arrived, not from byte 0
