"""The buildah executor (issue 18) on the real buildah, with no Docker engine behind it
(``DOCKER_HOST`` points at a closed port), busybox bases from Debian packages."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import time

import pytest

import forge
from forge.core.cas import CAS
from forge.core.oci.compression import open_decompressed
from forge.core.oci.image import load_image
from forge.core.oci.validate import validate_image
from tests.docker.test_dockerfile import DOCKERFILE, busybox_ws  # COPY . /ctx/ + RUN + CMD
from tests.services import require_binfmt, require_tool, unavailable

pytestmark = pytest.mark.integration

NO_ENGINE = {"DOCKER_HOST": "tcp://127.0.0.1:9"}  # any use of an engine fails
# The empty mount points buildah 1.28 leaves in a RUN step's layer (Docker keeps them out).
MOUNT_POINTS = {"etc/hostname", "etc/hosts", "etc/resolv.conf", "run"}


@pytest.fixture
def buildah():
    require_tool("buildah", "buildah")


def workspace_toml(settings: str = "") -> str:
    return f'[workspace]\nname = "ws"\n[executors.buildah]\n{settings}\n'


def output_image(ws, out, index: int = 0):
    cas = CAS(ws.cache / "cas")
    digest = out.summary()["targets"][index]["outputs"]["manifest"]
    validate_image(cas, digest)
    return cas, load_image(cas, digest)


def tree(cas, image, skip: int = 1) -> dict[str, tuple]:
    """path -> (kind, mode, uid, content or link) of the layers above the first ``skip``,
    later layers over earlier ones (no whiteouts in these images)."""
    files: dict[str, tuple] = {}
    for layer in image.layers[skip:]:
        with cas.open(layer.digest) as fh, \
                tarfile.open(fileobj=open_decompressed(fh, layer.compression), mode="r|") as tf:
            for m in tf:
                content = tf.extractfile(m).read() if m.isfile() else m.linkname
                files[m.name.rstrip("/")] = (m.type, m.mode & 0o7777, m.uid, content)
    return files


def storage_names(ws) -> list[str]:
    """The image names in the workspace's buildah storage (the driver forge chose)."""
    names = []
    for root in (ws.cache / "buildah").glob("*/storage"):
        driver = root.parent.name
        listing = subprocess.run([shutil.which("buildah"), "--root", str(root), "--runroot", str(root.parent / "run"),
                                  "--storage-driver", driver, "images", "--json"],
                                 capture_output=True, text=True, check=True,
                                 env={"CONTAINERS_STORAGE_CONF": str(ws.cache / f"buildah/storage-{driver}.conf"),
                                      "PATH": os.environ.get("PATH", "")}).stdout
        names += [n for row in json.loads(listing or "[]") for n in row.get("names") or ()]
    return names


@pytest.mark.slow
@pytest.mark.parametrize("platform, settings, uname, arch", [
    ("amd64", "", "x86_64", "amd64"),
    ("aarch64", "", "aarch64", "arm64"),
    ("amd64", 'storage_driver = "vfs"\nisolation = "oci"', "x86_64", "amd64"),
], ids=["amd64", "aarch64-qemu", "amd64-vfs-oci"])
def test_copy_run_builds_without_an_engine_then_hits_the_cache(forge_workspace, buildah, platform,
                                                              settings, uname, arch):
    if platform == "aarch64":
        require_binfmt("aarch64")
    if "oci" in settings and shutil.which("runc") is None:
        unavailable("isolation = \"oci\" needs runc (Debian's runc package; docker.io brings it)")
    ws = busybox_ws(forge_workspace, {
        "WORKSPACE.toml": workspace_toml(settings),
        "app/Dockerfile": DOCKERFILE, "app/msg.txt": "declared\n", "app/other.txt": "undeclared\n",
        "app/BUILD": f'dockerfile(name = "img", base = ":busybox-{platform}", srcs = ["msg.txt"], '
                     'executor = "buildah")\n',
    }, platforms=(platform,))
    out = ws.run("build", "//app:img", "--json", env=NO_ENGINE).assert_success()
    assert out.statuses()["//app:img#DockerBuild.0"] == "built"
    cas, image = output_image(ws, out)
    files = tree(cas, image)
    assert files["built"][3] == b"declared\n"
    assert files["arch"][3] == f"{uname}\n".encode()
    assert sorted(p for p in files if p.startswith("ctx/")) == ["ctx/Dockerfile", "ctx/msg.txt"]
    assert image.platform == forge.parse_platform(platform)  # linux/arm64/v8 for aarch64
    assert (image.config["architecture"], image.config["config"]["Cmd"]) == (arch, ["cat", "/built"])
    assert "io.buildah.version" not in (image.config["config"].get("Labels") or {})
    # only the step's layers were read back; the base layer is the CAS's own
    action = next(a for a in out.actions() if a["id"] == "//app:img#DockerBuild.0")
    assert action["counters"]["engine_to_cas_layers"] == len(image.layers) - 1
    log = next((ws.root / "forge-out/logs/app/img").glob("*.log")).read_text()
    driver = "vfs" if "vfs" in settings else "overlay"
    assert f"({driver} storage, {'oci' if 'oci' in settings else 'chroot'} isolation, no network)" in log
    assert (ws.cache / "buildah" / driver / "storage").is_dir()

    again = ws.run("build", "//app:img", "--json", env=NO_ENGINE).assert_success()
    assert again.executed() == []
    assert again.summary()["targets"][0]["outputs"] == out.summary()["targets"][0]["outputs"]

    # forge clean --engine: forge's images leave buildah's storage; the results stay cached
    assert any(n.startswith("localhost/forge-build:") for n in storage_names(ws))
    ws.run("clean", "--engine", env=NO_ENGINE).assert_success()
    assert not [n for n in storage_names(ws) if n.startswith(("localhost/forge-build:",
                                                              "localhost/forge-base/"))]
    assert ws.run("build", "//app:img", "--json", env=NO_ENGINE).assert_success().executed() == []


