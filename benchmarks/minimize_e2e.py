"""How long does a minimize action take on a real root filesystem of another architecture?

Workload: the arm64 Debian root the ELF tests build ($FORGE_TESTDATA/arm64-root; run
``pytest tests/elf/test_arm64_oracle.py`` once to build it: glibc, coreutils, bash,
grep, sed, tar, findutils, OpenSSL, zstd...), imported with ``oci_import`` as a gzip
layer, minimized with ``paths = ["/usr/bin", "/usr/sbin"]`` — every program and every
library they need — on this (x86-64) machine, without QEMU, then put on the arm64
busybox base with ``production``.

Reported (medians over ``--runs`` cold builds, each in a fresh cache): the Minimize
action alone (reading the image's layer, resolving, writing layer + report), the whole
cold build, the null build, and what was harvested. Prints a markdown table:

    python benchmarks/minimize_e2e.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.elf.util import tar_tree  # noqa: E402
from tests.services import testdata_dir  # noqa: E402

BUILD = """\
oci_import(name = "root", src = "root.tar.gz", platform = "aarch64")
oci_import(name = "bb", src = "busybox-arm64.tar", platform = "aarch64")
minimize(name = "min", image = ":root", paths = ["/usr/bin", "/usr/sbin"], production_base = ":bb")
production(name = "prod", base = ":bb", minimized = ":min", entrypoint = ["/usr/bin/bash"])
"""


def forge(ws: Path, cache: Path, *args: str) -> list[dict]:
    env = {**os.environ, "FORGE_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-m", "forge.cli", *args, "--json"], cwd=ws, env=env,
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = testdata_dir() / "arm64-root"
    if not root.is_dir():
        sys.exit(f"{root} is missing: run `pytest tests/elf/test_arm64_oracle.py` once")
    with tempfile.TemporaryDirectory(prefix="forge-bench-min-") as tmp:
        ws = Path(tmp) / "ws"
        (ws / "p").mkdir(parents=True)
        (ws / "WORKSPACE.toml").write_text('[workspace]\nname = "bench"\n')
        (ws / "p/BUILD").write_text(BUILD)
        tar_tree(root, ws / "p/root.tar", compress="gzip")
        shutil.copy(testdata_dir() / "busybox-arm64.tar", ws / "p/busybox-arm64.tar")
        action, cold, null = [], [], []
        report = {}
        for run in range(args.runs):
            cache = Path(tmp) / f"cache-{run}"
            start = time.perf_counter()
            events = forge(ws, cache, "build", "//p:prod", "//p:min")
            cold.append(time.perf_counter() - start)
            action.append(next(e["seconds"] for e in events if e.get("mnemonic") == "Minimize"))
            start = time.perf_counter()
            forge(ws, cache, "build", "//p:prod", "//p:min")
            null.append(time.perf_counter() - start)
            summary = next(e for e in events if e.get("event") == "summary")
            outputs = next(t for t in summary["targets"] if t["label"] == "//p:min")["outputs"]
            blob = cache / "cas" / "blobs" / "sha256" / outputs["report"].split(":")[1]
            report = json.loads(blob.read_bytes())
        t = report["totals"]
        size = (ws / "p/root.tar.gz").stat().st_size
        print("| workload | Minimize action (s) | cold build (s) | null build (s) | files | "
              "libraries | left to base | layer |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        print(f"| arm64 Debian root ({size / 1e6:.1f} MB gz), /usr/bin + /usr/sbin | "
              f"{statistics.median(action):.2f} | {statistics.median(cold):.2f} | "
              f"{statistics.median(null):.2f} | {t['files']} ({t['bytes'] / 1e6:.1f} MB) | "
              f"{t['libraries']} | {t['provided_by_base']} | "
              f"{report['layer']['size'] / 1e6:.1f} MB |")


if __name__ == "__main__":
    main()
