"""Cross-architecture oracle: an arm64 Debian root resolved on this x86-64 host, against
the arm64 glibc loader itself, run under QEMU user emulation chrooted into that root.

The root is merged-/usr (so nearly every path goes through ``/lib -> usr/lib``) and has an
``ld.so.cache`` written by its own ldconfig, so the loader here really uses the cache
that ``LibraryResolver`` emulates from ld.so.conf.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from forge.core.elf.layered import LayeredRootFS
from forge.core.elf.resolver import LibraryResolver
from forge.core.elf.rootfs import DirectoryRootFS
from tests.elf.conftest import arm64_list, elf_files
from tests.elf.util import parse_ld_list, tar_layer, tar_tree

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ARM64_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/aarch64-linux-gnu")


def test_resolver_matches_the_arm64_loader(arm64_root: Path) -> None:
    files = elf_files(str(arm64_root), ARM64_DIRS)
    resolver = LibraryResolver(DirectoryRootFS(arm64_root))
    compared = 0
    differences = []
    for path in files:
        proc = arm64_list(arm64_root, path)
        opened, missing = parse_ld_list(proc.stdout)
        result = resolver.resolve(path)
        mine = (set(result.closure[path]), {n for _, n in result.missing})
        if opened or missing:
            compared += 1
        if mine != (opened, missing):
            differences.append((path, mine, (opened, missing), proc.stderr.strip()))
    print(f"compared {compared} dynamically linked arm64 files of {len(files)} ELF files")
    assert differences == []
    assert compared >= 60
    ls = resolver.resolve("/usr/bin/ls")
    assert ls.realpaths() == {
        "/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
        "/usr/lib/aarch64-linux-gnu/libc.so.6",
        "/usr/lib/aarch64-linux-gnu/libselinux.so.1",
        "/usr/lib/aarch64-linux-gnu/libpcre2-8.so.0.11.2",
    }
    assert ls.libraries["/lib/ld-linux-aarch64.so.1"].links == (
        "/lib", "/usr/lib/ld-linux-aarch64.so.1")


def test_layered_root_gives_the_same_answer_and_honours_whiteouts(arm64_root: Path,
                                                                   tmp_path: Path) -> None:
    base = tar_tree(arm64_root, tmp_path / "base.tar", compress="gzip")
    programs = ["/usr/bin/ls", "/usr/bin/sort", "/usr/bin/bash", "/usr/bin/tar"]
    expected = LibraryResolver(DirectoryRootFS(arm64_root)).resolve(programs)
    with LayeredRootFS([base]) as fs:
        layered = LibraryResolver(fs).resolve(programs)
    assert layered.libraries == expected.libraries
    assert layered.closure == expected.closure
    hide = tar_layer(tmp_path / "hide.tar", {
        "usr/lib/aarch64-linux-gnu/.wh.libpcre2-8.so.0": b"",
    }, compress="zstd")
    with LayeredRootFS([base, hide]) as fs:
        result = LibraryResolver(fs).resolve("/usr/bin/ls")
    assert result.missing == [("/lib/aarch64-linux-gnu/libselinux.so.1", "libpcre2-8.so.0")]
