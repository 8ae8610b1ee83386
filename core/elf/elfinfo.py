"""What the dynamic loader reads from an ELF file: class, machine, PT_INTERP and the
``DT_NEEDED``/``DT_RPATH``/``DT_RUNPATH``/``DT_SONAME``/``DT_FLAGS_1`` dynamic tags.

The loader reads these from the *program headers* (``PT_INTERP``, ``PT_DYNAMIC``, and the
``PT_LOAD`` that maps ``DT_STRTAB``), never from section headers, which ``strip`` may
remove; so does ``read_elf_info``.

Two readers return the same ``ElfInfo``:

* ``elf_info_from_elffile`` is the reference: pyelftools' ``ELFFile`` and its dynamic
  segment's ``iter_tags``. It costs 2–3 ms a file, most of it building pyelftools'
  ``construct`` parsers and scanning section headers.
* ``read_elf_info`` is what the resolver uses: the same fields unpacked with ``struct``
  using pyelftools' tag and machine tables, in about 50 µs a file — resolving a whole
  image must be many times faster than running ``ldd`` on it. It falls back to the
  reference for the rare layouts it does not handle (``PN_XNUM`` program headers, a
  string table outside every ``PT_LOAD``). A test checks both agree on every ELF file
  of the host.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_D_TAG, ENUM_E_MACHINE, ENUM_E_TYPE, ENUM_P_TYPE_BASE

_MACHINE_NAMES = {v: k for k, v in ENUM_E_MACHINE.items() if k != "_default_"}
_TYPE_NAMES = {v: k for k, v in ENUM_E_TYPE.items() if k != "_default_"}

DT_NULL = ENUM_D_TAG["DT_NULL"]
DT_NEEDED = ENUM_D_TAG["DT_NEEDED"]
DT_STRTAB = ENUM_D_TAG["DT_STRTAB"]
DT_STRSZ = ENUM_D_TAG["DT_STRSZ"]
DT_SONAME = ENUM_D_TAG["DT_SONAME"]
DT_RPATH = ENUM_D_TAG["DT_RPATH"]
DT_RUNPATH = ENUM_D_TAG["DT_RUNPATH"]
DT_FLAGS_1 = ENUM_D_TAG["DT_FLAGS_1"]
PT_LOAD = ENUM_P_TYPE_BASE["PT_LOAD"]
PT_DYNAMIC = ENUM_P_TYPE_BASE["PT_DYNAMIC"]
PT_INTERP = ENUM_P_TYPE_BASE["PT_INTERP"]
DF_1_NODEFLIB = 0x800
EF_ARM_EABIMASK = 0xFF000000
EF_ARM_EABI_VER5 = 0x05000000
EF_ARM_ABI_FLOAT_SOFT = 0x200
EF_ARM_ABI_FLOAT_HARD = 0x400
PN_XNUM = 0xFFFF


class _Fallback(Exception):
    """A layout the fast reader leaves to pyelftools."""


@dataclass(frozen=True)
class ElfInfo:
    """The loader-relevant facts of one ELF file.

    ``machine`` and ``type`` use pyelftools' names (``EM_X86_64``, ``ET_DYN``); ``rpath``
    and ``runpath`` are the raw strings, ``$ORIGIN`` and all; ``dynamic`` says there is a
    ``PT_DYNAMIC`` (a static executable has none and loads nothing).
    """

    elfclass: int
    little_endian: bool
    machine: str
    type: str
    flags: int = 0
    osabi: int = 0
    interp: str | None = None
    needed: tuple[str, ...] = ()
    rpath: str | None = None
    runpath: str | None = None
    soname: str | None = None
    flags_1: int = 0
    dynamic: bool = False

    @property
    def nodeflib(self) -> bool:
        """``-z nodefaultlib``: skip ld.so.cache and the default directories."""
        return bool(self.flags_1 & DF_1_NODEFLIB)

    @property
    def arm_float(self) -> str:
        """For EABI5 ARM objects, ``hard`` or ``soft`` float ABI; otherwise ``''``."""
        if self.machine != "EM_ARM" or self.flags & EF_ARM_EABIMASK != EF_ARM_EABI_VER5:
            return ""
        if self.flags & EF_ARM_ABI_FLOAT_HARD:
            return "hard"
        return "soft" if self.flags & EF_ARM_ABI_FLOAT_SOFT else ""


def _cstr(fh: BinaryIO, offset: int) -> str:
    fh.seek(offset)
    chunks = []
    while True:
        chunk = fh.read(256)
        end = chunk.find(b"\0")
        if end >= 0 or not chunk:
            chunks.append(chunk if end < 0 else chunk[:end])
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "surrogateescape")


def read_elf_info(fh: BinaryIO) -> ElfInfo | None:
    """Read ``fh`` (seekable, binary) as ELF; None if it is not an ELF file."""
    head = fh.read(64)
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    try:
        return _read_fast(fh, head)
    except _Fallback:
        fh.seek(0)
        return elf_info_from_elffile(fh)
    except (struct.error, ValueError):
        return _truncated(head)


def _truncated(head: bytes) -> ElfInfo | None:
    """Header-only info for a file cut short: the loader reads no dependencies from it."""
    end = "<" if head[5] == 1 else ">"
    try:
        e_type, e_machine = struct.unpack_from(end + "HH", head, 16)
    except struct.error:
        return None
    return ElfInfo(32 * head[4], head[5] == 1, _MACHINE_NAMES.get(e_machine, str(e_machine)),
                   _TYPE_NAMES.get(e_type, str(e_type)), osabi=head[7])


def _read_fast(fh: BinaryIO, head: bytes) -> ElfInfo:
    is64 = head[4] == 2
    end = "<" if head[5] == 1 else ">"
    if is64:
        e_type, e_machine, _, _, phoff, _, flags, _, phentsize, phnum = struct.unpack_from(
            end + "HHIQQQIHHH", head, 16)
        ph_fmt, dyn_fmt = end + "IIQQQQ", end + "qQ"
    else:
        e_type, e_machine, _, _, phoff, _, flags, _, phentsize, phnum = struct.unpack_from(
            end + "HHIIIIIHHH", head, 16)
        ph_fmt, dyn_fmt = end + "IIIIII", end + "iI"
    if phnum == PN_XNUM:
        raise _Fallback
    info = dict(elfclass=64 if is64 else 32, little_endian=end == "<",
                machine=_MACHINE_NAMES.get(e_machine, str(e_machine)),
                type=_TYPE_NAMES.get(e_type, str(e_type)), flags=flags, osabi=head[7])
    fh.seek(phoff)
    table = fh.read(phnum * phentsize)
    loads, dyn_at, interp = [], None, None
    for i in range(phnum):
        if is64:
            p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(ph_fmt, table,
                                                                            i * phentsize)
        else:
            p_type, p_offset, p_vaddr, _, p_filesz, _ = struct.unpack_from(ph_fmt, table,
                                                                            i * phentsize)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dyn_at = (p_offset, p_filesz)
        elif p_type == PT_INTERP:
            fh.seek(p_offset)
            interp = fh.read(p_filesz).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    info["interp"] = interp
    if dyn_at is None:
        return ElfInfo(**info)
    fh.seek(dyn_at[0])
    raw = fh.read(dyn_at[1])
    tags: list[tuple[int, int]] = []
    for tag, val in struct.iter_unpack(dyn_fmt, raw[: len(raw) - len(raw) % struct.calcsize(dyn_fmt)]):
        if tag == DT_NULL:
            break
        tags.append((tag, val))
    strtab = next((v for t, v in tags if t == DT_STRTAB), None)
    base = next((off + strtab - va for va, off, size in loads
                 if strtab is not None and va <= strtab < va + size), None)
    wanted = {DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH}
    if base is None and any(t in wanted for t, _ in tags):
        raise _Fallback
    needed, strings = [], {}
    for tag, val in tags:
        if tag == DT_NEEDED:
            needed.append(_cstr(fh, base + val))
        elif tag in wanted:
            strings[tag] = _cstr(fh, base + val)  # a repeated tag: the last wins, as in glibc
        elif tag == DT_FLAGS_1:
            info["flags_1"] = val
    return ElfInfo(**info, needed=tuple(needed), rpath=strings.get(DT_RPATH),
                   runpath=strings.get(DT_RUNPATH), soname=strings.get(DT_SONAME), dynamic=True)


def elf_info_from_elffile(fh: BinaryIO) -> ElfInfo | None:
    """The reference reader: pyelftools ``ELFFile`` and the ``PT_DYNAMIC`` segment's tags."""
    ident = fh.read(8)
    fh.seek(0)
    try:
        elf = ELFFile(fh)
        info = dict(elfclass=elf.elfclass, little_endian=elf.little_endian,
                    machine=elf["e_machine"], type=elf["e_type"], flags=elf["e_flags"],
                    osabi=ident[7])
        needed: list[str] = []
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_INTERP":
                info["interp"] = seg.get_interp_name()
            elif seg["p_type"] == "PT_DYNAMIC":
                info["dynamic"] = True
                for tag in seg.iter_tags():
                    kind = tag.entry.d_tag
                    if kind == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif kind == "DT_SONAME":
                        info["soname"] = tag.soname
                    elif kind == "DT_RPATH":
                        info["rpath"] = tag.rpath
                    elif kind == "DT_RUNPATH":
                        info["runpath"] = tag.runpath
                    elif kind == "DT_FLAGS_1":
                        info["flags_1"] = tag.entry.d_val
        return ElfInfo(**info, needed=tuple(needed))
    except (ELFError, ConstructError, ValueError, KeyError, IndexError, struct.error):
        return None
