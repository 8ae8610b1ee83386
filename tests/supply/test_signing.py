"""Signatures: ECDSA P-256 over SHA-256, DER, deterministic — and openssl checks them."""

from __future__ import annotations

import json
import subprocess

import pytest

import forge
from tests.services import require_tool, testdata
from tests.supply.util import BUSYBOX, SUPPLY, make_key, openssl_verify, workspace_files


def test_openssl_verifies_what_forge_out_holds(forge_workspace, tmp_path):
    private, public = make_key(tmp_path / "keys", "ci")
    ws = forge_workspace(workspace_files(testdata(BUSYBOX), config=SUPPLY + f'signing_key = "{private}"\n'))
    ws.run("build", "//:app").assert_success()
    out = ws.root / "forge-out/app"
    for name in ("manifest.json", "sbom.spdx.json", "sbom.cdx.json", "provenance.intoto.json"):
        checked = openssl_verify(public, out / f"{name}.sig", out / name)
        assert checked.returncode == 0 and "Verified OK" in checked.stdout, (name, checked)
    # the manifest signed is the image's: its digest is the layout's
    index = json.loads((out / "index.json").read_bytes())
    image = index["manifests"][0]
    assert forge.oci.sha256_digest((out / "manifest.json").read_bytes()) == image["digest"]
    kinds = [m.get("artifactType") for m in index["manifests"]]
    assert kinds == [None, "application/spdx+json", "application/vnd.cyclonedx+json",
                     "application/vnd.in-toto+json", "application/vnd.dev.forge.signature.v1"]
    signature = json.loads(next(
        (out / "blobs/sha256" / m["digest"][7:]).read_bytes() for m in index["manifests"]
        if m.get("artifactType") == "application/vnd.dev.forge.signature.v1"))
    assert signature["subject"]["digest"] == image["digest"]
    assert signature["annotations"]["dev.forge.signature.key-id"] == \
        forge.supply.signing.load_public_key(str(public)).key_id
    # a changed byte fails, for openssl too
    tampered = tmp_path / "tampered.json"
    tampered.write_bytes((out / "sbom.spdx.json").read_bytes().replace(b"libzz1", b"libzz2", 1))
    assert openssl_verify(public, out / "sbom.spdx.json.sig", tampered).returncode != 0
    # deterministic: a rebuild from scratch writes the same signature bytes
    before = (out / "manifest.json.sig").read_bytes()
    ws.run("clean").assert_success()
    ws.run("build", "//:app").assert_success()
    assert (out / "manifest.json.sig").read_bytes() == before


def test_keys_load_from_files_and_the_environment_and_only_p256(tmp_path, monkeypatch):
    private, public = make_key(tmp_path, "k")
    key = forge.supply.signing.load_signing_key(str(private))
    assert key.public.key_id == forge.supply.signing.load_public_key(str(public)).key_id
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(public), "-outform", "DER"],
                         check=True, capture_output=True).stdout
    assert key.key_id == "sha256:" + __import__("hashlib").sha256(der).hexdigest()
    monkeypatch.setenv("FORGE_TEST_KEY", private.read_text())
    assert forge.supply.signing.load_signing_key("env:FORGE_TEST_KEY").key_id == key.key_id
    assert key.public.verify(b"data", key.sign(b"data"))
    assert not key.public.verify(b"datA", key.sign(b"data"))
    assert "FORGE_TEST_KEY" not in repr(key) and "PRIVATE" not in repr(key)
    require_tool("openssl", "openssl")
    ed = tmp_path / "ed.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed)], check=True)
    with pytest.raises(forge.ConfigError, match="ECDSA P-256"):
        forge.supply.signing.load_signing_key(str(ed))
    with pytest.raises(forge.ConfigError, match="is not set"):
        forge.supply.signing.load_signing_key("env:FORGE_TEST_NO_SUCH_KEY")
