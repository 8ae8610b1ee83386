"""What the supply chain costs: SBOM + provenance + signing on the Atom example's
production image, against the same builds without them.

    python benchmarks/supply_chain.py [--platform amd64] [--runs 3] [--cache DIR]

The Atom example's workspace (examples/atom) is copied to a temporary directory and
``//atom:graphics-<platform>-production`` built with a cache of its own (``--cache``,
kept between runs so the two debootstraps — about a minute each on amd64 — happen once;
aarch64 bootstraps under QEMU for minutes, hence amd64 by default). Then, with
``[plugins.supply_chain]`` off and then on (``sbom``, ``provenance``, ``signing_key``):

- **no-op**: the build again, nothing changed (median of ``--runs``);
- **edit**: one line appended to ``graphics/20-Dockerfile-display`` (a new one each run,
  so neither forge nor the engine has it; it writes a file under /usr/local/lib, so the
  harvest changes too): steps 20 and 30 of the graphics chain run,
  then minimize, the production assembly, and — when on — the production image's
  ``ImagePackages`` scan (the base's is a cache hit: it reads only the minimize layer),
  ``SbomPackages``, ``Sbom`` (binding the drafts to the new digest) and ``Provenance``;
  ``SbomDraft`` is a cache hit, the packages being the same. Median of ``--runs``; the
  seconds the supply chain actions themselves took are summed from ``--json``.

Both modes are warmed first (the "on" warm-up builds the base's package scan once).
Prints a markdown table. Run as root with the services of scripts/services.sh up.
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
EXAMPLE = REPO / "examples/atom"
EDITED = "atom/graphics/20-Dockerfile-display"
SUPPLY_ACTIONS = ("Sbom", "SbomDraft", "SbomPackages", "ImagePackages", "Provenance")


def forge(ws: Path, cache: Path, target: str) -> tuple[float, list[dict]]:
    env = {**os.environ, "FORGE_CACHE": str(cache), "CI": "true"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "forge.cli", "build", target, "--json"], cwd=ws,
                          env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"forge build {target} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return seconds, [e for e in events if e.get("event") == "action"]


MODES = {"off": "", "on": "", "on, validate = false": "validate = false\n"}


def configure(ws: Path, mode: str, key: Path) -> None:
    text = (EXAMPLE / "WORKSPACE.toml").read_text()
    if mode != "off":
        text += (f'\n[plugins.supply_chain]\nsbom = true\nprovenance = true\nsigning_key = "{key}"\n'
                 + MODES[mode])
    (ws / "WORKSPACE.toml").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", default="amd64")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/var/tmp/forge-bench-supply-chain"))
    args = parser.parse_args()
    target = f"//atom:graphics-{args.platform}-production"
    with tempfile.TemporaryDirectory(prefix="forge-bench-supply-") as tmp:
        ws = Path(tmp) / "atom"
        shutil.copytree(EXAMPLE, ws, ignore=shutil.ignore_patterns("forge-out"))
        key = Path(tmp) / "key.pem"
        subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out",
                        str(key)], check=True)
        edited = ws / EDITED
        original = edited.read_text()
        results: dict[str, dict[str, float]] = {}
        for mode in MODES:
            configure(ws, mode, key)
            warm, _ = forge(ws, args.cache, target)  # cold the first time (debootstraps)
            print(f"[{mode}] warm-up build: {warm:.1f} s", file=sys.stderr)
            noops = [forge(ws, args.cache, target)[0] for _ in range(args.runs)]
            edits, supply, ran = [], [], []
            for _ in range(args.runs):
                # a file the minimize harvests (/usr/local/lib): production and its SBOM change
                edited.write_text(original + f"RUN echo {uuid.uuid4().hex} > /usr/local/lib/forge-bench-edit\n")
                seconds, actions = forge(ws, args.cache, target)
                edits.append(seconds)
                built = [a for a in actions if a["status"] == "built"]
                ran.append(len(built))
                supply.append(sum(a["seconds"] for a in built if a["mnemonic"] in SUPPLY_ACTIONS))
                print(f"[{mode}] edit {seconds:.2f} s; " + ", ".join(
                    f"{a['mnemonic']} {a['seconds']:.3f} s" for a in built if a["mnemonic"] in SUPPLY_ACTIONS),
                    file=sys.stderr)
            edited.write_text(original)
            results[mode] = {"noop": statistics.median(noops), "edit": statistics.median(edits),
                             "supply": statistics.median(supply), "ran": statistics.median(ran)}
            print(f"[{mode}] {results[mode]}", file=sys.stderr)
    off = results["off"]

    def pct(a: float, b: float) -> str:
        return f"{(b - a) / a * 100:+.1f} %"

    print(f"`{target}`, median of {args.runs}:\n")
    print("| supply chain | warm no-op | added | edit `graphics/20-Dockerfile-display` | added "
          "| supply chain actions in it |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for mode, r in results.items():
        print(f"| {mode} | {r['noop']:.2f} s | {pct(off['noop'], r['noop']) if mode != 'off' else '-'} | "
              f"{r['edit']:.2f} s ({r['ran']:.0f} actions) | "
              f"{pct(off['edit'], r['edit']) if mode != 'off' else '-'} | "
              f"{r['supply']:.2f} s ({r['supply'] / off['edit'] * 100:.1f} %) |")


if __name__ == "__main__":
    main()
