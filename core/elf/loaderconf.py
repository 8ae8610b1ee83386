"""The dynamic loader's configuration, read from the image instead of a running ld.so.

* **Per-architecture facts** (``ArchSpec``): the default interpreter, the Debian
  multiarch triplet and ``$PLATFORM``.
* **System directories**: glibc compiles its default search path into ld.so
  (``SYSTEM_DIRS``, e.g. ``/lib/x86_64-linux-gnu/ /usr/lib/x86_64-linux-gnu/ /lib/
  /usr/lib/`` on Debian, ``/lib64/ /usr/lib64/`` on Fedora; ``ld.so --help`` prints it).
  ``system_dirs`` reads that string out of the image's own interpreter, so the answer is
  right for any distribution; only without a readable glibc interpreter does it fall back
  to the Debian layout (when the image has the multiarch directory) or upstream's.
* **ld.so.conf**: glibc never reads it; ldconfig compiles it into ``/etc/ld.so.cache``,
  which the loader consults after ``DT_RUNPATH`` and before the system directories. An
  image's cache may be stale (files added after the last ldconfig) or absent, and a
  minimized image will get a fresh one, so forge emulates the cache by searching the
  ld.so.conf directories in file order — which is the cache's answer for every library
  whose soname link ldconfig made, the normal case (the tests check it against caches
  written by ldconfig, duplicates across directories included). The price: an image
  that never ran ldconfig finds nothing through ld.so.conf at run time, while forge
  does; Debian runs it from libc-bin's trigger whenever a library package is installed.
* **Dynamic string tokens** (``$ORIGIN``, ``$LIB``, ``$PLATFORM``, braced or not), as
  glibc's ``_dl_dst_substitute`` expands them in RPATH, RUNPATH, LD_LIBRARY_PATH and
  DT_NEEDED.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from forge.core.elf.rootfs import RootFS, RootFSError


@dataclass(frozen=True)
class ArchSpec:
    """What differs between architectures for the loader."""

    interp: str  # the PT_INTERP of executables, used for libraries that have none
    triplet: str  # Debian multiarch directory name
    platform: str  # $PLATFORM: the kernel's AT_PLATFORM for a baseline CPU
    lib64: tuple[str, ...] = ("/lib64", "/usr/lib64")  # upstream glibc's system dirs


# (e_machine, ELF class, ARM float ABI) -> spec. x86-64 glibc picks $PLATFORM from the CPU
# ("haswell", "xeon_phi"); a static tool cannot know the CPU, so the baseline name is used.
_ARCHES: dict[tuple[str, int, str], ArchSpec] = {
    ("EM_X86_64", 64, ""): ArchSpec("/lib64/ld-linux-x86-64.so.2", "x86_64-linux-gnu", "x86_64"),
    ("EM_X86_64", 32, ""): ArchSpec("/libx32/ld-linux-x32.so.2", "x86_64-linux-gnux32",
                                    "x86_64", ("/libx32", "/usr/libx32")),
    ("EM_386", 32, ""): ArchSpec("/lib/ld-linux.so.2", "i386-linux-gnu", "i686",
                                 ("/lib", "/usr/lib")),
    ("EM_AARCH64", 64, ""): ArchSpec("/lib/ld-linux-aarch64.so.1", "aarch64-linux-gnu",
                                     "aarch64"),
    ("EM_ARM", 32, "hard"): ArchSpec("/lib/ld-linux-armhf.so.3", "arm-linux-gnueabihf", "v7l",
                                     ("/lib", "/usr/lib")),
    ("EM_ARM", 32, "soft"): ArchSpec("/lib/ld-linux.so.3", "arm-linux-gnueabi", "v5l",
                                     ("/lib", "/usr/lib")),
    ("EM_PPC64", 64, ""): ArchSpec("/lib64/ld64.so.2", "powerpc64le-linux-gnu", "power8"),
    ("EM_S390", 64, ""): ArchSpec("/lib/ld64.so.1", "s390x-linux-gnu", "z13"),
    ("EM_RISCV", 64, ""): ArchSpec("/lib/ld-linux-riscv64-lp64d.so.1", "riscv64-linux-gnu",
                                   "riscv64", ("/lib64/lp64d", "/usr/lib64/lp64d")),
}


def arch_spec(machine: str, elfclass: int, arm_float: str = "") -> ArchSpec | None:
    """The spec for an ELF's machine and class; ARM without float flags counts as hard."""
    if machine == "EM_ARM":
        arm_float = arm_float or "hard"
    return _ARCHES.get((machine, elfclass, arm_float if machine == "EM_ARM" else ""))


