"""Bytes between the CAS and Docker engines, on a second, empty engine of the module's
own (``tests/docker/engines.py``: ``tcp://127.0.0.1:PORT`` and a unix socket) and on the
default one. Asserted on the transfer counters of ``forge build --json`` (``counters``)
and on the ``--load`` line, never on time.

Routes: a ``tcp://`` engine is read with ``docker save`` (the whole image crosses) and
knows the layers of the images forge tagged there (``forge-base/*``, ``forge-build:*``);
a ``unix://`` overlay2 engine this process can read is read from its layer store (only
new layers) and asked directly. Each test has a nonce of its own in its build args, so no
engine's build cache serves it something built before.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import docker.errors
import pytest

from forge.core.cas import CAS
from forge.core.oci.compression import open_decompressed
from forge.core.oci.image import load_image
from tests.docker import engines
from tests.services import testdata

pytestmark = pytest.mark.integration

second_engine = engines.second_engine  # the module's own engine (a module-scoped fixture)

REPO = Path(__file__).resolve().parents[2]
BASE = "//app:busybox-amd64#OciImport.0"
STEPS = ["//app:chain#DockerBuild.0", "//app:chain#DockerBuild.1"]
SLACK = 64 * 1024  # a docker save's own files: manifest.json, repositories, per-layer json/VERSION

CHAIN_FILES = {
    "app/chain/10-Dockerfile-one": (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG NONCE\n"
        'RUN echo "$NONCE" > /one && yes "$NONCE" | head -c 100000 > /one.bin\n'
    ),
    "app/chain/20-Dockerfile-two": (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY msg.txt /msg.txt\n"
        'RUN cat /one /msg.txt > /two\nCMD ["cat", "/two"]\n'
    ),
    "app/chain/msg.txt": "from step two\n",
}


def workspace_toml(host: str | None = None, transfer: str | None = None,
                   reproducible: bool = False) -> str:
    text = '[workspace]\nname = "ws"\n'
    if reproducible:
        text += "\n[build]\nreproducible = true\n"
    if host or transfer:
        text += "\n[executors.docker]\n"
    if host:
        text += f'hosts = {{amd64 = "{host}"}}\n'
    if transfer:
        text += f'transfer = "{transfer}"\n'
    return text


def chain_ws(forge_workspace, nonce: str, *, name: str, cache: Path, host: str | None = None,
             transfer: str | None = None, reproducible: bool = False):
    """A 2-step dockerfile_chain on busybox; ``nonce`` (a build arg) keeps any engine's
    build cache from serving it before this test built it."""
    build = (
        'oci_import(name = "busybox-amd64", src = "busybox-amd64.tar", platform = "amd64")\n'
        f'dockerfile_chain(name = "chain", dir = "chain", base = ":busybox-amd64",'
        f' build_args = {{"NONCE": "{nonce}"}})\n'
    )
    toml = workspace_toml(host, transfer, reproducible)
    ws = forge_workspace({"WORKSPACE.toml": toml, "app/BUILD": build, **CHAIN_FILES},
                         name=name, cache=cache)
    shutil.copy(testdata("busybox-amd64.tar"), ws.root / "app" / "busybox-amd64.tar")
    return ws


def expected_output(nonce: str) -> str:
    return f"{nonce}\nfrom step two\n"


def events_by_id(out) -> dict[str, dict]:
    return {e["id"]: e for e in out.actions()}


def counters(out, action_id: str) -> dict[str, int]:
    return events_by_id(out)[action_id].get("counters") or {}


def keys(out) -> dict[str, str]:
    return {e["id"]: e["key"] for e in out.actions()}


def manifest_of(out, action_id: str) -> str:
    return events_by_id(out)[action_id]["outputs"]["manifest"]


def result_digest(out) -> str:
    (target,) = out.summary()["targets"]
    return target["outputs"]["manifest"]


def tar_bytes(cas: CAS, layer) -> int:
    """The size of the layer's uncompressed tar (what an engine hashes and streams)."""
    n = 0
    with cas.open(layer.digest) as blob:
        raw = open_decompressed(blob, layer.compression)
        while chunk := raw.read(1 << 20):
            n += len(chunk)
    return n


def image(ws, manifest: str):
    return load_image(CAS(ws.cache / "cas"), manifest)


def layer_sizes(ws, manifest: str) -> list[int]:
    cas = CAS(ws.cache / "cas")
    return [tar_bytes(cas, layer) for layer in load_image(cas, manifest).layers]


