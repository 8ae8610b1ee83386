"""How fast does forge's static resolver find every ELF file's libraries, against ldd?

Workloads (each ELF file directly in the listed directories; symlinks are skipped):

* host: /usr/bin, /usr/sbin, /usr/lib/x86_64-linux-gnu of this machine, against a shell
  loop of the native ``ldd``;
* arm64: the same directories of the arm64 Debian root the tests build
  ($FORGE_TESTDATA/arm64-root; run ``pytest tests/elf/test_arm64_oracle.py`` once to
  build it), against a shell loop of its loader in trace mode (what ldd runs) under QEMU,
  chrooted into the root;
* arm64 from a layer: the same files, with forge reading the root from a gzip layer
  tarball (``LayeredRootFS``, construction included), as the minimize rule does.

forge's time covers creating the root filesystem and the resolver and resolving every
file (ELF headers parsed from cold). "identical" means every file's opened paths and
missing names equal the loader's. Prints a markdown table (medians over ``--runs``):

    python benchmarks/harvest_speed.py [--runs 3] [--arm64-root DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from forge.core.elf.layered import LayeredRootFS  # noqa: E402
from forge.core.elf.resolver import LibraryResolver  # noqa: E402
from forge.core.elf.rootfs import DirectoryRootFS, RootFS  # noqa: E402
from tests.elf.conftest import ARM64_LOADER, ARM64_QEMU, elf_files  # noqa: E402
from tests.elf.util import clean_env, parse_ld_list, tar_tree  # noqa: E402

HOST_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu")
ARM64_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/aarch64-linux-gnu")
Answer = dict[str, tuple[frozenset[str], frozenset[str]]]

HOST_LOOP = 'for f; do echo "== $f"; ldd "$f" 2>&1; done'
ARM64_LOOP = ('root=$1; shift; for f; do echo "== $f"; chroot "$root" ' + ARM64_QEMU +
              ' -E LD_TRACE_LOADED_OBJECTS=1 ' + ARM64_LOADER + ' "$f" 2>&1; done')


def shell_loop(script: str, args: list[str]) -> tuple[float, Answer]:
    start = time.perf_counter()
    out = subprocess.run(["bash", "-c", script, "loop", *args], capture_output=True,
                         text=True, env=clean_env(), check=True).stdout
    elapsed = time.perf_counter() - start
    answer: Answer = {}
    for chunk in out.split("== ")[1:]:
        path, _, listing = chunk.partition("\n")
        opened, missing = parse_ld_list(listing)
        answer[path] = (frozenset(opened), frozenset(missing))
    return elapsed, answer


def forge(make_fs, files: list[str]) -> tuple[float, Answer]:
    start = time.perf_counter()
    fs: RootFS = make_fs()
    result = LibraryResolver(fs).resolve(files)
    elapsed = time.perf_counter() - start
    if isinstance(fs, LayeredRootFS):
        fs.close()
    missing: dict[str, set[str]] = {f: set() for f in files}
    for needed_by, name in result.missing:
        # a missing name is reported against the file that needs it; ldd lists it under
        # every input whose load reaches that file
        for f in files:
            if needed_by == f or needed_by in result.closure[f]:
                missing[f].add(name)
    return elapsed, {f: (frozenset(result.closure[f]), frozenset(missing[f])) for f in files}


def row(name: str, files: list[str], oracle: list[float], ours: list[float], same: bool,
        oracle_name: str) -> str:
    o, f = statistics.median(oracle), statistics.median(ours)
    return (f"| {name} | {len(files)} | {oracle_name} | {o:.2f} | {f:.2f} | {o / f:.1f}× | "
            f"{'yes' if same else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--arm64-root", type=Path, default=Path(
        os.environ.get("FORGE_TESTDATA") or "/var/cache/forge-testdata") / "arm64-root")
    args = parser.parse_args()
    rows = []

    files = elf_files("/", HOST_DIRS)
    runs = [shell_loop(HOST_LOOP, files) for _ in range(args.runs)]
    ours = [forge(lambda: DirectoryRootFS("/"), files) for _ in range(args.runs)]
    rows.append(row("host x86-64 (/)", files, [t for t, _ in runs], [t for t, _ in ours],
                    ours[0][1] == runs[0][1], "ldd loop"))

    root = args.arm64_root
    if (root / ARM64_QEMU.lstrip("/")).exists():
        files = elf_files(str(root), ARM64_DIRS)
        runs = [shell_loop(ARM64_LOOP, [str(root), *files]) for _ in range(args.runs)]
        ours = [forge(lambda: DirectoryRootFS(root), files) for _ in range(args.runs)]
        rows.append(row("arm64 root (directory)", files, [t for t, _ in runs],
                        [t for t, _ in ours], ours[0][1] == runs[0][1], "ld.so under qemu"))
        with tempfile.TemporaryDirectory() as tmp:
            layer = tar_tree(root, Path(tmp) / "layer.tar", compress="gzip")
            mib = layer.stat().st_size / 2**20
            layered = [forge(lambda: LayeredRootFS([layer]), files) for _ in range(args.runs)]
        rows.append(row(f"arm64 root (one {mib:.0f} MiB gzip layer)", files,
                        [t for t, _ in runs], [t for t, _ in layered],
                        layered[0][1] == runs[0][1], "ld.so under qemu"))
    else:
        print(f"(no arm64 root at {root}: build it with pytest tests/elf/test_arm64_oracle.py)")

    print("| workload | ELF files | oracle | oracle s | forge s | speed-up | identical |")
    print("|---|---:|---|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
