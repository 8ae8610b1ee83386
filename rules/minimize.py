"""minimize: harvest what a production image needs from a build image, by reading it.

Atom's minimize step ran ``ldd`` inside the build container (under QEMU for arm64) and
tarred up a fixed list of folders. Here the build image's layers are read straight from
the CAS (``forge.elf.LayeredRootFS``) and every ELF file asked for is resolved with
glibc's search rules for its own architecture (``forge.elf.harvest``, which uses
``forge.elf.LibraryResolver``): nothing runs, so the action has no executor and never
needs an emulator, and the answer is the same on any host. The output is one
deterministic layer plus a JSON report that says, for every harvested file, why it is
there; ``forge query why LABEL PATH`` prints that chain.

This module is the rule: its attributes, the analysis, the action that reads the images
and writes the layer and the report, and what ``--out`` materializes. The harvest itself,
the fit to the production base and the report format (described there) are
forge.core.elf.harvest, reached through ``forge.elf``.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import forge
from forge import attr
from forge.rules.args_files import (
    MinimizeArgs,
    find_minimize_args,
    image_path_problem,
    platform_spellings,
    read_minimize_args,
)

DOC = """Harvest what a production image needs from a build image, without running it.

Takes the `paths` asked for (default, as Atom: /usr/local/bin, /usr/local/lib,
/usr/local/include, /opt/venv, the python install, /etc/ssl), the `additional_files` and
the dlopen()ed plugins of `additional_lib_locations`, plus every shared library their ELF
files need — resolved statically with the image's own loader rules (RPATH, LD_LIBRARY_PATH
from the image's Env, RUNPATH, ld.so.conf, the interpreter's system directories), so no
container, no QEMU, no ldd. Libraries stay at their paths with their symlink chains.

Output: one deterministic layer (use it in `production`, or in `image(layers = [...])`)
and `report.json`: for every file, the pattern that requested it or the file that needed
it, through which soname, search directory and rule. `forge query why LABEL PATH` prints
the chain. A needed library that is not in the image fails the action with the list of
file -> soname (or warns with `missing = "warn"`).

