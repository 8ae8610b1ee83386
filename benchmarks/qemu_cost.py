"""Issue 5: what does QEMU user emulation cost a CPU-bound build step?

Runs the same busybox step -- ``head -c 50MiB /dev/zero | sha256sum`` -- inside a
container natively (linux/amd64) and emulated through binfmt_misc + qemu-user-static
(linux/arm64, linux/arm/v7), using the busybox images built from Debian packages by
scripts/services.sh. Prints platform, median seconds of N runs, and slowdown vs native.

    python benchmarks/qemu_cost.py [--mb 50] [--runs 3]

Each run is a ``docker exec`` into an already running container, so container start-up
is not counted; the ``exec overhead`` column is the median time of ``true`` the same way.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from tests.services import BUSYBOX_TARBALLS, load_rootfs_image, testdata_dir  # noqa: E402

PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7"]


def _timed_exec(container, cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = container.exec_run(cmd)
    elapsed = time.perf_counter() - start
    if result.exit_code != 0:
        raise RuntimeError(f"{cmd} exited {result.exit_code}: {result.output.decode()!r}")
    return elapsed, result.output.decode().strip()


def measure(client: docker.DockerClient, platform: str, nbytes: int, runs: int) -> dict:
    tarball = testdata_dir() / BUSYBOX_TARBALLS[platform]
    if not tarball.is_file():
        raise SystemExit(f"{tarball} is missing: run scripts/services.sh first")
    tag = f"forge-bench/busybox:{platform.replace('/', '-')}-{uuid.uuid4().hex[:8]}"
    load_rootfs_image(client, tarball, tag, platform)
    container = None
    try:
        container = client.containers.run(
            tag, ["sleep", "3600"], platform=platform, network_mode="none", detach=True
        )
        _, machine = _timed_exec(container, ["uname", "-m"])
        overhead = statistics.median(_timed_exec(container, ["true"])[0] for _ in range(runs))
        step = ["sh", "-c", f"head -c {nbytes} /dev/zero | sha256sum"]
        times, digests = [], set()
        for _ in range(runs):
            elapsed, out = _timed_exec(container, step)
            times.append(elapsed)
            digests.add(out.split()[0])
        if len(digests) != 1:
            raise RuntimeError(f"{platform}: runs disagree on the digest: {digests}")
        return {
            "platform": platform,
            "machine": machine,
            "seconds": statistics.median(times),
            "all": times,
            "overhead": overhead,
            "digest": digests.pop(),
        }
    finally:
        if container is not None:
            container.remove(force=True)
        client.images.remove(tag, force=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50, help="MiB hashed per run (default 50)")
    parser.add_argument("--runs", type=int, default=3, help="runs per platform (default 3)")
    args = parser.parse_args(argv)
    nbytes = args.mb * 1024 * 1024

    client = docker.from_env(timeout=600)
    results = [measure(client, p, nbytes, args.runs) for p in PLATFORMS]
    if len({r["digest"] for r in results}) != 1:
        raise SystemExit("platforms disagree on sha256 of the same input")
    native = results[0]["seconds"]

    print(f"sha256sum of {args.mb} MiB from /dev/zero in busybox, median of {args.runs} runs")
    header = (
        f"{'platform':<14} {'uname -m':<9} {'seconds':>8} {'slowdown':>9} {'exec overhead':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['platform']:<14} {r['machine']:<9} {r['seconds']:>8.3f} "
            f"{r['seconds'] / native:>8.1f}x {r['overhead']:>13.3f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
