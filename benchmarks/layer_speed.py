"""How fast does forge write a layer, against ``tar | gzip`` and ``tar | pigz``?

Copies real files (``/usr/lib``, then ``/usr/share``, in sorted order) into a scratch
directory until about ``--mb`` megabytes, then builds one layer of that tree with each
tool, in one run, and prints a markdown table: throughput over the input bytes, output
size, and whether the output is reproducible by construction.

    python benchmarks/layer_speed.py [--mb 500] [--runs 1] [--keep DIR]

The shell pipelines are ``tar --sort=name -cf - . | gzip -6`` and ``| pigz -6``; forge
runs ``write_layer(cas, entries_from_directory(tree))`` (listing included) into a fresh
CAS. Every tool reads the same copy, which the copy has left in the page cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from forge.core.cas import CAS  # noqa: E402
from forge.core.oci import compression as comp  # noqa: E402
from forge.core.oci.layer_writer import entries_from_directory, write_layer  # noqa: E402

SOURCES = (Path("/usr/lib"), Path("/usr/share"))


def copy_tree(dest: Path, limit: int) -> tuple[int, int]:
    """Copy regular files and symlinks from SOURCES until ``limit`` bytes; (files, bytes)."""
    total = files = 0
    for source in SOURCES:
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                src = Path(dirpath) / name
                dst = dest / src.relative_to("/")
                try:
                    if src.is_symlink():
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        os.symlink(os.readlink(src), dst)
                    elif src.is_file() and os.access(src, os.R_OK):
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(src, dst)
                        total += dst.stat().st_size
                        files += 1
                except OSError:
                    continue
                if total >= limit:
                    return files, total
    return files, total


def timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    size = fn()
    return time.perf_counter() - start, size


def shell(tree: Path, compressor: str, out: Path):
    def run() -> int:
        cmd = f"tar --sort=name -C {tree} -cf - . | {compressor} > {out}"
        subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)
        return out.stat().st_size

    return run


def forge(tree: Path, work: Path, compression: str, level: int | None):
    def run() -> int:
        cas_dir = Path(tempfile.mkdtemp(dir=work, prefix="cas-"))
        try:
            layer = write_layer(CAS(cas_dir), entries_from_directory(tree), compression=compression, level=level)
            return layer.size
        finally:
            shutil.rmtree(cas_dir)

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="input size in MB (default 500)")
    parser.add_argument("--runs", type=int, default=1, help="runs per tool; the median is shown")
    parser.add_argument("--keep", type=Path, help="reuse/keep the copied tree in this directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="forge-layer-speed-"))
    tree = args.keep or work / "tree"
    try:
        if not tree.exists() or not any(tree.iterdir()):
            tree.mkdir(parents=True, exist_ok=True)
            files, total = copy_tree(tree, args.mb * 1_000_000)
        else:
            sizes = [p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink()]
            files, total = len(sizes), sum(sizes)
        mb = total / 1e6
        print(f"input: {files} files, {mb:.0f} MB from {', '.join(map(str, SOURCES))}; "
              f"{os.cpu_count()} CPUs; runs per tool: {args.runs}\n")

        out = work / "out"
        tools = [
            ("`tar --sort=name \\| gzip -6`", shell(tree, "gzip -6", out), "no (tar: mtimes, owners, umask)"),
            ("`tar --sort=name \\| pigz -6`", shell(tree, "pigz -6", out), "no (tar, and pigz's header time)"),
            ("`tar --sort=name` (no compression)", shell(tree, "cat", out), "no (tar: mtimes, owners, umask)"),
            ("forge gzip (ISA-L level 1)", forge(tree, work, comp.GZIP, 1), "yes"),
            ("forge gzip (ISA-L level 2, default)", forge(tree, work, comp.GZIP, 2), "yes"),
            ("forge gzip (ISA-L level 3)", forge(tree, work, comp.GZIP, 3), "yes"),
            ("forge zstd (level 3)", forge(tree, work, comp.ZSTD, 3), "yes"),
            ("forge none", forge(tree, work, comp.NONE, None), "yes"),
        ]
        print("| tool | MB/s | output MB | output / input | deterministic |")
        print("| --- | ---: | ---: | ---: | --- |")
        for name, fn, deterministic in tools:
            results = [timed(fn) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in results)
            size = results[-1][1]
            print(f"| {name} | {mb / seconds:.0f} | {size / 1e6:.1f} | {size / total:.3f} | {deterministic} |",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
