"""Deltas end to end on the real engine and registry: two releases of a production image
whose C library changed in one source file (built here with gcc, harvested by minimize,
as the Atom example's production images are), the delta between them built as an action,
shared through the remote cache, pushed as a referrer, and applied — on an engine that has
the old release, from an OCI layout, with a tampered delta, and with no base at all."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from forge import delta_apply
from forge.core.cas import CAS
from forge.core.oci.layout import read_layout
from forge.core.oci.validate import validate_image
from tests.minimize.test_e2e import build_root
from tests.services import require_docker, require_registry, testdata, unavailable

pytestmark = pytest.mark.integration

LIBMINE_C = """\
#include <string.h>
#include <zlib.h>
unsigned long mine_crc(const char *s) { return crc32(0L, (const unsigned char *)s, strlen(s)) ^ %dUL; }
"""
PROG_C = """\
#include <stdio.h>
unsigned long mine_crc(const char *s);
int main(void) { printf("release crc=%08lx\\n", mine_crc("forge")); return 0; }
"""
BUILD = """\
oci_import(name = "bb", src = "bb.tar", platform = "amd64")
layer(name = "build-files", srcs = {srcs}, strip_prefix = "root")
image(name = "build", base = ":bb", layers = [":build-files"],
      env = {{"LD_LIBRARY_PATH": "/usr/local/lib"}})