CHAIN_FILES = {
    "app/chain/10-Dockerfile-base": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG GREETING\n"
                                    "RUN echo \"$GREETING\" > /step10\n",
    "app/chain/20-Dockerfile-tools": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY tool.sh /tool.sh\n"
                                     "RUN sh /tool.sh > /step20 && cat /step10 >> /step20\n",
    "app/chain/30-Dockerfile-final": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                                     "RUN cat /step20 > /final && echo final >> /final\n",
    "app/chain/tool.sh": "echo tool-v1\n",
    "app/BUILD": 'dockerfile_chain(name = "chain", dir = "chain", base = ":busybox-amd64", '
                 'executor = "buildah", build_args = {"GREETING": "hi"})\n',
}


@pytest.mark.slow
def test_chain_reruns_the_edited_step_only(forge_workspace, buildah):
    ws = busybox_ws(forge_workspace, CHAIN_FILES)
    first = ws.run("build", "//app:chain", "--json", env=NO_ENGINE).assert_success()
    assert {f"//app:chain#DockerBuild.{i}" for i in range(3)} <= set(first.executed())
    path = ws.root / "app/chain/20-Dockerfile-tools"
    path.write_text(path.read_text() + "RUN echo edited >> /step20\n")
    out = ws.run("build", "//app:chain", "--json", env=NO_ENGINE).assert_success()
    assert out.executed() == ["//app:chain#DockerBuild.1", "//app:chain#DockerBuild.2"]
    cas, image = output_image(ws, out)
    assert tree(cas, image)["step20"][3] == b"tool-v1\nhi\nedited\n"
    assert tree(cas, image)["final"][3] == b"tool-v1\nhi\nedited\nfinal\n"
    # step 20 reads back its own three layers (COPY, RUN, RUN), not step 10's
    step = next(a for a in out.actions() if a["id"] == "//app:chain#DockerBuild.1")
    assert step["counters"]["engine_to_cas_layers"] == 3
    before = load_image(cas, first.summary()["targets"][0]["outputs"]["manifest"])
    assert image.layers[:2] == before.layers[:2]  # busybox and step 10: the same blobs

    # a build arg buildah's own layer cache must not serve stale: both steps run again
    build = ws.root / "app/BUILD"
    build.write_text(build.read_text().replace('"GREETING": "hi"', '"GREETING": "ho"'))
    out = ws.run("build", "//app:chain", "--json", env=NO_ENGINE).assert_success()
    assert out.executed() == [f"//app:chain#DockerBuild.{i}" for i in range(3)]
    assert tree(*output_image(ws, out))["step20"][3] == b"tool-v1\nho\nedited\n"


