"""What every image-producing action shares: turning an image into an action result,
reading a dependency's image back, and materializing it as an OCI layout.

An image action's result names one output, ``manifest`` (or ``index``), and lists every
blob the image needs (config, layers, child manifests) as typed descriptors, so a cache
hit can check them and the remote cache can transfer them. Exported from ``forge`` for
rules (built-in and third-party alike).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge.core.cas import Descriptor

if TYPE_CHECKING:
    from forge.core.actions import Action, ActionResult
    from forge.core.cas import CAS
    from forge.core.execution import RunContext
    from forge.core.oci.image import Image, Index
    from forge.core.platforms import Platform
    from forge.core.rule import AnalysisContext


def image_descriptors(value: Image | Index) -> tuple[Descriptor, list[Descriptor]]:
    """(the manifest's descriptor, every blob's descriptor) of an Image or Index: the
    manifest with its platform, the config, each layer with its diff_id, and for an index
    every child manifest with its blobs."""
    from forge.core.oci.image import Index

    def of_image(image: Image) -> tuple[Descriptor, list[Descriptor]]:
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


def image_result(rc: RunContext, value: Image | Index,
                 metadata: dict[str, Any] | None = None) -> ActionResult:
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


def dep_image(rc: RunContext, action: Action) -> Image:
    """The Image a dependency action produced (its ``manifest`` output), read from the CAS."""
    from forge.core.oci.image import load_image

    return load_image(rc.cas, rc.dep(action).outputs["manifest"].digest)


def materialize_image(cas: CAS, result: ActionResult, dest: Path) -> None:
    """Write the image or index of ``result`` as an OCI layout directory at ``dest``
    (pass it as an image action's ``materialize=``)."""
    from forge.core.oci.image import load
    from forge.core.oci.layout import write_layout

    top = result.outputs.get("index") or result.outputs["manifest"]
    # ref.name "latest": tools address a layout by tag (`umoci unpack --image dir:latest`)
    write_layout(cas, load(cas, top.digest), dest, ref_name="latest")


def image_platform(ctx: AnalysisContext, base: Any) -> Platform:
    """A target's platform: its own ``platform`` attribute, else its base image's, else
    the default; an own platform that differs from the base's is an analysis error."""
    from forge.core.providers import ImageInfo

    own = getattr(ctx.attr, "platform", None)
    base_platform = base[ImageInfo].platform if base is not None and ImageInfo in base else None
    if own is not None and base_platform is not None and own != base_platform:
        raise ctx.fail(f"platform {own} differs from its base {base.label}'s platform {base_platform}")
    return own or base_platform or ctx.platform
