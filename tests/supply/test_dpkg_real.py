"""The real thing: a dpkg database and dpkg-query taken from this Debian machine into an
image (no debootstrap: seconds, not minutes), the SBOM checked against what dpkg-query
lists inside the running image, and minimize naming the packages of what it harvests
from it (report, status.d records, the production image's SBOM)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from forge.core.cas import CAS
from tests.services import require_docker, testdata, unavailable
from tests.supply.util import BUSYBOX, SUPPLY, out_json, target

pytestmark = pytest.mark.integration

HOST_FILES = {
    "usr/bin/dpkg-query": "/usr/bin/dpkg-query",
    "usr/lib/x86_64-linux-gnu/libc.so.6": "/lib/x86_64-linux-gnu/libc.so.6",
    "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "usr/lib/x86_64-linux-gnu/libmd.so.0.0.5": "/lib/x86_64-linux-gnu/libmd.so.0.0.5",
    "var/lib/dpkg/status": "/var/lib/dpkg/status",
    "etc/os-release": "/etc/os-release",
}
INFO = ["dpkg.list", "dpkg.md5sums", "libc6:amd64.list", "libc6:amd64.md5sums",
        "libmd0:amd64.list", "libmd0:amd64.md5sums"]
# merged /usr, as Debian 12 has it: libc6's list says /lib/..., libmd0's /usr/lib/...
LINKS = {"usr/lib/x86_64-linux-gnu/libmd.so.0": "libmd.so.0.0.5",
         "usr/lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
         "lib": "usr/lib", "lib64": "usr/lib64"}
BUILD = """\
oci_import(name = "bb", src = "busybox-amd64.tar", platform = "amd64")
# the merged-/usr links stay links (glob would follow them)
layer(name = "host", srcs = glob(["root/**"], exclude = ["root/lib/**", "root/lib64/**"]) +
      ["root/lib", "root/lib64"], strip_prefix = "root")
