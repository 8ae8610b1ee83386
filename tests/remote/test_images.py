"""The remote cache with real image actions: imports, a Dockerfile chain on the engine,
layers, images and an index; and per-platform results side by side.

``minimize`` and ``production`` are not rules yet (``forge rules``); when they land, add
them to ``APP_BUILD`` and to the expected sets below.
"""

from __future__ import annotations

import json
import shutil
import urllib.request

import pytest

from forge.core.action_cache import ActionCache
from forge.core.cas import CAS
from forge.core.oci.image import load, load_image
from forge.core.oci.validate import validate_image
from tests.services import testdata

from .conftest import tags, workspace_toml

pytestmark = pytest.mark.integration

APP_BUILD = """\
oci_import(name = "busybox-amd64", src = "busybox-amd64.tar", platform = "amd64")
oci_import(name = "busybox-aarch64", src = "busybox-arm64.tar", platform = "aarch64")
dockerfile_chain(name = "chain-amd64", dir = "chain", base = ":busybox-amd64")
layer(name = "files", srcs = glob(["files/**"]), prefix = "/srv", strip_prefix = "files")
image(name = "app-amd64", base = ":chain-amd64", layers = [":files"], cmd = ["cat", "/srv/hello.txt"])
image(name = "app-aarch64", base = ":busybox-aarch64", layers = [":files"], cmd = ["cat", "/srv/hello.txt"])
image_index(name = "app", images = [":app-amd64", ":app-aarch64"])
"""
APP_FILES = {
    "app/BUILD": APP_BUILD,
    "app/chain/10-Dockerfile-one": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo one > /one\n",
    "app/chain/20-Dockerfile-two": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN cat /one > /two && echo two >> /two\n",
    "app/files/hello.txt": "hello\n",
}
DOWNSTREAM_OF_FILES = sorted([
    "//app:files#Layer.0", "//app:app-amd64#Image.0", "//app:app-aarch64#Image.0", "//app:app#Index.0",
])
DOCKER_STEPS = ["//app:chain-amd64#DockerBuild.0", "//app:chain-amd64#DockerBuild.1"]


def with_tarballs(ws, *names):
    for name in names:
        shutil.copy(testdata(name), ws.root / "app" / name)
    return ws




def cache_manifest(cache_url: str, key: str) -> dict:
    host, repo = cache_url.split("/", 1)
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{key}",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_image_graph_restores_from_the_remote_into_an_empty_cache(forge_workspace, tmp_path, cache_url,
                                                                  docker_client):
    tars = ("busybox-amd64.tar", "busybox-arm64.tar")
    a = with_tarballs(forge_workspace({"WORKSPACE.toml": workspace_toml(cache_url, write=True), **APP_FILES},
                                      name="ws-a", cache=tmp_path / "cache-a"), *tars)
    b = with_tarballs(forge_workspace({"WORKSPACE.toml": workspace_toml(cache_url), **APP_FILES},
                                      name="ws-b", cache=tmp_path / "cache-b"), *tars)
    first = a.run("build", "//app:app", "--json").assert_success()
    assert set(DOCKER_STEPS) <= set(first.executed())
    host, repo = cache_url.split("/", 1)
    assert len(tags(host, repo)) == len(first.actions()) == 8

    restored = b.run("build", "//app:app", "--json").assert_success()
    assert restored.executed() == []
    assert set(restored.statuses().values()) == {"cached-remote"}
    want = {e["id"]: e["outputs"] for e in first.actions()}
    assert {e["id"]: e["outputs"] for e in restored.actions()} == want
    cas_b = CAS(b.cache / "cas")
    index = restored.summary()["targets"][0]["outputs"]["index"]
    validate_image(cas_b, index)
    for image in load(cas_b, index).images:
        validate_image(cas_b, image.digest)
    assert (b.root / "forge-out/app/app/index.json").exists()

    # Build without the bytes: the Dockerfile steps came as records only (nothing read
    # them), so neither their results nor their logs were taken into the local cache; the
    # requested index's blobs are all here, the chain's image layers among them, as-is.
    ac_b = ActionCache(b.cache / "ac", cas_b)
    step = next(e for e in restored.actions() if e["id"] == DOCKER_STEPS[1])
    assert ac_b.lookup(step["key"]) is None
    entry = cache_manifest(cache_url, step["key"])
    log = next(d["digest"] for d in entry["layers"] if d["mediaType"].startswith("text/"))
    assert not cas_b.has(log)
    app_amd64 = next(i for i in load(cas_b, index).images if i.platform.architecture == "amd64")
    in_cache = {d["digest"]: d["mediaType"] for d in entry["layers"]}
    chain_layers = [layer for layer in app_amd64.layers if layer.digest in in_cache]
    assert len(chain_layers) == len(app_amd64.layers) - 1  # all but the files layer
    for layer in chain_layers:
        assert in_cache[layer.digest] == layer.media_type and cas_b.has(layer.digest)

    (b.root / "app/files/hello.txt").write_text("hello, edited\n")
    edited = b.run("build", "//app:app", "--json").assert_success()
    assert edited.executed() == DOWNSTREAM_OF_FILES
    # still remote hits (records only); the image on top read the chain's bytes: fetched
    # then, and recorded locally
    assert {edited.statuses()[s] for s in DOCKER_STEPS} == {"cached-remote"}
    assert ac_b.lookup(step["key"]) is not None and cas_b.has(log)
    again = b.run("build", "//app:app", "--json").assert_success()
    assert again.executed() == [] and again.statuses()[DOCKER_STEPS[1]] == "cached-local"


