"""Image deltas: the built-in codecs and the ``forge delta`` / ``forge apply-delta`` commands.

Codecs (``forge_register_delta_codecs``):

- ``zstd`` (default): the new layer tar compressed by zstd with the old layers' tars as a
  raw prefix dictionary (``zstd --patch-from``), long-distance matching on, a window that
  covers prefix and tar (at most 2 GiB), level 19 unless ``level`` says otherwise. Fast to
  apply (the device needs pyzstd only), close to bsdiff in size;
- ``bsdiff``: a BSDIFF40 patch (``bsdiff4``): smaller on binaries, much slower to make
  (and O(n) memory on both sides); the device needs the ``bsdiff4`` module too.

Both are deterministic for a given library version, which their fingerprint names (it
enters the delta action's key). Delta blobs are decoded by ``forge.delta_apply``, the one
decoder, so what ``forge apply-delta`` does is what a device does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import forge

ZSTD_DEFAULT_LEVEL = 19
CHUNK = 1 << 20


class ZstdPatchCodec:
    """zstd with the source tars as a raw prefix (``--patch-from``)."""

    name = "zstd"
    media_type = forge.delta_apply.ZSTD_PATCH

    def __repr__(self) -> str:
        return "ZstdPatchCodec()"

    @staticmethod
    def _level(level: int | None) -> int:
        level = ZSTD_DEFAULT_LEVEL if level is None else level
        if not 1 <= level <= 22:
            raise ValueError(f"zstd level {level} out of range 1..22")
        return level

    def fingerprint(self, level: int | None) -> str:
        import pyzstd

        return (f"zstd-patch-from/pyzstd-{pyzstd.__version__}/libzstd-{pyzstd.zstd_version}/"
                f"level-{self._level(level)}/ldm/window-cover/checksum/chunk-{CHUNK}")

    def make(self, sources: Sequence[Path], target: Path, out: BinaryIO, level: int | None) -> None:
        import pyzstd

        prefix = b"".join(Path(p).read_bytes() for p in sources)
        total = len(prefix) + os.path.getsize(target)
        window = max(10, min(forge.delta_apply.WINDOW_LOG_MAX, total.bit_length()))
        option = {
            pyzstd.CParameter.compressionLevel: self._level(level),
            pyzstd.CParameter.windowLog: window,
            pyzstd.CParameter.enableLongDistanceMatching: 1,
            pyzstd.CParameter.checksumFlag: 1,
            pyzstd.CParameter.nbWorkers: 0,  # one thread: the frame depends on the input only
        }
        zdict = pyzstd.ZstdDict(prefix, is_raw=True).as_prefix if prefix else None
        compressor = pyzstd.ZstdCompressor(option, zdict)
        with open(target, "rb") as fh:
            while True:
                chunk = fh.read(CHUNK)
                if not chunk:
                    break
                out.write(compressor.compress(chunk))
        out.write(compressor.flush())

    def apply(self, prefix: bytes, delta: Path, out: BinaryIO) -> None:
        forge.delta_apply.decode_zstd_patch(prefix, delta, out)


class Bsdiff4Codec:
    """bsdiff (BSDIFF40) from the concatenated source tars to the new tar."""

    name = "bsdiff"
    media_type = forge.delta_apply.BSDIFF4

    def __repr__(self) -> str:
        return "Bsdiff4Codec()"

    def fingerprint(self, level: int | None) -> str:
        import bsdiff4

        if level is not None:
            raise ValueError("bsdiff has no levels (leave level unset)")
        return f"bsdiff4-{bsdiff4.__version__}"

    def make(self, sources: Sequence[Path], target: Path, out: BinaryIO, level: int | None) -> None:
        import bsdiff4

        prefix = b"".join(Path(p).read_bytes() for p in sources)
        out.write(bsdiff4.diff(prefix, Path(target).read_bytes()))

    def apply(self, prefix: bytes, delta: Path, out: BinaryIO) -> None:
        forge.delta_apply.decode_bsdiff4(prefix, delta, out)


@forge.hookimpl
def forge_register_delta_codecs(registry) -> None:
    registry.add(ZstdPatchCodec())
    registry.add(Bsdiff4Codec())


# -- commands -----------------------------------------------------------------------------


def delta_targets(session: Any, patterns: list[str]) -> list[tuple[Any, list[Any], str]]:
    """Build ``image_delta`` targets; (summary, its delta artifacts, the image label) each."""
    summaries, outcomes = session.build(patterns)
    forge.raise_for_failures(outcomes)
    out = []
    for s in summaries:
        if "deltas" not in s.outputs:
            raise forge.UsageError(f"{s.label} is not an image_delta target (it has outputs: "
                                   f"{', '.join(s.outputs) or 'none'})")
        deltas = forge.oci.load_delta_index(session.cas, s.outputs["deltas"])
        image = next((o.result.metadata.get("image") for o in outcomes.values()
                      if o.result is not None and o.result.outputs.get("deltas")
                      and o.result.outputs["deltas"].digest == s.outputs["deltas"]), None)
        out.append((s, deltas, image))
    return out


def describe(delta: Any, target_manifest: bytes) -> list[str]:
    """Lines about one delta artifact: from, to, per-layer sizes against the target's."""
    import json

    doc = json.loads(delta.manifest_bytes)
    notes = doc["annotations"]
    target = json.loads(target_manifest)
    sizes = {layer["digest"]: layer["size"] for layer in target.get("layers") or []}
    lines = [f"{notes['dev.forge.delta.from'][:19]} -> {notes['dev.forge.delta.to'][:19]} "
             f"({notes.get('dev.forge.delta.codec', '?')}, delta {delta.digest[:19]})"]
    sent = 0
    for layer in doc["layers"][2:]:
        a = layer["annotations"]
        full = sizes.get(a[forge.delta_apply.A_LAYER_TO], 0)
        sent += layer["size"]
        share = f"{100 * layer['size'] / full:.2f}%" if full else "-"
        lines.append(f"  layer {a[forge.delta_apply.A_DIFF_ID][:19]}: {forge.human_size(layer['size'])} "
                     f"instead of {forge.human_size(full)} ({share}), from "
                     f"{len([s for s in a[forge.delta_apply.A_SOURCES].split(',') if s])} old layer(s)")
    return lines


