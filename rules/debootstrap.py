"""debootstrap: a Debian base image bootstrapped from a package mirror, no registry needed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import deque
from pathlib import Path
from typing import Any

import forge
from forge import attr

DOC = """A Debian root filesystem made by `debootstrap` on the host (no container), as a
one-layer image: the base for Dockerfile chains when there is no Docker Hub.

Runs as root. For a platform the host cannot run natively, the first stage runs with
`--foreign` and the second stage under QEMU user emulation
(`chroot <rootfs> /debootstrap/debootstrap --second-stage`, which binfmt_misc's F flag
makes work without copying qemu into the rootfs); a missing emulator stops the build with
the commands that register it. Packages named in `packages` are installed at bootstrap
time, so the Dockerfile steps built on the result need no network and stay hermetic.

Before the rootfs is packed, apt lists and caches, logs, `/dev` nodes and host-specific
files (`/etc/hostname`, `/etc/resolv.conf`, the ldconfig aux cache) are removed: they are
size, not content, and the engine provides the mounts at run time. The tarball is written
into a deterministic layer (sorted, mtimes clamped, modes and owners kept).

The action uses the network, so it is non-hermetic: its key covers suite, variant,
packages, mirror and platform, and a mirror that moved on does not re-key it (a new
point release reaches the base when the cache entry goes, or the key changes). Two
bootstraps of the same package versions give the same digest (the rootfs is cleaned of
what varies per run and written as a deterministic layer), so to pin the content, pin the
mirror to a dated snapshot:

    debootstrap(
        name = "bookworm-aarch64",
        platform = "aarch64",
        packages = ["gcc", "libc6-dev"],
        mirror = "http://snapshot.debian.org/archive/debian/20240101T000000Z",
    )
