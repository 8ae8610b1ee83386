"""minimize + production end to end on the real engine.

The build image is busybox plus a C program built here with gcc, linked against a shared
library of its own (which needs zlib) and zlib, with this machine's glibc and zlib
copied in at Debian's paths — and a library nothing needs. minimize must take exactly
what the program needs, production puts that on a plain busybox base, and the engine
runs it. No Docker Hub: the bases are the busybox tarballs scripts/services.sh builds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import zlib
from pathlib import Path

import pytest

from forge.core.cas import CAS
from forge.core.oci.validate import validate_image
from tests.minimize.util import layer_members
from tests.services import require_docker, testdata, unavailable

pytestmark = pytest.mark.integration

MULTIARCH = "lib/x86_64-linux-gnu"
HOST_LIBS = "/usr/lib/x86_64-linux-gnu"

LIBMINE_C = """\
#include <string.h>
#include <zlib.h>
unsigned long mine_crc(const char *s) { return crc32(0L, (const unsigned char *)s, strlen(s)); }
"""
PROG_C = """\
#include <stdio.h>
#include <zlib.h>
unsigned long mine_crc(const char *s);
int main(void) {
    printf("crc32(forge)=%08lx zlib=%s\\n", mine_crc("forge"), zlibVersion());
    return 0;
}
"""
# a stand-in for apt-get (no network needed): records what it was asked to install
FAKE_APT = """\
#!/bin/sh
case "$1" in
  update) mkdir -p /var/lib/apt/lists && echo fetched > /var/lib/apt/lists/index ;;
  install) shift; mkdir -p /var/lib/fake-dpkg
           for a in "$@"; do case "$a" in -*) ;; *) echo "$a" >> /var/lib/fake-dpkg/installed ;; esac; done ;;
esac
"""
BUILD = """\
oci_import(name = "bb", src = "bb.tar", platform = "amd64")
layer(name = "build-files", srcs = {srcs}, strip_prefix = "root")
image(name = "build", base = ":bb", layers = [":build-files"],
      env = {{"LD_LIBRARY_PATH": "/usr/local/lib"}})
minimize(name = "min", image = ":build")
production(name = "prod", base = ":bb", minimized = ":min",
           entrypoint = ["/usr/local/bin/prog"])

layer(name = "fake-apt", srcs = ["apt-get"], prefix = "/usr/bin")
image(name = "bb-apt", base = ":bb", layers = [":fake-apt"])
production(name = "prod-pkgs", base = ":bb-apt", minimized = ":min", packages = ["hello"],
           entrypoint = ["/usr/local/bin/prog"])
"""


_unavailable = unavailable


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    """prog and libmine.so.1.0.0, built once with the host's gcc and zlib."""
    if shutil.which("gcc") is None or not Path("/usr/include/zlib.h").is_file():
        _unavailable("needs gcc and zlib1g-dev (apt-get install gcc libc6-dev zlib1g-dev)")
    out = tmp_path_factory.mktemp("compiled")
    (out / "libmine.c").write_text(LIBMINE_C)
    (out / "prog.c").write_text(PROG_C)

    def gcc(*args: str) -> None:
        subprocess.run(["gcc", "-O2", *args], cwd=out, check=True, capture_output=True)

    gcc("-shared", "-fPIC", "-Wl,-soname,libmine.so.1", "-o", "libmine.so.1.0.0", "libmine.c",
        "-lz")
    (out / "libmine.so").symlink_to("libmine.so.1.0.0")
    gcc("-o", "prog", "prog.c", "-L.", "-lmine", "-lz")
    return out


def build_root(compiled: Path, root: Path) -> list[str]:
    """The files of the build image under ``root`` (as package-relative srcs)."""
    local = root / "usr/local"
    for d in ("bin", "lib", "include"):
        (local / d).mkdir(parents=True)
    shutil.copy2(compiled / "prog", local / "bin/prog")
    shutil.copy2(compiled / "libmine.so.1.0.0", local / "lib/libmine.so.1.0.0")
    (local / "lib/libmine.so.1").symlink_to("libmine.so.1.0.0")
    (local / "lib/libmine.so").symlink_to("libmine.so.1")
    (local / "include/mine.h").write_text("unsigned long mine_crc(const char *s);\n")
    lib = root / MULTIARCH
    lib.mkdir(parents=True)
    zlib_real = os.path.basename(os.path.realpath(f"{HOST_LIBS}/libz.so.1"))
    for name in ("libc.so.6", "ld-linux-x86-64.so.2", "libm.so.6", zlib_real):
        shutil.copy2(os.path.realpath(f"{HOST_LIBS}/{name}"), lib / name)
    (lib / "libz.so.1").symlink_to(zlib_real)
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    return sorted(str(p.relative_to(root.parent)) for p in root.rglob("*")
                  if p.is_file() or p.is_symlink())


