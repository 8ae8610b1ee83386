"""Push and pull against the real registries (scripts/services.sh), plus a lying fake one."""

from __future__ import annotations

import base64
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from forge.core.cas import CAS, sha256_digest
from forge.core.errors import RegistryError
from forge.core.oci import media
from forge.core.oci.image import (
    EMPTY_IMAGE,
    Image,
    Index,
    append_layers,
    make_index,
    store_image,
    with_config,
)
from forge.core.oci.layer_writer import LayerEntry, write_layer
from forge.core.oci.registry import (
    ManifestUnknown,
    RegistryAuthError,
    RegistryClient,
    UnpinnedReference,
    parse_reference,
    pull_image,
    push_image,
)
from forge.core.oci.validate import validate_image
from tests.services import require_auth_registry, require_registry

from .conftest import build_image

integration = pytest.mark.integration  # needs scripts/services.sh


def _empty(cas: CAS) -> bool:
    return list(cas.iter_blobs()) == []


# -- references (no service needed) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5000/a/b:v1", ("127.0.0.1:5000", "a/b", "v1", None)),
        ("localhost/a@sha256:" + "1" * 64, ("localhost", "a", None, "sha256:" + "1" * 64)),
        ("reg.example.com/team.a/x:1@sha256:" + "2" * 64, ("reg.example.com", "team.a/x", "1", "sha256:" + "2" * 64)),
        ("docker.io/debian:12", ("docker.io", "library/debian", "12", None)),
    ],
)
def test_parse_reference(text, expected):
    r = parse_reference(text)
    assert (r.registry, r.repository, r.tag, r.digest) == expected


@pytest.mark.parametrize(("text", "message"), [("debian:12", "names no registry host"),
                                               ("127.0.0.1:5000/a@sha256:12", "not a sha256")])
def test_bad_references(text, message):
    with pytest.raises(RegistryError, match=message):
        parse_reference(text)


def test_unreachable_registry_is_one_clear_error(fresh_cas):
    with pytest.raises(RegistryError, match=r"cannot reach registry 127.0.0.1:9 at http://127.0.0.1:9/v2/"):
        pull_image(fresh_cas, "127.0.0.1:9/forge/x", "sha256:" + "0" * 64)
    assert _empty(fresh_cas)


# -- the real registry ------------------------------------------------------------------------


@pytest.fixture
def registry() -> str:
    return require_registry()


@integration
def test_push_and_pull_image_and_index(registry, repo_name, cas, fresh_cas):
    amd = build_image(cas, "linux/amd64", b"amd")
    arm = build_image(cas, "linux/arm64", b"arm")
    index = store_image(cas, make_index([amd, arm]))
    assert push_image(cas, amd, f"{registry}/{repo_name}:amd64") == amd.digest
    assert push_image(cas, index, f"{registry}/{repo_name}:multi") == index.digest

    image = pull_image(fresh_cas, f"{registry}/{repo_name}", amd.digest)
    assert isinstance(image, Image) and image == amd
    validate_image(fresh_cas, amd.digest)

    pulled = pull_image(fresh_cas, f"{registry}/{repo_name}@{index.digest}")
    assert isinstance(pulled, Index) and pulled == index
    assert [str(p) for p in pulled.platforms] == ["linux/amd64", "linux/arm64/v8"]
    validate_image(fresh_cas, index.digest)

    one = pull_image(CAS(fresh_cas.root.parent / "third"), f"{registry}/{repo_name}", index.digest,
                     platform="aarch64")
    assert one == arm


@integration
def test_second_push_uploads_nothing(registry, repo_name, cas):
    image = build_image(cas)
    push_image(cas, image, f"{registry}/{repo_name}:1")
    client = RegistryClient(registry)
    assert [client.push_blob(cas, repo_name, d) for d, _ in image.blobs()] == [False, False]
    other = f"{repo_name}-mounted"
    layer = image.layers[0].digest
    assert client.push_blob(cas, other, layer, mount_from=repo_name) is False
    assert client.has_blob(other, layer)


@integration
def test_large_blob_goes_up_in_chunks(registry, repo_name, cas, fresh_cas):
    layer = write_layer(cas, [LayerEntry.file("big", os.urandom(20 << 20))], compression="none")
    image = store_image(cas, with_config(append_layers(EMPTY_IMAGE, layer), platform="amd64"))
    push_image(cas, image, f"{registry}/{repo_name}:big")
    assert pull_image(fresh_cas, f"{registry}/{repo_name}", image.digest) == image
    validate_image(fresh_cas, image.digest)


@integration
def test_tag_without_digest_names_the_digest_to_pin(registry, repo_name, cas, fresh_cas):
    image = build_image(cas)
    push_image(cas, image, f"{registry}/{repo_name}:v1")
    with pytest.raises(UnpinnedReference, match=f"pin what it names now: {registry}/{repo_name}@{image.digest}"):
        pull_image(fresh_cas, f"{registry}/{repo_name}:v1")
    client = RegistryClient(registry)
    assert client.resolve_tag(repo_name, "v1") == image.digest
    assert client.has_manifest(repo_name, "v1") and client.has_manifest(repo_name, image.digest)
    assert not client.has_manifest(repo_name, "v2")
    with pytest.raises(ManifestUnknown, match=f"{repo_name}:v2 does not exist"):
        client.resolve_tag(repo_name, "v2")
    assert _empty(fresh_cas)


