"""Pools of engines per platform (``[executors.docker.pools]``): capacity, cache affinity,
failover and ``forge doctor``, on POOL_SIZE empty dockerds of the module's own
(``tests/docker/engines.py``, started in parallel) and one more that a test kills.

Which engine ran an action comes from ``forge build --json`` (``"engine"`` on each action
event; ``"engine_started"``/``"engine_finished"``: when it had the engine); parallelism is asserted from the
overlap of those spans and per-engine counts, never from timing thresholds. Every test has
a nonce of its own in its build args, so no engine's build cache serves it something
built before.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.docker import engines
from tests.services import testdata

engine_pool = engines.engine_pool  # the module's own engines (a module-scoped fixture)

REPO = Path(__file__).resolve().parents[2]
TARGETS = [f"t{i}" for i in range(6)]
SLEEP_DOCKERFILE = 'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG NONCE\nRUN sleep 3 && echo "$NONCE" > /nonce\n'
CHAIN_STEPS = 5


def member(url: str, capacity: int | None = None) -> str:
    return f'"{url}"' if capacity is None else f'{{url = "{url}", capacity = {capacity}}}'


def pool_toml(members: list[str], *, reproducible: bool = False) -> str:
    text = '[workspace]\nname = "ws"\n'
    if reproducible:
        text += "\n[build]\nreproducible = true\n"
    if members:
        text += f"\n[executors.docker.pools]\namd64 = [{', '.join(members)}]\n"
    return text


def six_ws(forge_workspace, nonce: str, members: list[str], *, cache: Path, name: str = "ws",
           reproducible: bool = False):
    """Six independent Dockerfile targets on busybox, each a ``RUN sleep 3`` of its own."""
    build = 'oci_import(name = "busybox-amd64", src = "busybox-amd64.tar", platform = "amd64")\n'
    for target in TARGETS:
        build += (f'dockerfile(name = "{target}", base = ":busybox-amd64", dockerfile = "sleep.Dockerfile",'
                  f' build_args = {{"NONCE": "{nonce}-{target}"}})\n')
    ws = forge_workspace({"WORKSPACE.toml": pool_toml(members, reproducible=reproducible),
                          "app/BUILD": build, "app/sleep.Dockerfile": SLEEP_DOCKERFILE},
                         name=name, cache=cache)
    shutil.copy(testdata("busybox-amd64.tar"), ws.root / "app" / "busybox-amd64.tar")
    return ws


def chain_ws(forge_workspace, nonce: str, members: list[str], *, cache: Path):
    files = {f"app/chain/{10 * (k + 1)}-Dockerfile-s{k}":
             f'ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nARG NONCE\nRUN echo "$NONCE-{k}" > /s{k}\n'
             for k in range(CHAIN_STEPS)}
    build = ('oci_import(name = "busybox-amd64", src = "busybox-amd64.tar", platform = "amd64")\n'
             'dockerfile_chain(name = "chain", dir = "chain", base = ":busybox-amd64",'
             f' build_args = {{"NONCE": "{nonce}"}})\n')
    ws = forge_workspace({"WORKSPACE.toml": pool_toml(members), "app/BUILD": build, **files},
                         name="chain", cache=cache)
    shutil.copy(testdata("busybox-amd64.tar"), ws.root / "app" / "busybox-amd64.tar")
    return ws


def docker_builds(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("event") == "action" and e["mnemonic"] == "DockerBuild"]


def engine_spans(builds: list[dict]) -> list[tuple[float, float, str]]:
    return [(float(e["engine_started"]), float(e["engine_finished"]), e["engine"]) for e in builds]


def most_at_once(spans: list[tuple[float, float, str]]) -> int:
    edges = sorted([(s, 1) for s, _, _ in spans] + [(f, -1) for _, f, _ in spans])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def digests(out) -> dict[str, str]:
    return {t["label"]: t["outputs"]["manifest"] for t in out.summary()["targets"]}


def forge_process(ws, *args: str) -> subprocess.Popen:
    env = {**os.environ, "FORGE_CACHE": str(ws.cache), "CI": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "forge.cli", *args], cwd=ws.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ------------------------------------------------------------------ no engine needed


def test_pool_prefers_then_balances_then_waits():
    from forge.plugins.docker import Member, Pool

    down: dict[str, str] = {}
    pool = Pool(None, [Member("a", 1), Member("b", 2), Member("c", 1)], down)
    assert pool.acquire(["c"]).url == "c"  # a preferred member with room
    assert pool.acquire(["c"]).url == "a"  # c is full: the least loaded (a and b at 0; a first)
    assert pool.acquire([]).url == "b"
    assert pool.acquire(["a"]).url == "b"  # only b has room left
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire([]).url))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got  # every member is at capacity: it waits
    assert pool.mark_down(pool.members[0], "refused") and not pool.mark_down(pool.members[0], "again")
    pool.release(pool.members[2])  # c has room again
    waiter.join(5)
    assert got == ["c"]
    for m in pool.members[1:]:
        pool.mark_down(m, "gone")
    with pytest.raises(Exception, match="no engine of the pool is left: a \\(refused\\), b \\(gone\\)"):
        pool.acquire([])


@pytest.mark.parametrize(("entry", "message"), [
    ('amd64 = "tcp://x:1"', "amd64 should be a non-empty list"),
    ('amd64 = [{url = "tcp://x:1", capacity = 0}]', "amd64[0]: capacity should be a whole number"),
    ('amd64 = [{url = "tcp://x:1", cap = 2}]', "amd64[0]: unknown key 'cap'"),
    ('amd64 = ["tcp://x:1", "tcp://x:1"]', "amd64[1]: tcp://x:1 is in this pool twice"),
    ('bogus = ["tcp://x:1"]', "[executors.docker.pools] bogus"),
    ('amd64 = [{url = "tcp://x:1", tls = "certs"}]', "lacks ca.pem, cert.pem, key.pem"),
    ('amd64 = [{url = "unix:///x.sock", tls = "certs"}]', "tls is for tcp:// engines"),
])
def test_pool_settings_are_checked_at_their_line(forge_workspace, entry, message):
    ws = forge_workspace({"WORKSPACE.toml": f'[workspace]\nname = "ws"\n\n[executors.docker.pools]\n{entry}\n',
                          "app/BUILD": ""})
    out = ws.run("doctor")
    assert "WORKSPACE.toml:5: [executors.docker.pools] " in out.stdout + out.stderr, out.stdout + out.stderr
    assert message in out.stdout + out.stderr


# ------------------------------------------------------------------ real engines


@pytest.mark.integration
def test_six_targets_spread_over_three_engines(forge_workspace, engine_pool, tmp_path):
    urls = [engine_pool[0].socket, engine_pool[1].host, engine_pool[2].host]
    ws = six_ws(forge_workspace, uuid.uuid4().hex, [member(u) for u in urls], cache=tmp_path / "cache")
    out = ws.run("build", "//app:all", "-j", "6", "--json").assert_success()
    builds = docker_builds(out.actions())
    assert len(builds) == 6 and all(e["status"] == "built" for e in builds)
    assert Counter(e["engine"] for e in builds) == {u: 2 for u in urls}
    spans = engine_spans(builds)
    assert most_at_once(spans) == 3  # three engines at work at one moment
    for url in urls:  # capacity 1: never two at once on one engine
        assert most_at_once([s for s in spans if s[2] == url]) == 1
    for e in builds:
        assert e["started"] <= float(e["engine_started"]) < float(e["engine_finished"]) <= e["started"] + e["seconds"]
        assert f"engine: {e['engine']}" in Path(e["log"]).read_text()
    hints = json.loads((ws.cache / "engine-hints.json").read_text())
    assert {e["id"]: e["engine"] for e in builds}.items() <= hints.items()


@pytest.mark.integration
def test_chain_stays_on_the_engine_that_holds_its_base(forge_workspace, engine_pool, tmp_path):
    urls = [engine_pool[0].socket, engine_pool[1].host, engine_pool[2].host]
    ws = chain_ws(forge_workspace, uuid.uuid4().hex, [member(u) for u in urls], cache=tmp_path / "cache")
    out = ws.run("build", "//app:chain", "-j", "3", "--json").assert_success()
    builds = sorted(docker_builds(out.actions()), key=lambda e: e["id"])
    assert len(builds) == CHAIN_STEPS
    (engine,) = {e["engine"] for e in builds}
    for e in builds[1:]:  # each step's base was built there: no layer goes in
        assert (e.get("counters") or {}).get("cas_to_engine_layers", 0) == 0, e

    # The hint: with the pool reordered, the chain's first step (whose base, busybox, no
    # engine holds in a new process) goes back to the engine that ran it last.
    (ws.root / "WORKSPACE.toml").write_text(pool_toml([member(u) for u in urls if u != engine] + [member(engine)]))
    again = ws.run("build", "//app:chain", "--json", "--no-cache").assert_success()
    assert {e["engine"] for e in docker_builds(again.actions())} == {engine}


@pytest.mark.integration
def test_doctor_lists_every_pool_member(forge_workspace, engine_pool):
    absent = f"tcp://127.0.0.1:{engines.free_port()}"
    members = [member(engine_pool[0].socket), member(engine_pool[1].host, 2), member(absent)]
    ws = forge_workspace({"WORKSPACE.toml": pool_toml(members), "app/BUILD": ""})
    out = ws.run("doctor")
    text = out.stdout + out.stderr
    version = engine_pool[0].client.version()["Version"]
    for url, capacity in ((engine_pool[0].socket, 1), (engine_pool[1].host, 2)):
        line = next(line for line in text.splitlines() if f"engine {url} (pool linux/amd64, capacity {capacity})" in line)
        assert f"Docker {version}" in line and line.rstrip().endswith("up"), line
    line = next(line for line in text.splitlines() if f"engine {absent} (pool linux/amd64, capacity 1)" in line)
    assert "down" in line, line
    assert out.exit_code == 0, text  # one member down while others answer is a warning


@pytest.mark.integration
def test_killed_engine_reruns_its_actions_elsewhere_with_the_same_digests(
        forge_workspace, engine_pool, docker_client, tmp_path):
    victim, why = engines.start_engine()
    if victim is None:
        pytest.fail(f"the engine to kill could not start: {why}")
    try:
        nonce = uuid.uuid4().hex
        urls = [victim.host, engine_pool[1].host, engine_pool[2].socket]
        ws = six_ws(forge_workspace, nonce, [member(u) for u in urls], cache=tmp_path / "pool",
                    name="pool", reproducible=True)
        proc = forge_process(ws, "build", "//app:all", "-j", "6", "--json")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if victim.running_build():  # its first build's RUN is running
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the build ended before the victim ran anything"
        victim.kill()
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        assert proc.returncode == 0, stderr
        events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        builds = docker_builds(events)
        assert len(builds) == 6 and all(e["status"] == "built" for e in builds)
        assert victim.host not in {e["engine"] for e in builds}
        rerun = [e for e in builds if f"engine: {victim.host}" in Path(e["log"]).read_text()]
        assert rerun, "no action was running on the killed engine"
        warnings = [e["message"] for e in events if e.get("event") == "warning"]
        assert sum(f"engine {victim.host} stopped answering" in w for w in warnings) == 1, warnings
        summary = next(e for e in events if e.get("event") == "summary")
        pooled = {t["label"]: t["outputs"]["manifest"] for t in summary["targets"]}
    finally:
        victim.stop()

    one = six_ws(forge_workspace, nonce, [], cache=tmp_path / "one", name="one", reproducible=True)
    alone = one.run("build", "//app:all", "-j", "6", "--json").assert_success()
    assert digests(alone) == pooled


def test_a_pool_of_native_engines_needs_no_emulation(monkeypatch, tmp_path):
    """forge_prepare_platform of the docker plugin: arm64 served by members that all say
    arm64 is native; one amd64 member (as the engines of this machine) is not."""
    from forge.core.workspace import load_workspace
    from forge.plugins import docker as plugin

    (tmp_path / "WORKSPACE.toml").write_text(
        '[workspace]\nname = "ws"\n[executors.docker.pools]\narm64 = ["tcp://a:1", "tcp://b:1"]\n')
    workspace = load_workspace(tmp_path)
    arm64 = plugin.forge.parse_platform("linux/arm64")
    arches = {"tcp://a:1": "arm64", "tcp://b:1": "arm64"}

    class Fake:
        def __init__(self, url):
            self.url = url

        def version(self):
            return {"Os": "linux", "Arch": arches[self.url]}

        def close(self):
            pass

    monkeypatch.setattr(plugin, "_client_for", lambda url, tls, timeout: Fake(url))
    assert plugin.forge_prepare_platform(arm64, "docker", workspace) == \
        "native linux/arm64/v8 engines (tcp://a:1, tcp://b:1)"
    arches["tcp://b:1"] = "amd64"
    assert plugin.forge_prepare_platform(arm64, "docker", workspace) is None
    assert plugin.forge_prepare_platform(arm64, "podman", workspace) is None


@pytest.mark.integration
def test_a_tls_member_is_reached_with_its_client_certificate(forge_workspace, docker_client, tmp_path):
    """A dockerd with --tlsverify: forge's client and the BuildKit CLI both present the
    member's certificate (DOCKER_CERT_PATH layout); without it the engine refuses."""
    certs = engines.make_certs(tmp_path / "certs")
    engine, why = engines.start_engine(tls=certs)
    if engine is None:
        pytest.fail(f"the TLS engine could not start: {why}")
    try:
        nonce = uuid.uuid4().hex
        ws = six_ws(forge_workspace, nonce, [], cache=tmp_path / "cache", name="tls")
        shutil.copytree(certs / "client", ws.root / "certs/builder")
        ws.write({"WORKSPACE.toml": pool_toml(
            [f'{{url = "{engine.host}", tls = "certs/builder"}}'])})
        out = ws.run("build", "//app:t0", "--json").assert_success()
        (step,) = docker_builds(out.events)
        assert step["engine"] == engine.host and step["status"] == "built"
        assert step.get("builder") in ("buildkit", "classic")
        # the same engine without the certificate: it refuses, and forge says where
        ws.write({"WORKSPACE.toml": pool_toml([f'"{engine.host}"'])})
        failed = ws.run("build", "//app:t1", "--json")
        assert failed.exit_code != 0
        assert engine.host in failed.stdout + failed.stderr
    finally:
        engine.stop()


@pytest.mark.integration
def test_an_ssh_member_is_reached_over_ssh(forge_workspace, docker_client, tmp_path):
    """ssh://root@127.0.0.1:PORT (an sshd of the test's own, key login through its agent):
    forge's client and the BuildKit CLI both reach the engine through `ssh … docker
    system dial-stdio`, as the docker CLI does."""
    remote = engines.start_ssh_engine(tmp_path / "ssh")
    try:
        nonce = uuid.uuid4().hex
        ws = six_ws(forge_workspace, nonce, [f'"{remote.url}"'], cache=tmp_path / "cache", name="ssh")
        out = ws.run("build", "//app:t0", "--json", env=remote.env).assert_success()
        (step,) = docker_builds(out.events)
        assert step["engine"] == remote.url and step["status"] == "built"
        doctor = ws.run("doctor", env=remote.env)
        assert any(remote.url in line and line.startswith("[ok  ]") for line in doctor.stdout.splitlines()), \
            doctor.stdout
    finally:
        remote.stop()
