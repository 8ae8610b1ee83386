"""image/layer/oci_import/--load/push end to end on the real engine and registry."""

import json
import shutil
import uuid

import pytest
import requests

from forge.core.cas import CAS
from forge.core.oci.validate import validate_image
from tests.services import require_registry, testdata

pytestmark = pytest.mark.integration

BUILD = """\
oci_import(name = "bb", src = "busybox-amd64.tar", platform = "amd64")
oci_import(name = "bb-arm", src = "busybox-arm64.tar", platform = "aarch64")
layer(name = "motd", srcs = ["motd.txt"], prefix = "/etc")
image(name = "app", base = ":bb", layers = [":motd"], cmd = ["cat", "/etc/motd.txt"])
image(name = "app-arm", base = ":bb-arm", layers = [":motd"], cmd = ["cat", "/etc/motd.txt"])
oci_import(name = "bb-armv7", src = "busybox-armhf.tar", platform = "armv7")
image(name = "app-armv7", base = ":bb-armv7", layers = [":motd"], cmd = ["cat", "/etc/motd.txt"])
image_index(name = "multi", images = [":app", ":app-arm", ":app-armv7"])
"""


def workspace(forge_workspace, name="ws"):
    ws = forge_workspace({"app/BUILD": BUILD, "app/motd.txt": "made by forge\n"}, name=name)
    for tar in ("busybox-amd64.tar", "busybox-arm64.tar", "busybox-armhf.tar"):
        shutil.copy(testdata(tar), ws.root / "app" / tar)
    return ws


def test_import_layer_load_and_run(forge_workspace, docker_client):
    ws = workspace(forge_workspace)
    out = ws.run("build", "//app:app", "--json", "--load", "--tag", "forge-test/app:1").assert_success()
    cas = CAS(ws.cache / "cas")
    validate_image(cas, out.summary()["targets"][0]["outputs"]["manifest"])
    logs = docker_client.containers.run("forge-test/app:1", remove=True, network_mode="none")
    assert logs.decode() == "made by forge\n"
    layout = json.loads((ws.root / "forge-out/app/app/index.json").read_text())
    assert layout["manifests"][0]["digest"] == out.summary()["targets"][0]["digest"]


def test_push_index_lists_both_platforms(forge_workspace):
    registry = require_registry()
    ws = workspace(forge_workspace)
    repo = f"forge-test/multi-{uuid.uuid4().hex[:8]}"
    out = ws.run("push", "//app:multi", f"{registry}/{repo}:v1").assert_success()
    digest = out.stdout.strip().splitlines()[-1]
    resp = requests.get(f"http://{registry}/v2/{repo}/manifests/v1",
                        headers={"Accept": "application/vnd.oci.image.index.v1+json"}, timeout=10)
    resp.raise_for_status()
    assert resp.headers["Docker-Content-Digest"] == digest
    platforms = sorted((m["platform"]["architecture"], m["platform"].get("variant", ""))
                       for m in resp.json()["manifests"])
    assert platforms == [("amd64", ""), ("arm", "v7"), ("arm64", "v8")]
    # pulled back by digest into a fresh workspace + cache: identical digests
    fresh = forge_workspace({"p/BUILD": f'oci_pull(name = "again", image = "{registry}/{repo}",'
                             f' digest = "{digest}", platform = "aarch64")\n'}, name="fresh",
                            cache=ws.cache.parent / "fresh-cache")
    pulled = fresh.run("build", "//p:again", "--json").assert_success().summary()["targets"][0]
    arm_entry = next(m for m in resp.json()["manifests"] if m["platform"]["architecture"] == "arm64")
    assert pulled["digest"] == arm_entry["digest"]


def test_pull_without_digest_prints_the_pin(forge_workspace):
    registry = require_registry()
    ws = workspace(forge_workspace)
    repo = f"forge-test/pin-{uuid.uuid4().hex[:8]}"
    digest = ws.run("push", "//app:app", f"{registry}/{repo}:latest").assert_success().stdout.split()[-1]
    other = forge_workspace({"p/BUILD": f'oci_pull(name = "b", image = "{registry}/{repo}:latest")\n'},
                            name="other")
    out = other.run("build", "//p:b").assert_failure(2)
    assert f'digest = "{digest}"' in out.stderr
