"""layer: a deterministic filesystem layer from package files."""

from __future__ import annotations

from typing import Any

import forge
from forge import attr

DOC = """A deterministic tar layer of package files.

Entries are sorted, mtimes set to SOURCE_DATE_EPOCH (default 0), owner normalized, modes
reduced to 0755/0644 by the executable bit (unless mode_map says otherwise), compressed
with no name or time in the gzip header: the same files give the same digest anywhere.
"""

ATTRS = {
    "srcs": attr.sources(doc="files of this package to put in the layer",
                         example='srcs = glob(["rootfs/**"])'),
    "prefix": attr.string(default="/", doc="directory in the image the files go under",
                          example='prefix = "/usr/local/bin"'),
    "strip_prefix": attr.string(default="", doc="package-relative directory removed from each path",
                                example='strip_prefix = "rootfs"'),
    "mode_map": attr.string_dict(default={}, doc="octal mode per package-relative path",
                                 example='mode_map = {"run.sh": "0755"}'),
    "owner": attr.string(default="0:0", doc="uid:gid of every entry", example='owner = "1000:1000"'),
    "compression": attr.string(default="gzip", values=("gzip", "zstd", "none"),
                               doc="blob compression", example='compression = "zstd"'),
    "level": attr.integer(default=None, doc="compression level (gzip 0-3 ISA-L, default 2; "
                          "zstd 1-22, default 3)", example="level = 3"),
}


def _image_path(rel: str, prefix: str, strip: str) -> str:
    if strip:
        strip = strip.strip("/") + "/"
        if rel.startswith(strip):
            rel = rel[len(strip):]
    return "/" + "/".join(p for p in (prefix.strip("/"), rel) if p)


class Layer(forge.Rule):
    name = "layer"
    doc = DOC
    attrs = ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        a = ctx.attr
        for path, mode in a.mode_map.items():
            try:
                int(mode, 8)
            except ValueError:
                raise ctx.fail(f"mode_map[{path!r}] = {mode!r} is not an octal mode like '0755'") from None
        uid, _, gid = a.owner.partition(":")
        if not (uid.isdigit() and gid.isdigit()):
            raise ctx.fail(f"owner = {a.owner!r} should be numeric 'uid:gid'")
        # Sorted: the writer sorts entries anyway, so the order srcs are listed in is not
        # an input (reordering them must not re-run the layer).
        try:
            level = forge.oci.compression_level(a.compression, a.level)
        except ValueError as exc:
            raise ctx.fail(f"level = {a.level}: {exc}") from None
        files = ctx.files(sorted(a.srcs))
        action = ctx.action(
            "Layer", write_layer_action, version=2, inputs=files, timestamps=True,
            # Where each file lands is a parameter, so moving prefix re-keys the layer.
            params={
                "entries": [[f.relpath, _image_path(f.relpath, a.prefix, a.strip_prefix)] for f in files],
                "mode_map": a.mode_map, "owner": a.owner,
                # An explicit default level is the same output as none: key them alike.
                "compression": a.compression, "level": level,
            },
            description=f"{len(files)} files", materialize=materialize_layer,
        )
        return [forge.LayerInfo(action), forge.DefaultInfo(action)]


def write_layer_action(rc: forge.RunContext) -> forge.ActionResult:
    from dataclasses import replace


    p = rc.params
    sources = {f.relpath: f.path for f in rc.action.inputs}
    dest_of = {rel: dest for rel, dest in p["entries"]}
    modes = {dest_of[rel].lstrip("/"): int(m, 8) for rel, m in p["mode_map"].items() if rel in dest_of}
    entries = [
        replace(e, mode=modes[e.path]) if e.path in modes else e
        for e in forge.entries_from_files({dest: sources[rel] for rel, dest in p["entries"]})
    ]
    layer = forge.write_layer(rc.cas, entries, compression=p["compression"], level=p["level"],
                        owner=p["owner"], epoch=rc.epoch)
    return rc.result({"layer": layer_descriptor(layer)})


def layer_descriptor(layer):
    """A Layer as a result descriptor (digest, size, media type, diff_id)."""
    return forge.Descriptor(layer.digest, layer.size, layer.media_type, diff_id=layer.diff_id)


def materialize_layer(cas, result: forge.ActionResult, dest) -> None:
    """forge-out/<pkg>/<name>/layer.tar.gz (or .tar.zst / .tar, by compression)."""
    desc = result.outputs["layer"]
    kind = desc.media_type.rsplit("+", 1)[-1] if "+" in desc.media_type else desc.media_type.rsplit(".", 1)[-1]
    suffix = {"gzip": ".tar.gz", "zstd": ".tar.zst"}.get(kind, ".tar")
    dest.mkdir(parents=True, exist_ok=True)
    for stale in {".tar.gz", ".tar.zst", ".tar"} - {suffix}:  # a compression change
        (dest / f"layer{stale}").unlink(missing_ok=True)
    cas.copy_out(desc.digest, dest / f"layer{suffix}")
