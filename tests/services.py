"""Access to the real services forge is tested against (started by ``scripts/services.sh``).

Import from tests::

    from tests.services import require_docker, require_registry, testdata

Every ``require_*`` function checks that its service answers. When it does not, the test
fails under ``CI=true`` (a missing engine, registry or emulator is never a skip in CI) and is
skipped otherwise; either way the message names the command that starts the service.
Results are cached per process, failures included, so a dead service costs one probe.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import docker
    import docker.models.images

START_COMMAND = "scripts/services.sh"

REGISTRY = "127.0.0.1:5000"
AUTH_REGISTRY = "127.0.0.1:5001"
AUTH_USER = "forge"
AUTH_PASSWORD = "forge-secret"
REGISTRY_ROOT_FILE = Path("/run/forge-registry.root")
AUTH_REGISTRY_ROOT_FILE = Path("/run/forge-registry-auth.root")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
DEFAULT_TESTDATA = Path("/var/cache/forge-testdata")

# docker platform string -> (OCI architecture, variant) for the busybox testdata images
PLATFORMS: dict[str, tuple[str, str]] = {
    "linux/amd64": ("amd64", ""),
    "linux/arm64": ("arm64", "v8"),
    "linux/arm/v7": ("arm", "v7"),
}
# docker platform string -> busybox testdata tarball
BUSYBOX_TARBALLS: dict[str, str] = {
    "linux/amd64": "busybox-amd64.tar",
    "linux/arm64": "busybox-arm64.tar",
    "linux/arm/v7": "busybox-armhf.tar",
}

_cache: dict[str, tuple[bool, Any]] = {}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unavailable(message: str) -> None:
    """The one place a test gives up on a missing part: a failure under CI=true, else a skip."""
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_tool(name: str, package: str) -> None:
    if shutil.which(name) is None:
        unavailable(f"needs `{name}` (apt-get install {package}; scripts/services.sh installs it)")


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"needs root: {why}")


def _unavailable(what: str, detail: str) -> None:
    unavailable(f"{what} is not available ({detail}); start it with `{START_COMMAND}` (as root)")


def _cached(key: str, what: str, probe: Callable[[], Any]) -> Any:
    """Run ``probe`` once per process; it returns the value or raises with the reason."""
    if key not in _cache:
        try:
            _cache[key] = (True, probe())
        except Exception as exc:  # noqa: BLE001 - any failure means "not available"
            _cache[key] = (False, f"{type(exc).__name__}: {exc}")
    ok, value = _cache[key]
    if not ok:
        _unavailable(what, value)
    return value


def _http_status(url: str, auth: tuple[str, str] | None = None, timeout: float = 5.0) -> int:
    req = urllib.request.Request(url)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


# ---------------------------------------------------------------------------- docker


def require_docker() -> docker.DockerClient:
    """A client for the local Docker engine, after checking that it answers ``ping``."""

    def probe() -> docker.DockerClient:
        import docker

        client = docker.from_env(timeout=120)
        client.ping()
        return client

    return _cached("docker", "the Docker engine", probe)


# ---------------------------------------------------------------------------- registries


def require_registry() -> str:
    """``"127.0.0.1:5000"``: the plain-HTTP registry without auth (delete enabled)."""

    def probe() -> str:
        status = _http_status(f"http://{REGISTRY}/v2/")
        if status != 200:
            raise RuntimeError(f"GET http://{REGISTRY}/v2/ answered HTTP {status}, expected 200")
        return REGISTRY

    return _cached("registry", f"the OCI registry on {REGISTRY}", probe)


def require_auth_registry() -> tuple[str, str, str]:
    """``(host, user, password)`` of the htpasswd-protected registry on 127.0.0.1:5001."""

    def probe() -> tuple[str, str, str]:
        url = f"http://{AUTH_REGISTRY}/v2/"
        status = _http_status(url)
        if status != 401:
            raise RuntimeError(
                f"GET {url} without credentials answered HTTP {status}, expected 401"
            )
        status = _http_status(url, auth=(AUTH_USER, AUTH_PASSWORD))
        if status != 200:
            raise RuntimeError(f"GET {url} with credentials answered HTTP {status}, expected 200")
        return (AUTH_REGISTRY, AUTH_USER, AUTH_PASSWORD)

    return _cached("auth-registry", f"the htpasswd registry on {AUTH_REGISTRY}", probe)


def _storage_root(root_file: Path) -> Path:
    root = Path(root_file.read_text().strip())
    if not root.is_dir():
        raise RuntimeError(f"{root_file} names {root}, which is not a directory")
    return root


def registry_storage_root() -> Path:
    """Filesystem root of the registry on 127.0.0.1:5000 (blobs live under
    ``docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data`` once something was pushed)."""
    require_registry()
    return _cached(
        "registry-root",
        f"the storage root of the registry on {REGISTRY} ({REGISTRY_ROOT_FILE})",
        lambda: _storage_root(REGISTRY_ROOT_FILE),
    )


def auth_registry_storage_root() -> Path:
    """Filesystem root of the htpasswd-protected registry on 127.0.0.1:5001."""
    require_auth_registry()
    return _cached(
        "auth-registry-root",
        f"the storage root of the registry on {AUTH_REGISTRY} ({AUTH_REGISTRY_ROOT_FILE})",
        lambda: _storage_root(AUTH_REGISTRY_ROOT_FILE),
    )


# ---------------------------------------------------------------------------- qemu / binfmt


def require_binfmt(arch: str) -> None:
    """Check that ``qemu-<arch>`` (``"aarch64"`` or ``"arm"``) is registered in binfmt_misc,
    enabled, and has the F (fix-binary) flag, so that it works inside containers."""

    def probe() -> None:
        entry = BINFMT_DIR / f"qemu-{arch}"
        if not (BINFMT_DIR / "register").exists():
            raise RuntimeError(f"binfmt_misc is not mounted on {BINFMT_DIR}")
        text = entry.read_text()
        lines = text.splitlines()
        if "enabled" not in lines:
            raise RuntimeError(f"{entry} is disabled")
        flags = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("flags:")), "")
        if "F" not in flags:
            raise RuntimeError(f"{entry} has flags {flags!r}, without F (fix-binary)")

    _cached(f"binfmt-{arch}", f"QEMU user emulation for {arch} (binfmt_misc qemu-{arch})", probe)


# ---------------------------------------------------------------------------- test data


def testdata_dir() -> Path:
    return Path(os.environ.get("FORGE_TESTDATA") or DEFAULT_TESTDATA)


def testdata(name: str) -> Path:
    """Path of a file built by scripts/services.sh, e.g. ``testdata("busybox-arm64.tar")``."""

    def probe() -> Path:
        path = testdata_dir() / name
        if not path.is_file() or path.stat().st_size == 0:
            raise FileNotFoundError(f"{path} is missing")
        return path

    return _cached(f"testdata-{name}", f"test data {name}", probe)


# testdata() is a helper, not a test, whatever pytest's name matching thinks.
testdata.__test__ = False  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- images


def rootfs_docker_archive(
    rootfs_tar: Path,
    repo_tag: str,
    platform: str = "linux/amd64",
    cmd: list[str] | None = None,
) -> bytes:
    """A ``docker save``-format archive of a one-layer image whose layer is ``rootfs_tar``
    and whose config carries ``platform`` (e.g. ``"linux/arm64"``, ``"linux/arm/v7"``).

    Needed because Docker 20.10's ``docker import --platform`` records the *host*
    architecture in the image config; ``docker load`` keeps the one given here.
    """
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    if not variant and platform in PLATFORMS:
        variant = PLATFORMS[platform][1]
    layer = rootfs_tar.read_bytes()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd or ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"rootfs {rootfs_tar.name}"}],
    }
    if variant:
        config["variant"] = variant
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":", 1)[1] + "/layer.tar"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [repo_tag], "Layers": [layer_name]}]
    ).encode()

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in (
            (config_name, config_bytes),
            (layer_name, layer),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def load_rootfs_image(
    client: docker.DockerClient,
    rootfs_tar: Path,
    repo_tag: str,
    platform: str = "linux/amd64",
) -> docker.models.images.Image:
    """Load ``rootfs_tar`` into the engine as ``repo_tag`` labelled with ``platform``."""
    images = client.images.load(rootfs_docker_archive(rootfs_tar, repo_tag, platform))
    if not images:
        raise RuntimeError(f"docker load of {rootfs_tar} returned no image")
    return client.images.get(repo_tag)