@forge.hookimpl
def forge_cli_commands() -> dict[str, Any]:
    """``forge delta`` and ``forge apply-delta`` (loaded only when asked)."""
    import click

    @click.command("delta")
    @click.argument("patterns", nargs=-1, required=True)
    @click.option("--push", "push_to", metavar="HOST/REPO",
                  help="Push each target image and its deltas (as its referrers) to this repository.")
    @click.option("-o", "--output", type=click.Path(file_okay=False),
                  help="Also write the deltas as an OCI layout (what apply-delta reads offline).")
    @click.option("--platform", help="Default platform, as for build.")
    @click.option("-j", "--jobs", type=int, help="Actions to run at once.")
    @click.pass_context
    def delta(ctx, patterns, push_to, output, platform, jobs) -> None:
        """Build the image_delta targets PATTERNS (cached like any action), print what each
        delta saves, and push them (--push) or write them (-o)."""
        import json

        options = {k: v for k, v in {"platform": platform, "jobs": jobs}.items() if v is not None}
        cwd = (ctx.find_root().obj or {}).get("cwd") or os.getcwd()
        session = forge.Session(Path(cwd), reporter=forge.PlainReporter(), options=options)
        built = delta_targets(session, list(patterns))
        every = [d for _, deltas, _ in built for d in deltas]
        for s, deltas, _ in built:
            click.echo(f"{s.label}: {len(deltas)} delta(s)")
            for d in deltas:
                subject = json.loads(d.manifest_bytes)["subject"]["digest"]
                for line in describe(d, session.cas.read_bytes(subject)):
                    click.echo(f"  {line}")
        if output:
            forge.oci.write_delta_layout(session.cas, every, Path(output))
            click.echo(f"wrote {len(every)} delta(s) to {output}")
        if push_to:
            ref = forge.oci.parse_reference(push_to)
            if ref.tag or ref.digest:
                raise forge.UsageError(f"--push {push_to}: name a repository (host/repo), no tag or digest")
            client = forge.oci.RegistryClient(ref.registry)
            images = sorted({image for _, _, image in built if image})
            summaries, outcomes = session.build(images)
            forge.raise_for_failures(outcomes)
            for s in summaries:
                value = forge.oci.load(session.cas, s.outputs.get("manifest") or s.outputs["index"])
                client.push(session.cas, value, ref.repository)
            stats = forge.oci.push_deltas(client, session.cas, ref.repository, every)
            how = ("the registry's referrers API" if stats["indexed_by_registry"] == stats["manifests"]
                   else "the referrers tag sha256-<target hex>, as the registry has no referrers API")
            click.echo(f"pushed {len(images)} image(s) and {stats['manifests']} delta(s) to {push_to}, "
                       f"listed by {how}")
            for d in every:
                subject = json.loads(d.manifest_bytes)["subject"]["digest"]
                click.echo(f"  on a device: python -m forge.delta_apply {push_to}@{subject} "
                           "--base-engine --load --tag <name:tag>")

    @click.command("apply-delta", context_settings={"ignore_unknown_options": True},
                   add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def apply_delta(args) -> None:
        """Make a new image from a delta and the old image (the device-side applier,
        forge.delta_apply, with this workspace's codecs); --help for its options."""
        codecs = forge.oci.delta_codecs(_workspace_root())
        decoders = {c.media_type: c.apply for c in codecs.by_media_type().values()
                    if c.media_type not in forge.delta_apply.DECODERS}
        raise SystemExit(forge.delta_apply.main(list(args), decoders=decoders, recompress=recompress))

    return {"delta": delta, "apply-delta": apply_delta}


def recompress(tar: Path, compression: str, directory: Path) -> Path | None:
    """A reconstructed layer tar compressed as forge writes layers (``forge.oci.store_tar``,
    default level): the built image's very blob when the same compressor build made it,
    so ``apply-delta --output`` writes the built manifest itself."""
    if compression not in ("gzip", "zstd"):
        return None
    scratch = Path(tempfile.mkdtemp(prefix=".recompress-", dir=directory))
    try:
        cas = forge.CAS(scratch)
        with open(tar, "rb") as fh:
            layer = forge.oci.store_tar(cas, fh, compression=compression)
        out = directory / f".recompressed-{layer.digest.split(':')[1]}"
        os.replace(cas.path(layer.digest), out)
        return out
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _workspace_root() -> str | None:
    """The workspace above the working directory, if there is one (for its plugins' codecs)."""
    here = Path(os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "WORKSPACE.toml").is_file():
            return str(d)
    return None
