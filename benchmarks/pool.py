"""Pools of engines: the 6-target workspace on 1, 2 and 3 engines.

Six independent Dockerfile targets on the busybox base (scripts/services.sh builds it),
each a ``RUN sleep 3`` with a nonce of its own (so no engine's build cache serves it),
built with ``forge build //app:all -j 6 --json`` into an empty cache, on a pool
(``[executors.docker.pools] amd64 = [...]``, capacity 1 each) of the first 1, 2 and 3 of
three dockerds the benchmark starts (``tests/docker/engines.py``: their own data roots and
loopback TCP ports; needs root). Prints a markdown table: wall seconds of the build (the
``forge build`` process, start-up included), the speed-up over one engine, and how many
actions each engine ran (from the ``"engine"`` of each action event). Run:

    sudo python benchmarks/pool.py [--runs 1]
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
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.docker.engines import start_engines  # noqa: E402
from tests.services import testdata_dir  # noqa: E402

TARGETS = 6
DOCKERFILE = 'ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG NONCE\nRUN sleep 3 && echo "$NONCE" > /nonce\n'


def make_workspace(root: Path, urls: list[str]) -> None:
    (root / "app").mkdir(parents=True)
    members = ", ".join(f'"{u}"' for u in urls)
    (root / "WORKSPACE.toml").write_text(f'[workspace]\nname = "bench"\n\n[executors.docker.pools]\n'
                                         f"amd64 = [{members}]\n")
    shutil.copy(testdata_dir() / "busybox-amd64.tar", root / "app" / "busybox-amd64.tar")
    (root / "app" / "sleep.Dockerfile").write_text(DOCKERFILE)
    salt = uuid.uuid4().hex
    build = 'oci_import(name = "busybox", src = "busybox-amd64.tar", platform = "amd64")\n'
    for i in range(TARGETS):
        build += (f'dockerfile(name = "t{i}", base = ":busybox", dockerfile = "sleep.Dockerfile",'
                  f' build_args = {{"NONCE": "{salt}-{i}"}})\n')
    (root / "app" / "BUILD").write_text(build)


def build(root: Path, cache: Path) -> tuple[float, Counter]:
    env = {**os.environ, "FORGE_CACHE": str(cache), "CI": "true",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "forge.cli", "build", "//app:all", "-j", str(TARGETS),
                          "--json"], cwd=root, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if run.returncode != 0:
        raise SystemExit(f"forge build failed ({run.returncode}):\n{run.stderr}")
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return seconds, Counter(e["engine"] for e in events
                            if e.get("event") == "action" and e.get("mnemonic") == "DockerBuild")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="builds per pool size (the median is shown)")
    args = parser.parse_args()
    engines, why = start_engines(3)
    if not engines:
        raise SystemExit(f"could not start 3 engines: {why}")
    try:
        names = {e.host: f"engine{i + 1}" for i, e in enumerate(engines)}
        rows = []
        for size in (1, 2, 3):
            urls = [e.host for e in engines[:size]]
            times, counts = [], Counter()
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory(prefix="forge-bench-pool-") as tmp:
                    make_workspace(Path(tmp) / "ws", urls)
                    seconds, counted = build(Path(tmp) / "ws", Path(tmp) / "cache")
                times.append(seconds)
                counts = counted
            rows.append((size, statistics.median(times), counts))
        one = rows[0][1]
        print("| engines | wall s | speed-up | actions per engine |")
        print("| ---: | ---: | ---: | --- |")
        for size, seconds, counts in rows:
            per = ", ".join(f"{names[u]}: {n}" for u, n in sorted(counts.items(), key=lambda kv: names[kv[0]]))
            print(f"| {size} | {seconds:.2f} | {one / seconds:.2f}× | {per} |")
    finally:
        for engine in engines:
            engine.stop()


if __name__ == "__main__":
    main()
