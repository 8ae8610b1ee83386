"""Differential test: the resolver against the host's real ``ldd``.

Every dynamically linked ELF file directly in /usr/bin, /usr/sbin and
/usr/lib/x86_64-linux-gnu (static ones, object files and ld.so itself are compared too,
as "loads nothing") must give the same library real paths, the same opened paths and the
same missing names. No file is excluded: ``ldd`` reads setuid files as any other, and a
missing library is printed by ``ldd`` as ``not found``, which the resolver must match.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from forge.core.elf.resolver import LibraryResolver
from forge.core.elf.rootfs import DirectoryRootFS
from tests.elf.util import clean_env, parse_ld_list
from tests.services import unavailable

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _x86_64_debian_host():
    if shutil.which("ldd") is None or not os.path.isdir("/usr/lib/x86_64-linux-gnu"):
        unavailable("needs an x86-64 Debian host with ldd")


def test_resolver_matches_host_ldd(host_elf_files: list[str]) -> None:
    resolver = LibraryResolver(DirectoryRootFS("/"))  # the host has no LD_LIBRARY_PATH here
    env = clean_env()
    compared = 0
    differences = []
    for path in host_elf_files:
        ldd = subprocess.run(["ldd", path], capture_output=True, text=True, env=env,
                             timeout=60)
        opened, missing = parse_ld_list(ldd.stdout)
        result = resolver.resolve(path)
        ours = result.closure[path]
        mine = {
            "real": {result.libraries[p].realpath for p in ours},
            "opened": set(ours),
            "missing": {name for _, name in result.missing},
        }
        theirs = {"real": {os.path.realpath(p) for p in opened}, "opened": opened,
                  "missing": missing}
        if opened or missing:
            compared += 1
        if mine != theirs:
            differences.append((path, mine, theirs, ldd.stderr.strip()))
    print(f"compared {compared} dynamically linked files of {len(host_elf_files)} ELF files")
    assert differences == []
    assert compared >= 300, f"only {compared} dynamically linked files on this host"
