"""The real services themselves: Docker engine, QEMU binfmt, registries, busybox test data.

These prove that what scripts/services.sh starts actually works, independently of forge.
"""

from __future__ import annotations

import base64
import contextlib
import json
import tarfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from tests.services import (
    BUSYBOX_TARBALLS,
    load_rootfs_image,
    registry_storage_root,
    require_auth_registry,
    require_binfmt,
    require_docker,
    require_registry,
    testdata,
    unavailable,
)

pytestmark = pytest.mark.integration

# ELF e_machine of the busybox binary in each tarball
ELF_MACHINE = {"busybox-amd64.tar": 0x3E, "busybox-arm64.tar": 0xB7, "busybox-armhf.tar": 0x28}
UNAME = {"linux/amd64": "x86_64", "linux/arm64": "aarch64", "linux/arm/v7": "armv7l"}
BINFMT = {"linux/arm64": "aarch64", "linux/arm/v7": "arm"}


@pytest.fixture
def image_tags() -> Iterator[list[str]]:
    """Image references a test creates; removed afterwards."""
    tags: list[str] = []
    yield tags
    client = require_docker()
    for tag in tags:
        with contextlib.suppress(Exception):  # best-effort cleanup
            client.images.remove(tag, force=True)


def _tag(name: str) -> str:
    return f"forge-test/{name}:{uuid.uuid4().hex[:12]}"


def _run(image: str, cmd: list[str], platform: str | None = None) -> str:
    client = require_docker()
    kwargs = {"platform": platform} if platform else {}
    out = client.containers.run(image, cmd, remove=True, network_mode="none", **kwargs)
    return out.decode()


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, Message, bytes]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header(
            "Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


# ------------------------------------------------------------------ test data


@pytest.mark.parametrize("name", sorted(ELF_MACHINE))
def test_busybox_tarball_is_a_deterministic_rootfs(name: str) -> None:
    path = testdata(name)
    with tarfile.open(path) as tar:
        members = {m.name.removeprefix("./").rstrip("/"): m for m in tar.getmembers()}
        for required in (
            "bin/busybox",
            "bin/sh",
            "bin/sha256sum",
            "bin/uname",
            "etc/passwd",
            "etc/group",
            "tmp",
            "root",
        ):
            assert required in members, f"{name} lacks {required}"
        assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
        assert members["tmp"].mode & 0o1777 == 0o1777
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members.values())
        busybox = tar.extractfile(members["bin/busybox"])
        assert busybox is not None
        header = busybox.read(20)
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == ELF_MACHINE[name]


# ------------------------------------------------------------------ docker engine + qemu


def test_docker_import_and_run_native_busybox(image_tags: list[str]) -> None:
    client = require_docker()
    tag = _tag("busybox-amd64")
    image_tags.append(tag)
    repo, _, version = tag.partition(":")
    client.api.import_image(src=str(testdata("busybox-amd64.tar")), repository=repo, tag=version)
    assert client.images.get(tag).attrs["Architecture"] == "amd64"
    out = _run(tag, ["sh", "-c", "echo hello from busybox; uname -m; cat /etc/passwd | head -1"])
    assert out.splitlines() == ["hello from busybox", "x86_64", "root:x:0:0:root:/root:/bin/sh"]


def test_docker_import_arm64_runs_under_qemu(image_tags: list[str]) -> None:
    """A plain `docker import` of the arm64 rootfs runs through binfmt's qemu-aarch64.

    (Docker 20.10 records the host architecture for `docker import`, even with
    --platform; the binary still runs because binfmt_misc dispatches on the ELF header,
    and the F flag makes the host's qemu usable inside the container.)"""
    require_binfmt("aarch64")
    client = require_docker()
    tag = _tag("busybox-arm64-import")
    image_tags.append(tag)
    repo, _, version = tag.partition(":")
    client.api.import_image(src=str(testdata("busybox-arm64.tar")), repository=repo, tag=version)
    assert _run(tag, ["uname", "-m"]).strip() == "aarch64"


