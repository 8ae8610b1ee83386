"""The examples end to end: the Atom layout on the real engine and QEMU, and the fleet.

Each example is a workspace of its own (``examples/atom/WORKSPACE.toml`` with the ``atom``
package, ``examples/fleet/WORKSPACE.toml`` with the ``fleet`` package). The module copies
the repository's root ``WORKSPACE.toml`` and ``examples/`` to a temporary directory and
builds both examples there with one cache for every test here, so each debootstrap runs
once per platform for both workspaces (several minutes for aarch64, whose second stage
runs under QEMU; set ``FORGE_EXAMPLES_CACHE`` to a directory to keep that cache between
runs). Tests never edit the repository's own examples.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from forge.core.cas import CAS
from forge.core.oci.validate import validate_image
from forge.testing import Workspace
from tests.services import require_binfmt, require_docker, require_registry

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
GRAPHICS = ["//atom:graphics-amd64", "//atom:graphics-aarch64"]
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Workspace:
    """A copy of the repository's root WORKSPACE.toml and examples/, with one cache for the
    module: ``checkout.root / "examples/atom"`` is laid out as in the repository."""
    require_docker()
    require_binfmt("aarch64")
    if os.geteuid() != 0:
        pytest.fail("the examples' debootstrap bases need root", pytrace=False)
    root = tmp_path_factory.mktemp("checkout")
    shutil.copy(REPO / "WORKSPACE.toml", root / "WORKSPACE.toml")
    shutil.copytree(REPO / "examples", root / "examples",
                    ignore=shutil.ignore_patterns("forge-out", "__pycache__"))
    cache = Path(os.environ.get("FORGE_EXAMPLES_CACHE") or tmp_path_factory.mktemp("examples-cache"))
    return Workspace(root, cache)


@pytest.fixture(scope="module")
def examples(checkout) -> Workspace:
    """The Atom example's workspace (examples/atom) in the copy."""
    return Workspace(checkout.root / "examples/atom", checkout.cache)


@pytest.fixture(scope="module")
def fleet(checkout) -> Workspace:
    """The fleet example's workspace (examples/fleet) in the copy, on the same cache."""
    return Workspace(checkout.root / "examples/fleet", checkout.cache)


def build(ws: Workspace, *args: str):
    start = time.monotonic()
    out = ws.run("build", "--json", *args).assert_success()
    print(f"forge build {' '.join(args)}: {time.monotonic() - start:.2f}s, "
          f"{len(out.executed())} actions executed")
    return out


def validated(ws: Workspace, out) -> None:
    """validate_image() on every image or index the build produced."""
    cas = CAS(ws.cache / "cas")
    for target in out.summary()["targets"]:
        outputs = target["outputs"]
        if "manifest" in outputs or "index" in outputs:  # not layers
            validate_image(cas, outputs.get("index") or outputs["manifest"])


def test_the_promised_command_builds_graphics_aarch64(checkout):
    """The README's words, to the letter: ``cd examples/atom && forge build
    //atom:graphics-aarch64``, by the installed ``forge`` command in a shell."""
    forge = shutil.which("forge")
    assert forge, "the forge command is not on PATH (pip install -e .)"
    start = time.monotonic()
    done = subprocess.run(["bash", "-c", "cd examples/atom && forge build //atom:graphics-aarch64"],
                          cwd=checkout.root, env={**os.environ, "FORGE_CACHE": str(checkout.cache)},
                          capture_output=True, text=True, timeout=3000)
    print(f"cd examples/atom && forge build //atom:graphics-aarch64: {time.monotonic() - start:.2f}s")
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    layout = checkout.root / "examples/atom/forge-out/atom/graphics-aarch64"
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["platform"]["architecture"] == "arm64"
    assert not (checkout.root / "forge-out").exists()  # nothing of the outer workspace's


