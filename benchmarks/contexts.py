"""Issue-14 benchmark: a repository-wide context, the Atom layout, forge vs `docker build`.

A synthetic Atom repository: ``third-party/big`` (``--mb`` MB in 2,000 files),
``languages/c``, ``lua-scripts``, an ignored ``build-output/`` (the root
``.dockerignore``), and ``docker/stock`` with four numbered Dockerfiles: 10 runs a
command, 20 ``ADD``s ``languages/c`` (through an ARG), 30 ``COPY``s ``third-party/big``,
40 ``COPY``s ``lua-scripts/*.lua``. Every step's context is the repository root, as
Atom's build.sh (``docker build -f docker/stock/NN-… ../.``).

Cases, in one run: cold; no-op; edit a Lua script (only step 40 reads it); edit a
third-party file (30 onward); edit an ignored file and a file no step reads (nothing).
Against the Atom way: the same loop of ``docker build``, with the classic builder (the
CLI sends the whole context every step) and with BuildKit (``DOCKER_BUILDKIT=1`` on a
CLI older than 23, which sends only what changed), each on Docker's own layer cache.

Run:  python benchmarks/contexts.py [--mb 64] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TESTDATA = Path(os.environ.get("FORGE_TESTDATA", "/var/cache/forge-testdata"))
STEPS = ["10-Dockerfile-base", "20-Dockerfile-c", "30-Dockerfile-big", "40-Dockerfile-lua"]
NONCE = uuid.uuid4().hex[:8]


def make_repo(root: Path, megabytes: int) -> None:
    files = {
        "WORKSPACE.toml": '[workspace]\nname = "ctx-bench"\n',
        ".dockerignore": "build-output/\n**/*.o\n",
        "docker/stock/10-Dockerfile-base": f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN echo {NONCE} > /base\n",
        "docker/stock/20-Dockerfile-c": ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG SRC=languages/c\n"
                                         "ADD ./${SRC} /atom/c\nRUN ls /atom/c | wc -l > /c-count\n"),
        "docker/stock/30-Dockerfile-big": ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY third-party/big /atom/big\n"
                                           "RUN du -s /atom/big > /big-size\n"),
        "docker/stock/40-Dockerfile-lua": ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY lua-scripts/*.lua /atom/lua/\n"
                                           "RUN ls /atom/lua > /lua-files\n"),
        "docker/BUILD": ('oci_import(name = "busybox", src = "busybox.tar", platform = "amd64")\n'
                         'dockerfile_chain(name = "stock", dir = "stock", base = ":busybox", context = "//")\n'),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    shutil.copy(TESTDATA / "busybox-amd64.tar", root / "docker/busybox.tar")
    size = megabytes * 1024 * 1024 // 2000
    for i in range(2000):
        path = root / f"third-party/big/d{i // 100:02d}/f{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    for i in range(50):
        (root / f"languages/c/src{i:02d}.c").parent.mkdir(parents=True, exist_ok=True)
        (root / f"languages/c/src{i:02d}.c").write_text(f"int f{i}(void) {{ return {i}; }}\n")
    for i in range(10):
        (root / f"lua-scripts/s{i}.lua").parent.mkdir(parents=True, exist_ok=True)
        (root / f"lua-scripts/s{i}.lua").write_text(f"return {i}\n")
    (root / "build-output").mkdir()
    (root / "build-output/artifact.bin").write_bytes(os.urandom(16 * 1024 * 1024))


def forge_build(root: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "forge.cli", "build", "//docker:stock", "--json"],
                         cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"forge failed:\n{out.stderr[-3000:]}")
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    ran = sum(1 for e in events if e.get("event") == "action" and e.get("status") == "built"
              and e.get("mnemonic") == "DockerBuild")
    return seconds, ran


def docker_loop(root: Path, cli: str, buildkit: bool, base: str) -> float:
    env = {**os.environ, "DOCKER_BUILDKIT": "1" if buildkit else "0"}
    start = time.perf_counter()
    previous = base
    for step in STEPS:
        tag = f"bench-ctx/{'bk' if buildkit else 'classic'}-{step.lower()}:{NONCE}"
        subprocess.run([cli, "build", "-q", "-f", f"docker/stock/{step}", "--build-arg",
                        f"BASE_IMAGE={previous}", "--network", "none", "-t", tag, "."],
                       cwd=root, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        previous = tag
    return time.perf_counter() - start


def buildkit_cli() -> str | None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from forge.plugins.buildkit import find_client

    client, _ = find_client(None)
    return client.cli if client and client.kind == "builtin" else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=64, help="size of third-party/big")
    args = parser.parse_args()
    classic_cli = shutil.which("docker") or "docker"
    bk_cli = buildkit_cli()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        make_repo(root, args.mb)
        env = {**os.environ, "FORGE_CACHE": str(Path(tmp) / "cache"), "CI": "true"}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        base = f"bench-ctx/base:{NONCE}"
        subprocess.run(["docker", "import", str(TESTDATA / "busybox-amd64.tar"), base],
                       check=True, capture_output=True)

        def edit(rel: str, text: str) -> None:
            (root / rel).write_text(text)

        cases = [
            ("cold (4 steps)", None),
            ("no-op", None),
            ("edit lua-scripts/s3.lua (step 40 reads it)", lambda: edit("lua-scripts/s3.lua", "return 33\n")),
            ("edit a third-party file (30 onward)",
             lambda: edit("third-party/big/d05/f0500.bin", "changed\n")),
            ("edit an ignored file + a file no step reads",
             lambda: (edit("build-output/artifact.bin", "x"), edit("README.md", "docs\n"))),
        ]
        rows = []
        try:
            for name, mutate in cases:
                if mutate:
                    mutate()
                f_s, ran = forge_build(root, env)
                c_s = docker_loop(root, classic_cli, False, base)
                b_s = docker_loop(root, bk_cli, True, base) if bk_cli else None
                rows.append((name, f_s, ran, c_s, b_s))
        finally:
            subprocess.run([sys.executable, "-m", "forge.cli", "clean", "--engine"], cwd=root, env=env,
                           capture_output=True)
            tags = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                                  capture_output=True, text=True).stdout.split()
            mine = [t for t in tags if t.startswith("bench-ctx/") and t.endswith(NONCE)]
            if mine:
                subprocess.run(["docker", "rmi", *mine], capture_output=True)
    print(f"\nrepository-wide context: third-party/big {args.mb} MB in 2000 files, 16 MB ignored, "
          f"4 steps; Docker {subprocess.run(['docker', 'version', '--format', '{{.Server.Version}}'], capture_output=True, text=True).stdout.strip()}\n")
    print("| case | forge (BuildKit) | steps run | docker build loop, classic | forge faster by "
          "| docker build loop, BuildKit | forge faster by |")
    print("|---|---|---|---|---|---|---|")
    for name, f_s, ran, c_s, b_s in rows:
        bk = f"{b_s:.1f} s | {b_s / f_s:.1f}×" if b_s is not None else "n/a | n/a"
        print(f"| {name} | {f_s:.1f} s | {ran} | {c_s:.1f} s | {c_s / f_s:.1f}× | {bk} |")


if __name__ == "__main__":
    main()