_SYSTEM_DIRS = re.compile(rb"\x00((?:/[A-Za-z0-9._+-]+(?:/[A-Za-z0-9._+-]+)*/\x00){2,})")


def system_dirs(rootfs: RootFS, interp: str | None, spec: ArchSpec | None) -> tuple[str, ...]:
    """The loader's default directories, read from the interpreter's ``SYSTEM_DIRS``."""
    if interp:
        try:
            data = rootfs.read_bytes(interp)
        except RootFSError:
            data = b""
        for match in _SYSTEM_DIRS.finditer(data):
            dirs = [d.decode().rstrip("/") for d in match.group(1).split(b"\0") if d]
            if all(d.startswith(("/lib", "/usr/")) for d in dirs):
                return tuple(dirs)
    if spec is None:
        return ("/lib", "/usr/lib")
    multiarch = (f"/lib/{spec.triplet}", f"/usr/lib/{spec.triplet}")
    if any(rootfs.is_dir(d) for d in multiarch):
        return (*multiarch, "/lib", "/usr/lib")
    return spec.lib64


def read_ld_so_conf(rootfs: RootFS, path: str = "/etc/ld.so.conf") -> tuple[str, ...]:
    """Directories listed by ``path`` and the files it includes, in ldconfig's order.

    As ldconfig parses it: ``#`` starts a comment; ``include PATTERN...`` parses every
    file matching each glob (relative patterns are relative to the including file's
    directory, matches in sorted order); ``hwcap`` lines are ignored; a ``dir=TYPE``
    suffix is dropped; trailing slashes are removed; a directory listed twice counts
    once, at its first place. Missing files are ignored, include cycles are cut.
    """
    dirs: dict[str, None] = {}

    def parse(conf: str, stack: tuple[str, ...]) -> None:
        if conf in stack or len(stack) > 16:
            return
        try:
            text = rootfs.read_bytes(conf).decode("utf-8", "surrogateescape")
        except RootFSError:
            return
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            keyword, _, rest = line.partition(" ") if " " in line else line.partition("\t")
            if keyword == "include" and rest.strip():
                for pattern in rest.split():
                    if not pattern.startswith("/"):
                        pattern = posixpath.join(posixpath.dirname(conf), pattern)
                    for match in rootfs.glob(pattern):
                        parse(match, (*stack, conf))
            elif keyword.lower() == "hwcap" and rest.strip():
                continue
            else:
                directory = line.split("=", 1)[0].strip()
                directory = directory.rstrip("/") or "/"
                dirs.setdefault(directory, None)

    parse(path, ())
    return tuple(dirs)


_DST = re.compile(r"\$(?:\{(ORIGIN|PLATFORM|LIB)\}|(ORIGIN|PLATFORM|LIB)(?![A-Za-z0-9_]))")


def expand_dst(text: str, *, origin: str | None, lib: str, platform: str) -> str | None:
    """Substitute ``$ORIGIN``/``$LIB``/``$PLATFORM`` (or ``${...}``) in ``text``.

    Returns None when ``$ORIGIN`` is needed but unknown: glibc then drops that search
    path element (or fails that DT_NEEDED). Other ``$NAME`` sequences stay verbatim.
    """
    if "$" not in text:
        return text
    values = {"ORIGIN": origin, "LIB": lib, "PLATFORM": platform}
    unknown = False

    def sub(m: re.Match[str]) -> str:
        nonlocal unknown
        value = values[m.group(1) or m.group(2)]
        if value is None:
            unknown = True
            return ""
        return value

    result = _DST.sub(sub, text)
    return None if unknown else result


def split_search_path(value: str, separators: str = ":") -> list[str]:
    """Split RPATH/RUNPATH (``:``) or LD_LIBRARY_PATH (``:;``) into elements; an empty
    element is the current directory, as in glibc's ``fillin_rpath``."""
    return re.split(f"[{re.escape(separators)}]", value) if value else []


def normalize_dir(directory: str) -> str:
    """Drop trailing slashes (keeping ``/``); an empty element means the current
    directory, which for a static tool is ``/``."""
    return directory.rstrip("/") or ("/" if directory.startswith("/") else ".")
