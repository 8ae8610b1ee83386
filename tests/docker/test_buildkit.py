"""BuildKit syntax on the real engine: cache mounts, secrets, SSH agents, the automatic
platform args on both builders, .dockerignore, what the engine's frontend cannot read."""

import os
import subprocess
import uuid

import pytest

from forge.core.cas import CAS
from forge.core.oci.image import load_image
from tests.docker.test_dockerfile import busybox_ws, run_image
from tests.services import require_binfmt

pytestmark = pytest.mark.integration


def layer_bytes(ws, out) -> bytes:
    """Every byte of every layer of the first target's image (uncompressed tar)."""
    import gzip

    cas = CAS(ws.cache / "cas")
    image = load_image(cas, out.summary()["targets"][0]["outputs"]["manifest"])
    data = b""
    for layer in image.layers:
        raw = cas.path(layer.digest).read_bytes()
        data += gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return data + image.config_bytes


def test_cache_mount_is_reused_and_never_keyed(forge_workspace, docker_client):
    cache_id = f"forge-test-{uuid.uuid4().hex[:12]}"
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": (
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG V\n"
            f"RUN --mount=type=cache,id={cache_id},target=/cache "
            "sh -c 'ls /cache > /seen; echo $V > /cache/from-$V'\n"),
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", build_args = {"V": "1"})\n',
    })
    ws.run("build", "//app:img", "--load", "--tag", "forge-test/cache:1").assert_success()
    assert run_image(docker_client, "forge-test/cache:1", "cat", "/seen") == ""
    # a new build arg re-runs the step: it finds what the first run left in the cache
    out = ws.run("build", "//app:img", "--json", "--build-arg", "V=2", "--load", "--tag",
                 "forge-test/cache:2").assert_success()
    assert out.executed() == ["//app:img#DockerBuild.0"]
    assert run_image(docker_client, "forge-test/cache:2", "cat", "/seen").split() == ["from-1"]
    # the cache's content changed, the key did not: V=1 is a cache hit
    again = ws.run("build", "//app:img", "--json").assert_success()
    assert again.executed() == []
    assert again.statuses()["//app:img#DockerBuild.0"].startswith("cached")


def test_secret_is_readable_and_nowhere_else(forge_workspace, docker_client):
    value = f"s3cr3t-{uuid.uuid4().hex}"
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": (
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
            "RUN --mount=type=secret,id=tok,required=true "
            "sh -c 'wc -c < /run/secrets/tok > /secret-len && head -c 7 /run/secrets/tok > /secret-head'\n"),
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", secrets = {"tok": "env:FORGE_TEST_TOK"})\n',
    })
    env = {"FORGE_TEST_TOK": value}
    out = ws.run("build", "//app:img", "--json", "--load", "--tag", "forge-test/secret:1",
                 env=env).assert_success()
    assert run_image(docker_client, "forge-test/secret:1", "cat", "/secret-len").strip() == str(len(value))
    assert run_image(docker_client, "forge-test/secret:1", "cat", "/secret-head") == "s3cr3t-"
    assert value.encode() not in layer_bytes(ws, out)  # not in the image
    assert value not in out.stdout  # not in --json
    for log in (ws.root / "forge-out/logs").rglob("*.log"):
        assert value not in log.read_text()  # not in the logs
    assert value not in ws.run("aquery", "//app:img", "--json", env=env).stdout
    # not in the key: another value is a cache hit
    again = ws.run("build", "//app:img", "--json", env={"FORGE_TEST_TOK": "other"}).assert_success()
    assert again.executed() == []
    # the same secret from the command line, from a file
    secret_file = ws.root / "tok.txt"
    secret_file.write_text(value)
    ws.write({"app/Dockerfile": (ws.root / "app/Dockerfile").read_text() + "RUN echo cli > /cli\n"})
    ws.write({"app/BUILD": (ws.root / "app/BUILD").read_text().replace(
        ', secrets = {"tok": "env:FORGE_TEST_TOK"}', '')})
    cli = ws.run("build", "//app:img", "--json", "--secret", f"id=tok,src={secret_file}").assert_success()
    assert cli.executed() == ["//app:img#DockerBuild.0"]
    assert value not in cli.stdout


def test_ssh_agent_is_forwarded(forge_workspace, docker_client, tmp_path):
    agent = subprocess.run(["ssh-agent", "-s", "-a", str(tmp_path / "agent.sock")],
                           capture_output=True, text=True, check=True)
    pid = next(line.split("=")[1].split(";")[0] for line in agent.stdout.split("\n")
               if line.startswith("SSH_AGENT_PID="))
    try:
        ws = busybox_ws(forge_workspace, {
            "app/Dockerfile": ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                               "RUN --mount=type=ssh sh -c 'test -S \"$SSH_AUTH_SOCK\" && echo agent > /ssh'\n"),
            "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", ssh = ["default"])\n',
        })
        ws.run("build", "//app:img", "--load", "--tag", "forge-test/ssh:1",
               env={"SSH_AUTH_SOCK": str(tmp_path / "agent.sock")}).assert_success()
        assert run_image(docker_client, "forge-test/ssh:1", "cat", "/ssh") == "agent\n"
    finally:
        os.kill(int(pid), 15)