image(name = "tools", base = ":bb", layers = [":host"])
minimize(name = "min", image = ":tools", paths = ["/usr/bin/dpkg-query"])
production(name = "prod", base = ":bb", minimized = ":min", entrypoint = ["/usr/bin/dpkg-query"])
"""


@pytest.fixture(scope="module")
def host_root(tmp_path_factory) -> Path:
    needed = [*HOST_FILES.values(), *(f"/var/lib/dpkg/info/{n}" for n in INFO)]
    if not all(Path(p).exists() for p in needed) or shutil.which("dpkg-query") is None:
        unavailable("needs a Debian bookworm amd64 host (dpkg-query, libmd0, its dpkg database)")
    root = tmp_path_factory.mktemp("host") / "root"
    for rel, src in HOST_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / rel)  # through symlinks (/etc/os-release)
        shutil.copymode(src, root / rel)
    for name in INFO:
        (root / "var/lib/dpkg/info").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f"/var/lib/dpkg/info/{name}", root / "var/lib/dpkg/info" / name)
    for rel, link in LINKS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(link)
    return root


@pytest.fixture
def ws(forge_workspace, host_root):
    ws = forge_workspace({"WORKSPACE.toml": '[workspace]\nname = "dpkg"\n' + SUPPLY,
                          BUSYBOX: testdata(BUSYBOX).read_bytes(), "BUILD": BUILD})
    shutil.copytree(host_root, ws.root / "root", symlinks=True)
    return ws


def test_sbom_lists_exactly_what_dpkg_query_lists_in_the_running_image(ws, docker_client):
    tag = "forge-test/supply-dpkg:latest"
    ws.run("build", "//:tools", "--load", "--tag", tag).assert_success()
    listed = docker_client.containers.run(
        tag, ["/usr/bin/dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\n"],
        remove=True).decode()
    queried = {tuple(line.split("\t")) for line in listed.splitlines()}
    assert len(queried) > 100  # a real database
    spdx = out_json(ws, "//:tools", "sbom.spdx.json")
    purls = {p["name"]: r["referenceLocator"] for p in spdx["packages"] for r in p.get("externalRefs", [])}
    ours = {(p["name"], p.get("versionInfo", ""), purls[p["name"]].split("arch=")[1].split("&")[0])
            for p in spdx["packages"] if p["SPDXID"].startswith("SPDXRef-Package-deb-")}
    assert ours == queried
    cdx = out_json(ws, "//:tools", "sbom.cdx.json")
    assert {(c["name"], c.get("version", "")) for c in cdx["components"] if c["type"] == "library"} \
        == {(n, v) for n, v, _ in queried}


def test_minimize_names_the_package_of_each_harvested_file_and_production_carries_it(ws, docker_client):
    out = ws.run("build", "//:min", "//:prod", "--json").assert_success()
    cas = CAS(ws.cache / "cas")
    report = json.loads(cas.read_bytes(target(out, "//:min")["outputs"]["report"]))
    files = report["files"]
    assert files["/usr/bin/dpkg-query"]["package"] == "dpkg:amd64"
    assert files["/usr/lib/x86_64-linux-gnu/libc.so.6"]["package"] == "libc6:amd64"
    assert files["/usr/lib/x86_64-linux-gnu/libmd.so.0.0.5"]["package"] == "libmd0:amd64"
    assert files["/usr/lib/x86_64-linux-gnu/libmd.so.0"]["package"] == "libmd0:amd64"  # the link too
    assert files["/usr/lib64/ld-linux-x86-64.so.2"]["package"] == "libc6:amd64"  # listed as /lib64/...
    assert sorted(report["packages"]) == ["dpkg:amd64", "libc6:amd64", "libmd0:amd64"]
    assert all(p["status_d"] for p in report["packages"].values())  # the busybox base has none

    layer = (ws.root / "forge-out/min/layer.tar.gz")
    import tarfile

    with tarfile.open(layer) as tf:
        names = set(tf.getnames())
        sums = tf.extractfile("var/lib/dpkg/status.d/libmd0.md5sums").read().decode()
        stanza = tf.extractfile("var/lib/dpkg/status.d/libmd0").read().decode()
    assert {"var/lib/dpkg/status.d/dpkg", "var/lib/dpkg/status.d/libc6.md5sums"} <= names
    real_md5 = hashlib.md5(Path("/lib/x86_64-linux-gnu/libmd.so.0.0.5").read_bytes()).hexdigest()
    assert sums == f"{real_md5}  usr/lib/x86_64-linux-gnu/libmd.so.0.0.5\n"
    assert "Package: libmd0\n" in stanza and "Status: install ok installed\n" in stanza

    # the production image's SBOM (read from the image alone) names each file's package
    spdx = out_json(ws, "//:prod", "sbom.spdx.json")
    ids = {p["SPDXID"]: p["name"] for p in spdx["packages"]}
    files_by_id = {f["SPDXID"]: f["fileName"] for f in spdx["files"]}
    owner = {files_by_id[r["relatedSpdxElement"]]: ids[r["spdxElementId"]]
             for r in spdx["relationships"] if r["relatedSpdxElement"] in files_by_id}
    assert owner == {"./usr/bin/dpkg-query": "dpkg",
                     "./usr/lib/x86_64-linux-gnu/libc.so.6": "libc6",
                     "./usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": "libc6",
                     "./usr/lib/x86_64-linux-gnu/libmd.so.0.0.5": "libmd0"}
    libmd = next(f for f in spdx["files"] if f["fileName"].endswith("libmd.so.0.0.5"))
    sha256 = hashlib.sha256(Path("/lib/x86_64-linux-gnu/libmd.so.0.0.5").read_bytes()).hexdigest()
    assert {"algorithm": "SHA256", "checksumValue": sha256} in libmd["checksums"]
    # and the harvested program still runs in it
    require_docker()
    ws.run("build", "//:prod", "--load", "--tag", "forge-test/supply-prod:latest").assert_success()
    version = docker_client.containers.run("forge-test/supply-prod:latest", ["--version"], remove=True)
    assert b"dpkg-query" in version


def test_a_package_the_production_base_has_gets_no_status_d_record(ws):
    # production_base = :tools: libc6 and friends are the base's own, in the same version
    (ws.root / "BUILD").write_text(BUILD + 'minimize(name = "fit", image = ":tools", '
                                   'paths = ["/usr/bin/dpkg-query"], production_base = ":tools")\n')
    out = ws.run("build", "//:fit", "--json").assert_success()
    report = json.loads(CAS(ws.cache / "cas").read_bytes(target(out, "//:fit")["outputs"]["report"]))
    assert report["packages"] and not any(p["status_d"] for p in report["packages"].values())