def test_graphics_builds_and_runs_on_both_platforms(examples):
    client = require_docker()
    out = build(examples, *GRAPHICS, "--load")
    validated(examples, out)
    platforms = {t["label"]: t["platform"] for t in out.summary()["targets"]}
    assert platforms == {GRAPHICS[0]: "linux/amd64", GRAPHICS[1]: "linux/arm64/v8"}
    for name, machine in (("graphics-amd64", "x86_64"), ("graphics-aarch64", "aarch64")):
        ref = f"forge/atom/{name}:latest"
        config = client.images.get(ref).attrs
        assert config["Architecture"] == ("amd64" if machine == "x86_64" else "arm64")
        output = client.containers.run(ref, ["atom-hello", "test"], remove=True).decode()
        assert output.startswith("atom-hello: zlib 1.2.13, libatomhello 1.0 "), output
        assert f"({machine}), running on {machine}: hello from test" in output, output
        venv = client.containers.run(ref, ["python3", "-c", "import sys; print(sys.prefix)"],
                                     remove=True).decode().strip()
        assert venv == "/opt/venv"


def test_second_build_executes_nothing(examples):
    build(examples, *GRAPHICS)
    again = build(examples, *GRAPHICS)
    assert again.executed() == []
    assert set(again.statuses().values()) == {"cached-local"}


def test_editing_one_graphics_dockerfile_rebuilds_from_it(examples):
    build(examples, *GRAPHICS)
    display = examples.root / "atom/graphics/20-Dockerfile-display"
    original = display.read_text()
    # unique, so that a cache kept between runs (FORGE_EXAMPLES_CACHE) has never seen it
    display.write_text(original + f"ENV ATOM_GRAPHICS_EDITED={uuid.uuid4().hex}\n")
    try:
        out = build(examples, *GRAPHICS)
        # 20-Dockerfile-display is graphics' second action, 30-Dockerfile-smoke follows it
        assert out.executed() == sorted(
            f"//atom:graphics-{p}#DockerBuild.{i}" for p in ("amd64", "aarch64") for i in (1, 2)
        )
        assert not [a for a in out.statuses() if ":stock-" in a and out.statuses()[a] != "cached-local"]
        validated(examples, out)
    finally:
        display.write_text(original)
    # the original file's results are still in the cache
    assert build(examples, *GRAPHICS).executed() == []


def test_a_source_at_the_repository_root_rebuilds_the_step_that_copies_it(examples):
    """Every step's context is the workspace root (Atom's `docker build ../.`), and each
    step is keyed on the files its COPY reads: graphics 10 copies atom-hello.c."""
    build(examples, *GRAPHICS)
    source = examples.root / "languages/c/atom-hello/atom-hello.c"
    original = source.read_text()
    source.write_text(original + f"/* edited {uuid.uuid4().hex} */\n")
    try:
        out = build(examples, *GRAPHICS)
        assert out.executed() == sorted(
            f"//atom:graphics-{p}#DockerBuild.{i}" for p in ("amd64", "aarch64") for i in (0, 1, 2))
        # a file no step copies, and a file the root .dockerignore drops: nothing runs
        (examples.root / "languages/c/NOTES.txt").write_text("notes\n")
        (examples.root / "languages/c/atom-hello/atom-hello.o").write_text("object\n")
    finally:
        source.write_text(original)
    try:
        assert build(examples, *GRAPHICS).executed() == []
    finally:
        (examples.root / "languages/c/NOTES.txt").unlink()
        (examples.root / "languages/c/atom-hello/atom-hello.o").unlink()