def new_layer_sizes(ws, out, step: str) -> list[int]:
    """The tar bytes of the layers ``step`` (an action id) added to its base's."""
    below = BASE if step == STEPS[0] else STEPS[STEPS.index(step) - 1]
    return layer_sizes(ws, manifest_of(out, step))[len(image(ws, manifest_of(out, below)).layers):]


def sent_on_load(out, tag: str) -> str:
    """The ``N B`` of ``loaded //x as TAG (N B of layers sent)``."""
    found = re.search(rf"loaded //app:\S+ as {re.escape(tag)} \((.+?) of layers sent\)", out.stderr)
    assert found, out.stderr
    return found.group(1)


def run_in(client, tag: str, *cmd: str) -> str:
    return client.containers.run(tag, list(cmd) or None, remove=True, network_mode="none").decode()


# ---------------------------------------------------------------------------- tests


def test_remote_engine_chain_gets_the_base_once_and_streams_results_back(
        forge_workspace, second_engine, docker_client, tmp_path):
    nonce = uuid.uuid4().hex
    second_engine.prune()  # the module's own engine: empty, whatever ran before
    ws = chain_ws(forge_workspace, nonce, name="remote", cache=tmp_path / "cache-remote",
                  host=second_engine.host)
    out = ws.run("build", "//app:chain", "--json").assert_success()
    assert set(STEPS) <= set(out.executed())

    (base_bytes,) = layer_sizes(ws, manifest_of(out, BASE))
    first, second = counters(out, STEPS[0]), counters(out, STEPS[1])
    # Step one: the engine has never seen busybox, so its one layer goes in, and only it.
    assert 0 < first["cas_to_engine_bytes"] <= base_bytes + SLACK, first
    assert first["cas_to_engine_layers"] == 1, first
    # Step two's base is step one's result, built there: no layer goes in (forge's config
    # of it is loaded alone, which is not layer bytes).
    assert second.get("cas_to_engine_bytes", 0) == 0, second
    assert second.get("cas_to_engine_layers", 0) == 0, second
    # docker save streams the whole image, base included, whatever the CAS holds: at
    # least every layer's tar bytes, and little more (the archive's json/VERSION files).
    for step, got in ((STEPS[0], first), (STEPS[1], second)):
        image_bytes = sum(layer_sizes(ws, manifest_of(out, step)))
        assert image_bytes <= got["engine_to_cas_bytes"] <= image_bytes + SLACK, (step, got)

    tag = f"forge-test/remote-{nonce[:12]}:1"
    loaded = ws.run("build", "//app:chain", "--json", "--load", "--tag", tag).assert_success()
    assert loaded.executed() == []
    assert sent_on_load(loaded, tag) == "0 B"  # the engine built every layer of it
    assert run_in(second_engine.client, tag) == expected_output(nonce)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(tag)  # it went to the second engine, not the default one

    # The same engine through its unix socket (the layer-store route), fresh cache: the
    # same keys and digests (the engine's build cache gives the same images), and only
    # new layers read.
    unix = chain_ws(forge_workspace, nonce, name="unix", cache=tmp_path / "cache-unix",
                    host=second_engine.socket)
    via_unix = unix.run("build", "//app:chain", "--json").assert_success()
    assert keys(via_unix) == keys(out)
    assert result_digest(via_unix) == result_digest(out)
    for step in STEPS:
        assert manifest_of(via_unix, step) == manifest_of(out, step)
        new = sum(new_layer_sizes(ws, out, step))
        assert new <= counters(via_unix, step)["engine_to_cas_bytes"] <= 1.1 * new

    # The default engine, fresh cache: the keys do not depend on the engine either. (Its
    # results do, without reproducible = true: Docker 20.10's builder stamps wall-clock
    # times into a step's files and history, so step one's result, hence step two's key
    # and the final digest, are the engine's. See the reproducible test below.)
    local = chain_ws(forge_workspace, nonce, name="local", cache=tmp_path / "cache-local")
    on_local = local.run("build", "//app:chain", "--json").assert_success()
    assert set(STEPS) <= set(on_local.executed())
    assert keys(on_local)[BASE] == keys(out)[BASE]
    assert manifest_of(on_local, BASE) == manifest_of(out, BASE)
    assert keys(on_local)[STEPS[0]] == keys(out)[STEPS[0]]




