"""oci_import and oci_pull: base images come in pinned, never by a floating tag."""

from __future__ import annotations

from typing import Any

import forge
from forge import attr

IMPORT_DOC = """A base image from a file of the package: a rootfs tarball (optionally
compressed), a docker-archive (`docker save` output) or an OCI layout directory.

A rootfs tarball is rewritten deterministically into one layer, so the digest depends
only on its content; the image config gets the given platform.
"""

IMPORT_ATTRS = {
    "src": attr.string(doc="package-relative path of the tarball or OCI layout directory",
                       example='src = "busybox-arm64.tar"'),
    "platform": attr.platform(),
}


class OciImport(forge.Rule):
    name = "oci_import"
    doc = IMPORT_DOC
    attrs = IMPORT_ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        src = ctx.attr.src
        path = ctx.package_dir / src.strip("/")
        kind = "dir" if path.is_dir() else "file"
        path = ctx.source_path(src, "src", kind=kind)  # resolved inside the workspace, or an error
        src = src.strip("/")
        if kind == "dir":
            rels = sorted(str(p.relative_to(ctx.package_dir)) for p in path.rglob("*") if p.is_file())
        else:
            rels = [src]
        platform = ctx.platform
        # The key sees the files' contents; the run function finds them through rc.source.
        # A rootfs tarball is rewritten with the build's epoch (timestamps=True).
        action = ctx.action("OciImport", import_image, inputs=ctx.files(rels, attr="src", follow=True),
                            platform=platform, timestamps=True,
                            params={"src": src}, description=src, materialize=forge.materialize_image)
        return [forge.ImageInfo(action, platform), forge.DefaultInfo(action)]


def import_image(rc: forge.RunContext) -> forge.ActionResult:
    image = forge.oci.import_any(rc.cas, rc.source(rc.params["src"]), rc.platform, epoch=rc.epoch)
    return forge.image_result(rc, image)


PULL_DOC = """A base image from a registry, by digest. A tag without a digest is an error
that prints the digest the registry serves now and the line to paste. Every blob is
verified; nothing unverified is stored.
"""

PULL_ATTRS = {
    "image": attr.string(doc="repository, optionally with a tag, e.g. registry.example.com/debian:12",
                         example='image = "127.0.0.1:5000/base/busybox"'),
    "digest": attr.string(default="", doc="manifest or index digest to pin (sha256:...)",
                          example='digest = "sha256:3f…"'),
    "platform": attr.platform(),
}


class OciPull(forge.Rule):
    name = "oci_pull"
    doc = PULL_DOC
    attrs = PULL_ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        ref = forge.oci.parse_reference(ctx.attr.image)
        digest = ctx.attr.digest or ref.digest
        if not digest:
            raise ctx.fail(pin_message(ctx.attr.image))
        platform = ctx.platform
        action = ctx.action(
            "OciPull", pull_image, platform=platform,
            # The digest names the content. Where to fetch it is a param too, because the
            # run function may read nothing else: moving the mirror re-pulls (and re-verifies)
            # the same bytes, and dependents see the same result digest, so nothing else runs.
            params={"digest": digest, "registry": ref.registry, "repository": ref.repository},
            description=f"{ref.repository}@{digest[:19]}",
            materialize=forge.materialize_image,
        )
        return [forge.ImageInfo(action, platform), forge.DefaultInfo(action)]


def pin_message(image: str) -> str:
    ref = forge.oci.parse_reference(image)
    try:
        client = forge.oci.RegistryClient(ref.registry)
        served = client.resolve_tag(ref.repository, ref.tag or "latest")
    except forge.ForgeError as exc:
        return f"image = {image!r} has no digest, and the registry could not be asked for one: {exc}"
    return (f"image = {image!r} has no digest; the registry serves {served} now. Pin it:\n"
            f'    digest = "{served}",')


def pull_image(rc: forge.RunContext) -> forge.ActionResult:
    p = rc.params
    value = forge.oci.RegistryClient(p["registry"]).pull(rc.cas, p["repository"], p["digest"], platform=rc.platform)
    if isinstance(value, forge.Index):
        value = value.image(rc.platform)
    return forge.image_result(rc, value)
