"""Regression tests for issue 11's numbered false-cache-hit bugs (no containers needed).

Each test fails on 42542e9 (the commit the issue was filed against) and names its bug.
The engine- and registry-backed ones live beside their subjects (tests/docker,
tests/remote); the mutation suite is tests/test_mutations.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

import forge
from forge.core.cas import CAS
from forge.core.oci.image import load
from forge.core.oci.validate import validate_image
from tests.services import testdata

from .test_build import CHAIN

IMAGE_WS = {
    "p/BUILD": (
        'oci_import(name = "base", src = "busybox-amd64.tar", platform = "amd64")\n'
        'layer(name = "data", srcs = ["a.txt"], prefix = "/srv")\n'
        'image(name = "img", base = ":base", layers = [":data"], cmd = ["cat", "/srv/a.txt"])\n'
        'image(name = "img2", base = ":base", layers = [":data"], platform = "amd64", user = "1")\n'
        'image_index(name = "idx", images = [":img"])\n'
    ),
    "p/a.txt": "alpha\n",
}


def image_ws(forge_workspace, name="ws", cache=None):
    ws = forge_workspace(IMAGE_WS, name=name, cache=cache)
    shutil.copy(testdata("busybox-amd64.tar"), ws.root / "p" / "busybox-amd64.tar")
    return ws


def layout_manifest(root: Path) -> dict:
    index = json.loads((root / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    return json.loads((root / "blobs/sha256" / digest.split(":")[1]).read_text())


def layout_config(root: Path) -> dict:
    digest = layout_manifest(root)["config"]["digest"]
    return json.loads((root / "blobs/sha256" / digest.split(":")[1]).read_text())


# -- bug 1: SOURCE_DATE_EPOCH -------------------------------------------------------


def test_source_date_epoch_reruns_exactly_the_actions_that_write_times(forge_workspace, tmp_path):
    ws = image_ws(forge_workspace)
    first = ws.run("build", "//p:img", "//p:idx", "--json").assert_success()
    assert layout_config(ws.root / "forge-out/p/img")["created"] == "1970-01-01T00:00:00Z"
    epoch = {"SOURCE_DATE_EPOCH": "1700000000"}
    second = ws.run("build", "//p:img", "//p:idx", "--json", env=epoch).assert_success()
    # the import (a rootfs tarball rewritten), the layer, the image write times; the
    # index writes none and re-runs only because its child changed
    assert second.executed() == ["//p:base#OciImport.0", "//p:data#Layer.0", "//p:idx#Index.0",
                                 "//p:img#Image.0"]
    assert layout_config(ws.root / "forge-out/p/img")["created"] == "2023-11-14T22:13:20Z"
    digest = second.summary()["targets"][0]["digest"]
    assert digest != first.summary()["targets"][0]["digest"]
    # an empty cache with the same epoch gives the same digest: one key, one output
    fresh = image_ws(forge_workspace, name="fresh", cache=tmp_path / "fresh-cache")
    third = fresh.run("build", "//p:img", "--json", env=epoch).assert_success()
    assert third.summary()["targets"][0]["digest"] == digest
    # and back to the default: cached again, the first digest
    again = ws.run("build", "//p:img", "--json").assert_success()
    assert again.executed() == [] and again.summary()["targets"][0]["digest"] == first.summary()["targets"][0]["digest"]


# -- bug 2: media types in identities -------------------------------------------------


def test_compression_change_reruns_the_image_and_its_manifest_says_zstd(forge_workspace):
    ws = image_ws(forge_workspace)
    ws.run("build", "//p:img", "//p:idx", "//p:data", "--json").assert_success()
    assert (ws.root / "forge-out/p/data/layer.tar.gz").is_file()
    build = (ws.root / "p/BUILD").read_text()
    (ws.root / "p/BUILD").write_text(build.replace('prefix = "/srv")', 'prefix = "/srv", compression = "zstd")'))
    out = ws.run("build", "//p:img", "//p:idx", "//p:data", "--json").assert_success()
    assert out.executed() == ["//p:data#Layer.0", "//p:idx#Index.0", "//p:img#Image.0"]
    manifest = layout_manifest(ws.root / "forge-out/p/img")
    assert manifest["layers"][-1]["mediaType"].endswith("+zstd")
    assert (ws.root / "forge-out/p/data/layer.tar.zst").is_file()
    assert not (ws.root / "forge-out/p/data/layer.tar.gz").exists()
    validate_image(CAS(ws.cache / "cas"), out.summary()["targets"][0]["digest"])


def test_index_rekeys_on_a_child_manifest_change_that_keeps_the_config(forge_workspace):
    """gzip level changes the layer blob (and so the image manifest) but not its diff_id,
    so the image config is the same: the index must still re-run and list the new manifest."""
    ws = image_ws(forge_workspace)
    first = ws.run("build", "//p:idx", "//p:img", "--json").assert_success()
    build = (ws.root / "p/BUILD").read_text()
    (ws.root / "p/BUILD").write_text(build.replace('prefix = "/srv")', 'prefix = "/srv", level = 0)'))
    out = ws.run("build", "//p:idx", "//p:img", "--json").assert_success()
    assert out.executed() == ["//p:data#Layer.0", "//p:idx#Index.0", "//p:img#Image.0"]
    cas = CAS(ws.cache / "cas")
    index = load(cas, out.summary()["targets"][0]["digest"])
    image = load(cas, out.summary()["targets"][1]["digest"])
    old_image = load(cas, first.summary()["targets"][1]["digest"])
    assert image.config_digest == old_image.config_digest and image.digest != old_image.digest
    assert [i.digest for i in index.images] == [image.digest]


# -- bug 3: load() by resolved label --------------------------------------------------


def test_relative_load_in_two_packages_gives_each_its_own_file(forge_workspace):
    ws = forge_workspace({
        "WORKSPACE.toml": '[workspace]\nname = "t"\n[plugins]\nmodules = ["tests.core.fake_rules"]\n',
        "a/defs.star": 'def mk(name):\n    concat(name = name, text = "from a")\n',
        "a/BUILD": 'load(":defs.star", "mk")\nmk("t")\n',
        "b/defs.star": 'def mk(name):\n    concat(name = name, text = "from b")\n',
        "b/BUILD": 'load(":defs.star", "mk")\nmk("t")\n',
        "lib/util.star": 'TEXT = "util of lib"\n',
        "lib/defs.star": 'load(":util.star", "TEXT")\ndef mk(name):\n    concat(name = name, text = TEXT)\n',
        "c/util.star": 'TEXT = "util of c"\n',
        "c/BUILD": 'load("//lib:defs.star", "mk")\nmk("t")\n',
    })
    ws.run("build", "//a:t", "//b:t", "//c:t").assert_success()
    assert (ws.root / "forge-out/a/t/out").read_text() == "from a"
    assert (ws.root / "forge-out/b/t/out").read_text() == "from b"
    # a relative load inside a .star file is relative to that file's package
    assert (ws.root / "forge-out/c/t/out").read_text() == "util of lib"


# -- bug 4: forge-out shares no inode with the CAS -----------------------------------------


def test_flipping_a_byte_in_forge_out_cannot_poison_the_cache(forge_workspace):
    ws = image_ws(forge_workspace)
    first = ws.run("build", "//p:data", "//p:img", "--json").assert_success()
    out_layer = ws.root / "forge-out/p/data/layer.tar.gz"
    cas = CAS(ws.cache / "cas")
    digest = first.summary()["targets"][0]["digest"]
    assert out_layer.stat().st_ino != cas.path(digest).stat().st_ino
    data = bytearray(out_layer.read_bytes())
    data[len(data) // 2] ^= 0x55
    out_layer.write_bytes(bytes(data))  # same size
    second = ws.run("build", "//p:data", "//p:img", "--json").assert_success()
    assert second.executed() == []
    assert cas.verify(digest)
    assert "sha256:" + hashlib.sha256(out_layer.read_bytes()).hexdigest() == digest  # repaired
    validate_image(cas, second.summary()["targets"][1]["digest"])


# -- bug 6: the forge-wide output format ---------------------------------------------------


def test_output_format_version_enters_every_key(forge_workspace, monkeypatch):
    ws = forge_workspace(CHAIN)
    ws.run("build", "//p:all").assert_success()
    monkeypatch.setattr("forge.core.actions.OUTPUT_FORMAT", 999)
    out = ws.run("build", "//p:all", "--json").assert_success()
    assert out.executed() == ["//p:a#Concat.0", "//p:b#Concat.0", "//p:c#Concat.0", "//p:solo#Concat.0"]


# -- bug 7: run functions get only what the key covers --------------------------------


def _module_level(rc):
    return None


def test_run_functions_binding_values_outside_the_key_are_refused():
    from forge.core.actions import make_action
    from forge.core.labels import Label

    label = Label("p", "t")
    make_action(label=label, mnemonic="T", run=_module_level)

    def closure_over(value):
        def run(rc):
            return value
        return run

    for bad in (functools.partial(_module_level), lambda rc: None, closure_over(1),
                object().__init__, Path("x").exists):
        with pytest.raises(TypeError, match="outside the action key"):
            make_action(label=label, mnemonic="T", run=bad)
    with pytest.raises(TypeError, match="outside the action key"):
        make_action(label=label, mnemonic="T", run=_module_level, materialize=lambda *a: None)


EVERY_RULE = {
    "WORKSPACE.toml": '[workspace]\nname = "all"\n',
    "p/BUILD": (
        'oci_import(name = "base", src = "busybox-amd64.tar", platform = "amd64")\n'
        'oci_pull(name = "pulled", image = "127.0.0.1:5000/x/y", digest = "sha256:' + "0" * 64 + '",'
        ' platform = "amd64")\n'
        'layer(name = "data", srcs = ["a.txt"])\n'
        'image(name = "img", base = ":base", layers = [":data"])\n'
        'image_index(name = "idx", images = [":img"])\n'
        'dockerfile(name = "df", base = ":base", srcs = ["a.txt"])\n'
        'filegroup(name = "ctx", srcs = ["a.txt", "Dockerfile"])\n'
        'dockerfile(name = "df2", base = ":base", context = ":ctx")\n'
        'dockerfile_chain(name = "chain", dir = "chain", base = ":base")\n'
        'debootstrap(name = "deb", suite = "bookworm", platform = "amd64")\n'
        'minimize(name = "min", image = ":df", paths = ["/bin"])\n'
        'production(name = "prod", base = ":base", minimized = ":min", packages = ["curl"])\n'
        'image_delta(name = "delta", image = ":img", releases = ["127.0.0.1:5000/x/y@sha256:' + "0" * 64 + '"])\n'
    ),
    "p/a.txt": "a\n",
    "p/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY a.txt /\n",
    "p/chain/10-Dockerfile-one": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n",
}


def test_every_registered_rule_declares_only_pure_actions(forge_workspace):
    """Analyze one target of every registered rule: make_action refuses a run function that
    binds values outside the key, so analysis passing is the check; and a rule added later
    without a target here fails the coverage assertion."""
    from forge.core.analysis import action_graph
    from forge.core.session import Session

    ws = forge_workspace(EVERY_RULE)
    shutil.copy(testdata("busybox-amd64.tar"), ws.root / "p" / "busybox-amd64.tar")
    session = Session(ws.root)
    targets, _ = session.analyze(["//p:all"])
    covered = {t.rule_name for t in targets}
    assert covered == set(session.rules.names()), "give every rule a target in EVERY_RULE"
    actions = list(action_graph(targets))
    assert {a.mnemonic for a in actions} >= {"OciImport", "OciPull", "Layer", "Image", "Index",
                                             "DockerBuild", "Debootstrap", "Minimize",
                                             "ProductionPackages", "Production"}
    timestamped = {a.mnemonic for a in actions if a.epoch is not None}
    assert timestamped == {"OciImport", "Layer", "Image", "DockerBuild", "Debootstrap", "Minimize",
                           "ProductionPackages", "Production"}


# -- bug 8: gc evicts whole results ----------------------------------------------------------


def test_gc_evicts_whole_result_closures(forge_workspace):
    ws = image_ws(forge_workspace)
    ws.run("build", "//p:img", "//p:img2", "//p:idx").assert_success()
    cas = CAS(ws.cache / "cas")
    total = sum(st.st_size for _, st in cas.iter_blobs())
    for budget in (total * 3 // 4, total // 2, total // 4, 0):
        ws.run("cache", "gc", "--max-size", str(budget)).assert_success()
        # every manifest left in the CAS has its whole image there
        for digest, _ in list(cas.iter_blobs()):
            try:
                value = load(cas, digest)
            except Exception:  # noqa: BLE001 - not a manifest
                continue
            validate_image(cas, value.digest)
        # and every surviving action-cache entry is complete
        from forge.core.action_cache import ActionCache

        ac = ActionCache(ws.cache / "ac", cas)
        for path in list(ac.iter_entries()):
            assert ac.lookup(path.stem) is not None
    out = ws.run("build", "//p:img", "--json").assert_success()
    validate_image(cas, out.summary()["targets"][0]["digest"])


# -- bug 9: recovery goes through the scheduler -----------------------------------------------


def test_corrupt_dependency_is_rerun_as_a_normal_action(forge_workspace):
    ws = forge_workspace(CHAIN)
    first = ws.run("build", "//p:c", "--json").assert_success()
    cas = CAS(ws.cache / "cas")
    b_out = next(e for e in first.actions() if e["id"] == "//p:b#Concat.0")["outputs"]["out"]
    path = cas.path(b_out)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))  # same size: the cache hit for b cannot see it
    (ws.root / "p/BUILD").write_text((ws.root / "p/BUILD").read_text().replace('text = "!"', 'text = "?"'))
    out = ws.run("build", "//p:c", "--json").assert_success()
    ids = [e["id"] for e in out.actions()]
    # c ran, found b corrupt; b re-ran as an ordinary action (event, status, log), then c
    assert ids.count("//p:b#Concat.0") == 2 and ids.count("//p:c#Concat.0") == 1
    b_events = [e for e in out.actions() if e["id"] == "//p:b#Concat.0"]
    assert [e["status"] for e in b_events] == ["cached-local", "built"]
    assert any("corrupt" in e.get("message", "") for e in out.events if e["event"] == "warning")
    assert (ws.root / "forge-out/p/c/out").read_text() == "AB?"
    assert cas.verify(b_out)
    again = ws.run("build", "//p:c", "--json").assert_success()
    assert again.executed() == []


# -- bug 11: executor registry --------------------------------------------------------------


def test_executor_registry_creates_one_instance_under_concurrency():
    from forge.core.registry import ExecutorRegistry

    made = []

    class Slow:
        def __init__(self, workspace):
            time.sleep(0.05)
            made.append(self)

    registry = ExecutorRegistry()
    registry.add("slow", Slow)
    got = []
    threads = [threading.Thread(target=lambda: got.append(registry.get("slow", None))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and all(g is made[0] for g in got)


def test_public_descriptor_type_is_exported():
    assert forge.Descriptor("sha256:" + "0" * 64, 0).media_type == "application/octet-stream"