@pytest.mark.slow
def test_reproducible_gives_one_digest_from_two_storages(forge_workspace, tmp_path, buildah):
    """reproducible = True: mtimes clamped, and nothing that names buildah's own build
    containers or intermediate images is left, so two fresh storages agree."""
    digests = set()
    for i in range(2):
        ws = busybox_ws(lambda files, name, cache=tmp_path / f"cache-{i}": forge_workspace(
            files, name=name, cache=cache), {
            "app/Dockerfile": DOCKERFILE + "ENV LATER=1\nRUN echo later > /later\n", "app/msg.txt": "x\n",
            "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", srcs = ["msg.txt"], '
                         'executor = "buildah", reproducible = True)\n',
        }, name=f"ws{i}")
        out = ws.run("build", "//app:img", "--json", env={**NO_ENGINE, "SOURCE_DATE_EPOCH": "1700000000"})
        out.assert_success()
        cas, image = output_image(ws, out)
        assert "parent" not in image.config and not image.config["config"].get("Hostname")
        assert {m[0] for m in tree(cas, image).values()}  # it has content
        digests.add(image.digest)
        time.sleep(1.1)  # another second: unclamped timestamps would differ
    assert len(digests) == 1


@pytest.mark.slow
def test_same_files_as_the_docker_executor(forge_workspace, buildah, docker_client, tmp_path):
    """Not the same digests (mtimes, history), the same files: all but the empty mount
    points buildah 1.28 leaves in a RUN layer."""
    trees = {}
    for executor in ("buildah", "docker"):
        def make(files, name, cache=tmp_path / executor):  # a cache each: the key is shared
            return forge_workspace(files, name=name, cache=cache)

        ws = busybox_ws(make, {
            "app/Dockerfile": DOCKERFILE, "app/msg.txt": "same on both\n",
            "app/BUILD": f'dockerfile(name = "img", base = ":busybox-amd64", srcs = ["msg.txt"], '
                         f'executor = "{executor}")\n',
        }, name=executor)
        out = ws.run("build", "//app:img", "--json").assert_success()
        trees[executor] = tree(*output_image(ws, out))
    on_buildah, on_docker = trees["buildah"], trees["docker"]
    assert set(on_buildah) - set(on_docker) == MOUNT_POINTS
    assert set(on_docker) <= set(on_buildah)
    assert {p: on_buildah[p] for p in on_docker} == on_docker
    assert on_docker["built"][3] == b"same on both\n"


FEATURES = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS tools
RUN echo from-stage > /stage.txt
FROM ${BASE_IMAGE}
COPY --chmod=0600 --chown=65534:65534 msg.txt /m
COPY --from=tools /stage.txt /stage.txt
RUN --mount=type=cache,target=/cache echo run >> /cache/runs && cp /cache/runs /runs
RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /tok-length
RUN --mount=type=bind,source=msg.txt,target=/mnt/msg cat /mnt/msg > /bound
RUN cat /proc/net/dev > /netdev
ARG TARGETARCH
RUN echo "$TARGETARCH" > /targetarch
HEALTHCHECK CMD true
"""


@pytest.mark.slow
def test_documented_dockerfile_features(forge_workspace, buildah):
    """The module docstring's table: what works on buildah 1.28, and that a step without
    network has none (the chroot isolation's network namespace)."""
    token = "tok-5f0c1d"
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": FEATURES, "app/msg.txt": "features\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", srcs = ["msg.txt"], '
                     'executor = "buildah", secrets = {"tok": "env:FORGE_TEST_TOKEN"})\n',
    })
    out = ws.run("build", "//app:img", "--json", env={**NO_ENGINE, "FORGE_TEST_TOKEN": token})
    out.assert_success()
    cas, image = output_image(ws, out)
    files = tree(cas, image)
    assert files["m"][1:] == (0o600, 65534, b"features\n")
    assert files["stage.txt"][3] == b"from-stage\n"
    assert files["runs"][3] == b"run\n"
    assert files["tok-length"][3].strip() == str(len(token)).encode()
    assert files["bound"][3] == b"features\n"
    assert files["targetarch"][3] == b"amd64\n"
    interfaces = [line.split(":")[0].strip() for line in files["netdev"][3].decode().splitlines()[2:]]
    assert interfaces == ["lo"]
    assert image.config["config"]["Healthcheck"]["Test"] == ["CMD-SHELL", "true"]
    logs = "".join(p.read_text() for p in (ws.root / "forge-out/logs").rglob("*.log"))
    assert token not in logs and token not in out.stdout + out.stderr


def test_failing_run_names_the_instruction_and_caches_nothing(forge_workspace, buildah):
    bad = DOCKERFILE.replace("RUN cat", "RUN echo before-failure && false && cat")
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": bad, "app/msg.txt": "x\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", srcs = ["msg.txt"], '
                     'executor = "buildah")\n',
    })
    out = ws.run("build", "//app:img", "--json", env=NO_ENGINE).assert_failure(1)
    assert "app/Dockerfile: failed at STEP 3/4: RUN echo before-failure && false" in out.stderr
    assert "exit status 1" in out.stderr
    assert "before-failure" in out.stderr
    assert "forge-out/logs/app/img/00-DockerBuild.log" in out.stderr
    again = ws.run("build", "//app:img", "--json", env=NO_ENGINE).assert_failure(1)
    assert "//app:img#DockerBuild.0" in again.executed()