def test_fleet_builds_in_parallel_and_pushes_an_index(examples, fleet):
    registry = require_registry()
    build(examples, "//atom:base-amd64", "//atom:base-aarch64")
    out = build(fleet, "//...")
    validated(fleet, out)
    labels = {t["label"] for t in out.summary()["targets"]}
    for service in ("web", "metrics", "broker", "radio"):
        assert {f"//fleet:{service}-amd64", f"//fleet:{service}-aarch64", f"//fleet:{service}"} <= labels
    # the fleet's bootstrap is the Atom example's, to the letter: one cache, one bootstrap
    for p in ("amd64", "aarch64"):
        assert out.statuses()[f"//fleet:bootstrap-{p}#Debootstrap.0"] == "cached-local", out.statuses()
    tag = f"test-{uuid.uuid4().hex[:8]}"
    pushed = fleet.run("push", "//fleet:web", f"{registry}/fleet/web:{tag}").assert_success()
    assert "sha256:" in pushed.stdout + pushed.stderr
    request = urllib.request.Request(f"http://{registry}/v2/fleet/web/manifests/{tag}",
                                     headers={"Accept": OCI_INDEX})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"] == OCI_INDEX
        index = json.loads(response.read())
    platforms = sorted((m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"])
    assert platforms == [("linux", "amd64"), ("linux", "arm64")]


def test_production_images_are_slim_and_run(examples):
    """minimize + production on a minbase without build packages: the program, its
    libraries and the venv come along, the toolchain does not."""
    client = require_docker()
    production = [f"{label}-production" for label in GRAPHICS]
    out = build(examples, *production, "--load")
    validated(examples, out)
    sizes = {t["label"]: t["size"] for t in build(examples, *GRAPHICS, *production).summary()["targets"]}
    for label in GRAPHICS:
        assert sizes[f"{label}-production"] < sizes[label] / 2, sizes
    for name, machine in (("graphics-amd64", "x86_64"), ("graphics-aarch64", "aarch64")):
        ref = f"forge/atom/{name}-production:latest"
        output = client.containers.run(ref, remove=True).decode()  # cmd = ["atom-hello"]
        assert output.startswith("atom-hello: zlib 1.2.13, libatomhello 1.0 "), output
        assert f"running on {machine}" in output
        check = "import sys, zlib; print(sys.prefix, zlib.ZLIB_VERSION)"
        assert client.containers.run(ref, ["python3", "-c", check], remove=True).decode().split() == [
            "/opt/venv", "1.2.13"]
        assert client.containers.run(ref, ["sh", "-c", "command -v gcc || echo none"],
                                     remove=True).decode().strip() == "none"
        # graphics/minimize-<platform>-args: ADDITIONAL_FILES=/etc/atom came along
        assert "GL_DRIVER=" in client.containers.run(ref, ["cat", "/etc/atom/graphics.env"],
                                                     remove=True).decode()


def test_a_delta_between_two_releases_of_the_production_image_rebuilds_it_exactly(examples, tmp_path):
    """Issue 17's round trip on the Atom example itself: release 1 of
    graphics-amd64-production kept as a layout, one source line of libatomhello edited,
    release 2 built with its delta; applied from the layout it is the built manifest, and
    on an engine holding release 1 it is the built image ID."""
    client = require_docker()
    label = "//atom:graphics-amd64-production"
    one = build(examples, label)
    v1 = next(t for t in one.summary()["targets"] if t["label"] == label)["digest"]
    rel1 = examples.root / "atom/releases/graphics-amd64-1"
    shutil.rmtree(rel1, ignore_errors=True)
    shutil.copytree(examples.root / "forge-out/atom/graphics-amd64-production", rel1)
    tag1 = f"forge-test/atom-release:{uuid.uuid4().hex[:8]}"
    build(examples, label, "--load", "--tag", tag1)
    build_file = examples.root / "atom/BUILD"
    source = examples.root / "languages/c/libatomhello/atomhello.c"
    original_build, original_source = build_file.read_text(), source.read_text()
    build_file.write_text(original_build + (
        '\nimage_delta(name = "graphics-amd64-delta", image = ":graphics-amd64-production",\n'
        '            releases = ["releases/graphics-amd64-1"])\n'))
    source.write_text(original_source + f"/* release 2: {uuid.uuid4().hex} */\n"
                      "int atomhello_release(void) { return 2; }\n")
    try:
        two = build(examples, label, "//atom:graphics-amd64-delta")
        v2 = next(t for t in two.summary()["targets"] if t["label"] == label)["digest"]
        assert v2 != v1
        delta_dir = examples.root / "forge-out/atom/graphics-amd64-delta"
        out = examples.run("apply-delta", str(delta_dir), "--base-layout", str(rel1), "--output",
                           str(tmp_path / "v2"), "--work-dir", str(tmp_path / "work")).assert_success()
        assert ": delta" in out.stdout
        index = json.loads((tmp_path / "v2/index.json").read_text())
        assert index["manifests"][0]["digest"] == v2
        loaded = examples.run("apply-delta", str(delta_dir), "--base-engine", tag1, "--load",
                              "--tag", tag1 + "-2", "--work-dir", str(tmp_path / "work2")).assert_success()
        cas = CAS(examples.cache / "cas")
        config = json.loads(cas.read_bytes(v2))["config"]["digest"]
        assert client.images.get(tag1 + "-2").id == config, loaded.stdout
    finally:
        build_file.write_text(original_build)
        source.write_text(original_source)
        shutil.rmtree(rel1.parent, ignore_errors=True)
        for tag in (tag1, tag1 + "-2"):
            with contextlib.suppress(Exception):
                client.images.remove(tag)
