"""Update deltas: how much smaller than the new layers, how long to make and to apply.

    python benchmarks/deltas.py [--cases a,b,c] [--codecs zstd,bsdiff]

Three updates, each between two images built by forge in a copy of the Atom example
(``examples/atom``, its debootstrap bases from the shared cache):

- **(a)** the Atom example's production image (``graphics-amd64-production``) after an edit
  of one source line of its C library (``stock/src/atomhello.c``): stock 30 onward rebuilds,
  minimize harvests again, production assembles the new minimized layer;
- **(b)** a Debian package added to a base: ``slim-amd64`` (bookworm minbase) plus a
  Dockerfile step that ``dpkg -i``s ``hello`` and ``less`` (fetched on the host with
  ``apt-get download``; the step runs without network);
- **(c)** an unrelated image: ``slim-amd64`` as an "update" of busybox.

For each: the compressed size of the layers the old image lacks (what a plain pull moves),
the delta per codec (``image_delta`` targets, so the delta is the action forge caches),
the seconds to make it (the ImageDelta action) and to apply it (``forge.delta_apply``:
old image from an OCI layout, output as an OCI layout, verified). Prints a markdown table.
Run as root with the services of scripts/services.sh up; the first run bootstraps the
bases (minutes), later runs find them in the cache.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EXTRA_BUILD = """
# --- benchmarks/deltas.py -----------------------------------------------------------
dockerfile(name = "bench-pkg", base = ":slim-amd64", dockerfile = "bench/Dockerfile.pkg",
           srcs = glob(["bench/debs/*.deb"]), platform = "amd64")
oci_import(name = "bench-bb", src = "bench/busybox-amd64.tar", platform = "amd64")
"""
DELTA = 'image_delta(name = "bench-{case}-{codec}", image = ":{image}", releases = ["bench/{case}1"], codec = "{codec}")\n'
CASES = {
    "a": ("graphics-amd64-production", "graphics-amd64-production",
          "one source line of the C library (Atom production image)"),
    "b": ("slim-amd64", "bench-pkg", "Debian packages added to a base (hello, less)"),
    "c": ("bench-bb", "slim-amd64", "an unrelated image (busybox -> bookworm minbase)"),
}
DOCKERFILE_PKG = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY bench/debs/ /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs
"""


def forge(ws: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "forge.cli", *args, "--json"], cwd=ws,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"forge {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {"events": events, "summary": events[-1]}


def digest_of(run: dict, label: str) -> str:
    return next(t["digest"] for t in run["summary"]["targets"] if t["label"] == label)


