"""Issue-13 benchmark: the cost of a miss, forge beside Atom's `docker build` loop.

    python benchmarks/miss_cost.py [--base-mb 320] [--steps 5] [--step-mb 20] [--chain20]

A chain of ``--steps`` Dockerfiles on a base of ``--base-mb`` of real files (busybox plus
this machine's /usr/lib/x86_64-linux-gnu, read in name order), each step COPYing a
small file and RUNning a command that writes ``--step-mb`` of random bytes. In one run, on the same engine (classic
builder, like forge's executor):

- **cold**: forge with an empty cache and an engine without the base (its time includes
  importing the base tar into its CAS and the engine); the docker loop includes
  ``docker import`` of the same tar;
- **no-op**: both again;
- **edit step N-1**: the RUN line of the next-to-last Dockerfile changed (both re-run it
  and the last step);
- **edit last step, --load**: the last Dockerfile changed, forge with ``--load`` (the
  docker loop tags every step anyway).

Every run gets its own base (a run-id file in it), so no earlier run's layer cache
serves either tool. A second table prints the bytes forge moved per executed step
(engine→CAS and CAS→engine, from ``forge build --json`` action counters) against the
size of the layers the step created (``docker history``); ``--chain20`` adds a 20-step
chain of +5 MB steps to show the total is linear in the new layers.

Run as root with the services of scripts/services.sh up.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

TESTDATA = Path(os.environ.get("FORGE_TESTDATA", "/var/cache/forge-testdata"))
REAL_FILES = Path("/usr/lib/x86_64-linux-gnu")


def make_base(path: Path, megabytes: int, run_id: str) -> int:
    """busybox + real files up to ``megabytes``; returns the bytes of file content."""
    total = 0
    with tarfile.open(path, "w") as out:
        with tarfile.open(TESTDATA / "busybox-amd64.tar") as bb:
            for member in bb:
                out.addfile(member, bb.extractfile(member) if member.isfile() else None)
        # Hard-linked files (Mesa's dri drivers) are left out: forge's rootfs import
        # writes each link as a full copy, which would inflate the base it imports.
        files = sorted(p for p in REAL_FILES.rglob("*")
                       if p.is_file() and not p.is_symlink() and p.stat().st_nlink == 1)
        for p in files:
            if total >= megabytes << 20:
                break
            out.add(p, arcname=str(p)[1:], recursive=False)
            total += p.stat().st_size
        data = f"{run_id}\n".encode()
        info = tarfile.TarInfo("etc/bench-run-id")
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
    return total


def dockerfile(i: int, edit: int, step_mb: int) -> str:
    return ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
            f"COPY note{i:02d}.txt /data/note{i:02d}.txt\n"
            f"RUN echo 'step {i} edit {edit}' > /data/step{i:02d}.txt && "
            f"head -c {step_mb << 20} /dev/urandom > /data/blob{i:02d}.bin && ls /data | wc -l > /data/count\n")


def make_workspace(root: Path, steps: int, step_mb: int, base_tar: Path) -> None:
    chain = root / "app/chain"
    chain.mkdir(parents=True)
    (root / "WORKSPACE.toml").write_text('[workspace]\nname = "miss"\n')
    os.link(base_tar, root / "app/base.tar")
    for i in range(1, steps + 1):
        (chain / f"note{i:02d}.txt").write_text(f"step {i}\n" * 100)
        (chain / f"{i * 10:02d}-Dockerfile-step{i:02d}").write_text(dockerfile(i, 0, step_mb))
    (root / "app/BUILD").write_text(
        'oci_import(name = "base", src = "base.tar", platform = "amd64")\n'
        'dockerfile_chain(name = "chain", dir = "chain", base = ":base")\n'
    )


def edit(root: Path, step: int, n: int, step_mb: int) -> None:
    (root / f"app/chain/{step * 10:02d}-Dockerfile-step{step:02d}").write_text(dockerfile(step, n, step_mb))


class Forge:
    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.env = {**os.environ, "FORGE_CACHE": str(cache), "CI": "true"}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run it: with .pyc caches
        self.steps: list[dict] = []

    def build(self, *extra: str) -> float:
        cmd = [sys.executable, "-m", "forge.cli", "build", "--json", "//app:chain", *extra]
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=self.root, env=self.env, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        for line in out.stdout.splitlines():
            event = json.loads(line)
            if event.get("event") == "action" and event.get("status") == "built":
                if event.get("mnemonic") == "DockerBuild":
                    self.steps.append(event)
                else:
                    print(f"  ({event['mnemonic']} {event['description']}: {event['seconds']:.2f} s)")
        return seconds


class DockerLoop:
    def __init__(self, root: Path, run_id: str):
        self.root = root
        self.prefix = f"bench-miss-{run_id}"
        self.env = {**os.environ, "DOCKER_BUILDKIT": "0"}

    def import_base(self) -> float:
        start = time.perf_counter()
        subprocess.run(["docker", "import", str(self.root / "app/base.tar"), f"{self.prefix}/base:latest"],
                       check=True, capture_output=True)
        return time.perf_counter() - start

    def build(self) -> float:
        start = time.perf_counter()
        base = f"{self.prefix}/base:latest"
        chain = self.root / "app/chain"
        for df in sorted(chain.glob("*-Dockerfile-*"), key=lambda p: int(p.name.split("-")[0])):
            tag = f"{self.prefix}/{df.name.lower()}:latest"
            subprocess.run(["docker", "build", "-q", "-f", str(df), "--build-arg", f"BASE_IMAGE={base}",
                            "--network", "none", "-t", tag, str(chain)],
                           env=self.env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            base = tag
        return time.perf_counter() - start


def cleanup_engine(prefixes: tuple[str, ...]) -> None:
    """Remove only what this run made: its docker-loop tags and forge's engine tags of
    images this run's forge cache names."""
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                         capture_output=True, text=True, check=True).stdout.split()
    tags = [t for t in out if t.startswith(prefixes)]
    if tags:
        subprocess.run(["docker", "rmi", "-f", *tags], check=False, capture_output=True)


