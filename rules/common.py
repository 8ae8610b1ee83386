"""What every image-producing rule shares: turning an image into an action result,
reading a dependency's image back, and materializing it as an OCI layout.

An image action's result names one output, ``manifest`` (or ``index``), and lists every
blob the image needs (config, layers, child manifests) so a cache hit can check them and
the remote cache can transfer them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import forge
from forge.core.actions import ActionResult


def image_descriptors(value: Any) -> tuple[Any, list[Any]]:
    """(the manifest's descriptor, every blob's descriptor) of an Image or Index: the
    manifest with its platform, the config, each layer with its diff_id, and for an index
    every child manifest with its blobs."""
    from forge.core.oci.image import Index

    Descriptor = forge.Descriptor

    def of_image(image: Any) -> tuple[Any, list[Any]]:
        top = Descriptor(image.digest, image.size, image.media_type,
                         platform=str(image.platform) if image.platform else None)
        blobs = [top, Descriptor(image.config_digest, image.config_size, image.config_media_type)]
        blobs += [Descriptor(layer.digest, layer.size, layer.media_type, diff_id=layer.diff_id)
                  for layer in image.layers]
        return top, blobs

    if isinstance(value, Index):
        top = Descriptor(value.digest, value.size, value.media_type)
        blobs = [top]
        for image in value.images:
            blobs += of_image(image)[1]
        return top, blobs
    return of_image(value)


def image_result(rc: forge.RunContext, value: Any, metadata: dict[str, Any] | None = None) -> ActionResult:
    """Store ``value`` (an Image or Index) and describe it as the action's result: the
    output descriptor (``manifest`` or ``index``) and every blob it needs, typed."""
    from forge.core.oci.image import Index, store_image

    store_image(rc.cas, value)
    top, blobs = image_descriptors(value)
    if isinstance(value, Index):
        meta = {"platforms": [str(p) for p in value.platforms]}
        return rc.result({"index": top}, blobs=blobs, metadata={**meta, **(metadata or {})})
    meta = {"platform": str(value.platform) if value.platform else ""}
    return rc.result({"manifest": top}, blobs=blobs, metadata={**meta, **(metadata or {})})


def dep_image(rc: forge.RunContext, action: forge.Action):
    """The Image a dependency action produced."""
    from forge.core.oci.image import load_image

    return load_image(rc.cas, rc.dep(action).outputs["manifest"].digest)


def materialize_image(cas: Any, result: ActionResult, dest: Path) -> None:
    """Write the image or index as an OCI layout directory at ``dest``."""
    from forge.core.oci.image import load
    from forge.core.oci.layout import write_layout

    top = result.outputs.get("index") or result.outputs["manifest"]
    write_layout(cas, load(cas, top.digest), dest)


def image_platform(ctx: forge.AnalysisContext, base: Any) -> forge.Platform:
    """A target's platform: its own attribute, else its base image's, else the default."""
    own = getattr(ctx.attr, "platform", None)
    base_platform = base[forge.ImageInfo].platform if base is not None and forge.ImageInfo in base else None
    if own is not None and base_platform is not None and own != base_platform:
        raise ctx.fail(f"platform {own} differs from its base {base.label}'s platform {base_platform}")
    return own or base_platform or ctx.platform
