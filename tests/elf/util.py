"""Helpers for the ELF tests: build tiny root filesystems with gcc, and ask the real
loader (``ld.so --list`` in a chroot) what it would map, as an oracle."""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import zstandard

HOST_LOADER = "/lib64/ld-linux-x86-64.so.2"
MULTIARCH = "/usr/lib/x86_64-linux-gnu"
_LIST_LINE = re.compile(r"^\s*(\S*)(?: => (\S+|not found))?(?: \(0x[0-9a-f]+\))?\s*$")


def parse_ld_list(text: str) -> tuple[set[str], set[str]]:
    """(opened paths, names not found) from ``ldd``/``ld.so --list`` output; the vDSO
    (a name without ``/`` and no ``=>``) is left out."""
    paths: set[str] = set()
    missing: set[str] = set()
    for line in text.splitlines():
        m = _LIST_LINE.match(line)
        if not m or not m.group(0).strip():
            continue
        name, target = m.group(1), m.group(2)
        if target == "not found":
            missing.add(name)
        elif target:
            paths.add(target)
        elif "/" in name:
            paths.add(name)
    return paths, missing


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without loader variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    env.update(extra)
    return env


def gcc(*args: str | os.PathLike[str]) -> None:
    subprocess.run(["gcc", "-O0", *map(str, args)], check=True, capture_output=True)


def make_root(root: Path) -> Path:
    """A Debian-like merged-/usr root holding the host's libc and loader (so programs
    built here really run in it), with the same symlinks as Debian: ``/lib -> usr/lib``
    and an *absolute* ``/usr/lib64/ld-linux-x86-64.so.2`` link."""
    lib = root / MULTIARCH.lstrip("/")
    lib.mkdir(parents=True)
    for name in ("libc.so.6", "ld-linux-x86-64.so.2"):
        shutil.copy2(os.path.realpath(f"{MULTIARCH}/{name}"), lib / name)
    (root / "usr/lib64").mkdir()
    (root / "usr/lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/"
                                                         "ld-linux-x86-64.so.2")
    for d in ("lib", "lib64", "bin"):
        (root / "usr" / d).mkdir(exist_ok=True)
        (root / d).symlink_to(f"usr/{d}")
    (root / "etc").mkdir()
    return root


def shared_lib(root: Path, path: str, soname: str, *, value: int = 1,
               needs: tuple[str, ...] = (), link_dirs: tuple[str, ...] = (),
               flags: tuple[str, ...] = ()) -> Path:
    """Build ``path`` (in the root) as a library with ``soname`` exporting ``f_<stem>()``
    (and needing ``needs``, found at link time in ``link_dirs``)."""
    out = root / path.lstrip("/")
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    stem = os.path.basename(soname).split(".so")[0].removeprefix("lib")
    src.write_text(f"int f_{stem}(void) {{ return {value}; }}\n")
    libs = [f"-l:{n}" for n in needs]
    gcc("-shared", "-fPIC", "-o", out, src, f"-Wl,-soname,{soname}", "-Wl,--no-as-needed",
        *(f"-L{root}{d}" for d in link_dirs), *libs, *flags)
    src.unlink()
    return out


def program(root: Path, path: str, needs: tuple[str, ...], link_dirs: tuple[str, ...],
            *flags: str) -> Path:
    """Build ``path`` (in the root) as an executable linked against ``needs``."""
    out = root / path.lstrip("/")
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    src.write_text("int main(void) { return 0; }\n")
    gcc("-o", out, src, "-Wl,--no-as-needed", *(f"-L{root}{d}" for d in link_dirs),
        *(f"-l:{n}" for n in needs), *flags)
    src.unlink()
    return out


def retag(path: Path, old: int, new: int) -> None:
    """Rewrite the first dynamic tag ``old`` to ``new`` in a 64-bit little-endian ELF
    (how a test gets both DT_RPATH and DT_RUNPATH: GNU ld never emits both)."""
    data = bytearray(path.read_bytes())
    phoff, phentsize, phnum = struct.unpack_from("<Q", data, 32)[0], *struct.unpack_from(
        "<HH", data, 54)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data,
                                                                 phoff + i * phentsize)
        if p_type == 2:  # PT_DYNAMIC
            for off in range(p_offset, p_offset + p_filesz, 16):
                if struct.unpack_from("<q", data, off)[0] == old:
                    struct.pack_into("<q", data, off, new)
                    path.write_bytes(bytes(data))
                    return
    raise AssertionError(f"{path}: no dynamic tag {old}")


def set_machine(path: Path, machine: int) -> None:
    """Patch ``e_machine`` (a library of another architecture, as far as ld.so sees)."""
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 18, machine)
    path.write_bytes(bytes(data))


