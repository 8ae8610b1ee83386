"""Typed plugin contracts end to end (issue 12): an executor and a remote cache written
with ``import forge`` only (tests/contract_plugin.py), selected from WORKSPACE.toml and
BUILD files, and used by a build. No Docker: the fake executors run nothing.

That every hook in core/hookspecs.py is documented in the README is
tests/test_public_api.py::test_plugin_hooks_are_documented.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest

import forge
from tests import contract_plugin
from tests.contract_plugin import MARKER

PLUGIN = '[plugins]\nmodules = ["tests.contract_plugin"]\n'
DOCKERFILE = "FROM scratch\nCOPY a.txt /a.txt\n"
REGISTERED = "registered executors: buildah, docker, fixed, fixed-other"


def workspace_toml(build: str = "", cache_dir: str | None = "../remote") -> str:
    table = f'[plugins.contract_plugin]\ndir = "{cache_dir}"\n' if cache_dir else ""
    return f'[workspace]\nname = "contracts"\n[build]\n{build}\n{PLUGIN}{table}'


def files(build: str = 'executor = "fixed"', build_file: str = 'dockerfile(name = "img", srcs = ["a.txt"])\n',
          cache_dir: str | None = "../remote") -> dict[str, str]:
    return {"WORKSPACE.toml": workspace_toml(build, cache_dir), "BUILD": build_file,
            "Dockerfile": DOCKERFILE, "a.txt": "a\n"}


@pytest.fixture(autouse=True)
def calls():
    """The fake executors' calls during this test (the list is per process)."""
    contract_plugin.CALLS.clear()
    yield contract_plugin.CALLS
    contract_plugin.CALLS.clear()


def builds(calls) -> dict[str, str]:
    """label (and platform) -> the executor whose ``build`` ran it."""
    return {f"{c['label']} {c['platform']}": c["executor"] for c in calls if c["call"] == "build"}


def marker(ws, digest: str) -> str:
    """The text the fake executor left in the image's top layer: which executor built it."""
    cas = forge.CAS(ws.cache / "cas")
    image = forge.load_image(cas, digest)
    layer = gzip.decompress(cas.read_bytes(image.layers[-1].digest))
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        return tf.extractfile(MARKER).read().decode().strip()


def digest_of(outcome, label: str) -> str:
    return next(t["digest"] for t in outcome.summary()["targets"] if t["label"] == label)


def test_the_fakes_satisfy_the_contracts(tmp_path):
    executor = contract_plugin.FixedExecutor("fixed", None)
    assert isinstance(executor, forge.Executor)
    assert forge.Executor not in type(executor).__mro__  # structural: it has the members
    cache = contract_plugin.DirectoryCache(tmp_path)
    assert isinstance(cache, forge.RemoteCache)
    assert not isinstance(cache, forge.LazyRemoteCache)  # lookup hands over every blob
    assert cache.ping() == "reachable (read-write)"
    assert cache.describe() == f"dir:{tmp_path}"
    with pytest.raises(forge.RemoteCacheError):
        contract_plugin.DirectoryCache(tmp_path / "absent").ping()


def test_build_uses_the_plugin_executor_and_directory_cache(forge_workspace, tmp_path, calls):
    """[build] executor selects the fake; the first build uploads into the directory, a
    second workspace with an empty local cache restores from it and runs nothing."""
    ws = forge_workspace(files())
    first = ws.run("build", "//:img", "--json").assert_success()
    assert first.executed() == ["//:img#DockerBuild.0"]
    assert [(c["executor"], c["call"], c["label"], c["dockerfile"], c["dockerfile_read"])
            for c in calls] == [("fixed", "build", "//:img", "Dockerfile", True)]
    digest = digest_of(first, "//:img")
    assert marker(ws, digest) == "fixed"
    remote = tmp_path / "remote"
    key = first.actions()[0]["key"]
    record = json.loads((remote / "results" / f"{key}.json").read_bytes())
    stored = forge.ActionResult.from_json(record["result"])
    assert stored.outputs["manifest"].digest == digest
    assert all((remote / "blobs" / "sha256" / d.split(":")[1]).is_file() for d in stored.all_blobs())

    calls.clear()
    # Another checkout, another (empty) local cache; the directory comes from the env var.
    other = forge_workspace(files(cache_dir=None), name="ws2", cache=tmp_path / "cache2")
    restored = other.run("build", "//:img", "--json",
                         env={contract_plugin.ENV_DIR: str(remote)}).assert_success()
    assert restored.statuses() == {"//:img#DockerBuild.0": "cached-remote"}
    assert restored.executed() == [] and calls == []
    assert digest_of(restored, "//:img") == digest
    assert marker(other, digest) == "fixed"
    # and the restored result is now local: without the remote, still nothing runs
    again = other.run("build", "//:img", "--json").assert_success()
    assert again.statuses() == {"//:img#DockerBuild.0": "cached-local"}


