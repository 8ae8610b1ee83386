"""Issue-4 benchmark: a chain of 10 Dockerfiles, forge vs plain `docker build`.

Each step adds a small file and runs a command on a busybox base (Debian's
busybox-static, from scripts/services.sh). Cases, in one run:
  forge cold | forge no-op | docker loop with its layer cache | both after removing
  every image the chain made from the engine.
Run:  python benchmarks/dockerfile_chain.py [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTDATA = Path(os.environ.get("FORGE_TESTDATA", "/var/cache/forge-testdata"))


def make_workspace(root: Path, steps: int) -> None:
    chain = root / "app/chain"
    chain.mkdir(parents=True)
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "bench"\n')
    shutil.copy(TESTDATA / "busybox-amd64.tar", root / "app/busybox.tar")
    for i in range(1, steps + 1):
        (chain / f"file{i:02d}.txt").write_text(f"step {i}\n" * 100)
        (chain / f"{i * 10:02d}-Dockerfile-step{i:02d}").write_text(
            "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
            f"COPY file{i:02d}.txt /data/file{i:02d}.txt\n"
            f"RUN sha256sum /data/file{i:02d}.txt > /data/sum{i:02d} && ls /data | wc -l > /data/count\n"
        )
    (root / "app/BUILD").write_text(
        'oci_import(name = "busybox", src = "busybox.tar", platform = "amd64")\n'
        'dockerfile_chain(name = "chain", dir = "chain", base = ":busybox")\n'
    )


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def docker_loop(root: Path, env: dict[str, str]) -> float:
    """The Atom way: docker build per file, BASE_IMAGE = the previous tag."""
    start = time.perf_counter()
    base = "bench-chain/base:latest"
    for df in sorted((root / "app/chain").glob("*-Dockerfile-*"), key=lambda p: int(p.name.split("-")[0])):
        tag = f"bench-chain/{df.name.lower()}:latest"
        subprocess.run(["docker", "build", "-q", "-f", str(df), "--build-arg", f"BASE_IMAGE={base}",
                        "--network", "none", "-t", tag, str(root / "app/chain")],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = tag
    return time.perf_counter() - start


def prune_engine() -> None:
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                         capture_output=True, text=True, check=True).stdout.split()
    tags = [t for t in out if t.startswith(("bench-chain/", "forge-base/"))]
    if tags:
        subprocess.run(["docker", "rmi", "-f", *tags], check=False, capture_output=True)
    subprocess.run(["docker", "image", "prune", "-f"], check=False, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        make_workspace(root, args.steps)
        env = {**os.environ, "FORGE_CACHE": str(Path(tmp) / "cache"), "CI": "true", "DOCKER_BUILDKIT": "0"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure forge as users run it: with .pyc caches
        forge = [sys.executable, "-m", "forge.cli", "build", "//app:chain"]
        prune_engine()
        subprocess.run(["docker", "import", str(TESTDATA / "busybox-amd64.tar"), "bench-chain/base:latest"],
                       check=True, capture_output=True)
        rows = []
        rows.append(("cold build", timed(forge, root, env), docker_loop(root, env)))
        rows.append(("no-op rebuild (warm caches)", timed(forge, root, env), docker_loop(root, env)))
        prune_engine()
        subprocess.run(["docker", "import", str(TESTDATA / "busybox-amd64.tar"), "bench-chain/base:latest"],
                       check=True, capture_output=True)
        rows.append(("after removing the chain's images from the engine", timed(forge, root, env),
                     docker_loop(root, env)))
        prune_engine()
    print(f"Chain of {args.steps} Dockerfiles on busybox (legacy builder, Docker 20.10), seconds:\n")
    print("| case | forge | docker build loop | docker / forge |")
    print("| --- | ---: | ---: | ---: |")
    for name, f, d in rows:
        print(f"| {name} | {f:.2f} | {d:.2f} | {d / f:.1f}× |")


if __name__ == "__main__":
    main()