def test_heredoc_is_refused_before_the_build(forge_workspace, buildah):
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN <<EOF\necho hi > /hi\nEOF\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", executor = "buildah")\n',
    })
    version = subprocess.run(["buildah", "version"], capture_output=True, text=True).stdout
    found = re.search(r"^Version:\s*(\d+)\.(\d+)", version, re.MULTILINE)
    if found and (int(found.group(1)), int(found.group(2))) >= (1, 33):
        # a buildah that reads heredocs builds the step: nothing to refuse
        ws.run("build", "//app:img", env=NO_ENGINE).assert_success()
        return
    out = ws.run("build", "//app:img", env=NO_ENGINE).assert_failure(1)
    assert "app/Dockerfile:3: RUN with a heredoc (<<EOF) needs buildah 1.33 or later" in out.stderr
    assert "STEP" not in out.stderr  # refused before buildah ran


def test_doctor_reports_buildah(forge_workspace, buildah):
    ws = forge_workspace({"WORKSPACE.toml": '[workspace]\nname = "ws"\n[build]\nexecutor = "buildah"\n',
                          "BUILD": ""})
    out = ws.run("doctor", env=NO_ENGINE)
    line = next(line for line in out.stdout.splitlines() if "buildah executor" in line)
    assert line.startswith("[ok  ] buildah executor: buildah 1.")
    assert "storage" in line and "isolation chroot" in line


def test_settings_are_checked(forge_workspace):
    """No buildah needed: the keys and values of [executors.buildah] are checked first."""
    for settings, expected in [
        ('storage_drivr = "vfs"', "[executors.buildah] unknown key 'storage_drivr' "
                                  "(did you mean 'storage_driver'?); valid keys: storage_driver, "
                                  "isolation, format, cli"),
        ('isolation = "chrot"', "[executors.buildah] isolation = 'chrot'; valid: chroot, oci "
                                "(did you mean 'chroot'?)"),
        ("cli = 3", "[executors.buildah] cli should be the path of a buildah program, got 3"),
    ]:
        ws = forge_workspace({"WORKSPACE.toml": workspace_toml(settings), "BUILD": ""})
        out = ws.run("doctor", env=NO_ENGINE)
        assert out.exit_code == 1
        assert "[FAIL] buildah executor: " in out.stdout and expected in out.stdout, out.stdout
        assert "WORKSPACE.toml:4: " in out.stdout


def test_missing_buildah_fails_where_selected_only(forge_workspace):
    """No buildah needed: one that is not there is a warning, a FAIL where the workspace
    selects it, and a build error naming the package."""
    missing = 'cli = "/nonexistent/buildah"'
    ws = forge_workspace({"WORKSPACE.toml": workspace_toml(missing), "BUILD": 'dockerfile(name = "img", '
                          'srcs = [], executor = "buildah")\n', "Dockerfile": "FROM scratch\n"})
    out = ws.run("doctor", env=NO_ENGINE)
    assert "[warn] buildah executor: [executors.buildah] cli = '/nonexistent/buildah' is not an " \
           "executable; apt-get install buildah" in out.stdout
    out = ws.run("build", "//:img", env=NO_ENGINE).assert_failure(1)
    assert "apt-get install buildah" in out.stderr
    ws.write({"WORKSPACE.toml": workspace_toml(missing).replace("[executors", '[build]\nexecutor = "buildah"\n[executors')})
    out = ws.run("doctor", env=NO_ENGINE)
    assert out.exit_code == 1
    assert "[FAIL] buildah executor:" in out.stdout and "selected by" in out.stdout


def test_registered_and_satisfies_the_contract(forge_workspace):
    """No buildah needed: the built-in registers "buildah", and it is a forge.Executor."""
    from forge.plugins.buildah import BuildahExecutor

    class Workspace:  # what the constructor reads
        def section(self, name):
            return {}

    assert isinstance(BuildahExecutor(Workspace()), forge.Executor)
    ws = forge_workspace({"BUILD": 'dockerfile(name = "img", executor = "buidah")\n'})
    out = ws.run("build", "//:img").assert_failure(2)
    assert "(did you mean 'buildah'?)" in out.stderr
