"""forge-out/ layouts read by independent OCI tools, as a user would point them at it.

``umoci unpack --image forge-out/<pkg>/<name>:latest`` needs the layout's ``index.json``
to name the manifest ``latest`` (``org.opencontainers.image.ref.name``); skopeo reads the
same layout through its ``oci:`` transport. Both come from Debian (scripts/services.sh
installs them); under CI=true a missing tool fails, otherwise the test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.services import require_tool, testdata

pytestmark = pytest.mark.integration

BUILD = """\
oci_import(name = "busybox", src = "busybox-amd64.tar", platform = "amd64")
layer(name = "motd", srcs = ["motd.txt", "bin/hello"], prefix = "/opt/app", mode_map = {"bin/hello": "0755"})
image(name = "app", base = ":busybox", layers = [":motd"], env = {"APP": "1"}, cmd = ["/opt/app/bin/hello"])
"""


def built_layout(forge_workspace):
    ws = forge_workspace({"p/BUILD": BUILD, "p/motd.txt": "made by forge\n",
                          "p/bin/hello": "#!/bin/sh\necho hello\n"})
    shutil.copy(testdata("busybox-amd64.tar"), ws.root / "p/busybox-amd64.tar")
    out = ws.run("build", "//p:app", "--json").assert_success()
    return ws, out.summary()["targets"][0]["digest"]


def run(*cmd: str, cwd) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def test_umoci_unpacks_a_forge_out_layout(forge_workspace, tmp_path):
    require_tool("umoci", "umoci")
    ws, digest = built_layout(forge_workspace)
    bundle = tmp_path / "bundle"
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    run("umoci", "unpack", *rootless, "--image", "forge-out/p/app:latest", str(bundle), cwd=ws.root)
    rootfs = bundle / "rootfs"
    assert (rootfs / "opt/app/motd.txt").read_text() == "made by forge\n"
    assert os.stat(rootfs / "opt/app/bin/hello").st_mode & 0o777 == 0o755
    assert (rootfs / "bin/busybox").is_file() and os.readlink(rootfs / "bin/sh") == "busybox"
    config = json.loads((bundle / "config.json").read_text())  # the runtime spec umoci made
    assert config["process"]["args"] == ["/opt/app/bin/hello"]
    assert "APP=1" in config["process"]["env"]
    # what umoci read is forge's manifest: its layers, in order, with forge's history
    index = json.loads((ws.root / "forge-out/p/app/index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [digest]
    manifest = json.loads((ws.root / "forge-out/p/app/blobs/sha256" / digest.split(":")[1]).read_text())
    stat = json.loads(run("umoci", "stat", "--json", "--image", "forge-out/p/app:latest", cwd=ws.root).stdout)
    assert [h["layer"]["digest"] for h in stat["history"]] == [layer["digest"] for layer in manifest["layers"]]
    assert stat["history"][-1]["created_by"] == "forge layer //p:motd"


def test_skopeo_reads_a_forge_out_layout(forge_workspace):
    require_tool("skopeo", "skopeo")
    ws, digest = built_layout(forge_workspace)
    info = json.loads(run("skopeo", "inspect", "oci:forge-out/p/app:latest", cwd=ws.root).stdout)
    assert info["Digest"] == digest
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert "APP=1" in info["Env"]