`args` reads Atom's `minimize-<platform>-args` (a file, or the folder that holds one per
platform; the build image's platform picks it): comma lists of ADDITIONAL_LIB_LOCATIONS
(added to `additional_lib_locations`), ADDITIONAL_FILES (added to `additional_files`) and
PRODUCTION_PACKAGES (installed by a `production` of this target, with its own `packages`).
The file is parsed at analysis: its values are in the key, its comments and layout are not.
"""

# Atom's defaults: its build scripts put everything they build under /usr/local, the
# Python packages in a venv at /opt/venv, and ship the interpreter and the certificates.
DEFAULT_PATHS = [
    "/usr/local/bin",
    "/usr/local/lib",
    "/usr/local/include",
    "/opt/venv",
    "/usr/bin/python3*",
    "/usr/lib/python3*",
    "/etc/ssl",
]

ATTRS = {
    "image": attr.label(doc="the build image target to harvest from",
                        example='image = ":atom-build-aarch64"'),
    "paths": attr.string_list(
        default=DEFAULT_PATHS,
        doc="absolute paths or globs copied whole (directories recursively) and scanned for "
            "ELF files; with the default, paths the image lacks are skipped, a list you give "
            "must match",
        example='paths = ["/usr/local/bin/app", "/usr/local/lib"]'),
    "additional_files": attr.string_list(
        default=[], doc="more paths or globs copied and scanned like `paths` (each must match)",
        example='additional_files = ["/usr/share/X11/xkb", "/etc/fonts"]'),
    "additional_lib_locations": attr.string_list(
        default=[], doc="globs of dlopen()ed plugins: copied, and their own needs harvested "
                        "(each must match)",
        example='additional_lib_locations = ["/usr/lib/x86_64-linux-gnu/dri/*.so"]'),
    "args": attr.string(
        default=None,
        doc="Atom's minimize args file, or a folder holding minimize-<platform>-args (the build "
            "image's platform picks it): ADDITIONAL_LIB_LOCATIONS and ADDITIONAL_FILES are added "
            "to the attributes of those names, PRODUCTION_PACKAGES go to production",
        example='args = "graphics"'),
    "exclude": attr.string_list(
        default=[], doc="fnmatch patterns (`*` crosses `/`) of paths left out, with everything "
                        "under them; a needed library left out is reported, not an error",
        example='exclude = ["/usr/local/include", "*.a", "*/__pycache__"]'),
    "production_base": attr.label(
        default=None, doc="the image the layer will go on: libraries it already has (same path, "
                          "same content) are left out, and paths are placed through its "
                          "symlinks (e.g. /lib -> usr/lib) instead of replacing them",
        example='production_base = ":debian-slim"'),
    "dpkg_status": attr.boolean(
        default=True,
        doc="when the build image has a dpkg database: name each harvested file's package in "
            "the report and write distroless-style /var/lib/dpkg/status.d/<package> records "
            "(stanza + md5sums of the harvested files) into the layer, so scanners and the "
            "SBOM see those packages",
        example="dpkg_status = False"),
    "missing": attr.string(
        default="error", values=("error", "warn"),
        doc="what a needed library that is not in the image does: fail the action, or warn "
            "(e.g. when `production(packages = ...)` installs it)",
        example='missing = "warn"'),
}

FILE, DIR, SYMLINK = "file", "dir", "symlink"  # entry kinds, as forge.core.elf.rootfs names them


@forge.provider
class MinimizeInfo:
    """A minimize target: its action (outputs ``layer`` and ``report``), the platform of
    the image it read, the production base it was fitted to (if any), and the Debian
    packages its args file asks the production image for (PRODUCTION_PACKAGES)."""

    action: forge.Action
    platform: forge.Platform
    image: forge.Label
    production_base: forge.Label | None = None
    packages: tuple[str, ...] = ()


class Minimize(forge.Rule):
    name = "minimize"
    doc = DOC
    attrs = ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        a = ctx.attr
        for attr_name in ("paths", "additional_files", "additional_lib_locations"):
            for i, pattern in enumerate(getattr(a, attr_name)):
                if image_path_problem(pattern):
                    raise ctx.fail(f"{attr_name}[{i}] = {pattern!r} should be an absolute path "
                                   "or glob in the image, like '/usr/local/bin'")
        for i, pattern in enumerate(a.exclude):
            if not pattern.strip("/"):
                raise ctx.fail(f"exclude[{i}] = {pattern!r} would exclude everything")
        info = a.image[forge.ImageInfo]
        files, lib_locations, packages = list(a.additional_files), list(a.additional_lib_locations), ()
        if a.args is not None:
            args = read_args(ctx, a.args, info.platform)
            # Parsed here: the values are params (in the key), the file's bytes are not an
            # input, so a comment or reordered line re-runs nothing. PRODUCTION_PACKAGES do
            # not change the harvest, so they stay out of this key (production keys them).
            files = list(dict.fromkeys([*files, *args.files]))
            lib_locations = list(dict.fromkeys([*lib_locations, *args.lib_locations]))
            packages = args.packages
        deps = [info.action]
        base_label = None
        if a.production_base is not None:
            base = a.production_base[forge.ImageInfo]
            if base.platform != info.platform:
                raise ctx.fail(f"production_base {a.production_base.label} is {base.platform}, "
                               f"but image {a.image.label} is {info.platform}")
            deps.append(base.action)
            base_label = a.production_base.label
        action = ctx.action(
            # Layer mtimes are the build's epoch, so it is part of the output (timestamps).
            "Minimize", harvest_action, deps=deps, platform=info.platform, timestamps=True,
            params={
                "paths": a.paths, "additional_files": files,
                "additional_lib_locations": lib_locations, "exclude": a.exclude,
                # The defaults describe Atom's images; a path one image lacks is not an
                # error there, while a list the user wrote is checked.
                "strict_paths": a.paths != DEFAULT_PATHS,
                "missing": a.missing, "has_base": base_label is not None,
                "dpkg_status": a.dpkg_status,
            },
            description=f"from {a.image.label}" + (f" for {base_label}" if base_label else ""),
            materialize=materialize_minimize,
        )
        return [MinimizeInfo(action, info.platform, a.image.label, base_label, packages),
                forge.LayerInfo(action), forge.DefaultInfo(action)]


def read_args(ctx: forge.AnalysisContext, rel: str, platform: forge.Platform) -> MinimizeArgs:
    """The parsed ``args`` file: ``rel`` itself, or the folder's ``minimize-<platform>-args``."""
    display = f"{ctx.label.package}/{rel.strip('/')}" if ctx.label.package else rel.strip("/")
    if not rel.startswith("/") and (Path(ctx.package_dir) / rel).is_dir():
        directory = ctx.source_path(rel, "args", kind="dir")
        name = find_minimize_args(directory, platform)
        if name is None:
            looked = ", ".join(f"minimize-{s}-args" for s in platform_spellings(platform))
            raise ctx.fail(f"args = {rel!r}: {display}/ has no minimize args file for the build "
                           f"image's platform {platform} (looked for {looked})")
        rel, display = f"{rel.rstrip('/')}/{name}", f"{display}/{name}"
    return read_minimize_args(ctx.source_path(rel, "args"), display)