minimize(name = "min", image = ":build")
production(name = "prod", base = ":bb", minimized = ":min", entrypoint = ["/usr/local/bin/prog"])
image_delta(name = "delta", image = ":prod", releases = ["rel1"])
"""


def compile_release(out: Path, release: int) -> Path:
    """prog and libmine.so.1.0.0; ``release`` changes one line of the library's source."""
    if shutil.which("gcc") is None or not Path("/usr/include/zlib.h").is_file():
        unavailable("needs gcc and zlib1g-dev (apt-get install gcc libc6-dev zlib1g-dev)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "libmine.c").write_text(LIBMINE_C % release)
    (out / "prog.c").write_text(PROG_C)

    def gcc(*args: str) -> None:
        subprocess.run(["gcc", "-O2", *args], cwd=out, check=True, capture_output=True)

    gcc("-shared", "-fPIC", "-Wl,-soname,libmine.so.1", "-o", "libmine.so.1.0.0", "libmine.c", "-lz")
    if not (out / "libmine.so").exists():
        (out / "libmine.so").symlink_to("libmine.so.1.0.0")
    gcc("-o", "prog", "prog.c", "-L.", "-lmine", "-lz")
    return out


def set_release(ws, tmp: Path, release: int) -> None:
    app = ws.root / "app"
    shutil.rmtree(app / "root", ignore_errors=True)
    srcs = build_root(compile_release(tmp / f"c{release}", release), app / "root")
    (app / "BUILD").write_text(BUILD.format(srcs=json.dumps(srcs)))


def target(out, label: str) -> dict:
    return next(t for t in out.summary()["targets"] if t["label"] == label)


def config_of(cas: CAS, manifest_digest: str) -> str:
    return json.loads(cas.read_bytes(manifest_digest))["config"]["digest"]


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Release 1 built, loaded as forge-test/delta:1 and kept as the layout app/rel1;
    release 2 (one source line of libmine changed) built with its delta from release 1."""
    from forge.testing import Workspace

    client = require_docker()
    tmp = tmp_path_factory.mktemp("delta-e2e")
    root = tmp / "ws"
    (root / "app").mkdir(parents=True)
    remote = f"{require_registry()}/forge-cache-test/{uuid.uuid4().hex[:16]}"
    (root / "WORKSPACE.toml").write_text(f'[workspace]\nname = "deltas"\n[remote_cache]\nurl = "{remote}"\nwrite = true\n')
    shutil.copy(testdata("busybox-amd64.tar"), root / "app/bb.tar")
    ws = Workspace(root, tmp / "cache")
    set_release(ws, tmp, 1)
    (root / "app/rel1").mkdir()  # a placeholder so BUILD analyses; release 1 goes there next
    one = ws.run("build", "//app:prod", "--json", "--load", "--tag", "forge-test/delta:1").assert_success()
    shutil.rmtree(root / "app/rel1")
    shutil.copytree(root / "forge-out/app/prod", root / "app/rel1")
    set_release(ws, tmp, 2)
    two = ws.run("build", "//app:prod", "//app:delta", "--json").assert_success()
    state = {"ws": ws, "tmp": tmp, "remote": remote, "client": client,
             "v1": target(one, "//app:prod")["digest"], "v2": target(two, "//app:prod")["digest"],
             "delta_out": root / "forge-out/app/delta", "two": two}
    yield state
    for tag in ("forge-test/delta:1", "forge-test/delta:2", "forge-test/delta:3", "forge-test/delta:4",
                "forge-test/delta:5"):
        with contextlib.suppress(Exception):  # not there
            client.images.remove(tag)


def apply(*args: str) -> tuple[int, str]:
    lines: list[str] = []
    try:
        report = delta_apply.apply_delta(*args[:1], **_kwargs(args[1:]), log=lines.append)
    except delta_apply.DeltaError as e:
        return e.exit_code, "\n".join([*lines, str(e)])
    return 0, "\n".join([*lines, *report.lines()])


def _kwargs(args: tuple[str, ...]) -> dict:
    parsed = delta_apply.parser().parse_args(["x", *args])
    return {"base_engine": parsed.base_engine, "base_layout": parsed.base_layout, "load": parsed.load,
            "tag": parsed.tag, "output": parsed.output, "target": parsed.target,
            "fallback": not parsed.no_fallback, "work_dir": parsed.work_dir}


def test_the_delta_is_an_action_a_fraction_of_the_layer(releases):
    ws, cas = releases["ws"], CAS(releases["ws"].cache / "cas")
    assert releases["v1"] != releases["v2"]
    delta = next(e for e in releases["two"].actions() if e["mnemonic"] == "ImageDelta")
    assert delta["status"] == "built"
    index = json.loads((releases["delta_out"] / "index.json").read_bytes())
    (entry,) = index["manifests"]
    assert entry["artifactType"] == delta_apply.ARTIFACT_TYPE
    notes = entry["annotations"]
    assert notes[delta_apply.A_FROM] == releases["v1"] and notes[delta_apply.A_TO] == releases["v2"]
    manifest = json.loads((releases["delta_out"] / "blobs/sha256" / entry["digest"][7:]).read_bytes())
    assert manifest["subject"]["digest"] == releases["v2"]
    (layer,) = manifest["layers"][2:]  # the minimized layer changed; busybox did not
    target_layers = {lyr["digest"]: lyr for lyr in json.loads(cas.read_bytes(releases["v2"]))["layers"]}
    full = target_layers[layer["annotations"][delta_apply.A_LAYER_TO]]["size"]
    assert layer["size"] < 0.02 * full, (layer["size"], full)
    # unchanged: cached; in another cache: from the remote cache, not made again
    again = ws.run("build", "//app:delta", "--json").assert_success()
    assert again.executed() == []
    from forge.testing import Workspace

    other = Workspace(ws.root, releases["tmp"] / "cache-2")
    shared = other.run("build", "//app:delta", "--json").assert_success()
    assert {e["status"] for e in shared.actions() if e["mnemonic"] == "ImageDelta"} == {"cached-remote"}


def test_applied_on_the_engine_with_the_old_release_it_is_the_built_image(releases):
    client, cas = releases["client"], CAS(releases["ws"].cache / "cas")
    code, text = apply(str(releases["delta_out"]), "--base-engine", "--load", "--tag", "forge-test/delta:2",
                       "--work-dir", str(releases["tmp"] / "work"))
    assert code == 0, text
    assert "layer 1" in text and ": delta" in text and "pull" not in text
    image = client.images.get("forge-test/delta:2")
    built = json.loads(cas.read_bytes(releases["v2"]))
    assert image.id == built["config"]["digest"]  # the engine's image digest: exactly the built one
    config = json.loads(cas.read_bytes(built["config"]["digest"]))
    assert image.attrs["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
    logs = client.containers.run("forge-test/delta:2", remove=True, network_mode="none")
    assert logs.decode().startswith("release crc=")


def test_applied_from_an_oci_layout_and_a_tampered_delta_changes_nothing(releases, tmp_path):
    cas = CAS(releases["ws"].cache / "cas")
    rel1 = releases["ws"].root / "app/rel1"
    # `forge apply-delta` is the same applier, with the workspace's codec plugins
    ran = releases["ws"].run("apply-delta", str(releases["delta_out"]), "--base-layout", str(rel1),
                             "--output", str(tmp_path / "v2"), "--work-dir", str(tmp_path / "work"))
    assert ran.exit_code == 0, ran.stdout + ran.stderr
    assert ": delta" in ran.stdout
    check = CAS(tmp_path / "check")
    made = read_layout(check, tmp_path / "v2")
    validate_image(check, made.digest)  # every layer hashes to its diff_id
    assert made.config_digest == config_of(cas, releases["v2"])
    assert made.diff_ids == tuple(json.loads(cas.read_bytes(made.config_digest))["rootfs"]["diff_ids"])
    # forge compresses the rebuilt layers again as it wrote them: the built manifest itself
    assert made.digest == releases["v2"]

    # the old release from the layout, the new image into the engine: exactly the built ID
    code, text = apply(str(releases["delta_out"]), "--base-layout", str(rel1), "--load", "--tag",
                       "forge-test/delta:5", "--work-dir", str(tmp_path / "work"))
    assert code == 0, text
    assert releases["client"].images.get("forge-test/delta:5").id == config_of(cas, releases["v2"])

    # a byte of the delta blob flipped: refused, nothing written, nothing loaded
    tampered = tmp_path / "tampered"
    shutil.copytree(releases["delta_out"], tampered)
    entry = json.loads((tampered / "index.json").read_bytes())["manifests"][0]
    manifest = json.loads((tampered / "blobs/sha256" / entry["digest"][7:]).read_bytes())
    blob = tampered / "blobs/sha256" / manifest["layers"][2]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    for where in (["--output", str(tmp_path / "v2-bad")], ["--load", "--tag", "forge-test/delta:3"]):
        code, text = apply(str(tampered), "--base-layout", str(rel1), *where, "--work-dir", str(tmp_path / "w"))
        assert code == 1 and "nothing was changed" in text, text
    assert not (tmp_path / "v2-bad").exists()
    with pytest.raises(Exception):  # noqa: B017 - docker.errors.ImageNotFound
        releases["client"].images.get("forge-test/delta:3")


def test_pushed_as_a_referrer_and_a_missing_base_falls_back_to_a_plain_pull(releases, tmp_path):
    ws, client = releases["ws"], releases["client"]
    repo = f"{require_registry()}/forge-test/delta-{uuid.uuid4().hex[:12]}"
    pushed = ws.run("delta", "//app:delta", "--push", repo).assert_success()
    assert "referrers tag" in pushed.stdout or "referrers API" in pushed.stdout
    ref = f"{repo}@{releases['v2']}"
    # with the old release in the engine: only the delta crosses the network
    code, text = apply(ref, "--base-engine", "forge-test/delta:1", "--load", "--tag", "forge-test/delta:4",
                       "--work-dir", str(tmp_path / "work"))
    assert code == 0 and "pull" not in text, text
    client.images.remove("forge-test/delta:4")
    # a base the engine does not have: every layer pulled plainly, with a message, still verified
    code, text = apply(ref, "--base-engine", "forge-test/no-such:1", "--output", str(tmp_path / "full"),
                       "--work-dir", str(tmp_path / "work"))
    assert code == 0, text
    assert "does not have forge-test/no-such:1" in text and "falling back to a plain pull" in text
    made = read_layout(CAS(tmp_path / "c"), tmp_path / "full")
    assert made.digest == releases["v2"]  # every blob as the registry has it: the very manifest
    # --no-fallback refuses instead
    code, text = apply(ref, "--base-engine", "forge-test/no-such:1", "--output", str(tmp_path / "never"),
                       "--no-fallback", "--work-dir", str(tmp_path / "work"))
    assert code == 1 and not (tmp_path / "never").exists(), text


def test_a_consistent_but_lying_delta_is_refused(releases, tmp_path):
    """A delta blob replaced by another valid zstd frame, with every digest re-written to
    match: it decodes, but not to the diff_id the pinned config says, so it is refused."""
    import pyzstd

    from forge.core.canonical import canonical_json

    lying = tmp_path / "lying"
    shutil.copytree(releases["delta_out"], lying)
    blobs = lying / "blobs/sha256"
    index = json.loads((lying / "index.json").read_bytes())
    entry = index["manifests"][0]
    manifest = json.loads((blobs / entry["digest"][7:]).read_bytes())
    fake = pyzstd.compress(b"not the layer" * 1000)
    fake_digest = delta_apply.sha256_bytes(fake)
    (blobs / fake_digest[7:]).write_bytes(fake)
    manifest["layers"][2].update(digest=fake_digest, size=len(fake))
    data = canonical_json(manifest)
    (blobs / delta_apply.sha256_bytes(data)[7:]).write_bytes(data)
    entry.update(digest=delta_apply.sha256_bytes(data), size=len(data))
    (lying / "index.json").write_bytes(canonical_json(index))
    code, text = apply(str(lying), "--base-layout", str(releases["ws"].root / "app/rel1"),
                       "--output", str(tmp_path / "out"), "--work-dir", str(tmp_path / "w"))
    assert code == 1 and "not diff_id" in text and "nothing was changed" in text, text
    assert not (tmp_path / "out").exists()
