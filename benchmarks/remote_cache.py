"""Remote cache: restoring a Dockerfile chain from the registry vs building it.

A chain of N Dockerfile steps on the busybox base (scripts/services.sh builds it from
Debian packages), each adding a layer of MB MiB of random (incompressible) data. The
benchmark

1. builds it with no remote cache (cold local build: the engine runs every step);
2. builds it again into another empty cache, writing to a fresh repository of the
   loopback registry (127.0.0.1:5000): the build plus its uploads;
3. restores it R times into an empty local cache, reading that repository (every
   action ``cached-remote``), and takes the median;
4. downloads the very same blobs with curl from the same registry, one at a time and 4 at
   once (forge moves up to 4 blobs of a result at once), median of R;

and prints a markdown table: seconds, MB moved, MB/s. Run:

    python benchmarks/remote_cache.py [--steps 4] [--mb 32] [--runs 3]

Every run is ``forge build`` in a fresh process, as a user would run it (start-up,
loading and analysis included).
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.services import REGISTRY, testdata_dir  # noqa: E402

MB = 1 << 20


def make_workspace(root: Path, steps: int, mb: int) -> None:
    chain = root / "app" / "chain"
    chain.mkdir(parents=True)
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "bench"\n')
    shutil.copy(testdata_dir() / "busybox-amd64.tar", root / "app" / "busybox-amd64.tar")
    # Fresh keys and blobs, and Dockerfiles the engine's own build cache has never seen.
    salt = uuid.uuid4().hex
    for i in range(steps):
        (chain / f"{(i + 1) * 10:02d}-Dockerfile-step{i + 1}").write_text(
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
            f"RUN echo {salt} > /salt{i} && head -c {mb * MB} /dev/urandom > /data{i}\n"
        )
    (root / "app" / "BUILD").write_text(
        'oci_import(name = "busybox", src = "busybox-amd64.tar", platform = "amd64")\n'
        'dockerfile_chain(name = "chain", dir = "chain", base = ":busybox")\n'
    )


def forge_build(root: Path, cache: Path, *args: str) -> tuple[float, list[dict]]:
    env = {**os.environ, "FORGE_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "forge.cli", "build", "//app:chain", "--json", *args],
                          cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"forge build {' '.join(args)} failed:\n{proc.stderr}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    warnings = [e["message"] for e in events if e.get("event") == "warning"]
    if warnings:
        raise SystemExit(f"forge build {' '.join(args)} warned: {warnings}")
    return seconds, [e for e in events if e.get("event") == "action"]


def cas_blobs(cache: Path) -> dict[str, int]:
    blobs = cache / "cas" / "blobs" / "sha256"
    return {"sha256:" + p.name: p.stat().st_size for p in blobs.iterdir() if not p.name.startswith(".")}


def curl_download(repo: str, digests: list[str], parallel: int) -> float:
    """Seconds for curl to fetch the blobs to /dev/null (no verification)."""
    cmd = ["curl", "-sSf", "--no-progress-meter"]
    if parallel > 1:
        cmd += ["--parallel", "--parallel-max", str(parallel)]
    for digest in digests:
        cmd += ["-o", "/dev/null", f"http://{REGISTRY}/v2/{repo}/blobs/{digest}"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def curl_verified(repo: str, digests: list[str]) -> float:
    """Seconds for ``curl | sha256sum`` over the blobs, one at a time, each checked."""
    start = time.perf_counter()
    for digest in digests:
        proc = subprocess.run(f"curl -sSf http://{REGISTRY}/v2/{repo}/blobs/{digest} | sha256sum",
                              shell=True, check=True, capture_output=True, text=True)
        if proc.stdout.split()[0] != digest.split(":", 1)[1]:
            raise SystemExit(f"{digest}: curl | sha256sum disagrees")
    return time.perf_counter() - start


def row(what: str, seconds: float, nbytes: int | None) -> str:
    if nbytes is None:
        return f"| {what} | {seconds:.2f} | - | - |"
    return f"| {what} | {seconds:.2f} | {nbytes / MB:.1f} | {nbytes / MB / seconds:.1f} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="Dockerfile steps in the chain (default 4)")
    parser.add_argument("--mb", type=int, default=32, help="MiB of random data each step adds (default 32)")
    parser.add_argument("--runs", type=int, default=3, help="restores and curl downloads to take the median of")
    args = parser.parse_args(argv)
    if not (testdata_dir() / "busybox-amd64.tar").is_file():
        raise SystemExit("busybox-amd64.tar is missing: run scripts/services.sh first")
    repo = f"forge-bench/remote-cache-{uuid.uuid4().hex[:12]}"
    url = f"{REGISTRY}/{repo}"
    with tempfile.TemporaryDirectory(prefix="forge-bench-remote-") as tmp:
        tmp_path = Path(tmp)
        root, cold_root = tmp_path / "ws", tmp_path / "ws-cold"
        make_workspace(root, args.steps, args.mb)
        make_workspace(cold_root, args.steps, args.mb)
        cold, actions = forge_build(cold_root, tmp_path / "cold", "--no-remote-cache")
        assert {a["status"] for a in actions} == {"built"}, actions
        write, actions = forge_build(root, tmp_path / "writer", "--remote-cache", url, "--remote-cache-write")
        assert {a["status"] for a in actions} == {"built"}, actions
        restores, moved = [], 0
        for i in range(args.runs):
            cache = tmp_path / f"restore-{i}"
            seconds, actions = forge_build(root, cache, "--remote-cache", url)
            assert {a["status"] for a in actions} == {"cached-remote"}, actions
            restores.append(seconds)
            blobs = cas_blobs(cache)
            moved = sum(blobs.values())
        null, _ = forge_build(root, tmp_path / "restore-0", "--remote-cache", url)
        digests = sorted(blobs)
        serial = statistics.median(curl_download(repo, digests, 1) for _ in range(args.runs))
        parallel = statistics.median(curl_download(repo, digests, 4) for _ in range(args.runs))
        verified = statistics.median(curl_verified(repo, digests) for _ in range(args.runs))
    restore = statistics.median(restores)
    print(f"Dockerfile chain of {args.steps} steps x {args.mb} MiB random data on busybox, "
          f"{len(actions)} actions, {len(digests)} blobs; loopback registry {REGISTRY}; "
          f"median of {args.runs}\n")
    print("| what | seconds | MB | MB/s |")
    print("| --- | ---: | ---: | ---: |")
    print(row("cold build, no remote cache (engine runs every step)", cold, None))
    print(row("cold build + upload to the remote cache", write, None))
    print(row("restore from the remote cache into an empty cache", restore, moved))
    print(row("null build afterwards (all cached-local)", null, None))
    print(row("restore minus null build (transfer + verify + record)", restore - null, moved))
    print(row("curl, same blobs, one at a time", serial, moved))
    print(row("curl, same blobs, 4 at once", parallel, moved))
    print(row("curl \\| sha256sum, same blobs, one at a time", verified, moved))
    print(f"\nrestore vs cold build: {cold / restore:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
