"""The workspace is a sandbox (issue 19): every file a target reads is checked on its
resolved path, refused before any byte of it is read; what enters an output is what was
keyed (symlinked tarballs, files edited while the build runs)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import sys
import tarfile
import time

import pytest

from tests.services import testdata

from .test_build import CHAIN, _forge

SECRET = "TOP-SECRET-outside-the-workspace"


@pytest.fixture
def outside(tmp_path):
    """A directory beside the workspace holding what no build may read."""
    root = tmp_path / "outside"
    (root / "chain").mkdir(parents=True)
    (root / "shadow").write_text(f"root:{SECRET}:19000:0:99999:7:::\n")
    (root / "secret-args").write_text(f"TOKEN={SECRET}\n")
    (root / "Dockerfile").write_text(f"FROM scratch\nLABEL secret={SECRET}\n")
    (root / "chain/10-Dockerfile-x").write_text("FROM scratch\n")
    (root / "chain/data.txt").write_text(SECRET)
    shutil.copy(testdata("busybox-amd64.tar"), root / "rootfs.tar")
    return root


def audit_reads(paths):
    """Open events for any of ``paths`` (an audit hook; hooks cannot be removed, so it
    records only while ``active[0]``)."""
    opened, active = [], [True]
    watched = {str(p) for p in paths}

    def hook(event, args):
        if active[0] and event == "open" and args and str(args[0]) in watched:
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    return opened, active


CASES = {
    "layer through a symlinked directory": (
        'layer(name = "t", srcs = ["etc/shadow"])\n', {"etc": "outside"}, "srcs", "shadow"),
    "dockerfile srcs through a symlinked directory": (
        'dockerfile(name = "t", srcs = ["etc/shadow"])\n', {"etc": "outside"}, "srcs", "shadow"),
    "chain dir outside": (
        'dockerfile_chain(name = "t", dir = "../../outside/chain")\n', {}, "dir", "chain"),
    "chain dir is a symlink to outside": (
        'dockerfile_chain(name = "t", dir = "chain")\n', {"chain": "outside/chain"}, "dir", "chain"),
    "dockerfile outside": (
        'dockerfile(name = "t", dockerfile = "../../outside/Dockerfile")\n', {}, "dockerfile", "Dockerfile"),
    "dockerfile is a symlink to outside": (
        'dockerfile(name = "t")\n', {"Dockerfile": "outside/Dockerfile"}, "dockerfile", "Dockerfile"),
    "args_file outside": (
        'dockerfile(name = "t", args_file = "../../outside/secret-args")\n', {}, "args_file", "secret-args"),
    "args_file absolute": (
        'dockerfile(name = "t", args_file = "/etc/shadow")\n', {}, "args_file", None),
    "oci_import outside": (
        'oci_import(name = "t", src = "../../outside/rootfs.tar", platform = "amd64")\n', {}, "src", "rootfs.tar"),
    "oci_import symlink to outside": (
        'oci_import(name = "t", src = "base.tar", platform = "amd64")\n', {"base.tar": "outside/rootfs.tar"},
        "src", "rootfs.tar"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_escapes_are_refused_before_any_byte_is_read(forge_workspace, outside, case):
    build, links, attr, target = CASES[case]
    files = {"p/BUILD": build}
    if "Dockerfile" not in links:
        files["p/Dockerfile"] = "FROM scratch\n"
    ws = forge_workspace(files)
    for name, where in links.items():
        rel = where.split("/", 1)
        os.symlink(outside / rel[1] if len(rel) > 1 else outside, ws.root / "p" / name)
    watched = [p for p in outside.rglob("*") if p.is_file()] + [outside / "shadow"]
    opened, active = audit_reads(watched)
    try:
        out = ws.run("build", "//p:t", "--json")
    finally:
        active[0] = False
    out.assert_failure(2)
    assert f"attribute '{attr}'" in out.stderr, out.stderr
    assert "p/BUILD:1" in out.stderr
    if target is not None:
        assert "outside the workspace" in out.stderr and str(outside) in out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert opened == [], f"read before refusing: {opened}"
    assert out.actions() == []
    assert not (ws.root / "forge-out/p/t").exists()


def test_a_symlink_inside_the_sources_is_kept_as_a_link(forge_workspace, outside):
    """Pointing outside is fine for a link that is an entry of the layer: its text is keyed
    and stored, the target is never read."""
    ws = forge_workspace({"p/BUILD": 'layer(name = "t", srcs = ["shadow"])\n'})
    os.symlink(outside / "shadow", ws.root / "p/shadow")
    out = ws.run("build", "//p:t", "--json").assert_success()
    with tarfile.open(ws.root / "forge-out/p/t/layer.tar.gz") as tf:
        member = tf.getmember("shadow")
        assert member.issym() and member.linkname == str(outside / "shadow")
    raw = gzip.decompress((ws.root / "forge-out/p/t/layer.tar.gz").read_bytes())
    assert SECRET.encode() not in raw
    assert out.executed() == ["//p:t#Layer.0"]


def test_a_symlinked_tarball_is_keyed_by_the_content_read(forge_workspace):
    """Regression: the key hashed the link text while the import read the target, so a
    changed tarball behind an unchanged link stayed cached."""
    ws = forge_workspace({"p/BUILD": 'oci_import(name = "base", src = "base.tar", platform = "amd64")\n'})
    shutil.copy(testdata("busybox-amd64.tar"), ws.root / "p/real-v1.tar")
    os.symlink("real-v1.tar", ws.root / "p/base.tar")
    first = ws.run("build", "//p:base", "--json").assert_success()
    with tarfile.open(ws.root / "p/real-v1.tar", "a") as tf:  # the target changes, the link does not
        data = b"v2\n"
        info = tarfile.TarInfo("etc/version")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    second = ws.run("build", "//p:base", "--json").assert_success()
    assert second.executed() == ["//p:base#OciImport.0"]
    assert second.summary()["targets"][0]["digest"] != first.summary()["targets"][0]["digest"]


def test_a_source_edited_while_its_action_runs_is_never_recorded_under_the_old_key(forge_workspace):
    ws = forge_workspace(CHAIN)
    trace = ws.root.parent / "trace"
    proc = _forge(ws, "build", "//p:solo", "--json",
                  env={"FORGE_TEST_SLOW_WRITE": "1.5", "FORGE_TEST_TRACE": str(trace)})
    deadline = time.time() + 30
    while time.time() < deadline and not (trace.exists() and "start" in trace.read_text()):
        time.sleep(0.02)
    (ws.root / "p/s.txt").write_text("S-saved-during-the-build")  # an editor saves mid-run
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "changed while it ran" in out + err
    assert trace.read_text().count("start") == 2  # run again on the new content
    assert (ws.root / "forge-out/p/solo/out").read_text().startswith("S-saved-during-the-build")
    # the recorded entry is the new content's: a plain build now is a cache hit on it
    again = ws.run("build", "//p:solo", "--json").assert_success()
    assert again.executed() == []


@pytest.mark.parametrize("how", ["build file", "star file", "package directory"])
def test_build_and_star_files_outside_the_workspace_are_not_read(forge_workspace, outside, how):
    (outside / "BUILD").write_text(f'layer(name = "x", srcs = [])  # {SECRET}\n')
    (outside / "defs.star").write_text(f'X = "{SECRET}"\n')
    files = {"p/BUILD": 'load(":defs.star", "X")\n'} if how == "star file" else {}
    ws = forge_workspace(files)
    if how == "build file":
        (ws.root / "p").mkdir()
        os.symlink(outside / "BUILD", ws.root / "p/BUILD")
    elif how == "star file":
        os.symlink(outside / "defs.star", ws.root / "p/defs.star")
    else:
        os.symlink(outside, ws.root / "p")
    opened, active = audit_reads([outside / "BUILD", outside / "defs.star"])
    try:
        out = ws.run("build", "//p:all")
    finally:
        active[0] = False
    out.assert_failure(2)
    assert "outside the workspace" in out.stderr and SECRET not in out.stdout + out.stderr
    assert opened == []


def test_a_declared_external_root_may_be_read(forge_workspace, outside):
    ws = forge_workspace({
        "WORKSPACE.toml": f'[workspace]\nname = "x"\nexternal_roots = ["{outside}"]\n',
        "p/BUILD": 'oci_import(name = "t", src = "../../outside/rootfs.tar", platform = "amd64")\n',
    })
    out = ws.run("build", "//p:t", "--json").assert_success()
    assert out.executed() == ["//p:t#OciImport.0"]
    bad = forge_workspace({
        "WORKSPACE.toml": '[workspace]\nname = "y"\nexternal_roots = [1]\n',
        "p/BUILD": "",
    }, name="bad")
    err = bad.run("build", "//p:all").assert_failure(2)
    assert "WORKSPACE.toml:3" in err.stderr and "external_roots" in err.stderr