@pytest.mark.parametrize("platform", sorted(UNAME))
def test_docker_run_with_platform(platform: str, image_tags: list[str]) -> None:
    """An image whose config says `platform` runs with `docker run --platform`, emulated
    by QEMU for the arm ones: uname -m inside reports the emulated machine."""
    if platform in BINFMT:
        require_binfmt(BINFMT[platform])
    client = require_docker()
    tag = _tag("busybox-" + platform.replace("/", "-"))
    image_tags.append(tag)
    image = load_rootfs_image(client, testdata(BUSYBOX_TARBALLS[platform]), tag, platform)
    arch = platform.split("/")[1]
    assert image.attrs["Architecture"] == arch
    assert image.attrs["Os"] == "linux"
    out = _run(tag, ["sh", "-c", "uname -m; echo abc | sha256sum"], platform=platform)
    machine, digest = out.splitlines()
    assert machine == UNAME[platform]
    assert digest.split()[0] == "edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb"


# ------------------------------------------------------------------ binfmt


@pytest.mark.parametrize("arch", ["aarch64", "arm"])
def test_binfmt_entries_have_fix_binary_flag(arch: str) -> None:
    require_binfmt(arch)
    text = Path(f"/proc/sys/fs/binfmt_misc/qemu-{arch}").read_text()
    flags = next(ln for ln in text.splitlines() if ln.startswith("flags:"))
    assert "F" in flags


# ------------------------------------------------------------------ registries


def test_registry_answers_v2() -> None:
    host = require_registry()
    status, headers, _ = _get(f"http://{host}/v2/")
    assert status == 200
    assert headers.get("Docker-Distribution-Api-Version") == "registry/2.0"


def test_engine_pushes_to_registry_and_blob_lands_in_storage(image_tags: list[str]) -> None:
    client = require_docker()
    host = require_registry()
    root = registry_storage_root()
    local = _tag("busybox-push")
    image_tags.append(local)
    load_rootfs_image(client, testdata("busybox-amd64.tar"), local)
    remote_repo = f"{host}/forge-test/services-{uuid.uuid4().hex[:8]}"
    remote = f"{remote_repo}:v1"
    image_tags.append(remote)
    assert client.images.get(local).tag(remote_repo, "v1")
    for line in client.images.push(remote_repo, "v1", stream=True, decode=True):
        assert "error" not in line, line

    repo_path = remote_repo.split("/", 1)[1]
    status, headers, body = _get(f"http://{host}/v2/{repo_path}/tags/list")
    assert status == 200 and json.loads(body)["tags"] == ["v1"]

    req = urllib.request.Request(f"http://{host}/v2/{repo_path}/manifests/v1")
    req.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        manifest = json.load(resp)
    layer_digest = manifest["layers"][0]["digest"].split(":", 1)[1]
    blob = root / "docker/registry/v2/blobs/sha256" / layer_digest[:2] / layer_digest / "data"
    assert blob.is_file(), f"pushed layer not found at {blob}"


def test_auth_registry_requires_credentials() -> None:
    host, user, password = require_auth_registry()
    status, headers, _ = _get(f"http://{host}/v2/")
    assert status == 401
    assert headers.get("WWW-Authenticate", "").startswith("Basic realm=")
    status, _, _ = _get(f"http://{host}/v2/", auth=(user, "wrong-password"))
    assert status == 401
    status, _, _ = _get(f"http://{host}/v2/", auth=(user, password))
    assert status == 200


def test_engine_pushes_to_auth_registry_with_credentials(image_tags: list[str]) -> None:
    client = require_docker()
    host, user, password = require_auth_registry()
    local = _tag("busybox-auth-push")
    image_tags.append(local)
    load_rootfs_image(client, testdata("busybox-amd64.tar"), local)
    remote_repo = f"{host}/forge-test/auth-{uuid.uuid4().hex[:8]}"
    image_tags.append(f"{remote_repo}:v1")
    client.images.get(local).tag(remote_repo, "v1")

    denied = list(client.images.push(remote_repo, "v1", stream=True, decode=True))
    assert any("error" in line for line in denied), denied

    auth = {"username": user, "password": password}
    for line in client.images.push(remote_repo, "v1", stream=True, decode=True, auth_config=auth):
        assert "error" not in line, line
    status, _, body = _get(
        f"http://{host}/v2/{remote_repo.split('/', 1)[1]}/tags/list", auth=(user, password)
    )
    assert status == 200 and json.loads(body)["tags"] == ["v1"]


