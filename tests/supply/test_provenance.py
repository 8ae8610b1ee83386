"""Provenance: an in-toto SLSA v1 statement of the image's action graph, whose
resolvedDependencies change when, and only when, an input of the image changes."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.services import require_docker, testdata
from tests.supply.util import BUSYBOX, DEFAULT_BUILD, SUPPLY, out_json, target, workspace_files


def statement(ws):
    return out_json(ws, "//:app", "provenance.intoto.json")


def resolved(ws) -> list[dict]:
    return statement(ws)["predicate"]["buildDefinition"]["resolvedDependencies"]


def keys(ws) -> dict[str, str]:
    actions = statement(ws)["predicate"]["buildDefinition"]["internalParameters"]["actions"]
    return {a["id"]: a["key"] for a in actions}


def test_provenance_describes_the_graph_with_the_schedulers_keys(forge_workspace):
    ws = forge_workspace(workspace_files(testdata(BUSYBOX), config=SUPPLY))
    out = ws.run("build", "//:app", "--json").assert_success()
    doc = statement(ws)
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://slsa.dev/provenance/v1"
    assert doc["subject"] == [{"name": "//:app", "digest": {"sha256": target(out, "//:app")["digest"][7:]}}]
    build = doc["predicate"]["buildDefinition"]
    assert build["externalParameters"] == {"target": "//:app", "rule": "image", "platform": "linux/amd64"}
    # the keys are the scheduler's own (forge-out/.forge/keys.json)
    recorded = json.loads((ws.root / "forge-out/.forge/keys.json").read_bytes())
    assert keys(ws) == {i: recorded[i]["key"] for i in keys(ws)}
    assert sorted(keys(ws)) == ["//:app#Image.0", "//:base#Image.0", "//:bb#OciImport.0",
                                "//:conf#Layer.0", "//:dpkg#Layer.0"]
    by_name = {d["name"]: d for d in build["resolvedDependencies"]}
    assert by_name["//:bb"]["digest"]["sha256"] == target(
        ws.run("build", "//:bb", "--json"), "//:bb")["digest"][7:]
    conf = hashlib.sha256((ws.root / "app/app.conf").read_bytes()).hexdigest()
    assert by_name["app/app.conf"]["digest"] == {"sha256": conf}
    assert set(by_name) == {"//:bb", "busybox-amd64.tar", "rootfs/var/lib/dpkg/status",
                            "rootfs/etc/os-release", "app/app.conf"}
    assert doc["predicate"]["runDetails"]["byproducts"] == []  # every action is hermetic
    printed = ws.run("query", "provenance", "//:app").assert_success().stdout
    assert printed == (ws.root / "forge-out/app/provenance.intoto.json").read_text()


def test_resolved_dependencies_change_when_and_only_when_an_input_changes(forge_workspace):
    ws = forge_workspace(workspace_files(testdata(BUSYBOX), config=SUPPLY))
    ws.run("build", "//:app").assert_success()
    first, first_keys = resolved(ws), keys(ws)

    # not inputs of //:app: another target's file, a new target, the epoch of nothing
    ws.write({"other/unrelated.txt": "changed\n",
              "BUILD": DEFAULT_BUILD + 'layer(name = "more", srcs = ["other/unrelated.txt"])\n'})
    out = ws.run("build", "//:app", "--json").assert_success()
    assert out.executed() == []  # the provenance too is a cache hit
    assert resolved(ws) == first

    # a parameter is not an input: the image's key changes, its dependencies do not
    ws.write({"BUILD": DEFAULT_BUILD.replace('"MODE": "edge"', '"MODE": "prod"')})
    out = ws.run("build", "//:app", "--json").assert_success()
    assert "//:app#Provenance.5" in out.executed()
    # the image changed, its packages did not: the SBOM is re-bound, not re-drafted
    assert "//:app#Sbom.4" in out.executed() and "//:app#SbomDraft.3" not in out.executed()
    assert resolved(ws) == first
    assert keys(ws)["//:app#Image.0"] != first_keys["//:app#Image.0"]
    assert keys(ws)["//:conf#Layer.0"] == first_keys["//:conf#Layer.0"]

    # a source file is: exactly its entry changes
    ws.write({"app/app.conf": "mode = prod\n"})
    ws.run("build", "//:app").assert_success()
    now = resolved(ws)
    changed = [(a["name"], b["name"]) for a, b in zip(first, now, strict=True) if a != b]
    assert changed == [("app/app.conf", "app/app.conf")]


@pytest.mark.integration
def test_non_hermetic_actions_are_named_as_byproducts(forge_workspace, docker_client):
    require_docker()
    files = workspace_files(testdata(BUSYBOX), config=SUPPLY, build=DEFAULT_BUILD + """\
dockerfile(name = "net", base = ":base", network = True)
""")
    files["Dockerfile"] = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo networked > /net.txt\n"
    ws = forge_workspace(files)
    ws.run("build", "//:net").assert_success()
    doc = out_json(ws, "//:net", "provenance.intoto.json")
    byproducts = doc["predicate"]["runDetails"]["byproducts"]
    assert [b["name"] for b in byproducts] == ["//:net#DockerBuild.0"]
    assert byproducts[0]["annotations"]["forge.mnemonic"] == "DockerBuild"
    assert byproducts[0]["digest"]["sha256"] == doc["subject"][0]["digest"]["sha256"]
    assert {d["name"] for d in doc["predicate"]["buildDefinition"]["resolvedDependencies"]} >= {
        "Dockerfile", "//:bb"}