def workspace(forge_workspace, compiled: Path, name: str, cache: Path | None = None):
    ws = forge_workspace({"WORKSPACE.toml": f'[workspace]\nname = "{name}"\n'}, name=name,
                         cache=cache)
    app = ws.root / "app"
    app.mkdir()
    srcs = build_root(compiled, app / "root")
    shutil.copy(testdata("busybox-amd64.tar"), app / "bb.tar")
    (app / "apt-get").write_text(FAKE_APT)
    (app / "apt-get").chmod(0o755)
    (app / "BUILD").write_text(BUILD.format(srcs=repr(srcs).replace("'", '"')))
    return ws


def target(out, label: str) -> dict:
    return next(t for t in out.summary()["targets"] if t["label"] == label)


def expected_output() -> str:
    return f"crc32(forge)={zlib.crc32(b'forge'):08x} zlib={zlib.ZLIB_RUNTIME_VERSION}\n"


def test_minimized_program_runs_on_plain_busybox_and_the_image_is_reproducible(
        forge_workspace, compiled, tmp_path):
    client = require_docker()
    ws = workspace(forge_workspace, compiled, "ws", tmp_path / "cache-1")
    out = ws.run("build", "//app:prod", "//app:min", "--json", "--load", "--tag",
                 "forge-test/minimized:1").assert_success()
    prod = target(out, "//app:prod")
    cas = CAS(ws.cache / "cas")
    validate_image(cas, prod["digest"])
    logs = client.containers.run("forge-test/minimized:1", remove=True, network_mode="none")
    assert logs.decode() == expected_output()

    # exactly what the program needs, symlink chains included; not libm, not busybox
    members = layer_members(cas.path(target(out, "//app:min")["outputs"]["layer"]))
    zlib_real = os.path.basename(os.path.realpath(f"{HOST_LIBS}/libz.so.1"))
    assert {m for m, kind in members.items() if kind != "dir"} == {
        "usr/local/bin/prog", "usr/local/include/mine.h",
        "usr/local/lib/libmine.so", "usr/local/lib/libmine.so.1", "usr/local/lib/libmine.so.1.0.0",
        f"{MULTIARCH}/libc.so.6", f"{MULTIARCH}/ld-linux-x86-64.so.2",
        f"{MULTIARCH}/libz.so.1", f"{MULTIARCH}/{zlib_real}", "lib64/ld-linux-x86-64.so.2",
    }
    minimize = next(e for e in out.actions() if e["mnemonic"] == "Minimize")
    print(f"\nminimize action: {minimize['seconds']:.3f} s; production {prod['digest']}")

    why = ws.run("query", "why", "//app:min", f"/{MULTIARCH}/{zlib_real}").assert_success()
    assert why.stdout.splitlines()[1:] == [
        "  <- needed by /usr/local/bin/prog: libz.so.1 in /lib/x86_64-linux-gnu (via a system "
        "directory), opened as /lib/x86_64-linux-gnu/libz.so.1",
        "  <- requested by paths /usr/local/bin",
        "  also needed by: /usr/local/lib/libmine.so.1, /usr/local/lib/libmine.so.1.0.0",
    ]

    # another checkout, another cache: the same production image, byte for byte
    again = workspace(forge_workspace, compiled, "elsewhere", tmp_path / "cache-2")
    out2 = again.run("build", "//app:prod", "--json").assert_success()
    assert target(out2, "//app:prod")["digest"] == prod["digest"]


def test_packages_run_once_on_the_executor_and_survive_a_new_application_layer(
        forge_workspace, compiled, tmp_path):
    client = require_docker()
    ws = workspace(forge_workspace, compiled, "pkgs", tmp_path / "cache")
    out = ws.run("build", "//app:prod-pkgs", "--json", "--load", "--tag",
                 "forge-test/minimized-pkgs:1").assert_success()
    install = next(e for e in out.actions() if e["mnemonic"] == "ProductionPackages")
    assert (install["status"], install["hermetic"]) == ("built", False)
    assert target(out, "//app:prod-pkgs")["hermetic"] is False
    run = textwrap.dedent("""\
        cat /var/lib/fake-dpkg/installed; ls /var/lib/apt/lists | wc -l; /usr/local/bin/prog""")
    logs = client.containers.run("forge-test/minimized-pkgs:1", ["-c", run], entrypoint="/bin/sh",
                                 remove=True, network_mode="none")
    assert logs.decode().split("\n", 2) == ["hello", "0", expected_output()]

    # a new application layer re-runs minimize and assembly, never apt-get
    (ws.root / "app/BUILD").write_text((ws.root / "app/BUILD").read_text().replace(
        'minimize(name = "min", image = ":build")',
        'minimize(name = "min", image = ":build", exclude = ["/usr/local/include"])'))
    out = ws.run("build", "//app:prod-pkgs", "--json").assert_success()
    assert out.executed() == ["//app:min#Minimize.0", "//app:prod-pkgs#Production.1"]