# ------------------------------------------------------------------ the helpers' policy


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_missing_service_fails_in_ci_and_skips_elsewhere(
    ci: str, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests import services

    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(services, "_cache", {})

    def probe() -> None:
        raise ConnectionRefusedError("nothing listens")

    with pytest.raises(outcome, match=r"scripts/services\.sh"):
        services._cached("nothing", "an imaginary service", probe)
    # the failure is cached: the probe is not run again
    monkeypatch.setattr(services, "_cache", {"nothing": (False, "cached reason")})
    with pytest.raises(outcome, match="cached reason"):
        services._cached("nothing", "an imaginary service", lambda: 1 / 0)


# ------------------------------------------------------------------ services.sh's engine decision

SERVICES_SH = Path(__file__).resolve().parents[1] / "scripts/services.sh"


def _engine_plan(tmp_path: Path, *, docker_info: bool, dockerd: bool, installed: list[str],
                 socket: str = "") -> str:
    """``FORGE_SERVICES_PLAN=engine scripts/services.sh`` (changes nothing) on a PATH of fakes:
    a ``docker`` whose ``info`` answers or not, maybe a ``dockerd``, and a ``dpkg-query``
    that reports ``installed`` as the installed packages."""
    import os
    import subprocess

    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    scripts = {
        "docker": f"#!/bin/sh\n[ \"$1\" = info ] && exit {0 if docker_info else 1}\nexit 1\n",
        "dpkg-query": ("#!/bin/sh\nfor last; do :; done\nfor p in " + " ".join(installed or ["none"])
                       + '; do\n  [ "$p" = "$last" ] && { printf "install ok installed"; exit 0; }\n'
                       "done\nexit 1\n"),
        "apt-get": f"#!/bin/sh\necho \"$@\" >> {tmp_path}/apt-get.calls\nexit 0\n",
    }
    if dockerd:
        scripts["dockerd"] = "#!/bin/sh\nexit 0\n"
    else:
        (fake / "dockerd").unlink(missing_ok=True)
    for name, text in scripts.items():
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    # the real coreutils, bash and curl, but no real docker, dockerd or dpkg-query first
    env = {**os.environ, "PATH": f"{fake}:/usr/bin:/bin", "FORGE_SERVICES_PLAN": "engine",
           "DOCKER_HOST": f"unix://{socket or tmp_path / 'no-engine.sock'}"}
    done = subprocess.run(["bash", str(SERVICES_SH)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "apt-get.calls").exists()  # the plan installs nothing
    return done.stdout.strip()


def test_an_engine_that_answers_is_used_whatever_package_it_came_from(tmp_path: Path) -> None:
    # Docker CE: docker-ce + containerd.io installed, no docker.io: it answers, so it is used
    plan = _engine_plan(tmp_path, docker_info=True, dockerd=True, installed=["docker-ce", "containerd.io"])
    assert plan == "engine: use"
    assert _engine_plan(tmp_path, docker_info=True, dockerd=False, installed=[]) == "engine: use"


def test_no_engine_answering_installs_docker_io_only_on_a_bare_machine(tmp_path: Path) -> None:
    # an engine installed but stopped (any package): started, nothing installed
    assert _engine_plan(tmp_path, docker_info=False, dockerd=True, installed=["docker-ce"]) == "engine: start"
    # Docker's containerd.io without a dockerd: docker.io would replace it, so refuse
    plan = _engine_plan(tmp_path, docker_info=False, dockerd=False, installed=["containerd.io"])
    assert plan == "engine: refuse containerd.io"
    # nothing at all: Debian's docker.io
    assert _engine_plan(tmp_path, docker_info=False, dockerd=False, installed=[]) == "engine: install"


def test_an_engine_is_found_on_its_socket_without_the_docker_command(tmp_path: Path) -> None:
    """The socket itself is asked (``/_ping``) when ``docker info`` does not answer."""
    require_docker()
    import os

    socket = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    if not Path(socket).is_socket():
        unavailable(f"the engine is not on a local socket ({socket}); this test asks the socket itself")
    plan = _engine_plan(tmp_path, docker_info=False, dockerd=False, installed=["containerd.io"], socket=socket)
    assert plan == "engine: use"
