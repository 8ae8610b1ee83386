"""forge push carries the referrers (tag-schema fallback on Debian's docker-registry 2.8,
which has no referrers API); forge verify checks them and fails on any changed byte."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

import forge
from tests.services import registry_storage_root, require_registry, testdata
from tests.supply.util import BUSYBOX, SUPPLY, make_key, workspace_files

pytestmark = pytest.mark.integration

SPDX, CDX = "application/spdx+json", "application/vnd.cyclonedx+json"
INTOTO, SIG = "application/vnd.in-toto+json", "application/vnd.dev.forge.signature.v1"


def _get(url: str, accept: str = "application/vnd.oci.image.index.v1+json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _blob_file(digest: str) -> Path:
    hexpart = digest.split(":", 1)[1]
    return registry_storage_root() / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


@pytest.fixture
def pushed(forge_workspace, tmp_path):
    registry = require_registry()
    private, public = make_key(tmp_path / "keys", "ci")
    ws = forge_workspace(workspace_files(testdata(BUSYBOX), config=SUPPLY + f'signing_key = "{private}"\n'))
    repo = f"forge-test/supply-{uuid.uuid4().hex[:12]}"
    ref = f"{registry}/{repo}:v1"
    out = ws.run("push", "//:app", ref).assert_success()
    digest = out.stdout.strip().splitlines()[-1]
    assert "via the tag sha256-" in out.stderr
    return ws, registry, repo, ref, digest, public, tmp_path


def test_referrers_are_found_through_the_tag_schema_fallback(pushed):
    ws, registry, repo, ref, digest, public, _ = pushed
    status, _ = _get(f"http://{registry}/v2/{repo}/referrers/{digest}")
    assert status == 404  # docker-registry 2.8: no referrers API
    status, body = _get(f"http://{registry}/v2/{repo}/manifests/sha256-{digest[7:]}")
    assert status == 200
    index = json.loads(body)
    assert sorted(m["artifactType"] for m in index["manifests"]) == sorted([SPDX, CDX, INTOTO, SIG])
    client = forge.oci.RegistryClient(registry)
    listed = forge.supply.referrers.list_referrers(client, repo, digest)
    assert {m["digest"] for m in listed} == {m["digest"] for m in index["manifests"]}
    assert forge.supply.referrers.list_referrers(client, repo, digest, artifact_type=SPDX)[0][
        "artifactType"] == SPDX
    for entry in listed:  # each artifact names the image as its subject
        data, _, _ = client.get_manifest(repo, entry["digest"])
        assert json.loads(data)["subject"]["digest"] == digest
    # pushing again changes nothing: same artifacts, same fallback index
    ws.run("push", "//:app", ref).assert_success()
    assert _get(f"http://{registry}/v2/{repo}/manifests/sha256-{digest[7:]}")[1] == body


def test_verify_passes_and_fails_after_any_byte_changes_in_the_registry(pushed):
    ws, registry, repo, ref, digest, public, tmp_path = pushed
    ok = ws.run("verify", ref, "--key", str(public)).assert_success()
    assert "ok  signature: manifest" in ok.stdout and "ok  SBOM (SPDX)" in ok.stdout
    assert "ok  provenance" in ok.stdout
    assert ws.run("verify", f"{registry}/{repo}@{digest}", "--key", str(public)).exit_code == 0

    other = make_key(tmp_path / "keys", "other")[1]
    wrong = ws.run("verify", ref, "--key", str(other)).assert_failure(1)
    signer = forge.supply.signing.load_public_key(str(public)).key_id
    assert f"signatures by: {signer}" in wrong.stderr

    client = forge.oci.RegistryClient(registry)
    listed = forge.supply.referrers.list_referrers(client, repo, digest)
    by_type = {m["artifactType"]: m for m in listed}
    sbom_layer = json.loads(client.get_manifest(repo, by_type[SPDX]["digest"])[0])["layers"][0]["digest"]
    sig_layer = json.loads(client.get_manifest(repo, by_type[SIG]["digest"])[0])["layers"][0]["digest"]
    manifest = _blob_file(digest).read_bytes()
    config_hex = json.loads(manifest)["config"]["digest"][7:]
    cases = {
        # one hex digit of the config digest: still JSON, another manifest
        "manifest": (digest, lambda b: b.replace(config_hex.encode(),
                                                 config_hex[:-1].encode() + (b"0" if config_hex[-1] != "0" else b"1"))),
        "SBOM": (sbom_layer, lambda b: b.replace(b"libzz1", b"libzz2", 1)),
        "signature": (sig_layer, lambda b: b[:-1] + bytes([b[-1] ^ 1])),
    }
    expected = {"manifest": "no signature of manifest",  # the bytes served are another manifest
                "SBOM": "the registry sent content hashing to",
                "signature": "signature artifact"}
    for what, (blob, change) in cases.items():
        path = _blob_file(blob)
        original = path.read_bytes()
        assert change(original) != original
        path.write_bytes(change(original))
        try:
            failed = ws.run("verify", ref, "--key", str(public))
            assert failed.exit_code == 1, (what, failed.stdout, failed.stderr)
            assert "does not verify" in failed.stderr, what
            assert expected[what] in failed.stderr, (what, failed.stderr)
        finally:
            path.write_bytes(original)
    ws.run("verify", ref, "--key", str(public)).assert_success()  # restored


INDEX_BUILD = """\
oci_import(name = "bb", src = "busybox-amd64.tar", platform = "amd64")
oci_import(name = "bb-arm", src = "busybox-arm64.tar", platform = "arm64")
layer(name = "dpkg", srcs = glob(["rootfs/**"]), strip_prefix = "rootfs")
image(name = "app-amd64", base = ":bb", layers = [":dpkg"])
image(name = "app-arm64", base = ":bb-arm", layers = [":dpkg"])
image_index(name = "app", images = [":app-amd64", ":app-arm64"])
"""


def test_an_index_gets_the_documents_of_each_platform_image_and_pushes_them(forge_workspace, tmp_path):
    """As buildx attests each platform of a multi-platform push: every platform image
    of an index target gets its SBOM and provenance, in forge-out and as referrers whose
    subject is that image's manifest."""
    registry = require_registry()
    files = workspace_files(testdata(BUSYBOX), config=SUPPLY, build=INDEX_BUILD)
    files["busybox-arm64.tar"] = testdata("busybox-arm64.tar").read_bytes()
    ws = forge_workspace(files)
    ws.run("build", "//:app").assert_success()
    out = ws.root / "forge-out/app"
    index = json.loads((out / "index.json").read_text())["manifests"][0]["digest"]
    cas_blob = out / "blobs/sha256"
    children = [m["digest"] for m in json.loads((cas_blob / index[7:]).read_text())["manifests"]]
    assert len(children) == 2
    for platform in ("linux-amd64", "linux-arm64-v8"):
        spdx = json.loads((out / platform / "sbom.spdx.json").read_text())
        assert {p["name"] for p in spdx["packages"]} >= {"base-files", "libzz1"}
        assert (out / platform / "provenance.intoto.json").is_file()
    subjects = set()
    for blob in cas_blob.iterdir():
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            doc = json.loads(blob.read_bytes())
            if isinstance(doc, dict) and isinstance(doc.get("subject"), dict) and "artifactType" in doc:
                subjects.add(doc["subject"]["digest"])  # a referrer artifact manifest
    assert subjects == set(children)
    repo = f"forge-test/supply-index-{uuid.uuid4().hex[:12]}"
    pushed = ws.run("push", "//:app", f"{registry}/{repo}:v1").assert_success()
    assert pushed.stderr.count("pushed 3 referrers of sha256:") == 2, pushed.stderr
    for child in children:
        status, body = _get(f"http://{registry}/v2/{repo}/manifests/sha256-{child[7:]}")
        assert status == 200
        assert sorted(m["artifactType"] for m in json.loads(body)["manifests"]) == sorted([SPDX, CDX, INTOTO])
