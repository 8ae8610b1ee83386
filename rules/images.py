"""image and image_index: assemble images and multi-platform indexes without a runtime."""

from __future__ import annotations

from typing import Any

import forge
from forge import attr

IMAGE_DOC = """An OCI image: a base (or scratch) plus layers plus runtime config.

Pure assembly: nothing runs, so the digest depends only on the inputs; `created` and the
history times are SOURCE_DATE_EPOCH (default 0).
"""

IMAGE_ATTRS = {
    "base": attr.label(default=None, doc="image target to start from (default: scratch)",
                       example='base = ":busybox"'),
    "layers": attr.label_list(default=[], doc="layer targets appended in order",
                              example='layers = [":app_layer"]'),
    "env": attr.string_dict(default={}, doc="environment variables, merged over the base's",
                            example='env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}'),
    "entrypoint": attr.string_list(default=None, doc="entrypoint (clears the base's cmd when set)",
                                   example='entrypoint = ["/app"]'),
    "cmd": attr.string_list(default=None, doc="default arguments", example='cmd = ["--help"]'),
    "workdir": attr.string(default=None, doc="working directory", example='workdir = "/srv"'),
    "user": attr.string(default=None, doc="user to run as", example='user = "1000:1000"'),
    "labels": attr.string_dict(default={}, doc="config labels",
                               example='labels = {"org.opencontainers.image.source": "..."}'),
    "platform": attr.platform(),
}


class ImageRule(forge.Rule):
    name = "image"
    doc = IMAGE_DOC
    attrs = IMAGE_ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        a = ctx.attr
        platform = forge.image_platform(ctx, a.base)
        base_action = a.base[forge.ImageInfo].action if a.base is not None else None
        layer_actions = [dep[forge.LayerInfo].action for dep in a.layers]
        deps = ([base_action] if base_action else []) + layer_actions
        action = ctx.action(
            "Image", assemble_image, deps=deps, platform=platform, timestamps=True,
            params={
                "has_base": base_action is not None,
                "env": a.env, "entrypoint": a.entrypoint, "cmd": a.cmd, "workdir": a.workdir,
                "user": a.user, "labels": a.labels,
                "history": [str(d.label) for d in a.layers],
            },
            description=f"{len(layer_actions)} layer(s) on {a.base.label if a.base else 'scratch'}",
            materialize=forge.materialize_image,
        )
        return [forge.ImageInfo(action, platform), forge.DefaultInfo(action)]


def layer_of(rc: forge.RunContext, action: forge.Action):
    """The Layer a dependency produced, exactly as its descriptor says."""
    d = rc.dep(action).outputs["layer"]
    return forge.Layer(d.digest, d.diff_id, d.size, d.media_type)


def assemble_image(rc: forge.RunContext) -> forge.ActionResult:
    p = rc.params
    deps = list(rc.action.deps)
    image = forge.dep_image(rc, deps.pop(0)) if p["has_base"] else forge.EMPTY_IMAGE
    layers = [layer_of(rc, d) for d in deps]
    if layers:
        image = forge.append_layers(image, *layers, history=[f"forge layer {h}" for h in p["history"]],
                              epoch=rc.epoch)
    image = forge.with_config(
        image,
        env=[f"{k}={v}" for k, v in p["env"].items()] or None,
        entrypoint=p["entrypoint"], cmd=p["cmd"], workdir=p["workdir"], user=p["user"],
        labels=p["labels"] or None, platform=rc.platform, epoch=rc.epoch,
    )
    return forge.image_result(rc, image)


INDEX_DOC = """A multi-platform OCI image index of per-platform images (one per platform)."""

INDEX_ATTRS = {
    "images": attr.label_list(doc="image targets, one per platform",
                              example='images = [":app-amd64", ":app-aarch64"]'),
}


class ImageIndexRule(forge.Rule):
    name = "image_index"
    doc = INDEX_DOC
    attrs = INDEX_ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        seen: dict[forge.Platform, Any] = {}
        for dep in ctx.attr.images:
            info = dep[forge.ImageInfo]
            if info.platform in seen:
                raise ctx.fail(f"two images for {info.platform}: {seen[info.platform]} and {dep.label}")
            seen[info.platform] = dep.label
        actions = [dep[forge.ImageInfo].action for dep in ctx.attr.images]
        action = ctx.action("Index", assemble_index, deps=actions,
                            description=", ".join(sorted(str(p) for p in seen)),
                            materialize=forge.materialize_image)
        return [forge.IndexInfo(action, tuple(sorted(seen))), forge.DefaultInfo(action)]


def assemble_index(rc: forge.RunContext) -> forge.ActionResult:
    return forge.image_result(rc, forge.make_index(forge.dep_image(rc, d) for d in rc.action.deps))