def test_amd64_and_arm64_results_of_one_target_coexist(forge_workspace, tmp_path, cache_url):
    build = (
        'oci_import(name = "base", src = "busybox-amd64.tar")\n'
        'layer(name = "files", srcs = ["hello.txt"], prefix = "/srv")\n'
        'image(name = "app", base = ":base", layers = [":files"])\n'
    )
    files = {"app/BUILD": build, "app/hello.txt": "hi\n"}
    a = with_tarballs(forge_workspace({"WORKSPACE.toml": workspace_toml(cache_url, write=True), **files},
                                      name="ws-a", cache=tmp_path / "cache-a"), "busybox-amd64.tar")
    b = with_tarballs(forge_workspace({"WORKSPACE.toml": workspace_toml(cache_url), **files},
                                      name="ws-b", cache=tmp_path / "cache-b"), "busybox-amd64.tar")
    platforms = {"linux/amd64": "amd64", "linux/arm64": "arm64"}
    keys = {}
    for platform in platforms:
        out = a.run("build", "//app:app", "--json", "--platform", platform).assert_success()
        keys[platform] = {e["id"]: e["key"] for e in out.actions()}
    image_keys = {keys[p]["//app:app#Image.0"] for p in platforms}
    assert len(image_keys) == 2  # the platform is in the key: two tags, neither overwrites
    assert keys["linux/amd64"]["//app:files#Layer.0"] == keys["linux/arm64"]["//app:files#Layer.0"]
    host, repo = cache_url.split("/", 1)
    assert image_keys <= set(tags(host, repo)) and len(tags(host, repo)) == 5

    cas_b = CAS(b.cache / "cas")
    for platform, arch in platforms.items():  # both restore, each with its own architecture
        out = b.run("build", "//app:app", "--json", "--platform", platform).assert_success()
        assert out.executed() == []
        assert out.statuses()["//app:app#Image.0"] == "cached-remote"
        digest = out.summary()["targets"][0]["outputs"]["manifest"]
        validate_image(cas_b, digest)
        assert load_image(cas_b, digest).config["architecture"] == arch


def test_index_artifact_lists_child_manifests_and_configs_with_their_types(forge_workspace, tmp_path,
                                                                          cache_url):
    """No engine: two imports and an index. The index's cache entry carries every blob of
    the index with its own media type, as the result's descriptors say (nothing sniffed)."""
    from forge.core.oci import media

    build = ('oci_import(name = "amd64", src = "busybox-amd64.tar", platform = "amd64")\n'
             'oci_import(name = "arm64", src = "busybox-arm64.tar", platform = "aarch64")\n'
             'image_index(name = "idx", images = [":amd64", ":arm64"])\n')
    tars = ("busybox-amd64.tar", "busybox-arm64.tar")
    a = with_tarballs(forge_workspace({"WORKSPACE.toml": workspace_toml(cache_url, write=True),
                                       "app/BUILD": build}, name="ws-a", cache=tmp_path / "cache-a"), *tars)
    b = with_tarballs(forge_workspace({"WORKSPACE.toml": workspace_toml(cache_url), "app/BUILD": build},
                                      name="ws-b", cache=tmp_path / "cache-b"), *tars)
    first = a.run("build", "//app:idx", "--json").assert_success()
    step = next(e for e in first.actions() if e["id"] == "//app:idx#Index.0")
    cas_a = CAS(a.cache / "cas")
    index = load(cas_a, step["outputs"]["index"])
    entry = cache_manifest(cache_url, step["key"])
    in_cache = {d["digest"]: d["mediaType"] for d in entry["layers"]}
    assert in_cache[index.digest] == media.OCI_INDEX
    assert len(index.images) == 2
    for image in index.images:
        assert in_cache[image.digest] == image.media_type == media.OCI_MANIFEST
        assert in_cache[image.config_digest] == image.config_media_type
        assert image.config_media_type in media.CONFIG_TYPES  # not application/json
        for layer in image.layers:
            assert in_cache[layer.digest] == media.to_oci(layer.media_type)
    want = {index.digest, *(image.digest for image in index.images),
            *(d for image in index.images for d, _ in image.blobs())}
    assert set(in_cache) - want <= {entry["layers"][-1]["digest"]}  # at most the log besides
    assert want <= set(in_cache)
    assert "application/json" not in in_cache.values()

    restored = b.run("build", "//app:idx", "--json").assert_success()
    assert set(restored.statuses().values()) == {"cached-remote"}
    cas_b = CAS(b.cache / "cas")
    validate_image(cas_b, index.digest)
    for image in load(cas_b, index.digest).images:
        validate_image(cas_b, image.digest)