def test_reproducible_chain_is_one_digest_on_two_engines(
        forge_workspace, second_engine, docker_client, tmp_path):
    nonce = uuid.uuid4().hex
    built = {}
    for name, host in (("remote", second_engine.host), ("local", None)):
        ws = chain_ws(forge_workspace, nonce, name=name, cache=tmp_path / f"cache-{name}",
                      host=host, reproducible=True)
        out = ws.run("build", "//app:chain", "--json").assert_success()
        assert set(STEPS) <= set(out.executed())
        built[name] = (ws, out)
    (remote_ws, remote), (_, local) = built["remote"], built["local"]
    tag = f"forge-test/repro-{nonce[:12]}:1"
    remote_ws.run("build", "//app:chain", "--load", "--tag", tag).assert_success()
    assert run_in(second_engine.client, tag) == expected_output(nonce)

    assert keys(remote)[BASE] == keys(local)[BASE]
    assert keys(remote)[STEPS[0]] == keys(local)[STEPS[0]]
    one = {name: image(ws, manifest_of(out, STEPS[0])) for name, (ws, out) in built.items()}
    # the same layers byte for byte, and one config: no engine ID, time or container left
    assert one["remote"].diff_ids == one["local"].diff_ids
    assert one["remote"].config_bytes == one["local"].config_bytes
    assert keys(remote) == keys(local)
    assert result_digest(remote) == result_digest(local)


def test_local_engine_auto_reads_only_new_layers_and_save_the_whole_image(
        forge_workspace, docker_client, tmp_path):
    nonce = uuid.uuid4().hex
    auto_ws = chain_ws(forge_workspace, nonce, name="auto", cache=tmp_path / "cache-auto")
    auto = auto_ws.run("build", "//app:chain", "--json").assert_success()
    save_ws = chain_ws(forge_workspace, nonce, name="save", cache=tmp_path / "cache-save",
                       transfer="save")
    save = save_ws.run("build", "//app:chain", "--json").assert_success()
    assert set(STEPS) <= set(auto.executed()) and set(STEPS) <= set(save.executed())

    assert keys(auto) == keys(save)
    assert result_digest(auto) == result_digest(save)
    for step in STEPS:
        assert manifest_of(auto, step) == manifest_of(save, step)

    for step in STEPS:
        new = new_layer_sizes(auto_ws, auto, step)
        got = counters(auto, step)
        # auto reads the step's new layers from the engine's store, and nothing else
        assert got["engine_to_cas_layers"] == len(new), (step, got, new)
        assert sum(new) <= got["engine_to_cas_bytes"] <= 1.1 * sum(new), (step, got, new)
        # save streams the whole image: every layer, the base's included
        whole = sum(layer_sizes(auto_ws, manifest_of(auto, step)))
        assert counters(save, step)["engine_to_cas_bytes"] >= whole, (step, counters(save, step))


SHARED_BUILD = """\
oci_import(name = "busybox-amd64", src = "busybox-amd64.tar", platform = "amd64")
dockerfile(name = "first", base = ":busybox-amd64", dockerfile = "first.Dockerfile",
           build_args = {{"NONCE": "{nonce}"}})
dockerfile(name = "a", base = ":first", dockerfile = "a.Dockerfile")
dockerfile(name = "b", base = ":first", dockerfile = "b.Dockerfile")
"""
SHARED_FILES = {
    # The sleep keeps both processes inside the shared step at once.
    "app/first.Dockerfile": ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG NONCE\n"
                             'RUN sleep 1 && echo "$NONCE" > /first\n'),
    "app/a.Dockerfile": 'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo a > /which\nCMD ["cat", "/first", "/which"]\n',
    "app/b.Dockerfile": 'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo b > /which\nCMD ["cat", "/first", "/which"]\n',
}


def forge_process(ws, *args: str) -> subprocess.Popen:
    env = {**os.environ, "FORGE_CACHE": str(ws.cache), "CI": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "forge.cli", *args], cwd=ws.root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def json_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]