# -- the action -----------------------------------------------------------------------------


def _layer_entries(fs: Any, nodes: dict[str, Any]) -> Iterator[Any]:
    for path in sorted(nodes):
        node = nodes[path]
        mode = stat.S_IMODE(node.mode)
        if node.kind == DIR:
            yield forge.LayerEntry(path, DIR, mode=mode)
        elif node.kind == SYMLINK:
            yield forge.LayerEntry(path, SYMLINK, target=node.target)
        else:
            yield forge.LayerEntry(path, FILE, partial(fs.open, node.source), size=node.size,
                             mode=mode)


def harvest_action(rc: forge.RunContext) -> forge.ActionResult:
    """Read the build image (and production base) from the CAS, harvest, write the layer
    and the report."""
    from forge.rules.layer import layer_descriptor

    p = rc.params
    image = forge.dep_image(rc, rc.action.deps[0])
    base = forge.dep_image(rc, rc.action.deps[1]) if p["has_base"] else None
    env = (image.config.get("config") or {}).get("Env")
    request = forge.elf.HarvestRequest(
        tuple(p["paths"]), tuple(p["additional_files"]), tuple(p["additional_lib_locations"]),
        tuple(p["exclude"]), p["strict_paths"], forge.elf.env_value(env, "LD_LIBRARY_PATH"),
        forge.elf.env_value(env, "LD_PRELOAD"), p["dpkg_status"])
    tmp = str(rc.tempdir())
    with forge.elf.LayeredRootFS([rc.cas.path(layer.digest) for layer in image.layers], tmpdir=tmp) as fs:
        base_fs = (forge.elf.LayeredRootFS([rc.cas.path(layer.digest) for layer in base.layers], tmpdir=tmp)
                   if base is not None else None)
        try:
            h = forge.elf.harvest(fs, request, base_fs)
        finally:
            if base_fs is not None:
                base_fs.close()
        what = f"image {image.digest[:19]} ({rc.action.deps[0].label})"
        if h.missing:
            if p["missing"] == "error":
                raise forge.elf.MinimizeError(forge.elf.missing_message(what, h.missing))
            rc.warn(forge.elf.missing_message(what, h.missing).split("\n  add them")[0])
        records = [forge.LayerEntry(path, FILE, data, size=len(data), mode=0o644)
                   for path, data in sorted(h.status_d.items())]
        layer = forge.write_layer(rc.cas, [*_layer_entries(fs, h.nodes), *records], epoch=rc.epoch)
    # The report describes the harvest, not which image digest it came from (the log says
    # that): it is part of the result's identity, so naming the build image would re-key
    # every dependent whenever anything in the image changed, harvested or not.
    rc.log(f"harvested {image.digest} ({rc.action.deps[0].label})" +
           (f" for production base {base.digest}" if base is not None else ""))
    report = h.report(
        platform=str(image.platform or ""),
        ld_library_path=request.ld_library_path,
        request={k: p[k] for k in ("paths", "additional_files", "additional_lib_locations",
                                   "exclude", "missing")},
        layer={"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size},
    )
    # indented for people who open report.json; sorted keys keep it deterministic
    blob = rc.cas.put_bytes(json.dumps(report, indent=1, sort_keys=True).encode() + b"\n")
    totals = report["totals"]
    if h.packages:
        rc.log(f"files of {len(h.packages)} dpkg package(s); status.d records for "
               f"{sum(1 for p in h.packages.values() if p['status_d'])}")
    rc.log(f"{totals['files']} files, {totals['symlinks']} symlinks, {totals['libraries']} "
           f"libraries ({totals['provided_by_base']} left to the base), "
           f"{totals['bytes']} bytes; layer {layer.digest[:19]} ({layer.size} bytes)")
    return rc.result(
        {"layer": layer_descriptor(layer), "report": blob.typed("application/json")},
        metadata={"search_dirs": h.search_dirs, **totals})


def materialize_minimize(cas: Any, result: forge.ActionResult, dest: Path) -> None:
    """forge-out/<pkg>/<name>/layer.tar.gz and report.json."""
    from forge.rules.layer import materialize_layer

    materialize_layer(cas, result, dest)
    cas.copy_out(result.outputs["report"].digest, dest / "report.json")
