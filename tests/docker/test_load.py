"""--load and forge-out layouts say what they do (issue 15's silent outcomes)."""

import json
import shutil
import uuid

import pytest

from tests.services import testdata

pytestmark = pytest.mark.integration

BUILD = (
    'oci_import(name = "amd", src = "busybox-amd64.tar", platform = "amd64")\n'
    'oci_import(name = "arm", src = "busybox-arm64.tar", platform = "arm64")\n'
    'image(name = "a", base = ":amd", cmd = ["true"])\n'
    'image(name = "b", base = ":arm", cmd = ["true"])\n'
    'image_index(name = "idx", images = [":a", ":b"])\n'
)


def workspace(forge_workspace):
    ws = forge_workspace({"p/BUILD": BUILD})
    for tar in ("busybox-amd64.tar", "busybox-arm64.tar"):
        shutil.copy(testdata(tar), ws.root / "p" / tar)
    return ws


def test_load_of_an_index_loads_each_platform_under_its_own_tag(forge_workspace, docker_client):
    ws = workspace(forge_workspace)
    tag = f"forge-test/idx-{uuid.uuid4().hex[:8]}:1"
    out = ws.run("build", "//p:idx", "--load", "--tag", tag).assert_success()
    assert f"{tag}-amd64" in out.stderr and f"{tag}-arm64" in out.stderr
    assert docker_client.images.get(f"{tag}-amd64").attrs["Architecture"] == "amd64"
    assert docker_client.images.get(f"{tag}-arm64").attrs["Architecture"] == "arm64"


def test_one_tag_for_two_images_is_an_error_before_anything_loads(forge_workspace, docker_client):
    ws = workspace(forge_workspace)
    tag = f"forge-test/two-{uuid.uuid4().hex[:8]}:1"
    out = ws.run("build", "//p:a", "//p:b", "--load", "--tag", tag).assert_failure(2)
    assert "names one image, but 2 image targets" in out.stderr
    assert not docker_client.images.list(name=tag.split(":")[0])


def test_forge_out_layouts_name_their_manifest_latest(forge_workspace):
    ws = workspace(forge_workspace)
    ws.run("build", "//p:a", "//p:idx").assert_success()
    for name in ("a", "idx"):
        index = json.loads((ws.root / "forge-out/p" / name / "index.json").read_text())
        assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "latest"


def test_a_target_named_all_is_refused(forge_workspace):
    ws = forge_workspace({"p/BUILD": 'layer(name = "all", srcs = [])\n'})
    out = ws.run("build", "//p:all").assert_failure(2)
    assert "p/BUILD:1" in out.stderr and "target name 'all' is reserved" in out.stderr
