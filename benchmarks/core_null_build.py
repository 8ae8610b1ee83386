"""Issue-2 benchmark: cold, null and touched-null builds of N `layer` targets.

Generates a workspace of N layer targets over 10 small files each (N = 100, 1,000,
5,000), and prints a markdown table of medians over R runs. Run:

    python benchmarks/core_null_build.py [--runs 5] [--sizes 100,1000,5000]
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

FILES_PER_TARGET = 10


def make_workspace(root: Path, targets: int) -> None:
    root.mkdir(parents=True)
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "bench"\n')
    per_pkg = 100
    for pkg_i in range((targets + per_pkg - 1) // per_pkg):
        pkg = root / f"pkg{pkg_i:03d}"
        pkg.mkdir()
        lines = []
        for t in range(pkg_i * per_pkg, min(targets, (pkg_i + 1) * per_pkg)):
            d = pkg / f"t{t:05d}"
            d.mkdir()
            for f in range(FILES_PER_TARGET):
                (d / f"f{f}.txt").write_text(f"target {t} file {f}\n" * 8)
            lines.append(f'layer(name = "t{t:05d}", srcs = glob(["t{t:05d}/*"]), prefix = "/data")')
        (pkg / "BUILD").write_text("\n".join(lines) + "\n")


def forge(root: Path, cache: Path, *args: str) -> float:
    env = {**os.environ, "FORGE_CACHE": str(cache), "CI": "true"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure forge as users run it: with .pyc caches
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "forge.cli", *args], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def touch_all(root: Path) -> None:
    now = time.time()
    for path in root.rglob("*.txt"):
        os.utime(path, (now, now))


def bench(targets: int, runs: int) -> dict[str, float]:
    cold, null, touched = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            root, cache = Path(tmp) / "ws", Path(tmp) / "cache"
            make_workspace(root, targets)
            cold.append(forge(root, cache, "build", "//...", "-j", "2"))
            null.append(forge(root, cache, "build", "//..."))
            touch_all(root)
            touched.append(forge(root, cache, "build", "//..."))
    return {"cold": statistics.median(cold), "null": statistics.median(null),
            "touched": statistics.median(touched)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="100,1000,5000")
    args = parser.parse_args()
    version = statistics.median(
        [forge(Path.cwd(), Path(tempfile.gettempdir()) / "forge-bench-cache", "--version") for _ in range(args.runs)]
    )
    print(f"forge --version start-up: {version * 1000:.0f} ms (median of {args.runs})\n")
    print("| targets | files | cold build (s) | null build (s) | null after touching every file (s) |")
    print("|---:|---:|---:|---:|---:|")
    for size in (int(s) for s in args.sizes.split(",")):
        r = bench(size, args.runs if size <= 1000 else max(1, args.runs // 2))
        print(f"| {size:,} | {size * FILES_PER_TARGET:,} | {r['cold']:.2f} | {r['null']:.2f} | {r['touched']:.2f} |",
              flush=True)
    shutil.rmtree(Path(tempfile.gettempdir()) / "forge-bench-cache", ignore_errors=True)


if __name__ == "__main__":
    main()
