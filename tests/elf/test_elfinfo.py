"""The fast ELF reader agrees with the pyelftools reference, and the loader's
configuration (ld.so.conf, system directories, $ORIGIN and friends) is read as glibc
and ldconfig read it."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from forge.core.elf.elfinfo import elf_info_from_elffile, read_elf_info
from forge.core.elf.loaderconf import (
    arch_spec,
    expand_dst,
    normalize_dir,
    read_ld_so_conf,
    split_search_path,
    system_dirs,
)
from forge.core.elf.rootfs import DirectoryRootFS
from tests.services import require_tool, unavailable


@pytest.mark.slow
def test_fast_reader_agrees_with_pyelftools_on_every_host_elf(host_elf_files: list[str]) -> None:
    assert len(host_elf_files) > 100
    for path in host_elf_files:
        with open(path, "rb") as fh:
            fast = read_elf_info(fh)
            fh.seek(0)
            assert fast == elf_info_from_elffile(fh), path


def test_what_the_loader_reads_from_a_program() -> None:
    with open("/usr/bin/ls", "rb") as fh:
        info = read_elf_info(fh)
    assert info is not None
    assert (info.elfclass, info.machine, info.type) == (64, "EM_X86_64", "ET_DYN")
    assert info.interp == "/lib64/ld-linux-x86-64.so.2"
    assert "libc.so.6" in info.needed and info.dynamic and info.soname is None


def test_non_elf_and_truncated_files() -> None:
    assert read_elf_info(io.BytesIO(b"#!/bin/sh\n")) is None
    assert read_elf_info(io.BytesIO(b"")) is None
    assert elf_info_from_elffile(io.BytesIO(b"#!/bin/sh\n" * 10)) is None
    head = Path("/usr/bin/ls").read_bytes()[:200]  # header and part of the phdrs only
    info = read_elf_info(io.BytesIO(head))
    assert info is not None and info.machine == "EM_X86_64" and info.needed == ()


def test_a_32_bit_library(tmp_path: Path) -> None:
    require_tool("gcc", "gcc")
    (tmp_path / "f.c").write_text("int f(void) { return 1; }\n")
    out = tmp_path / "libf.so"
    built = subprocess.run(["gcc", "-m32", "-nostdlib", "-shared", "-fPIC",
                            "-Wl,-soname,libf.so.1", "-Wl,--disable-new-dtags",
                            "-Wl,-rpath,$ORIGIN", "-o", str(out), str(tmp_path / "f.c")],
                           capture_output=True)
    if built.returncode:
        unavailable("gcc cannot build 32-bit objects here (gcc -m32 -nostdlib)")
    with open(out, "rb") as fh:
        info = read_elf_info(fh)
        fh.seek(0)
        assert info == elf_info_from_elffile(fh)
    assert (info.elfclass, info.machine, info.soname, info.rpath) == (
        32, "EM_386", "libf.so.1", "$ORIGIN")


def test_dynamic_string_tokens() -> None:
    kw = dict(origin="/opt/app/bin", lib="lib/x86_64-linux-gnu", platform="x86_64")
    assert expand_dst("$ORIGIN/../lib", **kw) == "/opt/app/bin/../lib"
    assert expand_dst("${ORIGIN}/x:$LIB/$PLATFORM", **kw) == (
        "/opt/app/bin/x:lib/x86_64-linux-gnu/x86_64")
    assert expand_dst("$ORIGINAL/$FOO/${LIB", **kw) == "$ORIGINAL/$FOO/${LIB"
    assert expand_dst("/no/tokens", **kw) == "/no/tokens"
    assert expand_dst("$ORIGIN/x", origin=None, lib="lib", platform="p") is None


def test_search_path_elements() -> None:
    assert split_search_path("/a:/b/") == ["/a", "/b/"]
    assert split_search_path("/a;/b::/c", ":;") == ["/a", "/b", "", "/c"]
    assert split_search_path("") == []
    assert [normalize_dir(d) for d in ("/a/", "/", "", "rel//")] == ["/a", "/", ".", "rel"]


def test_ld_so_conf_parsing(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "ld.so.conf.d").mkdir(parents=True)
    (etc / "ld.so.conf").write_text(
        "/first  \n"
        "include ld.so.conf.d/*.conf /etc/extra.conf\n"  # relative to /etc
        "hwcap 1 nosegneg\n"
        "/libc5=libc5\n"
        "include /etc/ld.so.conf\n"  # a cycle
        "/first/\n")
    (etc / "ld.so.conf.d/b.conf").write_text("/b # comment\n\n")
    (etc / "ld.so.conf.d/a.conf").write_text("\t/a\n")
    (etc / "ld.so.conf.d/z.txt").write_text("/not-a-conf\n")
    (etc / "extra.conf").write_text("/extra\n")
    fs = DirectoryRootFS(tmp_path)
    assert read_ld_so_conf(fs) == ("/first", "/a", "/b", "/extra", "/libc5")
    assert read_ld_so_conf(fs, "/etc/missing.conf") == ()


def test_system_dirs_come_from_the_interpreter(tmp_path: Path) -> None:
    host = DirectoryRootFS("/")
    spec = arch_spec("EM_X86_64", 64)
    assert spec is not None
    if Path("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2").exists():
        assert system_dirs(host, spec.interp, spec) == (
            "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib")
    # no interpreter: Debian's layout if the multiarch directory exists, else upstream's
    (tmp_path / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    assert system_dirs(DirectoryRootFS(tmp_path), spec.interp, spec)[0] == (
        "/lib/x86_64-linux-gnu")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert system_dirs(DirectoryRootFS(empty), spec.interp, spec) == ("/lib64", "/usr/lib64")
    armhf = arch_spec("EM_ARM", 32)
    assert armhf is not None and armhf.triplet == "arm-linux-gnueabihf"
    assert arch_spec("EM_ARM", 32, "soft").interp == "/lib/ld-linux.so.3"
    assert arch_spec("EM_SPARC", 32) is None
