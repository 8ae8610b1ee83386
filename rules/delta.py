"""image_delta: update deltas from earlier releases to an image, made at build time."""

from __future__ import annotations

from typing import Any

import forge
from forge import attr

DOC = """Update deltas for devices: from each earlier release (pinned by digest) to `image`, one OCI artifact whose `subject` is the image's manifest, holding a binary delta for every layer the release lacks (README "Edge deltas"). Each release's delta is its own action, keyed by the two images' digests and the codec, so it is cached and shared through the remote cache like any result; `forge delta` pushes them, `forge apply-delta` (or `python -m forge.delta_apply` on a device) applies one."""

ATTRS = {
    "image": attr.label(doc="the image target the deltas lead to", example='image = ":app-arm64"'),
    "releases": attr.string_list(
        doc="earlier releases, pinned: `host/repo@sha256:…` (an index gives the image's platform), "
            "or a package-relative OCI layout directory (`dir`, or `dir@sha256:…` to pick a manifest)",
        example='releases = ["registry.example.com/fleet/app@sha256:3f…", "releases/1.4"]'),
    "codec": attr.string(default="zstd",
                         doc="delta codec: zstd (patch-from, default) or bsdiff; plugins add more "
                             "(forge_register_delta_codecs)",
                         example='codec = "bsdiff"'),
    "level": attr.integer(default=None, doc="codec level (zstd 1-22, default 19; bsdiff has none)",
                          example="level = 12"),
}

MAX_SOURCE_BYTES = 1 << 30  # old layer bytes one layer's delta may read (a device holds them in memory)


class ImageDeltaRule(forge.Rule):
    name = "image_delta"
    doc = DOC
    attrs = ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        a = ctx.attr
        info = a.image[forge.ImageInfo]
        if not a.releases:
            raise ctx.fail("releases is empty: name at least one earlier release")
        codecs = forge.oci.delta_codecs(ctx.workspace_root)
        try:
            codec = codecs.get(a.codec)
            fingerprint = codec.fingerprint(a.level)
        except forge.ConfigError as e:
            raise ctx.fail(f"codec = {a.codec!r}: {e}") from None
        except (ValueError, ImportError) as e:
            raise ctx.fail(f"codec = {a.codec!r}, level = {a.level!r}: {e}") from None
        deltas = []
        for i, release in enumerate(a.releases):
            base = release_action(ctx, release, info.platform, i)
            deltas.append(ctx.action(
                "ImageDelta", make_delta, deps=[info.action, base], platform=info.platform,
                # The key holds both images' result identities (manifest digests and every
                # blob), the codec's fingerprint (library version, level, window) and the
                # source budget: nothing else decides the delta's bytes.
                params={"codec": codec.name, "fingerprint": fingerprint, "level": a.level,
                        "max_source_bytes": MAX_SOURCE_BYTES},
                description=f"{release} -> {a.image.label} ({codec.name})",
            ))
        action = ctx.action("DeltaSet", collect_deltas, deps=deltas, params={"image": str(a.image.label)},
                            description=f"{len(deltas)} delta(s) to {a.image.label}",
                            materialize=materialize_deltas)
        return [forge.DefaultInfo(action)]


def release_action(ctx: forge.AnalysisContext, release: str, platform: Any, i: int) -> forge.Action:
    """The action bringing one earlier release into the CAS, pinned by digest."""
    path, _, digest = release.partition("@")
    if "/" in path and ("." in path.split("/", 1)[0] or ":" in path.split("/", 1)[0]) \
            and not (ctx.package_dir / path).exists():
        ref = forge.oci.parse_reference(release)
        if not ref.digest:
            raise ctx.fail(f"releases[{i}] = {release!r} is not pinned: write {ref.registry}/"
                           f"{ref.repository}@sha256:… (a device runs a digest, not a tag)")
        return ctx.action("DeltaRelease", pull_release, platform=platform,
                          params={"registry": ref.registry, "repository": ref.repository,
                                  "digest": ref.digest},
                          description=f"{ref.repository}@{ref.digest[:19]}")
    root = ctx.source_path(path, "releases", kind="dir")
    rels = sorted(str(p.relative_to(ctx.package_dir)) for p in root.rglob("*") if p.is_file())
    if digest and not digest.startswith("sha256:"):
        raise ctx.fail(f"releases[{i}] = {release!r}: {digest!r} is not a sha256:… digest")
    return ctx.action("DeltaRelease", import_release, platform=platform,
                      inputs=ctx.files(rels, attr="releases", follow=True),
                      params={"src": path.strip("/"), "digest": digest or None},
                      description=f"{path}{'@' + digest[:19] if digest else ''}")


def pull_release(rc: forge.RunContext) -> forge.ActionResult:
    p = rc.params
    value = forge.oci.RegistryClient(p["registry"]).pull(rc.cas, p["repository"], p["digest"],
                                                         platform=rc.platform)
    if isinstance(value, forge.Index):
        value = value.image(rc.platform)
    return forge.image_result(rc, value)


def import_release(rc: forge.RunContext) -> forge.ActionResult:
    p = rc.params
    image = forge.oci.import_release(rc.cas, rc.source(p["src"]), p["digest"], rc.platform)
    return forge.image_result(rc, image)


def make_delta(rc: forge.RunContext) -> forge.ActionResult:
    p = rc.params
    target_action, base_action = rc.action.deps
    target, base = forge.dep_image(rc, target_action), forge.dep_image(rc, base_action)
    codec = forge.oci.delta_codec(p["codec"], p["fingerprint"], p["level"])
    made = forge.oci.make_image_delta(rc.cas, target, base, codec, p["level"], rc.tempdir(),
                                      max_source_bytes=p["max_source_bytes"], log=rc.log)
    top = made.blobs[0]
    facts = {"from": base.digest, "to": target.digest, "codec": codec.name, "layers": made.layers}
    return rc.result({"delta": top}, blobs=made.blobs, metadata=facts)


def collect_deltas(rc: forge.RunContext) -> forge.ActionResult:
    made = []
    blobs: list[forge.Descriptor] = []
    for dep in rc.action.deps:
        result = rc.dep(dep)
        made.append(forge.oci.ImageDelta(rc.cas.read_bytes(result.outputs["delta"].digest), list(result.blobs)))
        blobs += result.blobs
    index = rc.cas.put_bytes(forge.oci.delta_index(made)).typed(forge.oci.media.OCI_INDEX)
    facts = [rc.dep(dep).metadata for dep in rc.action.deps]
    return rc.result({"deltas": index}, blobs=blobs, metadata={"image": rc.params["image"], "deltas": facts})


def materialize_deltas(cas: forge.CAS, result: forge.ActionResult, dest) -> None:
    """forge-out/<pkg>/<name>/: an OCI layout of the deltas (a delta source for the applier)."""
    forge.oci.write_delta_layout(cas, forge.oci.load_delta_index(cas, result.outputs["deltas"].digest), dest)
