"""Fixtures for the static-ldd tests.

``arm64_root`` is a Debian bookworm arm64 root filesystem unpacked from packages (glibc,
coreutils and the libraries they need), merged-/usr like a real Debian image, with an
``ld.so.cache`` built by its own ldconfig under QEMU. It is built once and kept in
``$FORGE_TESTDATA/arm64-root`` (default /var/cache/forge-testdata). If the packages
cannot be downloaded the tests that need it skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.elf.util import in_root
from tests.services import testdata_dir, unavailable

ARM64_PACKAGES = (
    "libc6", "libc-bin", "libgcc-s1", "libstdc++6", "gcc-12-base", "zlib1g", "coreutils",
    "libselinux1", "libpcre2-8-0", "libacl1", "libattr1", "libgmp10", "libssl3",
    "libzstd1", "liblzma5", "libbz2-1.0", "libcrypt1", "libtinfo6", "bash", "grep", "sed",
    "tar", "findutils",
)
ARM64_QEMU = "/.forge/qemu-aarch64-static"  # inside the root
ARM64_LOADER = "/lib/ld-linux-aarch64.so.1"
HOST_ELF_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu")


_unavailable = unavailable


def _run(*cmd: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def _merge_usr(root: Path) -> None:
    """Move /bin, /sbin and /lib into /usr and leave relative symlinks, as Debian's
    merged-/usr layout (and every current Debian image) has it."""

    def move(src: Path, dst: Path) -> None:
        if src.is_dir() and not src.is_symlink() and dst.is_dir():
            for child in src.iterdir():
                move(child, dst / child.name)
            src.rmdir()
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.rename(src, dst)

    for name in ("bin", "sbin", "lib"):
        top = root / name
        if top.is_dir() and not top.is_symlink():
            move(top, root / "usr" / name)
        top.symlink_to(f"usr/{name}")


def _build_arm64_root(dest: Path) -> None:
    if "arm64" not in _run("dpkg", "--print-foreign-architectures").stdout.split():
        _run("dpkg", "--add-architecture", "arm64")
        _run("apt-get", "update", "-qq")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".arm64-root-", dir=dest.parent))
    try:
        work.chmod(0o777)  # apt-get download writes as _apt
        wanted = [f"{p}:arm64" for p in ARM64_PACKAGES]
        got = _run("apt-get", "download", "-qq", *wanted, cwd=str(work))
        if got.returncode != 0:
            _run("apt-get", "update", "-qq")
            got = _run("apt-get", "download", "-qq", *wanted, cwd=str(work))
        if got.returncode != 0:
            _unavailable(f"cannot download arm64 packages: {got.stderr.strip()[-500:]}")
        root = work / "root"
        for deb in sorted(work.glob("*.deb")):
            unpacked = _run("dpkg-deb", "-x", str(deb), str(root))
            assert unpacked.returncode == 0, unpacked.stderr
        _merge_usr(root)
        qemu = shutil.which("qemu-aarch64-static")
        if qemu is None:
            _unavailable("qemu-aarch64-static is missing (apt-get install qemu-user-static)")
        (root / ARM64_QEMU.lstrip("/")).parent.mkdir()
        shutil.copy2(qemu, root / ARM64_QEMU.lstrip("/"))
        cache = _run("chroot", str(root), ARM64_QEMU, "/sbin/ldconfig")
        assert cache.returncode == 0, f"ldconfig under qemu: {cache.stderr}"
        (root / ".forge/packages").write_text("\n".join(ARM64_PACKAGES) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.rename(root, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def arm64_root() -> Path:
    """The arm64 Debian root (built if missing or made from another package list)."""
    dest = testdata_dir() / "arm64-root"
    stamp = dest / ".forge/packages"
    if not (stamp.is_file() and stamp.read_text().split() == list(ARM64_PACKAGES)):
        _build_arm64_root(dest)
    return dest


def arm64_list(root: Path, path: str) -> subprocess.CompletedProcess[str]:
    """The arm64 loader's list of what ``path`` loads (as ``ldd`` asks it: the
    ``LD_TRACE_LOADED_OBJECTS`` environment variable, which QEMU passes to the guest),
    run under QEMU chrooted into ``root``."""
    return subprocess.run([ARM64_QEMU, ARM64_LOADER, path], preexec_fn=in_root(root),
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin", "LD_TRACE_LOADED_OBJECTS": "1"})


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def elf_files(root: str, dirs: tuple[str, ...]) -> list[str]:
    """Regular ELF files directly in ``dirs`` of ``root`` (symlinks are skipped: their
    targets are listed if they are in these directories), as paths inside ``root``."""
    found = []
    for d in dirs:
        host = os.path.join(root, d.lstrip("/"))
        with os.scandir(host) as it:
            for e in it:
                if e.is_file(follow_symlinks=False) and is_elf(e.path):
                    found.append(f"{d}/{e.name}")
    return sorted(found)


@pytest.fixture(scope="session")
def host_elf_files() -> list[str]:
    return elf_files("/", HOST_ELF_DIRS)
