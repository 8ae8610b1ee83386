"""The Atom example, forge beside the Atom way, in one run.

    python benchmarks/atom_example.py [--platforms amd64,aarch64] [--flavors stock,graphics]

For each platform, the same Dockerfiles (examples/atom/atom/<flavor>/NN-Dockerfile-*, the
Atom example's workspace) are built three times by each tool:

- **cold**: nothing built yet (forge: an empty cache; Atom way: ``docker build --no-cache``);
- **warm no-op**: the same build again, nothing changed;
- **edit**: one line appended to ``graphics/20-Dockerfile-display``;
- **engine pruned**: the edit undone, and every image the two tools made removed from the
  engine, the base excepted: a fresh CI machine (or a ``docker system prune``) with the
  base pulled and forge's cache restored;
- **remote restore**: every result pushed to a cache repository on the local registry
  (``forge cache push``), the run's images removed from the engine, and the build run
  with an empty local cache: a fresh CI machine sharing the remote cache. The Atom way
  has no remote cache, so its column repeats its cold build.

"forge" is ``forge build //atom:<last flavor>-<platform>`` with its own cache;
"Atom way" is Atom's build.sh loop (see ``ATOM_BUILD_SH``): ``docker build`` per file,
``--build-arg BASE_IMAGE=<previous image>``, each ``<descriptor>-<platform>-args`` line
as a ``--build-arg``, the repository root as the context (Atom's ``../.``), Docker's
layer cache (classic builder, the same engine; forge runs BuildKit). Both start
from the same base: the example's debootstrap image, built once beforehand (not timed;
its time is printed), imported into the benchmark workspace and labelled with a run id so
no layer cache from an earlier run can serve either tool.

The Atom way here is its most favourable variant: the classic builder on the local image
store, so one step hands its image to the next for free. Atom's real build.sh runs buildx,
whose builder cannot see local images, and pushes every intermediate image to a registry
on localhost:5000 and pulls it back; and on a fresh CI machine its layer cache is empty,
so every CI build is the "cold" row. forge's per-step cost beyond Docker's is moving the
step's *new* layers into its CAS (and nothing of the base: plugins/docker_transfer.py).

Prints a markdown table. Run as root with the services of scripts/services.sh up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples/atom"  # the Atom example: a workspace of its own, package //atom
EDITED = "graphics/20-Dockerfile-display"  # in the atom package
DOCKER_PLATFORM = {"amd64": "linux/amd64", "aarch64": "linux/arm64"}
REGISTRY = os.environ.get("FORGE_BENCH_REGISTRY", "127.0.0.1:5000")  # scripts/services.sh

# Atom's build.sh, reduced to the loop: every NN-Dockerfile-* of the flavor folder, in
# order, on the previous result; args files become --build-arg flags.
ATOM_BUILD_SH = r"""
set -euo pipefail
platform=$1 docker_platform=$2 base=$3 dir=$4 tag=$5 cache=$6 root=$7
prev=$base
for df in $(ls "$dir" | grep -E '^[0-9]+-Dockerfile-' | sort -n); do
    desc=${df#*-Dockerfile-}
    args=()
    if [[ -f "$dir/$desc-$platform-args" ]]; then
        while IFS= read -r line || [[ -n "$line" ]]; do
            [[ -z "$line" || "$line" == \#* ]] && continue
            args+=(--build-arg "$line")
        done < "$dir/$desc-$platform-args"
    fi
    out="$tag-$desc"
    DOCKER_BUILDKIT=0 docker build -q $cache --platform "$docker_platform" -f "$dir/$df" \
        --build-arg BASE_IMAGE="$prev" "${args[@]}" -t "$out" "$root" > /dev/null
    prev=$out
done
docker tag "$prev" "$tag"
"""

BENCH_BUILD = """\
load("//atom:defs.star", "atom_image")

# The example's debootstrap output, imported, relabelled with this run's id.
{bases}
{images}
"""


@dataclass
class Row:
    platform: str
    case: str
    forge: float
    atom: float
    forge_actions: int
    extra: dict[str, float | None] = field(default_factory=dict)


# Hook for more columns: (title, fn(bench, platform, case) -> seconds or None). The
# remote-cache restore column (a fresh local cache, every result from the OCI remote
# cache) plugs in here.
EXTRA_COLUMNS: list[tuple[str, Callable[[Bench, str, str], float | None]]] = []


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return elapsed


class Bench:
    def __init__(self, platforms: list[str], flavors: list[str], workdir: Path):
        self.platforms = platforms
        self.flavors = flavors
        self.run_id = uuid.uuid4().hex[:10]
        self.workdir = workdir
        self.ws = workdir / "ws"  # a copy of the Atom example's workspace
        self.cache = workdir / "forge-cache"
        self.atom_dir = self.ws / "atom"  # its atom package
        self.setup_times: dict[str, float] = {}
        self.restore_ratio: dict[str, float] = {}

    # -- setup ------------------------------------------------------------------------
    def build_bases(self) -> None:
        """The debootstrap bases, in the Atom example's workspace with the user's cache."""
        for p in self.platforms:
            self.setup_times[p] = run(["forge", "build", f"//atom:base-{p}"], cwd=EXAMPLE)

    def write_workspace(self) -> None:
        self.ws.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLE / "WORKSPACE.toml", self.ws / "WORKSPACE.toml")
        shutil.copytree(EXAMPLE / "atom", self.atom_dir,
                        ignore=shutil.ignore_patterns("BUILD", "forge-out"))
        # every step's context is the repository root (Atom's `docker build ../.`)
        shutil.copytree(EXAMPLE / "languages", self.ws / "languages")
        # the imported bases are no step's context (and the classic CLI would send them)
        (self.ws / ".dockerignore").write_text((EXAMPLE / ".dockerignore").read_text() + "atom/bases\n")
        bases, images = [], []
        for p in self.platforms:
            shutil.copytree(EXAMPLE / f"forge-out/atom/base-{p}", self.atom_dir / f"bases/{p}")
            bases.append(
                f'oci_import(name = "debootstrap-{p}", src = "bases/{p}", platform = "{p}")\n'
                f'image(name = "base-{p}", base = ":debootstrap-{p}", platform = "{p}",\n'
                f'      labels = {{"forge.benchmark.run": "{self.run_id}"}})'
            )
            images += [f'atom_image("{f}", "{p}")' for f in self.flavors]
        (self.atom_dir / "BUILD").write_text(
            BENCH_BUILD.format(bases="\n".join(bases), images="\n".join(images)))

    # -- the two tools ----------------------------------------------------------------
    def forge(self, platform: str, *extra: str) -> tuple[float, int]:
        import json

        start = time.perf_counter()
        done = subprocess.run(
            ["forge", "build", "--json", f"//atom:{self.flavors[-1]}-{platform}", *extra],
            cwd=self.ws, env={**os.environ, "FORGE_CACHE": str(self.cache)},
            capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"forge build failed:\n{done.stderr[-3000:]}")
        events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        executed = [e for e in events if e.get("event") == "action" and e["status"] == "built"]
        return elapsed, len(executed)

    def load_base(self, platform: str) -> str:
        tag = f"forge-bench/atom-base-{platform}:{self.run_id}"
        run(["forge", "build", f"//atom:base-{platform}", "--load", "--tag", tag],
            cwd=self.ws, env={"FORGE_CACHE": str(self.cache)})
        return tag

    def atom_way(self, platform: str, base: str, cold: bool) -> float:
        script = self.workdir / "build.sh"
        script.write_text(ATOM_BUILD_SH)
        total = 0.0
        previous = base
        for flavor in self.flavors:
            tag = f"forge-bench/atom-{flavor}-{platform}:{self.run_id}"
            total += run(["bash", str(script), platform, DOCKER_PLATFORM[platform], previous,
                          str(self.atom_dir / flavor), tag, "--no-cache" if cold else "", str(self.ws)])
            previous = tag
        return total

    # -- cases ------------------------------------------------------------------------
    def measure(self, platform: str) -> list[Row]:
        rows = []
        extra = lambda case: {t: fn(self, platform, case) for t, fn in EXTRA_COLUMNS}  # noqa: E731
        # forge goes first: its cold build must not find the Atom way's layers in the engine
        # (the Atom way's cold build uses --no-cache, so forge's layers cannot help it).
        forge_cold, n_cold = self.forge(platform)
        base = self.load_base(platform)
        atom_cold = self.atom_way(platform, base, cold=True)
        steps = sum(len(list((self.atom_dir / f).glob("[0-9]*-Dockerfile-*"))) for f in self.flavors)
        rows.append(Row(platform, f"cold ({steps} Dockerfiles)", forge_cold, atom_cold, n_cold,
                        extra("cold")))
        forge_warm, n_warm = self.forge(platform)
        atom_warm = self.atom_way(platform, base, cold=False)
        rows.append(Row(platform, "warm no-op", forge_warm, atom_warm, n_warm, extra("warm")))
        edited = self.atom_dir / EDITED
        original = edited.read_text()
        edited.write_text(original + f"ENV BENCH_EDIT={self.run_id}-{platform}\n")
        try:
            forge_edit, n_edit = self.forge(platform)
            atom_edit = self.atom_way(platform, base, cold=False)
        finally:
            edited.write_text(original)
        rows.append(Row(platform, f"edit {EDITED}", forge_edit, atom_edit, n_edit, extra("edit")))
        self.prune_engine(keep=base)
        forge_pruned, n_pruned = self.forge(platform)
        atom_pruned = self.atom_way(platform, base, cold=False)
        rows.append(Row(platform, "engine pruned", forge_pruned, atom_pruned, n_pruned,
                        extra("pruned")))
        forge_restore, n_restore = self.remote_restore(platform)
        rows.append(Row(platform, "remote restore (empty cache, fresh engine)", forge_restore,
                        atom_cold, n_restore, extra("restore")))
        self.restore_ratio[platform] = forge_cold / forge_restore
        return rows

    def remote_restore(self, platform: str) -> tuple[float, int]:
        """A fresh CI machine with the remote cache: every result pushed to a cache
        repository of this run (``forge cache push``), the run's images removed from the
        engine, then the last flavor built with an empty local cache."""
        target = f"//atom:{self.flavors[-1]}-{platform}"
        url = f"{REGISTRY}/forge-bench/atom-{self.run_id}"
        run(["forge", "cache", "push", target, "--remote-cache", url], cwd=self.ws,
            env={"FORGE_CACHE": str(self.cache)})
        self.prune_engine()
        fresh = self.workdir / f"fresh-cache-{platform}"
        saved, self.cache = self.cache, fresh
        try:
            return self.forge(platform, "--remote-cache", url)
        finally:
            self.cache = saved

    def run_images(self) -> list[str]:
        """Every engine image of this run: built on the base, whose label they inherit."""
        return subprocess.run(
            ["docker", "images", "-a", "-q", "--no-trunc", "--filter",
             f"label=forge.benchmark.run={self.run_id}"],
            capture_output=True, text=True).stdout.split()

    def prune_engine(self, keep: str | None = None) -> None:
        keep_id = ""
        if keep:
            keep_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", keep],
                                     capture_output=True, text=True).stdout.strip()
        for _ in range(10):  # children before parents: repeat until only the base is left
            ids = [i for i in self.run_images() if i != keep_id]
            if not ids:
                return
            for image_id in ids:
                subprocess.run(["docker", "rmi", "-f", image_id], capture_output=True)

    def cleanup_engine(self) -> None:
        self.prune_engine()


def table(rows: list[Row]) -> str:
    titles = [t for t, _ in EXTRA_COLUMNS]
    head = ["platform", "case", "forge", "actions run", "Atom way (docker build loop)",
            "forge vs Atom way", *titles]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        ratio = r.atom / r.forge if r.forge else float("inf")
        cells = [r.platform, r.case, f"{r.forge:.1f}s", str(r.forge_actions), f"{r.atom:.1f}s",
                 f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower",
                 *(f"{r.extra[t]:.1f}s" if r.extra.get(t) is not None else "n/a" for t in titles)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platforms", default="amd64,aarch64")
    parser.add_argument("--flavors", default="stock,graphics",
                        help="flavors chained in order (the last one is built)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args()
    platforms = args.platforms.split(",")
    flavors = args.flavors.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="forge-atom-bench-"))
    bench = Bench(platforms, flavors, workdir)
    try:
        bench.build_bases()
        bench.write_workspace()
        rows = [row for p in platforms for row in bench.measure(p)]
    finally:
        bench.cleanup_engine()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"## Atom example: {' -> '.join(flavors)}, forge vs Atom's build.sh loop\n")
    for p, seconds in bench.setup_times.items():
        print(f"- base-{p} (debootstrap, shared by both, not in the table): {seconds:.1f}s "
              f"(a cache hit when it was built before)")
    print()
    print(table(rows))
    print()
    for p, ratio in bench.restore_ratio.items():
        print(f"- {p}: remote restore into an empty cache on a fresh engine is {ratio:.0f}x faster "
              "than forge's cold build")


if __name__ == "__main__":
    main()
