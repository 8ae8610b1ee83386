"""QEMU user emulation: make a foreign platform runnable before the first action that
must *execute* on it (import, layer, image assembly, index and minimize never need it).

Checks binfmt_misc: mounted, a ``qemu-<arch>`` entry present and enabled, with the ``F``
flag (the interpreter is opened at registration, so it works inside containers, whose
filesystem lacks it), and the interpreter file present. As root with qemu-user-static
installed it fixes what is missing; otherwise it stops with the exact commands.
``[plugins.qemu] binfmt_dir`` (or ``FORGE_BINFMT_DIR``) points the check elsewhere
(tests use an empty directory to play "no emulation").
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import forge

DEFAULT_BINFMT = "/proc/sys/fs/binfmt_misc"
_config: dict[str, Any] = {}


@dataclass
class BinfmtStatus:
    arch: str
    ok: bool
    detail: str
    fix: str = ""


def binfmt_dir() -> Path:
    return Path(os.environ.get("FORGE_BINFMT_DIR") or _config.get("binfmt_dir") or DEFAULT_BINFMT)


def runs_natively(platform: forge.Platform, host: forge.Platform | None = None) -> bool:
    host = host or forge.host_platform()
    if platform.architecture == host.architecture and platform.os == host.os:
        return True
    return host.architecture == "amd64" and platform.architecture == "386"


def fix_commands(qemu_arch: str, directory: Path) -> str:
    return "\n".join([
        "    apt-get install -y qemu-user-static binfmt-support",
        f"    mountpoint -q {directory} || mount -t binfmt_misc binfmt_misc {directory}",
        f"    update-binfmts --enable qemu-{qemu_arch}",
        "  (or run scripts/services.sh, which does all of this)",
    ])


def check(platform: forge.Platform, directory: Path | None = None) -> BinfmtStatus:
    """The binfmt state for ``platform``, without changing anything."""
    directory = directory or binfmt_dir()
    arch = platform.qemu_arch
    fix = fix_commands(arch, directory)
    if not (directory / "status").exists():
        return BinfmtStatus(arch, False, f"binfmt_misc is not mounted at {directory}", fix)
    entry = directory / f"qemu-{arch}"
    if not entry.exists():
        return BinfmtStatus(arch, False, f"no qemu-{arch} entry in {directory}", fix)
    fields = dict(
        (line.split(" ", 1) + [""])[:2] for line in entry.read_text().splitlines() if line
    )
    if "enabled" not in fields:
        return BinfmtStatus(arch, False, f"qemu-{arch} is registered but disabled", fix)
    interpreter = fields.get("interpreter", "").strip()
    flags = fields.get("flags:", fields.get("flags", "")).strip()
    if "F" not in flags:
        return BinfmtStatus(arch, False, f"qemu-{arch} lacks the F flag (flags: {flags or 'none'}), "
                            "so it cannot work inside containers", fix)
    if interpreter and not Path(interpreter).exists():
        return BinfmtStatus(arch, False, f"qemu-{arch} interpreter {interpreter} is missing", fix)
    return BinfmtStatus(arch, True, f"qemu-{arch} enabled (flags {flags}, {interpreter})")


def try_register(platform: forge.Platform, directory: Path) -> None:
    """As root with qemu-user-static installed: mount binfmt_misc and enable the entry."""
    if os.geteuid() != 0 or directory != Path(DEFAULT_BINFMT):
        return
    if not (directory / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(directory)],
                       check=False, capture_output=True)
    if shutil.which("update-binfmts") and Path(f"/usr/bin/qemu-{platform.qemu_arch}-static").exists():
        subprocess.run(["update-binfmts", "--enable", f"qemu-{platform.qemu_arch}"],
                       check=False, capture_output=True)


def ensure_emulation(platform: forge.Platform, doing: str = "run {platform} actions") -> BinfmtStatus:
    """Check binfmt for ``platform``, register it when we can, else raise with the fix."""
    directory = binfmt_dir()
    status = check(platform, directory)
    if not status.ok:
        try_register(platform, directory)
        status = check(platform, directory)
    if not status.ok:
        raise forge.PlatformError(
            f"cannot {doing.format(platform=platform)} on this {forge.host_platform()} host: "
            f"{status.detail}.\n  Fix:\n{status.fix}"
        )
    return status


@forge.hookimpl
def forge_configure(workspace: Any, config: dict[str, Any]) -> None:
    unknown = set(config) - {"binfmt_dir"}
    if unknown:
        key = sorted(unknown)[0]
        raise forge.ConfigError(f"{workspace.where('plugins', 'qemu', key)}: [plugins.qemu] unknown key "
                                f"'{key}'; valid keys: binfmt_dir")
    if "binfmt_dir" in config and not isinstance(config["binfmt_dir"], str):
        raise forge.ConfigError(f"{workspace.where('plugins', 'qemu', 'binfmt_dir')}: [plugins.qemu] "
                                f"binfmt_dir should be a string (a directory path), got "
                                f"{type(config['binfmt_dir']).__name__}")
    _config.clear()
    _config.update(config)


@forge.hookimpl
def forge_prepare_platform(platform: forge.Platform, executor: str, workspace: Any) -> str | None:
    """native, a native engine of the workspace, or QEMU binfmt emulation (registered
    when it can be); None when emulation is not available (the reason is given by
    forge_platform_unavailable)."""
    if runs_natively(platform):
        return "native"
    hosts = workspace.section("executors").get(executor, {}).get("hosts", {})
    if any(forge.parse_platform(k) == platform for k in hosts):
        return f"native {platform} engine"
    try:
        return f"QEMU emulation ({ensure_emulation(platform).detail})"
    except forge.PlatformError:
        return None


@forge.hookimpl
def forge_platform_unavailable(platform: forge.Platform, executor: str, workspace: Any) -> str | None:
    """Why emulation of ``platform`` is not available, with the exact fix."""
    try:
        ensure_emulation(platform)
    except forge.PlatformError as exc:
        return str(exc)
    return None


@forge.hookimpl
def forge_doctor_checks(session: Any) -> list[Any]:
    """Per platform: native, a native engine, or binfmt emulation (FAIL for a configured
    platform that cannot run, a warning for the others)."""
    ws = session.workspace
    host = forge.host_platform()
    platforms = [forge.parse_platform(p) for p in ws.platforms] or [host]
    for extra in ("linux/arm64", "linux/arm/v7"):
        if forge.parse_platform(extra) not in platforms:
            platforms.append(forge.parse_platform(extra))
    configured = {forge.parse_platform(p) for p in ws.platforms}
    native_hosts = {}
    for table in ws.section("executors").values():
        for key, url in (table.get("hosts", {}) if isinstance(table, dict) else {}).items():
            native_hosts.setdefault(forge.parse_platform(key), url)
    checks = []
    for platform in platforms:
        needed = platform in configured
        if runs_natively(platform, host):
            checks.append(forge.DoctorCheck(f"platform {platform}", True, "native", needed))
        elif platform in native_hosts:
            checks.append(forge.DoctorCheck(f"platform {platform}", True,
                                            f"native engine {native_hosts[platform]}", needed))
        else:
            status = check(platform)
            detail = status.detail if status.ok else f"{status.detail}\n{status.fix}"
            checks.append(forge.DoctorCheck(f"binfmt {platform}", status.ok, detail, needed))
    return checks