def test_target_executor_beats_the_workspace_default(forge_workspace, calls):
    build_file = (
        'dockerfile(name = "default", srcs = ["a.txt"])\n'
        'dockerfile(name = "own", srcs = ["a.txt"], dockerfile = "Dockerfile.own", executor = "fixed-other")\n'
        'dockerfile_chain(name = "chain", dir = "steps", executor = "fixed-other")\n'
    )
    ws = forge_workspace({**files(build_file=build_file, cache_dir=None),
                          "Dockerfile.own": DOCKERFILE + "# own\n",
                          "steps/10-Dockerfile-one": "FROM scratch\n",
                          "steps/20-Dockerfile-two": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"})
    out = ws.run("build", "//:all", "--json").assert_success()
    ran = sorted((c["label"], c["dockerfile"], c["executor"]) for c in calls if c["call"] == "build")
    assert ran == [("//:chain", "steps/10-Dockerfile-one", "fixed-other"),
                   ("//:chain", "steps/20-Dockerfile-two", "fixed-other"),
                   ("//:default", "Dockerfile", "fixed"),
                   ("//:own", "Dockerfile.own", "fixed-other")]
    assert marker(ws, digest_of(out, "//:default")) == "fixed"
    assert marker(ws, digest_of(out, "//:own")) == "fixed-other"


def test_platform_executors_choose_per_platform(forge_workspace, calls):
    build = 'executor = "fixed"\nplatform_executors = {aarch64 = "fixed-other"}'
    build_file = (
        'dockerfile(name = "amd", srcs = ["a.txt"], platform = "amd64")\n'
        'dockerfile(name = "arm", srcs = ["a.txt"], platform = "arm64")\n'
        'dockerfile(name = "arm-own", srcs = ["a.txt"], platform = "arm64", executor = "fixed",\n'
        '           dockerfile = "Dockerfile.own")\n'
    )
    ws = forge_workspace({**files(build, build_file, cache_dir=None), "Dockerfile.own": DOCKERFILE + "#\n"})
    ws.run("build", "//:all", "--json").assert_success()
    assert builds(calls) == {"//:amd linux/amd64": "fixed", "//:arm linux/arm64/v8": "fixed-other",
                             "//:arm-own linux/arm64/v8": "fixed"}


def test_the_action_carries_the_selected_name(forge_workspace):
    """Resolved at analysis: the action's ``executor`` field is the chosen name."""
    ws = forge_workspace(files('platform_executors = {arm64 = "fixed-other"}',
                               'dockerfile(name = "img", srcs = ["a.txt"], platform = "arm64")\n'
                               'dockerfile(name = "amd", srcs = ["a.txt"], platform = "amd64")\n',
                               cache_dir=None))
    session = forge.Session(ws.root)
    targets, _ = session.analyze(["//:all"])
    chosen = {str(t.label): t[forge.DefaultInfo].action.executor for t in targets}
    assert chosen == {"//:img": "fixed-other", "//:amd": "docker"}  # the default default


def test_executor_is_not_in_the_key(forge_workspace, calls):
    """The decision (core/registry.py ExecutorSelection): switching executors keeps the
    key, so results built elsewhere (CI on another executor, the remote cache) serve."""
    ws = forge_workspace(files(cache_dir=None))
    first = ws.run("build", "//:img", "--json").assert_success()
    ws.write({"WORKSPACE.toml": workspace_toml('executor = "fixed-other"', cache_dir=None)})
    second = ws.run("build", "//:img", "--json").assert_success()
    assert second.statuses() == {"//:img#DockerBuild.0": "cached-local"}
    assert first.actions()[0]["key"] == second.actions()[0]["key"]
    assert [c["executor"] for c in calls] == ["fixed"]


def test_load_uses_the_executor_that_built_the_target(forge_workspace, calls):
    build_file = (
        'dockerfile(name = "img", srcs = ["a.txt"], executor = "fixed-other")\n'
        'image(name = "plain", platform = "amd64")\n'
    )
    ws = forge_workspace(files(build_file=build_file, cache_dir=None))
    ws.run("build", "//:img", "--load").assert_success()
    ws.run("build", "//:plain", "--load").assert_success()  # no executor built it: the default
    loads = [(c["executor"], c["ref"], c["present"]) for c in calls if c["call"] == "load"]
    assert loads == [("fixed-other", "forge/img:latest", True), ("fixed", "forge/plain:latest", True)]


@pytest.mark.parametrize(("build", "build_file", "expected"), [
    ("", 'dockerfile(name = "img", srcs = ["a.txt"], executor = "fixd")\n',
     ["BUILD:1", "//:img", "executor = 'fixd'", "did you mean 'fixed'"]),
    ('executor = "dokcer"', 'dockerfile(name = "img", srcs = ["a.txt"])\n',
     ["WORKSPACE.toml:4: [build] executor = 'dokcer'", "needed by //:img", "did you mean 'docker'"]),
    ('platform_executors = {arm64 = "fixed-othr"}',
     'dockerfile(name = "img", srcs = ["a.txt"], platform = "aarch64")\n',
     ["WORKSPACE.toml:4: [build] platform_executors arm64 = 'fixed-othr'", "did you mean 'fixed-other'"]),
    ('executor = "fixed"', 'production(name = "p", base = ":b", minimized = ":m", executor = "podman")\n'
     'image(name = "b")\nminimize(name = "m", image = ":b")\n',
     ["BUILD:1", "//:p", "executor = 'podman'"]),
], ids=["target", "workspace", "platform", "production"])
def test_unknown_executor_lists_the_registered_names(forge_workspace, calls, build, build_file, expected):
    ws = forge_workspace(files(build, build_file, cache_dir=None))
    out = ws.run("build", "//:all").assert_failure(2)
    for text in [*expected, REGISTERED]:
        assert text in out.stderr, out.stderr
    assert calls == []


def test_workspace_executor_settings_are_checked(forge_workspace):
    for build, expected in [
        ('platform_executors = {sparc = "fixed"}', "WORKSPACE.toml:4: [build] platform_executors:"),
        ('platform_executors = {arm64 = "fixed", aarch64 = "docker"}', "names linux/arm64/v8 twice"),
        ('platform_executors = {arm64 = 3}', "platform_executors arm64 should be an executor name"),
        ('platform_executors = ["arm64"]', "[build] platform_executors should be a table"),
        ('executor = ""', "[build] executor should be an executor name"),
    ]:
        ws = forge_workspace(files(build, cache_dir=None))
        out = ws.run("query", "targets", "//...").assert_failure(2)
        assert expected in out.stderr, (build, out.stderr)
