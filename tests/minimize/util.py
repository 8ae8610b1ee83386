"""Synthetic images for the minimize tests: hand-made x86-64 ELF files (no compiler, so
the bytes, and therefore the digests, are the same on every machine) in rootfs tarballs."""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

from tests.elf.util import make_elf

EM_X86_64 = 62
INTERP = "/lib64/ld-linux-x86-64.so.2"
MULTIARCH = "lib/x86_64-linux-gnu"


def elf(*, needed: tuple[str, ...] = (), soname: str | None = None, program: bool = False,
        tag: bytes = b"") -> bytes:
    """An x86-64 ELF: a program (ET_EXEC with PT_INTERP) or a library; ``tag`` makes two
    otherwise equal files differ."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f"
        make_elf(path, EM_X86_64, etype=2 if program else 3, needed=needed, soname=soname,
                 interp=INTERP if program else None, extra=tag)
        return path.read_bytes()


LIBC = elf(soname="libc.so.6", needed=("ld-linux-x86-64.so.2",))
LOADER = elf(soname="ld-linux-x86-64.so.2")


def build_tree() -> dict[str, bytes | str | None]:
    """The build image: ``bytes`` are files, ``str`` symlink targets, None directories.

    /usr/local/bin/prog needs libmine.so.1 (/usr/local/lib, by LD_LIBRARY_PATH), libz.so.1
    (a link in the multiarch directory), libvendor.so.2 (/opt/vendor/lib, by ld.so.conf)
    and libc.so.6; libmine needs libz; the plugin /opt/plugins/libplug.so needs libextra.
    """
    return {
        "bin/": None, "bin/sh": b"#!busybox\n",
        "etc/": None, "etc/ld.so.conf": b"include /etc/ld.so.conf.d/*.conf\n",
        "etc/ld.so.conf.d/": None,
        "etc/ld.so.conf.d/vendor.conf": b"/opt/vendor/lib\n",
        "etc/ssl/": None, "etc/ssl/certs/": None, "etc/ssl/certs/ca.pem": b"-----CERT-----\n",
        "lib/": None, f"{MULTIARCH}/": None,
        f"{MULTIARCH}/ld-linux-x86-64.so.2": LOADER,
        f"{MULTIARCH}/libc.so.6": LIBC,
        f"{MULTIARCH}/libz.so.1.2.13": elf(soname="libz.so.1", needed=("libc.so.6",)),
        f"{MULTIARCH}/libz.so.1": "libz.so.1.2.13",
        f"{MULTIARCH}/libm.so.6": elf(soname="libm.so.6", needed=("libc.so.6",)),
        "lib64/": None, "lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "usr/": None, "usr/lib/": None, "usr/lib/x86_64-linux-gnu/": None,
        "usr/lib/x86_64-linux-gnu/libextra.so.1": elf(soname="libextra.so.1",
                                                      needed=("libc.so.6",)),
        "usr/bin/": None,
        "usr/bin/python3": "python3.11",
        "usr/bin/python3.11": elf(program=True, needed=("libm.so.6", "libc.so.6")),
        "usr/lib/python3.11/": None, "usr/lib/python3.11/os.py": b"import sys\n",
        "usr/local/": None, "usr/local/bin/": None,
        "usr/local/bin/prog": elf(program=True, needed=("libmine.so.1", "libz.so.1",
                                                        "libvendor.so.2", "libc.so.6")),
        "usr/local/bin/run.sh": b"#!/bin/sh\nexec prog\n",
        "usr/local/lib/": None,
        "usr/local/lib/libmine.so.1.0.0": elf(soname="libmine.so.1",
                                              needed=("libz.so.1", "libc.so.6")),
        "usr/local/lib/libmine.so.1": "libmine.so.1.0.0",
        "usr/local/lib/libmine.so": "libmine.so.1",
        "usr/local/lib/libmine.a": b"!<arch>\n",
        "usr/local/include/": None, "usr/local/include/mine.h": b"int mine(void);\n",
        "opt/": None, "opt/vendor/": None, "opt/vendor/lib/": None,
        "opt/vendor/lib/libvendor.so.2": elf(soname="libvendor.so.2", needed=("libc.so.6",)),
        "opt/plugins/": None,
        "opt/plugins/libplug.so": elf(soname="libplug.so", needed=("libextra.so.1",)),
    }


def prod_tree() -> dict[str, bytes | str | None]:
    """The production base: the same libc and loader (left out when deduplicating), an
    older libz (kept)."""
    return {
        "bin/": None, "bin/sh": b"#!busybox\n",
        "lib/": None, f"{MULTIARCH}/": None,
        f"{MULTIARCH}/ld-linux-x86-64.so.2": LOADER,
        f"{MULTIARCH}/libc.so.6": LIBC,
        f"{MULTIARCH}/libz.so.1": "libz.so.1.2.11",
        f"{MULTIARCH}/libz.so.1.2.11": elf(soname="libz.so.1", needed=("libc.so.6",),
                                           tag=b"1.2.11"),
        "lib64/": None, "lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    }


def rootfs_tar(tree: dict[str, bytes | str | None]) -> bytes:
    """A rootfs tarball of ``tree`` (mtime 0, root-owned)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content in tree.items():
            info = tarfile.TarInfo(name.rstrip("/"))
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, content, 0o777
                tf.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o755 if content.startswith((b"\x7fELF", b"#!")) else 0o644
                tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def write_tree(root: Path, tree: dict[str, bytes | str | None]) -> Path:
    """``tree`` unpacked under ``root`` (for DirectoryRootFS)."""
    for name, content in tree.items():
        path = root / name.rstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif isinstance(content, str):
            path.symlink_to(content)
        else:
            path.write_bytes(content)
    return root


def layer_members(path: Path) -> dict[str, str]:
    """``name -> "dir" | "file" | "-> target"`` of a (gzip) layer blob."""
    out = {}
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            out[m.name] = "dir" if m.isdir() else f"-> {m.linkname}" if m.issym() else "file"
    return out
