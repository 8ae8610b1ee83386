"""Architectures no compiler here targets, with hand-made ELF files: ARM float ABIs,
byte order, default interpreters and system directories, ``$PLATFORM``."""

from __future__ import annotations

from pathlib import Path

from forge.core.elf.elfinfo import elf_info_from_elffile, read_elf_info
from forge.core.elf.resolver import LibraryResolver, Reason
from forge.core.elf.rootfs import DirectoryRootFS
from tests.elf.util import make_elf

EM_ARM, EM_AARCH64, EM_PPC64 = 40, 183, 21
HARD, SOFT = 0x05000400, 0x05000200  # EABI5 | EF_ARM_ABI_FLOAT_HARD / _SOFT
ARMHF = "/lib/arm-linux-gnueabihf"


def test_handmade_elf_files_read_the_same_with_both_readers(tmp_path: Path) -> None:
    for i, (machine, elfclass, little) in enumerate(
            [(EM_ARM, 32, True), (EM_AARCH64, 64, True), (EM_PPC64, 64, False)]):
        path = make_elf(tmp_path / f"f{i}", machine, elfclass=elfclass, little=little,
                        interp="/lib/ld.so", needed=("liba.so", "libb.so"), soname="x.so",
                        rpath="$ORIGIN", runpath="/r")
        with open(path, "rb") as fh:
            fast = read_elf_info(fh)
            fh.seek(0)
            assert fast == elf_info_from_elffile(fh)
        assert fast is not None and fast.needed == ("liba.so", "libb.so")
        assert (fast.elfclass, fast.little_endian, fast.interp) == (elfclass, little,
                                                                    "/lib/ld.so")


def test_hard_float_loader_skips_soft_float_libraries(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_elf(root / "lib/ld-linux-armhf.so.3", EM_ARM, elfclass=32, flags=HARD,
             soname="ld-linux-armhf.so.3")
    make_elf(root / ARMHF.lstrip("/") / "libc.so.6", EM_ARM, elfclass=32, flags=HARD,
             soname="libc.so.6", needed=("ld-linux-armhf.so.3",))
    make_elf(root / "opt/soft/libfoo.so.1", EM_ARM, elfclass=32, flags=SOFT,
             soname="libfoo.so.1", needed=("libc.so.6",))
    make_elf(root / ARMHF.lstrip("/") / "libfoo.so.1", EM_ARM, elfclass=32, flags=HARD,
             soname="libfoo.so.1", needed=("libc.so.6",))
    make_elf(root / "usr/bin/app", EM_ARM, elfclass=32, flags=HARD, etype=2,
             interp="/lib/ld-linux-armhf.so.3", needed=("libfoo.so.1", "libc.so.6"),
             rpath="/opt/soft:/opt/$PLATFORM")
    resolver = LibraryResolver(DirectoryRootFS(root))
    result = resolver.resolve("/usr/bin/app")
    assert result.closure["/usr/bin/app"] == (
        "/lib/ld-linux-armhf.so.3", f"{ARMHF}/libfoo.so.1", f"{ARMHF}/libc.so.6")
    # no SYSTEM_DIRS string in this ld.so: Debian's multiarch defaults, since they exist
    assert result.libraries[f"{ARMHF}/libfoo.so.1"].reasons == [
        Reason("/usr/bin/app", "libfoo.so.1", ARMHF, "default")]
    assert result.libraries["/lib/ld-linux-armhf.so.3"].reasons[1] == Reason(
        f"{ARMHF}/libc.so.6", "ld-linux-armhf.so.3", "/lib", "interp")
    assert result.missing == []


def test_wrong_byte_order_stops_the_load(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_elf(root / "opt/be/libfoo.so.1", EM_PPC64, little=False, soname="libfoo.so.1")
    make_elf(root / "usr/lib/powerpc64le-linux-gnu/libfoo.so.1", EM_PPC64, soname="libfoo.so.1")
    make_elf(root / "usr/bin/app", EM_PPC64, etype=3, interp="/lib64/ld64.so.2",
             needed=("libfoo.so.1",), runpath="/opt/be")
    result = LibraryResolver(DirectoryRootFS(root)).resolve("/usr/bin/app")
    assert result.errors == [("/usr/bin/app", "libfoo.so.1",
                              "/opt/be/libfoo.so.1: ELF file data encoding does not match")]
    assert ("/usr/bin/app", "/lib64/ld64.so.2") in result.missing  # no interpreter either


def test_a_library_gets_the_default_interpreter_of_its_architecture(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_elf(root / "usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", EM_AARCH64,
             soname="ld-linux-aarch64.so.1")
    (root / "lib").symlink_to("usr/lib")
    make_elf(root / "usr/lib/ld-linux-aarch64.so.1", EM_AARCH64, soname="ld-linux-aarch64.so.1")
    make_elf(root / "usr/lib/aarch64-linux-gnu/libc.so.6", EM_AARCH64, soname="libc.so.6",
             needed=("ld-linux-aarch64.so.1",))
    make_elf(root / "usr/lib/aarch64-linux-gnu/libz.so.1", EM_AARCH64, soname="libz.so.1",
             needed=("libc.so.6",))
    make_elf(root / "usr/lib/aarch64-linux-gnu/libnolibc.so.1", EM_AARCH64,
             soname="libnolibc.so.1")
    resolver = LibraryResolver(DirectoryRootFS(root))
    result = resolver.resolve(["/lib/aarch64-linux-gnu/libz.so.1",
                               "/lib/aarch64-linux-gnu/libnolibc.so.1"])
    assert result.closure["/lib/aarch64-linux-gnu/libz.so.1"] == (
        "/lib/aarch64-linux-gnu/libc.so.6", "/lib/ld-linux-aarch64.so.1")
    assert result.libraries["/lib/ld-linux-aarch64.so.1"].reasons[0].how == "interp"
    assert result.closure["/lib/aarch64-linux-gnu/libnolibc.so.1"] == ()