@integration
def test_wrong_digest(registry, repo_name, cas, fresh_cas):
    push_image(cas, build_image(cas), f"{registry}/{repo_name}:v1")
    with pytest.raises(ManifestUnknown, match="does not exist: MANIFEST_UNKNOWN"):
        pull_image(fresh_cas, f"{registry}/{repo_name}", "sha256:" + "0" * 64)
    assert _empty(fresh_cas)


def _push_raw(client: RegistryClient, cas: CAS, repo: str, config_type: str, layer_type: str) -> str:
    """An artifact-style manifest (as oras would push one), uploaded blob by blob."""
    config = cas.put_bytes(b'{"artifact": true}')
    blob = cas.put_bytes(b"payload")
    for d in (config.digest, blob.digest):
        client.push_blob(cas, repo, d)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media.OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": config.digest, "size": config.size},
        "layers": [{"mediaType": layer_type, "digest": blob.digest, "size": blob.size}],
    }).encode()
    return client.push_manifest(repo, "artifact", manifest, media.OCI_MANIFEST)


@integration
@pytest.mark.parametrize(
    ("config_type", "layer_type", "message"),
    [
        ("application/vnd.example.config.v1+json", media.OCI_LAYER_GZIP, "unsupported config media type"),
        (media.OCI_CONFIG, "application/vnd.example.data", "unsupported layer media type"),
    ],
)
def test_unknown_media_type_stores_nothing(registry, repo_name, tmp_path, config_type, layer_type, message):
    client = RegistryClient(registry)
    digest = _push_raw(client, CAS(tmp_path / "push-cas"), repo_name, config_type, layer_type)
    fresh = CAS(tmp_path / "pull-cas")
    with pytest.raises(RegistryError, match=message):
        pull_image(fresh, f"{registry}/{repo_name}", digest)
    assert _empty(fresh)


# -- the htpasswd registry --------------------------------------------------------------------


def _docker_config(tmp_path: Path, host: str, user: str, password: str) -> Path:
    path = tmp_path / "docker-config"
    path.mkdir()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (path / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


@integration
def test_credentials_from_docker_config(tmp_path, repo_name, cas, fresh_cas, monkeypatch):
    host, user, password = require_auth_registry()
    monkeypatch.setenv("DOCKER_CONFIG", str(_docker_config(tmp_path, host, user, password)))
    image = build_image(cas)
    assert push_image(cas, image, f"{host}/{repo_name}:1") == image.digest
    assert pull_image(fresh_cas, f"{host}/{repo_name}", image.digest) == image


@integration
def test_wrong_password_names_the_registry_not_the_password(tmp_path, repo_name, fresh_cas):
    host, user, _ = require_auth_registry()
    config = _docker_config(tmp_path, host, user, "hunter2-wrong")
    with pytest.raises(RegistryAuthError) as info:
        pull_image(fresh_cas, f"{host}/{repo_name}", "sha256:" + "0" * 64,
                   client=RegistryClient(host, docker_config=config))
    text = str(info.value)
    assert host in text and user in text and "refused the credentials" in text
    assert "hunter2" not in text and base64.b64encode(b"hunter2").decode()[:6] not in text
    assert _empty(fresh_cas)


@integration
def test_no_credentials(tmp_path, repo_name, fresh_cas):
    host, _, _ = require_auth_registry()
    with pytest.raises(RegistryAuthError, match=f"registry {host} requires a login"):
        pull_image(fresh_cas, f"{host}/{repo_name}", "sha256:" + "0" * 64,
                   client=RegistryClient(host, docker_config=tmp_path / "none.json"))


# -- a registry that lies ---------------------------------------------------------------------


class _LyingRegistry(http.server.BaseHTTPRequestHandler):
    """Serves fixed bodies by path; the test decides which of them are wrong."""

    routes: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = self.routes.get(self.path.split("?")[0])
        if self.path == "/v2/":
            body = b"{}"
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if "/manifests/" in self.path:
            self.send_header("Content-Type", media.OCI_MANIFEST)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def lying_registry():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LyingRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", _LyingRegistry.routes
    server.shutdown()
    _LyingRegistry.routes = {}


def test_digest_mismatches_store_nothing(lying_registry, cas, fresh_cas):
    host, routes = lying_registry
    image = build_image(cas)
    layer = image.layers[0]
    routes[f"/v2/r/manifests/{image.digest}"] = image.manifest_bytes + b" "
    with pytest.raises(RegistryError, match="hashing to sha256:"):
        pull_image(fresh_cas, f"{host}/r", image.digest)
    routes[f"/v2/r/manifests/{image.digest}"] = image.manifest_bytes
    routes[f"/v2/r/blobs/{image.config_digest}"] = image.config_bytes
    routes[f"/v2/r/blobs/{layer.digest}"] = b"not the layer"
    with pytest.raises(RegistryError, match=f"download of blob {layer.digest}.*other content"):
        pull_image(fresh_cas, f"{host}/r", image.digest)
    assert _empty(fresh_cas)
    routes[f"/v2/r/blobs/{layer.digest}"] = cas.read_bytes(layer.digest)
    assert pull_image(fresh_cas, f"{host}/r", image.digest) == image
    assert sha256_digest(fresh_cas.read_bytes(image.digest)) == image.digest