@pytest.mark.parametrize("route", ["tcp", "unix"])
def test_two_processes_share_one_cache_and_one_engine(forge_workspace, second_engine, tmp_path, route):
    nonce = uuid.uuid4().hex
    host = second_engine.host if route == "tcp" else second_engine.socket
    ws = forge_workspace({"WORKSPACE.toml": workspace_toml(host),
                          "app/BUILD": SHARED_BUILD.format(nonce=nonce), **SHARED_FILES},
                         cache=tmp_path / "cache")
    shutil.copy(testdata("busybox-amd64.tar"), ws.root / "app" / "busybox-amd64.tar")

    procs = {t: forge_process(ws, "build", f"//app:{t}", "--json") for t in ("a", "b")}
    digests, first = {}, {}
    for target, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        assert proc.returncode == 0, f"forge build //app:{target}: {proc.returncode}\n{stderr}"
        events = json_events(stdout)
        actions = {e["id"]: e for e in events if e.get("event") == "action"}
        assert actions[f"//app:{target}#DockerBuild.0"]["status"] == "built"
        first[target] = actions["//app:first#DockerBuild.0"]
        (summary,) = (e for e in events if e.get("event") == "summary")
        (digests[target],) = (t["outputs"]["manifest"] for t in summary["targets"])
    assert first["a"]["key"] == first["b"]["key"]  # one shared step, one key

    third = ws.run("build", "//app:a", "//app:b", "--json").assert_success()
    # When both ran the shared step, the first to record it won and the other process
    # built on the winner's result: nothing re-runs, the digests they printed stand.
    assert third.executed() == []
    by_label = {t["label"]: t["outputs"]["manifest"] for t in third.summary()["targets"]}
    assert by_label == {"//app:a": digests["a"], "//app:b": digests["b"]}
    # Whatever happened, the cache has settled: nothing runs, the same digests come back.
    again = ws.run("build", "//app:a", "//app:b", "--json").assert_success()
    assert again.executed() == []
    assert {t["label"]: t["outputs"]["manifest"] for t in again.summary()["targets"]} == by_label

    tag = f"forge-test/shared-{route}-{nonce[:12]}"
    for target in ("a", "b"):
        ws.run("build", f"//app:{target}", "--load", "--tag", f"{tag}:{target}").assert_success()
        assert run_in(second_engine.client, f"{tag}:{target}") == f"{nonce}\n{target}\n"


def test_pruned_remote_engine_with_warm_cache_gets_the_layers_again(
        forge_workspace, second_engine, tmp_path):
    nonce = uuid.uuid4().hex
    ws = chain_ws(forge_workspace, nonce, name="pruned", cache=tmp_path / "cache",
                  host=second_engine.host)
    ws.run("build", "//app:chain", "--json").assert_success()
    second_engine.prune()  # every image of the test's own engine: it starts from nothing

    tag = f"forge-test/pruned-{nonce[:12]}:1"
    out = ws.run("build", "//app:chain", "--json", "--load", "--tag", tag).assert_success()
    assert out.executed() == []
    assert sent_on_load(out, tag) != "0 B"
    assert run_in(second_engine.client, tag) == expected_output(nonce)


def forge_tags(client) -> set[str]:
    return {t for image in client.images.list() for t in image.tags
            if t.startswith(("forge-base/", "forge-build:"))}


def test_clean_engine_and_gc_remove_the_engine_images_of_their_results(
        forge_workspace, second_engine, tmp_path):
    client = second_engine.client
    keep = f"forge-test/keep-{uuid.uuid4().hex[:8]}:1"
    second_engine.prune()
    ours = chain_ws(forge_workspace, uuid.uuid4().hex, name="ours", cache=tmp_path / "ours",
                    host=second_engine.host)
    other = chain_ws(forge_workspace, uuid.uuid4().hex, name="other", cache=tmp_path / "other",
                     host=second_engine.host)
    ours.run("build", "//app:chain", "--json").assert_success()
    mine = forge_tags(client)
    other.run("build", "//app:chain", "--load", "--tag", keep).assert_success()
    theirs = forge_tags(client) - mine
    assert mine and theirs
    # clean --engine: this cache's results only; another cache's images and a user's tag stay
    out = ours.run("clean", "--engine").assert_success()
    assert "removed the engine images of" in out.stdout
    assert forge_tags(client) == theirs
    assert keep in {t for image in client.images.list() for t in image.tags}
    # nothing is lost: the CAS has every result; the engine gets what it lacks back
    again = ours.run("build", "//app:chain", "--json", "--load", "--tag", "forge-test/again:1").assert_success()
    assert again.executed() == []
    # gc: only the engine images of the results it drops
    before = forge_tags(client)
    other.run("cache", "gc", "--max-size", "0").assert_success()
    assert forge_tags(client) == before - theirs
