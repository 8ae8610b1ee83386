"""What a buildx/bake user types on day one: --dry-run/aquery keys, --no-cache, --set,
--build-arg, --progress, --platform a,b, --push, and empty globs (issue 15)."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from forge.core.cas import CAS
from forge.core.oci.image import load

PLUGIN = '[workspace]\nname = "flags"\n[plugins]\nmodules = ["tests.core.fake_rules"]\n'
CHAIN = (
    'concat(name = "a", srcs = ["a.txt"], text = "A")\n'
    'concat(name = "b", deps = [":a"], text = "B")\n'
    'concat(name = "c", deps = [":b"], text = "C")\n'
)


@pytest.fixture
def ws(forge_workspace):
    return forge_workspace({"WORKSPACE.toml": PLUGIN, "p/BUILD": CHAIN, "p/a.txt": "alpha\n"})


def plan(ws, *args) -> dict[str, dict]:
    out = ws.run("aquery", *args, "--json").assert_success()
    return {e["id"]: e for e in (json.loads(line) for line in out.stdout.splitlines())}


def test_dry_run_keys_are_the_keys_of_the_next_build(ws):
    A, B, C = "//p:a#Concat.0", "//p:b#Concat.0", "//p:c#Concat.0"
    cold = plan(ws, "//p:c")
    # nothing built: a is keyed (its inputs are files), b and c wait for what a makes
    assert cold[A]["would"] == "run" and cold[A]["key"]
    assert cold[B]["key"] is None and cold[B]["waits_for"] == [A]
    assert cold[C]["key"] is None and cold[C]["waits_for"] == [A]
    dry = ws.run("build", "//p:c", "--dry-run", "--json").assert_success()
    assert [json.loads(line)["key"] for line in dry.stdout.splitlines()] == [cold[x]["key"] for x in (A, B, C)]
    built = ws.run("build", "//p:c", "--json").assert_success()
    keys = {e["id"]: e["key"] for e in built.actions()}
    assert keys[A] == cold[A]["key"]
    warm = plan(ws, "//p:c")
    assert {k: v["key"] for k, v in warm.items()} == keys  # every key, known without running
    assert {v["would"] for v in warm.values()} == {"cached-local"}
    assert warm[B]["deps"] == [A] and warm[A]["inputs"] == ["a.txt"] and warm[A]["mnemonic"] == "Concat"
    # an edit: the edited action is keyed anew and runs; below it, keys wait
    (ws.root / "p/a.txt").write_text("edited\n")
    edited = plan(ws, "//p:c")
    assert edited[A]["would"] == "run" and edited[A]["key"] != keys[A]
    assert edited[C]["key"] is None
    after = ws.run("build", "//p:c", "--json").assert_success()
    assert {e["id"]: e["key"] for e in after.actions()}[A] == edited[A]["key"]


def test_no_cache_reruns_exactly_the_named_targets_actions(ws):
    ws.run("build", "//p:c").assert_success()
    again = ws.run("build", "//p:c", "--no-cache", "--json").assert_success()
    assert again.executed() == ["//p:c#Concat.0"]  # not its dependencies
    both = ws.run("build", "//p:b", "//p:c", "--no-cache", "--json").assert_success()
    assert both.executed() == ["//p:b#Concat.0", "//p:c#Concat.0"]
    after = ws.run("build", "//p:c", "--json").assert_success()
    assert after.executed() == []  # the re-run results were recorded


def test_set_and_build_arg_override_attributes_and_name_typos(ws, forge_workspace):
    base = ws.run("build", "//p:c", "--json").assert_success()
    changed = ws.run("build", "//p:c", "--set", "b.text=B2", "--json").assert_success()
    assert changed.executed() == ["//p:b#Concat.0", "//p:c#Concat.0"]
    cas = CAS(ws.cache / "cas")
    out = {e["id"]: e["outputs"]["out"] for e in changed.actions()}
    assert cas.read_bytes(out["//p:c#Concat.0"]) == b"alpha\nAB2C"
    assert {e["id"]: e["key"] for e in base.actions()}["//p:a#Concat.0"] == \
        {e["id"]: e["key"] for e in changed.actions()}["//p:a#Concat.0"]
    label = ws.run("build", "//p:c", "--set", "//p:c.text=C3", "--json").assert_success()
    assert label.executed() == ["//p:c#Concat.0"]
    typo = ws.run("build", "//p:c", "--set", "b.txt=x")
    typo.assert_failure(2)
    assert "has no attribute 'txt' (did you mean 'text'?)" in typo.stderr
    assert "no target zz" in ws.run("build", "//p:c", "--set", "zz.text=x").assert_failure(2).stderr
    assert "expected TARGET.ATTR=VALUE" in ws.run("build", "//p:c", "--set", "novalue").assert_failure(2).stderr
    # --build-arg is --set '*.build_args.K=V': here no rule has build_args, so it is named
    assert "no target has attribute 'build_args'" in ws.run(
        "build", "//p:c", "--build-arg", "V=1").assert_failure(2).stderr


def test_progress_plain_is_the_ci_output(ws, monkeypatch):
    ws.run("build", "//p:c").assert_success()  # both below find the same warm cache
    monkeypatch.delenv("CI", raising=False)
    plain = ws.run("build", "//p:c", "--progress", "plain").assert_success()
    monkeypatch.setenv("CI", "true")
    ci = ws.run("build", "//p:c").assert_success()

    def shape(text):  # the same lines, timings aside
        import re

        return [re.sub(r"\d+\.\d+s", "", line) for line in text.splitlines()]

    assert shape(plain.stderr) == shape(ci.stderr)
    as_json = ws.run("build", "//p:c", "--progress", "json").assert_success()
    assert json.loads(as_json.stdout.splitlines()[-1])["event"] == "summary"


def test_an_empty_glob_is_an_error_unless_allowed(forge_workspace):
    files = {"WORKSPACE.toml": PLUGIN, "p/a.txt": "a\n",
             "p/BUILD": 'concat(name = "g", srcs = glob(["nomatch/*.txt"]))\n'}
    ws = forge_workspace(files)
    out = ws.run("build", "//p:g").assert_failure(2)
    assert "glob pattern 'nomatch/*.txt' matches no file" in out.stderr and "allow_empty = True" in out.stderr
    assert "p/BUILD:1" in out.stderr
    (ws.root / "p/BUILD").write_text('concat(name = "g", srcs = glob(["nomatch/*.txt"], allow_empty = True))\n')
    ws.run("build", "//p:g").assert_success()
    (ws.root / "p/BUILD").write_text('concat(name = "g", srcs = glob(["*.txt", "nomatch/*"]))\n')
    assert "'nomatch/*' matches no file" in ws.run("build", "//p:g").assert_failure(2).stderr


@pytest.mark.integration
def test_platform_list_builds_each_and_makes_an_index_that_loads_and_pushes(forge_workspace, docker_client):
    from tests.services import require_registry, testdata

    # one target, no platform of its own: --platform a,b builds it for each (the import is
    # labelled with each platform: the test needs no second tarball)
    files = {
        "WORKSPACE.toml": '[workspace]\nname = "multi"\n',
        "app/BUILD": (
            'oci_import(name = "bb", src = "busybox-amd64.tar")\n'
            'layer(name = "files", srcs = ["hello.txt"], prefix = "/srv")\n'
            'image(name = "app", base = ":bb", layers = [":files"], cmd = ["cat", "/srv/hello.txt"])\n'
        ),
        "app/hello.txt": "hello\n",
    }
    ws = forge_workspace(files)
    shutil.copy(testdata("busybox-amd64.tar"), ws.root / "app/busybox-amd64.tar")
    out = ws.run("build", "//app:app", "--platform", "amd64,arm64", "--json").assert_success()
    target = out.summary()["targets"][0]
    assert target["platform"] == "linux/amd64,linux/arm64/v8"
    cas = CAS(ws.cache / "cas")
    index = load(cas, target["outputs"]["index"])
    assert sorted(i.platform.architecture for i in index.images) == ["amd64", "arm64"]
    layout = json.loads((ws.root / "forge-out/app/app/index.json").read_text())
    assert layout["manifests"][0]["digest"] == index.digest
    tag = f"forge-test/multi-{uuid.uuid4().hex[:8]}"
    loaded = ws.run("build", "//app:app", "--platform", "amd64,arm64", "--load", "--tag", tag).assert_success()
    assert f"as {tag}:latest-amd64" in loaded.stderr and f"as {tag}:latest-arm64" in loaded.stderr
    assert docker_client.images.get(f"{tag}:latest-arm64").attrs["Architecture"] == "arm64"
    ref = f"{require_registry()}/forge-test/multi-{uuid.uuid4().hex[:8]}:1"
    pushed = ws.run("build", "//app:app", "--platform", "amd64,arm64", "--push", ref).assert_success()
    assert f"pushed {ref}@{index.digest}" in pushed.stderr
