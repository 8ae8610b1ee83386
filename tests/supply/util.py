"""Helpers of the supply chain tests: keys made by openssl, small workspaces with a fake
dpkg database, reading forge-out."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.services import require_tool

BUSYBOX = "busybox-amd64.tar"

# A fake dpkg database: two installed packages, one removed (config files left), so the
# SBOM must list exactly the installed two.
STATUS = """\
Package: base-files
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 341
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: amd64
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files

Package: libzz1
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 160
Maintainer: Mark Brown <broonie@debian.org>
Architecture: amd64
Multi-Arch: same
Source: zz (1:1.2.13.dfsg-1)
Version: 1:1.2.13.dfsg-1
Description: compression library - runtime

Package: oldtool
Status: deinstall ok config-files
Priority: optional
Architecture: amd64
Version: 0.9-1
Description: removed, its conffiles remain
"""
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'


def make_key(directory: Path, name: str) -> tuple[Path, Path]:
    """(private key, public key) PEM files of a new ECDSA P-256 key, made with openssl."""
    require_tool("openssl", "openssl")
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                    str(private)], check=True, capture_output=True)
    subprocess.run(["openssl", "ec", "-in", str(private), "-pubout", "-out", str(public)],
                   check=True, capture_output=True)
    return private, public


def openssl_verify(public: Path, signature: Path, data: Path) -> subprocess.CompletedProcess:
    """``openssl dgst -sha256 -verify pub.pem -signature sig file``: what the README says."""
    return subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(public), "-signature",
                           str(signature), str(data)], capture_output=True, text=True)


def workspace_files(busybox: Path, *, config: str = "", build: str = "") -> dict[str, Any]:
    """A workspace: busybox, a layer with the fake dpkg database, an image on it, an app
    image with a config file on that."""
    return {
        "WORKSPACE.toml": '[workspace]\nname = "supply"\n' + config,
        BUSYBOX: busybox.read_bytes(),
        "BUILD": build or DEFAULT_BUILD,
        "rootfs/var/lib/dpkg/status": STATUS,
        "rootfs/etc/os-release": OS_RELEASE,
        "app/app.conf": "mode = edge\n",
        "other/unrelated.txt": "not an input of //:app\n",
    }


DEFAULT_BUILD = """\
oci_import(name = "bb", src = "busybox-amd64.tar", platform = "amd64")
layer(name = "dpkg", srcs = glob(["rootfs/**"]), strip_prefix = "rootfs")
image(name = "base", base = ":bb", layers = [":dpkg"])
layer(name = "conf", srcs = ["app/app.conf"], prefix = "/etc/app", strip_prefix = "app")
image(name = "app", base = ":base", layers = [":conf"], env = {"MODE": "edge"})
layer(name = "other", srcs = ["other/unrelated.txt"])
"""

SUPPLY = """\
[plugins.supply_chain]
sbom = true
provenance = true
"""


def out_json(ws: Any, label: str, name: str) -> Any:
    package, _, target = label.lstrip("/").partition(":")
    return json.loads((ws.root / "forge-out" / package / target / name).read_bytes())


def target(out: Any, label: str) -> dict[str, Any]:
    """The summary entry of ``label`` in a ``--json`` run."""
    return next(t for t in out.summary()["targets"] if t["label"] == label)