def forge_engine_tags(cache: Path) -> tuple[str, ...]:
    """forge-base/<config digest> tags of every config in this run's CAS."""
    tags = []
    for blob in (cache / "cas" / "sha256").rglob("*"):
        if blob.is_file() and blob.stat().st_size < 1 << 20:
            try:
                doc = json.loads(blob.read_bytes())
            except ValueError:
                continue
            if isinstance(doc, dict) and "rootfs" in doc:
                tags.append(f"forge-base/{blob.name[:32]}:")
    return tuple(tags)


def layer_sizes(image: str, count: int) -> int:
    """Bytes of the top ``count`` layers of an engine image (docker history sizes)."""
    out = subprocess.run(["docker", "history", "--no-trunc", "--format", "{{.Size}}", "--human=false", image],
                         capture_output=True, text=True, check=True).stdout.split()
    sizes = [int(s) for s in out if s.isdigit()]
    return sum(sorted(sizes[:count * 3], reverse=True)[:count])  # COPY and RUN layers, newest first


def run(args: argparse.Namespace) -> None:
    runs = [measure(args) for _ in range(args.runs)]
    rows, forge_steps, created, content = runs[0]
    if args.runs > 1:
        rows = [(name, statistics.median(r[0][i][1] for r in runs), statistics.median(r[0][i][2] for r in runs))
                for i, (name, _, _) in enumerate(rows)]
    print(f"\nChain of {args.steps} Dockerfiles on a {content / 1e6:.0f} MB base of real files, "
          f"+{args.step_mb} MB per step (classic builder, {docker_version()}), seconds"
          + (f", median of {args.runs} runs" if args.runs > 1 else "") + ":\n")
    print("| case | forge | docker loop | forge / docker |")
    print("| --- | ---: | ---: | ---: |")
    for name, f, d in rows:
        print(f"| {name} | {f:.2f} | {d:.2f} | {f / d:.2f}× |")
    print("\nBytes forge moved per executed Dockerfile step (engine→CAS, CAS→engine) against the "
          f"layers the step created (docker history of the last step: {created / 1e6:.1f} MB):\n")
    print("| build | step | engine→CAS | CAS→engine | layers created | moved / created |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    per_step = created / 2
    for event in forge_steps:
        c = event.get("counters", {})
        out_b, in_b = c.get("engine_to_cas_bytes", 0), c.get("cas_to_engine_bytes", 0)
        print(f"| {event['key'][:8]} | {event['description']} ({event['seconds']:.2f} s) | {out_b / 1e6:.1f} MB | "
              f"{in_b / 1e6:.1f} MB | {per_step / 1e6:.1f} MB | {out_b / per_step:.2f}× |")
    if args.chain20:
        chain20(args)


def measure(args: argparse.Namespace) -> tuple[list, list, int, int]:
    run_id = uuid.uuid4().hex[:12]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        tmp_path = Path(tmp)
        base_tar = tmp_path / "base.tar"
        content = make_base(base_tar, args.base_mb, run_id)
        root = tmp_path / "ws"
        make_workspace(root, args.steps, args.step_mb, base_tar)
        cache = tmp_path / "cache"
        forge, docker = Forge(root, cache), DockerLoop(root, run_id)
        rows = []
        try:
            rows.append(("cold", forge.build(), docker.import_base() + docker.build()))
            rows.append(("no-op", forge.build(), docker.build()))
            edit(root, args.steps - 1, 1, args.step_mb)
            rows.append((f"edit step {args.steps - 1} (steps {args.steps - 1}–{args.steps} re-run)",
                         forge.build(), docker.build()))
            edit(root, args.steps, 1, args.step_mb)
            rows.append((f"edit step {args.steps}, `--load`", forge.build("--load"), docker.build()))
            created = layer_sizes(f"{docker.prefix}/{args.steps * 10:02d}-dockerfile-step{args.steps:02d}:latest", 2)
        finally:
            cleanup_engine((f"{docker.prefix}/", *forge_engine_tags(cache), "forge/app/chain:"))
    return rows, forge.steps, created, content


def chain20(args: argparse.Namespace) -> None:
    run_id = uuid.uuid4().hex[:12]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        tmp_path = Path(tmp)
        make_base(tmp_path / "base.tar", args.base_mb, run_id)
        root = tmp_path / "ws"
        make_workspace(root, 20, 5, tmp_path / "base.tar")
        cache = tmp_path / "cache"
        forge = Forge(root, cache)
        try:
            seconds = forge.build()
        finally:
            cleanup_engine((*forge_engine_tags(cache),))
        moved = sum(e.get("counters", {}).get("engine_to_cas_bytes", 0) for e in forge.steps)
        sent = sum(e.get("counters", {}).get("cas_to_engine_bytes", 0) for e in forge.steps)
        print(f"\n20-step chain, +5 MB per step, cold: {seconds:.1f} s; engine→CAS {moved / 1e6:.1f} MB "
              f"for {20 * 5 * 1.048576:.1f} MB of new files ({moved / (20 * 5 << 20):.3f}×); "
              f"CAS→engine {sent / 1e6:.1f} MB (the base, once)")


def docker_version() -> str:
    out = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True)
    return f"Docker {out.stdout.strip()}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-mb", type=int, default=320)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--step-mb", type=int, default=20)
    parser.add_argument("--chain20", action="store_true")
    parser.add_argument("--runs", type=int, default=1, help="repeat, report the median of each case")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