def new_layer_bytes(layouts: Path, old: str, new: str) -> tuple[int, int]:
    """(compressed bytes, count) of the layers of ``new`` whose diff_id ``old`` lacks."""
    def image(name: str):
        root = layouts / name
        entry = json.loads((root / "index.json").read_bytes())["manifests"][0]
        manifest = json.loads((root / "blobs/sha256" / entry["digest"][7:]).read_bytes())
        config = json.loads((root / "blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes())
        return list(zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True))

    have = {d for _, d in image(old)}
    fresh = [layer for layer, d in image(new) if d not in have]
    return sum(layer["size"] for layer in fresh), len(fresh)


def main() -> None:
    p = argparse.ArgumentParser(description="image delta sizes and times")
    p.add_argument("--cases", default="a,b,c")
    p.add_argument("--codecs", default="zstd,bsdiff")
    p.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = p.parse_args()
    cases = args.cases.split(",")
    codecs = args.codecs.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="forge-bench-deltas-"))
    ws = tmp / "atom"
    shutil.copytree(REPO / "examples/atom", ws, ignore=shutil.ignore_patterns("forge-out"))
    pkg = ws / "atom"
    bench = pkg / "bench"
    (bench / "debs").mkdir(parents=True)
    subprocess.run(["apt-get", "download", "hello", "less"], cwd=bench / "debs", check=True,
                   capture_output=True)
    (bench / "Dockerfile.pkg").write_text(DOCKERFILE_PKG)
    shutil.copy("/var/cache/forge-testdata/busybox-amd64.tar", bench / "busybox-amd64.tar")
    build = pkg / "BUILD"
    build.write_text(build.read_text() + EXTRA_BUILD + "".join(
        DELTA.format(case=c, codec=k, image=CASES[c][1]) for c in cases for k in codecs))
    layouts = tmp / "layouts"

    # the old images, kept as the OCI layouts forge-out holds
    started = time.monotonic()
    old = {c: CASES[c][0] for c in cases}
    forge(ws, "build", *sorted({f"//atom:{v}" for v in old.values()}))
    for c, name in old.items():
        shutil.copytree(ws / "forge-out/atom" / name, bench / f"{c}1")
        shutil.copytree(ws / "forge-out/atom" / name, layouts / f"{c}-old")
    if "a" in cases:  # the release after it: one source line of libatomhello edited
        src = pkg / "stock/src/atomhello.c"
        src.write_text(src.read_text().replace('"hello from %s"', '"hello from %s!"'))
    print(f"old images ready in {time.monotonic() - started:.1f} s", file=sys.stderr)

    rows = []
    for c in cases:
        new_label = f"//atom:{CASES[c][1]}"
        for k in codecs:
            run = forge(ws, "build", new_label, f"//atom:bench-{c}-{k}")
            make = time_make(ws, digest_of(run, new_label), c, k)
            shutil.rmtree(layouts / f"{c}-new", ignore_errors=True)
            shutil.copytree(ws / "forge-out/atom" / CASES[c][1], layouts / f"{c}-new")
            full, count = new_layer_bytes(layouts, f"{c}-old", f"{c}-new")
            delta_dir = ws / "forge-out/atom" / f"bench-{c}-{k}"
            index = json.loads((delta_dir / "index.json").read_bytes())
            manifest = json.loads((delta_dir / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
            size = sum(layer["size"] for layer in manifest["layers"][2:])
            kept = len(manifest["layers"]) - 2
            if kept < count:  # layers whose delta was not smaller go plainly: count them in full
                covered = {layer["annotations"]["dev.forge.delta.to"] for layer in manifest["layers"][2:]}
                size += full - sum_sizes(layouts / f"{c}-new", covered)
            from forge import delta_apply

            out = tmp / f"applied-{c}-{k}"
            t0 = time.monotonic()
            try:
                report = delta_apply.apply_delta(str(delta_dir), base_layout=str(layouts / f"{c}-old"),
                                                 output=str(out), work_dir=str(tmp / "work"),
                                                 log=lambda line: None)
                apply_s: float | None = time.monotonic() - t0
                assert report.config_digest == config_digest(layouts / f"{c}-new")
            except delta_apply.Refused:  # a layer to pull plainly, which a layout cannot give
                apply_s = None
            rows.append((c, k, full, count, size, kept, make, apply_s))
            print(row(rows[-1]), file=sys.stderr, flush=True)
            shutil.rmtree(out, ignore_errors=True)

    print("| case | codec | new layers (compressed) | delta | delta / layers | make (s) | apply (s) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(row(r))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}", file=sys.stderr)


def time_make(ws: Path, target_digest: str, case: str, codec: str) -> float:
    """Seconds the ImageDelta action's work takes, timed afresh (the action itself may be a
    cache hit from an earlier run): the same function on the same images."""
    import forge
    from forge.core.session import Session

    session = Session(ws)
    cas = session.cas
    layout = ws / "atom/bench" / f"{case}1"
    base_digest = json.loads((layout / "index.json").read_bytes())["manifests"][0]["digest"]
    target, base = forge.load_image(cas, target_digest), forge.load_image(cas, base_digest)
    scratch = Path(tempfile.mkdtemp(prefix="delta-make-"))
    started = time.monotonic()
    forge.oci.make_image_delta(cas, target, base, forge.oci.delta_codec(codec), None, scratch)
    seconds = time.monotonic() - started
    shutil.rmtree(scratch, ignore_errors=True)
    return seconds


def row(r: tuple) -> str:
    c, k, full, count, size, kept, make, apply_s = r
    note = "" if kept == count else f" ({count - kept} of {count} layers: no smaller delta, sent plainly)"
    applied = f"{apply_s:.2f}" if apply_s is not None else "- (pulls plainly)"
    return (f"| ({c}) {CASES[c][2]} | {k} | {full / 1e6:.2f} MB ({count}) | {human(size)}{note} | "
            f"{100 * size / full:.2f}% | {make:.2f} | {applied} |")


def config_digest(layout: Path) -> str:
    entry = json.loads((layout / "index.json").read_bytes())["manifests"][0]
    return json.loads((layout / "blobs/sha256" / entry["digest"][7:]).read_bytes())["config"]["digest"]


def sum_sizes(layout: Path, digests: set[str]) -> int:
    entry = json.loads((layout / "index.json").read_bytes())["manifests"][0]
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"][7:]).read_bytes())
    return sum(layer["size"] for layer in manifest["layers"] if layer["digest"] in digests)


def human(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


if __name__ == "__main__":
    os.environ.setdefault("CI", "true")
    main()