PLATFORM_DOCKERFILE = (
    "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG TARGETPLATFORM\nARG TARGETOS\nARG TARGETARCH\n"
    "ARG TARGETVARIANT\nARG BUILDPLATFORM\n"
    "RUN echo \"$TARGETPLATFORM|$TARGETOS|$TARGETARCH|$TARGETVARIANT|$BUILDPLATFORM\" > /plat\n")


@pytest.mark.parametrize("builder", ["buildkit", "classic"])
@pytest.mark.parametrize("platform, expected", [
    ("amd64", "linux/amd64|linux|amd64||linux/amd64"),
    ("aarch64", "linux/arm64|linux|arm64||linux/amd64"),
    ("armv7", "linux/arm/v7|linux|arm|v7|linux/amd64"),
])
def test_platform_args_are_the_target_platform(forge_workspace, docker_client, builder, platform, expected):
    if platform != "amd64":
        require_binfmt("aarch64" if platform == "aarch64" else "arm")
    ws = busybox_ws(forge_workspace, {
        "WORKSPACE.toml": f'[executors.docker]\nbuilder = "{builder}"\n',
        "app/Dockerfile": PLATFORM_DOCKERFILE,
        "app/BUILD": f'dockerfile(name = "img", base = ":busybox-{platform}")\n',
    }, platforms=(platform,))
    out = ws.run("build", "//app:img", "--json").assert_success()
    assert any(a.get("builder") == builder for a in out.actions())
    cas = CAS(ws.cache / "cas")
    image = load_image(cas, out.summary()["targets"][0]["outputs"]["manifest"])
    import tarfile

    top = image.layers[-1]
    with tarfile.open(cas.path(top.digest)) as tf:
        plat = tf.extractfile("plat").read().decode().strip()
    assert plat == expected


def test_dockerignore_is_honoured(forge_workspace, docker_client):
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /ctx/\n",
        "app/.dockerignore": "# build output\n*.log\nsecret/\n!keep.log\n*.tar\n",
        "app/a.txt": "a\n", "app/b.log": "log\n", "app/keep.log": "kept\n",
        "app/secret/key": "k\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", context = ".")\n',
    })
    ws.run("build", "//app:img", "--load", "--tag", "forge-test/ignore:1").assert_success()
    listing = run_image(docker_client, "forge-test/ignore:1", "ls", "-a", "/ctx").split()
    assert sorted(set(listing) - {".", ".."}) == ["BUILD", "Dockerfile", "a.txt", "keep.log"]
    # an ignored file's edit re-runs nothing
    (ws.root / "app/b.log").write_text("changed\n")
    assert ws.run("build", "//app:img", "--json").assert_success().executed() == []


def test_frontend_features_the_engine_lacks_are_named(forge_workspace, docker_client):
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN <<EOF\necho hi > /hi\nEOF\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64")\n',
    })
    version = docker_client.version()["Version"]
    out = ws.run("build", "//app:img").assert_failure()
    if int(version.split(".")[0]) < 23:
        assert "app/Dockerfile:3: heredocs (<<EOF) needs the Dockerfile frontend 1.4" in out.stderr
        assert f"Docker {version}" in out.stderr and "Docker 23.0" in out.stderr
    # a # syntax= frontend image the engine cannot get
    ws.write({"app/Dockerfile": "# syntax=docker/dockerfile:1.4\nARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                                "RUN echo hi\n"})
    out = ws.run("build", "//app:img").assert_failure()
    assert "app/Dockerfile:1: '# syntax=docker/dockerfile:1.4' names a frontend image the engine " \
           "cannot get" in out.stderr
    # the classic builder refuses BuildKit syntax by name
    ws.write({"WORKSPACE.toml": '[executors.docker]\nbuilder = "classic"\n',
              "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                                "RUN --mount=type=cache,target=/c true\n"})
    out = ws.run("build", "//app:img").assert_failure()
    assert "app/Dockerfile:3: RUN --mount needs BuildKit" in out.stderr


def test_doctor_names_the_buildkit_client(forge_workspace, docker_client):
    ws = forge_workspace({"BUILD": ""})
    out = ws.run("doctor")
    line = next(x for x in out.stdout.splitlines() if "BuildKit client" in x)
    assert line.startswith("[ok  ]"), line
    assert "docker buildx build" in line or "DOCKER_BUILDKIT=1 docker build" in line
