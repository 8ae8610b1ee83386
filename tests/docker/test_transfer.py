"""Bytes between the CAS and the local engine: only new layers leave it, only missing
layers enter it (asserted with the executor's counters, never with time)."""

from __future__ import annotations

import functools
import uuid

import pytest

from forge.core.cas import CAS
from forge.core.oci.compression import HashingReader, open_decompressed
from forge.core.oci.image import load_image
from tests.docker.test_dockerfile import busybox_ws, run_image

pytestmark = pytest.mark.integration

STEP = "ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN {command}\n"


def chain_files(nonce: str, megabytes: int = 2) -> dict[str, str]:
    """Three steps, each writing ``megabytes`` of its own (a nonce keeps any build cache of
    the shared engine from serving them)."""
    return {
        "app/chain/10-Dockerfile-one": STEP.format(
            command=f"echo {nonce} > /one && head -c {megabytes << 20} /dev/urandom > /blob1"),
        "app/chain/20-Dockerfile-two": STEP.format(
            command=f"cat /one > /two && head -c {megabytes << 20} /dev/urandom > /blob2"),
        "app/chain/30-Dockerfile-three": STEP.format(command="cat /two > /three && echo three >> /three"),
        "app/BUILD": 'dockerfile_chain(name = "chain", dir = "chain", base = ":busybox-amd64")\n'
                     'minimize(name = "min", image = ":chain")\n',
    }


def tar_size(cas: CAS, layer) -> int:
    with cas.open(layer.digest) as blob:
        reader = HashingReader(open_decompressed(blob, layer.compression))
        reader.drain()
    return reader.size


def steps(out) -> list[dict]:
    return sorted((e for e in out.actions() if e["mnemonic"] == "DockerBuild"), key=lambda e: e["id"])


def test_each_step_moves_its_new_layers_only_and_load_sends_nothing(forge_workspace, docker_client):
    ws = busybox_ws(forge_workspace, chain_files(uuid.uuid4().hex))
    out = ws.run("build", "//app:chain", "//app:min", "--json").assert_success()
    cas = CAS(ws.cache / "cas")
    built = steps(out)
    assert [e["status"] for e in built] == ["built"] * 3
    (base,) = [e for e in out.actions() if e["mnemonic"] == "OciImport"]
    previous = load_image(cas, base["outputs"]["manifest"])
    for event in built:
        image = load_image(cas, event["outputs"]["manifest"])
        known = {layer.diff_id for layer in previous.layers}
        new = [layer for layer in image.layers if layer.diff_id not in known]
        counters = event["counters"]
        # engine→CAS: exactly the tar bytes of the layers the step added (the 2 MB steps
        # included), nothing of the base below them
        assert counters["engine_to_cas_bytes"] == sum(tar_size(cas, layer) for layer in new)
        assert counters["engine_to_cas_layers"] == len(new)
        if event is not built[0]:  # its base was built in this engine: nothing sent to it
            assert counters.get("cas_to_engine_bytes", 0) == 0
        previous = image
    # minimize reads the chain's layers from the CAS: it moves nothing out of the engine
    (minimize,) = [e for e in out.actions() if e["mnemonic"] == "Minimize"]
    assert minimize["status"] == "built" and not minimize.get("counters")

    tag = f"forge-test/transfer:{uuid.uuid4().hex[:8]}"
    loaded = ws.run("build", "//app:chain", "--load", "--tag", tag).assert_success()
    assert f"loaded //app:chain as {tag} (0 B of layers sent)" in loaded.stderr
    image = load_image(cas, built[-1]["outputs"]["manifest"])
    assert docker_client.images.get(tag).id == image.config_digest  # forge's image, not the builder's
    assert run_image(docker_client, tag, "cat", "/three").split() == [
        run_image(docker_client, tag, "cat", "/one").strip(), "three"]


def test_engine_pruned_between_builds_gets_only_what_it_lacks(forge_workspace, docker_client):
    nonce = uuid.uuid4().hex
    # the classic builder: BuildKit's build cache keeps a step's layers in the engine after
    # its images are removed (nothing would be lost), and a test never prunes the shared
    # engine's build cache
    ws = busybox_ws(forge_workspace, {
        **chain_files(nonce, megabytes=1),
        "WORKSPACE.toml": '[workspace]\nname = "ws"\n[executors.docker]\nbuilder = "classic"\n'})
    first = ws.run("build", "//app:chain", "--json").assert_success()
    for img in ws_images(docker_client):  # the test's own images (never anybody else's)
        for t in img.tags:
            docker_client.images.remove(t)
    # nothing re-runs (the CAS has every result); --load sends the layers the engine lost
    tag = f"forge-test/pruned:{nonce[:8]}"
    again = ws.run("build", "//app:chain", "--json", "--load", "--tag", tag).assert_success()
    assert again.executed() == []
    assert "(0 B of layers sent)" not in again.stderr
    assert run_image(docker_client, tag, "cat", "/one").strip() == nonce
    # an edit of the last step re-runs it alone; its base is loaded back (config only:
    # the layers came with --load) and only its own layer comes out
    path = ws.root / "app/chain/30-Dockerfile-three"
    path.write_text(path.read_text().replace("echo three", "echo edited"))
    edited = ws.run("build", "//app:chain", "--json").assert_success()
    assert edited.executed() == ["//app:chain#DockerBuild.2"]
    (last,) = [e for e in steps(edited) if e["status"] == "built"]
    assert last["counters"].get("cas_to_engine_bytes", 0) == 0
    assert last["counters"]["engine_to_cas_layers"] == 1
    assert {e["outputs"]["manifest"] for e in steps(first)[:2]} == {
        e["outputs"]["manifest"] for e in steps(edited)[:2]}


def ws_images(client) -> list:
    from tests.conftest import created_images

    return created_images(client, client.forge_images_before)


def test_save_route_gives_the_same_digests(forge_workspace, docker_client, tmp_path):
    """``transfer = "save"`` (the route of remote engines) and the engine-store route give
    one result: the layers are the engine's own tars either way."""
    nonce = uuid.uuid4().hex
    files = chain_files(nonce, megabytes=1)
    auto = busybox_ws(functools.partial(forge_workspace, cache=tmp_path / "auto"), files, name="auto")
    # a cache of its own: the route is not in the key (where bytes are never is)
    save = busybox_ws(functools.partial(forge_workspace, cache=tmp_path / "save"), {
        **files, "WORKSPACE.toml": '[workspace]\nname = "save"\n[executors.docker]\ntransfer = "save"\n',
    }, name="save")
    a = auto.run("build", "//app:chain", "--json").assert_success()
    s = save.run("build", "//app:chain", "--json").assert_success()
    assert [e["outputs"] for e in steps(a)] == [e["outputs"] for e in steps(s)]
    # the save route reads the whole image (base included) for each step
    for via_store, via_save in zip(steps(a), steps(s), strict=True):
        assert via_save["counters"]["engine_to_cas_bytes"] > via_store["counters"]["engine_to_cas_bytes"]
