"""Platforms: ``os/arch[/variant]`` normalized so that every alias names one value.

The normalized form is the OCI one (``linux/arm64/v8``), because it is what goes in image
configs and index entries; ``Platform.key`` is what enters action keys, so ``aarch64`` and
``arm64`` give the same key. Debian and uname spellings (``aarch64``, ``armhf``,
``x86_64``) are what users type, so both directions are here.
"""

from __future__ import annotations

import platform as _host
from dataclasses import dataclass

from forge.core.errors import PlatformError, did_you_mean

# alias -> (architecture, variant) in OCI spelling
_ARCH_ALIASES: dict[str, tuple[str, str]] = {
    "amd64": ("amd64", ""),
    "x86_64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "arm64": ("arm64", "v8"),
    "aarch64": ("arm64", "v8"),
    "arm64/v8": ("arm64", "v8"),
    "armv7": ("arm", "v7"),
    "armv7l": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "arm/v7": ("arm", "v7"),
    "arm": ("arm", "v7"),
    "armv6": ("arm", "v6"),
    "arm/v6": ("arm", "v6"),
    "armel": ("arm", "v6"),
    "i386": ("386", ""),
    "386": ("386", ""),
    "i686": ("386", ""),
    "riscv64": ("riscv64", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
}

# OCI architecture/variant -> names other tools use for it
_UNAME = {"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7l", "386": "i686"}
_DEBIAN = {"amd64": "amd64", "arm64": "arm64", "arm": "armhf", "386": "i386"}
_QEMU = {"amd64": "x86_64", "arm64": "aarch64", "arm": "arm", "386": "i386"}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    @property
    def key(self) -> str:
        """The string that enters action keys."""
        return str(self)

    @property
    def short(self) -> str:
        """The name used in target names and args files (``amd64``, ``aarch64``, ``armv7``)."""
        return {"arm64": "aarch64", "arm": f"arm{self.variant}" if self.variant else "arm"}.get(
            self.architecture, self.architecture
        )

    @property
    def uname_machine(self) -> str:
        return _UNAME.get(self.architecture, self.architecture)

    @property
    def debian_arch(self) -> str:
        return _DEBIAN.get(self.architecture, self.architecture)

    @property
    def qemu_arch(self) -> str:
        return _QEMU.get(self.architecture, self.architecture)

    def oci(self) -> dict[str, str]:
        """The OCI ``platform`` object for index entries."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


def automatic_args(target: Platform, build: Platform | None = None) -> dict[str, str]:
    """BuildKit's automatic platform build args for ``target`` (and ``build``, the
    engine's platform, when known): TARGETPLATFORM, TARGETOS, TARGETARCH, TARGETVARIANT
    (BUILD… likewise). Spelled as buildx spells them: arm64's default variant v8 is left
    out (``linux/arm64``, an empty TARGETVARIANT), so a Dockerfile's
    ``[ "$TARGETPLATFORM" = "linux/arm64" ]`` holds on every builder."""
    out: dict[str, str] = {}
    for prefix, p in (("TARGET", target), ("BUILD", build)):
        if p is None:
            continue
        p = buildx_spelling(p)
        out.update({f"{prefix}PLATFORM": str(p), f"{prefix}OS": p.os,
                    f"{prefix}ARCH": p.architecture, f"{prefix}VARIANT": p.variant})
    return out


def buildx_spelling(platform: Platform) -> Platform:
    """The platform as buildx names it: ``linux/arm64``, not ``linux/arm64/v8``."""
    if platform.architecture == "arm64" and platform.variant == "v8":
        return Platform(platform.os, platform.architecture, "")
    return platform


def parse_platform(text: str) -> Platform:
    """Parse ``amd64``, ``linux/arm64``, ``linux/arm64/v8``, ``aarch64``, ``armhf`` …"""
    raw = text.strip().lower()
    os_name, rest = "linux", raw
    if raw.startswith("linux/"):
        rest = raw[len("linux/") :]
    elif "/" in raw and raw.split("/", 1)[0] not in _ARCH_ALIASES and not raw.startswith("arm"):
        os_name, rest = raw.split("/", 1)
    if rest in _ARCH_ALIASES:
        arch, variant = _ARCH_ALIASES[rest]
        return Platform(os_name, arch, variant)
    arch, _, variant = rest.partition("/")
    if arch in _ARCH_ALIASES:
        base_arch, default_variant = _ARCH_ALIASES[arch]
        if base_arch == "arm" and variant in ("v6", "v7"):
            return Platform(os_name, "arm", variant)
        if variant in ("", default_variant):
            return Platform(os_name, base_arch, default_variant)
    raise PlatformError(
        f"unknown platform {text!r}{did_you_mean(rest, _ARCH_ALIASES)}; "
        f"known: {', '.join(sorted(set(_ARCH_ALIASES)))}"
    )


def from_oci(architecture: str, os_name: str = "linux", variant: str = "") -> Platform:
    """The platform of an image config or index entry (fills arm64's implied v8)."""
    if architecture == "arm64" and not variant:
        variant = "v8"
    if architecture == "arm" and not variant:
        variant = "v7"
    return Platform(os_name or "linux", architecture, variant or "")


def host_platform() -> Platform:
    return parse_platform(_host.machine())
