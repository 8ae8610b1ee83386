"""dockerfile and dockerfile_chain on the real engine (busybox bases from Debian packages)."""

import json
import shutil
import uuid

import pytest

from forge.core.cas import CAS
from forge.core.oci.image import load_image
from forge.core.oci.validate import validate_image
from tests.conftest import created_images
from tests.services import require_binfmt, testdata

pytestmark = pytest.mark.integration

DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY . /ctx/
RUN cat /ctx/msg.txt > /built && uname -m > /arch
CMD ["cat", "/built"]
"""


def busybox_ws(forge_workspace, files, name="ws", platforms=("amd64",)):
    tars = {
        "amd64": "busybox-amd64.tar", "aarch64": "busybox-arm64.tar", "armv7": "busybox-armhf.tar",
    }
    build = "".join(
        f'oci_import(name = "busybox-{p}", src = "{tars[p]}", platform = "{p}")\n' for p in platforms
    )
    ws = forge_workspace({**files, "app/BUILD": build + files.get("app/BUILD", "")}, name=name)
    for p in platforms:
        shutil.copy(testdata(tars[p]), ws.root / "app" / tars[p])
    return ws


def run_image(client, tag, *cmd, platform=None):
    kwargs = {"platform": platform} if platform else {}
    out = client.containers.run(tag, list(cmd) or None, remove=True, network_mode="none", **kwargs)
    return out.decode()


def validate_outputs(ws, out):
    cas = CAS(ws.cache / "cas")
    for target in out.summary()["targets"]:
        digest = target["outputs"].get("manifest") or target["outputs"].get("index")
        if digest:
            validate_image(cas, digest)




def test_copy_run_and_undeclared_file_is_invisible(forge_workspace, docker_client):
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": DOCKERFILE, "app/msg.txt": "declared\n", "app/secret.txt": "hidden\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", srcs = ["msg.txt"])\n',
    })
    out = ws.run("build", "//app:img", "--json", "--load", "--tag", "forge-test/img:1").assert_success()
    assert out.statuses()["//app:img#DockerBuild.0"] == "built"
    validate_outputs(ws, out)
    assert run_image(docker_client, "forge-test/img:1") == "declared\n"
    listing = run_image(docker_client, "forge-test/img:1", "ls", "/ctx")
    assert listing.split() == ["Dockerfile", "msg.txt"]
    assert (ws.root / "forge-out/app/img/index.json").exists()
    assert list((ws.root / "forge-out/logs/app/img").glob("*.log"))


CHAIN_FILES = {
    "app/chain/10-Dockerfile-base": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG GREETING=none\n"
                                    "RUN echo \"$GREETING\" > /step10\n",
    "app/chain/20-Dockerfile-tools": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY tool.sh /tool.sh\n"
                                     "RUN sh /tool.sh > /step20\n",
    "app/chain/30-Dockerfile-final": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG FLAVOR\n"
                                     "RUN cat /step10 /step20 > /final && echo $FLAVOR >> /final\n",
    "app/chain/tool.sh": "echo tool-v1\n",
    "app/chain/base-amd64-args": "# greeting for amd64\nGREETING=hello-amd64\n\n",
    "app/chain/base-aarch64-args": "GREETING=hello-aarch64\n",
    "app/BUILD": (
        'dockerfile_chain(name = "chain-amd64", dir = "chain", base = ":busybox-amd64",'
        ' build_args = {"FLAVOR": "plain"})\n'
        'dockerfile_chain(name = "chain-aarch64", dir = "chain", base = ":busybox-aarch64",'
        ' build_args = {"FLAVOR": "plain"})\n'
    ),
}

AMD = ["//app:chain-amd64#DockerBuild.0", "//app:chain-amd64#DockerBuild.1", "//app:chain-amd64#DockerBuild.2"]
ARM = ["//app:chain-aarch64#DockerBuild.0", "//app:chain-aarch64#DockerBuild.1",
       "//app:chain-aarch64#DockerBuild.2"]


def test_chain_rebuilds_from_the_changed_file_onward(forge_workspace, docker_client):
    require_binfmt("aarch64")
    ws = busybox_ws(forge_workspace, CHAIN_FILES, platforms=("amd64", "aarch64"))
    first = ws.run("build", "//app:all", "--json", "-j", "2").assert_success()
    assert set(AMD + ARM) <= set(first.executed())
    validate_outputs(ws, first)
    # step N+1 finds step N's image in the engine: no docker load between chain steps
    logs = ws.root / "forge-out/logs/app/chain-amd64"
    assert "loading base image" not in (logs / "01-DockerBuild.log").read_text()
    assert "loading base image" not in (logs / "02-DockerBuild.log").read_text()

    # edit file 20: exactly steps 20 and 30 re-run, on both platforms
    path = ws.root / "app/chain/20-Dockerfile-tools"
    path.write_text(path.read_text() + "RUN echo edited > /edited\n")
    out = ws.run("build", "//app:all", "--json").assert_success()
    assert out.executed() == sorted(AMD[1:] + ARM[1:])

    # edit the aarch64 args file: only the aarch64 chain re-runs
    (ws.root / "app/chain/base-aarch64-args").write_text("GREETING=hi-again\n")
    out = ws.run("build", "//app:all", "--json").assert_success()
    assert out.executed() == sorted(ARM)

    # a context file (tool.sh) is read by every step's context: all steps re-run
    # a build arg change re-runs the chain that has it
    (ws.root / "app/BUILD").write_text((ws.root / "app/BUILD").read_text().replace(
        'dockerfile_chain(name = "chain-amd64", dir = "chain", base = ":busybox-amd64", build_args = {"FLAVOR": "plain"})',
        'dockerfile_chain(name = "chain-amd64", dir = "chain", base = ":busybox-amd64", build_args = {"FLAVOR": "fancy"})'))
    out = ws.run("build", "//app:all", "--json").assert_success()
    assert out.executed() == sorted(AMD)

    ws.run("build", "//app:chain-aarch64", "--load", "--tag", "forge-test/chain-arm:1").assert_success()
    final = run_image(docker_client, "forge-test/chain-arm:1", "sh", "-c", "cat /final; uname -m",
                      platform="linux/arm64")
    assert final.split() == ["hi-again", "tool-v1", "plain", "aarch64"]
    cas = CAS(ws.cache / "cas")
    summary = ws.run("build", "//app:chain-aarch64", "--json").assert_success().summary()
    image = load_image(cas, summary["targets"][0]["outputs"]["manifest"])
    assert (image.config["architecture"], image.config.get("variant")) == ("arm64", "v8")


def test_malformed_args_line_names_file_and_line(forge_workspace):
    files = dict(CHAIN_FILES)
    files["app/chain/base-amd64-args"] = "GREETING=ok\nthis is not an arg\n"
    ws = busybox_ws(forge_workspace, files, platforms=("amd64", "aarch64"))
    out = ws.run("build", "//app:chain-amd64").assert_failure(2)
    assert "app/chain/base-amd64-args:2: expected KEY=VALUE" in out.stderr


def test_pruned_engine_with_warm_cache_builds_nothing_and_loads(forge_workspace, docker_client):
    # A message of its own, so no build cache on the shared engine serves this build.
    message = f"warm {uuid.uuid4().hex}\n"
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": DOCKERFILE, "app/msg.txt": message,
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", srcs = ["msg.txt"])\n',
    })
    ws.run("build", "//app:img").assert_success()
    ours = created_images(docker_client, docker_client.forge_images_before)
    assert ours
    for img in ours:  # prune what this test made (never anybody else's images)
        for tag in img.tags:
            docker_client.images.remove(tag)
    ids = {img.id for img in ours}
    assert not [i for i in docker_client.images.list() if i.id in ids]
    out = ws.run("build", "//app:img", "--json", "--load", "--tag", "forge-test/warm:1").assert_success()
    assert out.executed() == []
    assert run_image(docker_client, "forge-test/warm:1") == message


def test_failing_run_exits_1_shows_instruction_and_caches_nothing(forge_workspace, docker_client):
    bad = DOCKERFILE.replace("RUN cat", "RUN echo before-failure && false && cat")
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": bad, "app/msg.txt": "x\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", srcs = ["msg.txt"])\n',
    })
    out = ws.run("build", "//app:img", "--json")
    out.assert_failure(1)
    assert "RUN echo before-failure && false" in out.stderr
    assert "before-failure" in out.stderr
    assert "forge-out/logs/app/img/00-DockerBuild.log" in out.stderr
    entries_before = sorted(p.name for p in (ws.cache / "ac").rglob("*.json"))
    again = ws.run("build", "//app:img", "--json").assert_failure(1)
    assert "//app:img#DockerBuild.0" in again.executed()
    assert sorted(p.name for p in (ws.cache / "ac").rglob("*.json")) == entries_before
    (ws.root / "app/Dockerfile").write_text(DOCKERFILE)
    ws.run("build", "//app:img").assert_success()


@pytest.mark.parametrize("platform, uname, arch, variant", [
    ("aarch64", "aarch64", "arm64", "v8"),
    ("armv7", "armv7l", "arm", "v7"),
])
def test_cross_build_metadata_matches_content(forge_workspace, docker_client, platform, uname, arch, variant):
    require_binfmt("aarch64" if platform == "aarch64" else "arm")
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN uname -m > /arch\n",
        "app/BUILD": f'dockerfile(name = "img", base = ":busybox-{platform}")\n',
    }, platforms=(platform,))
    out = ws.run("build", "//app:img", "--json", "--load", "--tag", f"forge-test/{platform}:1").assert_success()
    validate_outputs(ws, out)
    cas = CAS(ws.cache / "cas")
    image = load_image(cas, out.summary()["targets"][0]["outputs"]["manifest"])
    assert (image.config["architecture"], image.config.get("variant")) == (arch, variant)
    plat = f"linux/{arch}/{variant}"
    assert run_image(docker_client, f"forge-test/{platform}:1", "cat", "/arch", platform=plat).strip() == uname


def test_missing_binfmt_stops_before_running_anything(forge_workspace, tmp_path):
    empty = tmp_path / "no-binfmt"
    empty.mkdir()
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN uname -m > /arch\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-aarch64")\n',
    }, platforms=("aarch64",))
    out = ws.run("build", "//app:img", "--json", env={"FORGE_BINFMT_DIR": str(empty)}).assert_failure(1)
    assert "binfmt_misc is not mounted" in out.stderr
    assert "update-binfmts --enable qemu-aarch64" in out.stderr
    log = ws.root / "forge-out/logs/app/img/00-DockerBuild.log"
    assert not log.exists() or "docker build" not in log.read_text()


def test_dockerfile_target_stage_and_index(forge_workspace, docker_client):
    require_binfmt("aarch64")
    multi = ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE} AS build\nRUN echo built > /out\n"
             "FROM ${BASE_IMAGE} AS runtime\nCOPY --from=build /out /out\nRUN echo runtime >> /out\n")
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": multi,
        "app/BUILD": (
            'dockerfile(name = "build-amd64", base = ":busybox-amd64", target = "build")\n'
            'dockerfile(name = "rt-amd64", base = ":busybox-amd64")\n'
            'dockerfile(name = "rt-aarch64", base = ":busybox-aarch64")\n'
            'image_index(name = "rt", images = [":rt-amd64", ":rt-aarch64"])\n'
        ),
    }, platforms=("amd64", "aarch64"))
    out = ws.run("build", "//app:all", "--json").assert_success()
    validate_outputs(ws, out)
    idx = json.loads((ws.root / "forge-out/app/rt/index.json").read_text())
    assert idx["manifests"]
    cas = CAS(ws.cache / "cas")
    from forge.core.oci.image import load_index

    index = load_index(cas, next(t for t in out.summary()["targets"] if t["label"] == "//app:rt")["outputs"]["index"])
    assert sorted(str(p) for p in index.platforms) == ["linux/amd64", "linux/arm64/v8"]