def in_root(root: Path) -> Callable[[], None]:
    """A ``preexec_fn`` that chroots the child into ``root``: unlike running ``chroot``,
    the environment then reaches only the program inside (``LD_TRACE_LOADED_OBJECTS``
    given to the host's ``chroot`` binary would trace that binary instead)."""

    def enter() -> None:
        os.chroot(root)
        os.chdir("/")

    return enter


def loader_list(root: Path, program_path: str, **env: str) -> tuple[set[str], set[str]]:
    """What the real glibc loader maps for ``program_path`` inside ``root``, asked the way
    ``ldd`` asks (``ld.so --list`` stops at the first missing library instead)."""
    proc = subprocess.run([HOST_LOADER, program_path], preexec_fn=in_root(root),
                          capture_output=True, text=True, timeout=60,
                          env=clean_env(LD_TRACE_LOADED_OBJECTS="1", **env))
    if proc.returncode != 0:
        raise AssertionError(f"ld.so {program_path}: {proc.returncode} {proc.stderr}")
    return parse_ld_list(proc.stdout)


def can_chroot() -> bool:
    return os.geteuid() == 0 and shutil.which("chroot") is not None


def ldconfig(root: Path) -> None:
    """Build ``root``'s ld.so.cache from its ld.so.conf, without touching links (-X)."""
    subprocess.run(["ldconfig", "-X", "-r", str(root)], check=True, capture_output=True)


def tar_layer(path: Path, files: dict[str, bytes | str | None], *, compress: str = "") -> Path:
    """Write an OCI layer: ``name -> bytes`` (file), ``str`` (symlink target),
    ``None`` (directory); names like ``dir/.wh.x`` are whiteouts."""
    with tarfile.open(path, "w") as tf:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tf.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tf.addfile(info, io.BytesIO(content))
    return compress_file(path, compress)


def compress_file(path: Path, compress: str) -> Path:
    if compress == "gzip":
        out = path.with_suffix(".tar.gz")
        out.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    elif compress == "zstd":
        out = path.with_suffix(".tar.zst")
        out.write_bytes(zstandard.ZstdCompressor().compress(path.read_bytes()))
    else:
        return path
    path.unlink()
    return out


def tar_tree(root: Path, out: Path, *, compress: str = "") -> Path:
    """A layer holding the whole tree ``root`` (links stored as links)."""
    with tarfile.open(out, "w") as tf:
        for entry in sorted(root.rglob("*")):
            tf.add(entry, arcname=str(entry.relative_to(root)), recursive=False)
    return compress_file(out, compress)


def make_elf(path: Path, machine: int, *, elfclass: int = 64, little: bool = True,
             flags: int = 0, etype: int = 3, interp: str | None = None,
             needed: tuple[str, ...] = (), soname: str | None = None,
             rpath: str | None = None, runpath: str | None = None,
             extra: bytes = b"") -> Path:
    """Write a minimal ELF file of any machine: the header, PT_LOAD/PT_INTERP/PT_DYNAMIC
    and a dynamic section with the given tags — all the loader reads, and enough for
    tests of architectures no compiler here targets. ``extra`` is appended as data."""
    end = "<" if little else ">"
    is64 = elfclass == 64
    ehsize, phentsize, dynsize = (64, 56, 16) if is64 else (52, 32, 8)
    strtab = bytearray(b"\0")

    def string(s: str) -> int:
        strtab.extend(s.encode() + b"\0")
        return len(strtab) - len(s) - 1

    tags = [(1, string(n)) for n in needed]
    for tag, value in ((14, soname), (15, rpath), (29, runpath)):
        if value is not None:
            tags.append((tag, string(value)))
    phnum = 2 + (interp is not None)
    interp_at = ehsize + phnum * phentsize
    interp_bytes = (interp.encode() + b"\0") if interp is not None else b""
    str_at = interp_at + len(interp_bytes)
    dyn_at = str_at + len(strtab)
    tags += [(5, str_at), (10, len(strtab)), (0, 0)]
    dyn = b"".join(struct.pack(end + ("qQ" if is64 else "iI"), t, v) for t, v in tags)
    total = dyn_at + len(dyn) + len(extra)

    def phdr(p_type: int, offset: int, size: int) -> bytes:
        if is64:
            return struct.pack(end + "IIQQQQQQ", p_type, 4, offset, offset, offset, size, size, 8)
        return struct.pack(end + "IIIIIIII", p_type, offset, offset, offset, size, size, 4, 4)

    phdrs = phdr(1, 0, total) + phdr(2, dyn_at, len(dyn))
    if interp is not None:
        phdrs += phdr(3, interp_at, len(interp_bytes))
    ident = b"\x7fELF" + bytes([1 if not is64 else 2, 1 if little else 2, 1]) + bytes(9)
    word = "Q" if is64 else "I"
    header = ident + struct.pack(end + "HHI" + word * 3 + "IHHHHHH", etype, machine, 1, 0,
                                 ehsize, 0, flags, ehsize, phentsize, phnum, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + phdrs + interp_bytes + bytes(strtab) + dyn + extra)
    return path