"""

VARIANTS = ("minbase", "buildd", "standard")

ATTRS = {
    "suite": attr.string(default="bookworm", doc="Debian suite or codename",
                         example='suite = "bookworm"'),
    "variant": attr.string(default="minbase", values=VARIANTS,
                           doc="debootstrap --variant (standard: debootstrap's default set)",
                           example='variant = "buildd"'),
    "packages": attr.string_list(default=[], doc="extra packages installed at bootstrap time "
                                 "(debootstrap --include); order does not matter",
                                 example='packages = ["gcc", "libc6-dev", "zlib1g-dev"]'),
    "mirror": attr.string(default="http://deb.debian.org/debian",
                          doc="Debian mirror URL; a snapshot.debian.org URL pins the content",
                          example='mirror = "http://snapshot.debian.org/archive/debian/20240101T000000Z"'),
    "platform": attr.platform(),
}

# Cleaned before packing (relative to the rootfs): caches, logs and files that describe
# the host that ran debootstrap rather than the image. Directories in EMPTY_FILES keep
# their tree (apt and dpkg expect it) and lose their files; EMPTY_ALL loses everything.
EMPTY_FILES = ("var/lib/apt/lists", "var/cache/apt", "var/log", "run")
EMPTY_ALL = ("dev", "proc", "sys", "tmp", "var/tmp")
REMOVE = ("debootstrap", "etc/hostname", "etc/resolv.conf", "var/cache/ldconfig/aux-cache",
          "var/cache/debconf/config.dat-old", "var/cache/debconf/templates.dat-old",
          "var/lib/dpkg/status-old", "var/lib/dpkg/diversions-old")
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def bootstrap_params(suite: str, variant: str, packages: list[str], mirror: str) -> dict[str, Any]:
    """What enters the key besides the platform. Packages are a set to debootstrap, so they
    are sorted and de-duplicated: reordering the list does not re-key the base."""
    return {"suite": suite, "variant": variant, "packages": sorted(set(packages)),
            "mirror": mirror.rstrip("/")}


class Debootstrap(forge.Rule):
    name = "debootstrap"
    doc = DOC
    attrs = ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        a = ctx.attr
        for package in a.packages:
            if not package or "," in package or any(c.isspace() for c in package):
                raise ctx.fail(f"packages: {package!r} is not a Debian package name")
        if not a.mirror.startswith(("http://", "https://", "file:/")):
            raise ctx.fail(f"mirror = {a.mirror!r} should be an http(s):// or file:/ URL")
        if not a.suite or "/" in a.suite:
            raise ctx.fail(f"suite = {a.suite!r} should be a suite or codename like 'bookworm'")
        platform = ctx.platform
        params = bootstrap_params(a.suite, a.variant, list(a.packages), a.mirror)
        extra = f" +{len(params['packages'])} packages" if params["packages"] else ""
        action = ctx.action(
            # No executor: it runs on the host. Non-hermetic: it reads a mirror.
            "Debootstrap", run_debootstrap, version=1, params=params, platform=platform,
            hermetic=False, timestamps=True, description=f"{a.suite} {a.variant} {platform.debian_arch}{extra}",
            materialize=forge.materialize_image,
        )
        return [forge.ImageInfo(action, platform), forge.DefaultInfo(action)]


def debootstrap_command(params: dict[str, Any], platform: forge.Platform, target: Path,
                        foreign: bool) -> list[str]:
    """The first-stage command line (the only stage for a native platform)."""
    cmd = [find_debootstrap(), f"--arch={platform.debian_arch}"]
    if params["variant"] != "standard":
        cmd.append(f"--variant={params['variant']}")
    if params["packages"]:
        cmd.append("--include=" + ",".join(params["packages"]))
    if foreign:
        cmd.append("--foreign")
    return [*cmd, params["suite"], str(target), params["mirror"]]


def find_debootstrap() -> str:
    found = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if not found:
        raise forge.ActionFailed("debootstrap is not installed; fix: apt-get install -y debootstrap")
    return found


def check_emulation(platform: forge.Platform) -> bool:
    """True when ``platform`` needs the foreign + QEMU second stage; raises when QEMU is missing."""
    # Allow-listed crossing (issue 12): a host-run chroot is no executor action, so
    # forge_prepare_platform (which answers for executors) cannot serve it yet.
    from forge.plugins.qemu import ensure_emulation, runs_natively

    if runs_natively(platform):
        return False
    ensure_emulation(platform, "debootstrap {platform}")
    return True


def run_debootstrap(rc: forge.RunContext) -> forge.ActionResult:
    if os.geteuid() != 0:
        raise forge.ActionFailed("debootstrap needs root (it creates device nodes and chroots); "
                                 "run forge as root or build this base where you are root")
    platform = rc.platform
    foreign = check_emulation(platform)
    work = rc.tempdir()
    target = work / "rootfs"
    try:
        stream(rc, debootstrap_command(rc.params, platform, target, foreign), "debootstrap")
        if foreign:
            rc.log(f"second stage under QEMU ({platform.qemu_arch})")
            stream(rc, ["chroot", str(target), "/debootstrap/debootstrap", "--second-stage"],
                   "debootstrap --second-stage")
    finally:
        # debootstrap mounts /proc and /sys in the target; a mount left behind would be
        # walked by the tar and by the temp dir's removal.
        unmount_below(target)
    packages = count_installed(target)
    clean_rootfs(target)
    tarball = work / "rootfs.tar"
    stream(rc, ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--one-file-system",
                "-C", str(target), "-cf", str(tarball), "."], "tar")
    shutil.rmtree(target, ignore_errors=True)
    image = forge.oci.import_rootfs_tar(rc.cas, tarball, platform, epoch=rc.epoch)
    image = forge.with_config(image, env=DEFAULT_ENV, cmd=["bash"], platform=platform, epoch=rc.epoch)
    rc.log(f"{platform}: {packages} packages, image {image.digest}")
    return forge.image_result(rc, image, metadata={"suite": rc.params["suite"], "packages": packages})


def stream(rc: forge.RunContext, cmd: list[str], what: str) -> None:
    """Run ``cmd``, every output line to the action log; a failure quotes the last lines."""
    rc.log("$ " + " ".join(cmd))
    tail: deque[str] = deque(maxlen=12)
    env = {**os.environ, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace", env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            rc.log(line)
            tail.append(line.rstrip())
            if rc.cancelled.is_set():
                proc.terminate()
        code = proc.wait()
    if rc.cancelled.is_set():
        raise forge.ActionFailed(f"{what}: cancelled")
    if code != 0:
        last = "\n    ".join(tail)
        raise forge.ActionFailed(f"{what} exited {code}; last output:\n    {last}")


def unmount_below(target: Path) -> None:
    """Lazily unmount every mount point at or below ``target``, deepest first."""
    prefix = str(target.resolve()) if target.exists() else str(target)
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) > 1:
            point = fields[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def count_installed(target: Path) -> int:
    status = target / "var/lib/dpkg/status"
    if not status.is_file():
        return 0
    return sum(1 for line in status.read_text(errors="replace").splitlines()
               if line == "Status: install ok installed")


def clean_rootfs(target: Path) -> None:
    """Empty caches, logs and runtime directories; remove host-specific files."""

    def remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()

    for rel in EMPTY_ALL:
        directory = target / rel
        if directory.is_dir() and not directory.is_symlink():
            for child in directory.iterdir():
                remove(child)
    for rel in EMPTY_FILES:
        directory = target / rel
        if directory.is_dir() and not directory.is_symlink():
            for dirpath, _dirs, files in os.walk(directory):
                for name in files:
                    os.unlink(os.path.join(dirpath, name))
    for rel in REMOVE:
        remove(target / rel)
    # apt expects its list and archive skeleton (apt-get update in a later step)
    for rel in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
        (target / rel).mkdir(parents=True, exist_ok=True)
