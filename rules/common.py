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


def image_result(rc: forge.RunContext, value: Any, metadata: dict[str, Any] | None = None) -> ActionResult:
    """Store ``value`` (an Image or Index) and describe it as the action's result."""
    from forge.core.oci.image import Index, store_image

    store_image(rc.cas, value)
    if isinstance(value, Index):
        blobs = [value.digest]
        for image in value.images:
            blobs += [d for d, _ in image.blobs()]
        meta = {"platforms": [str(p) for p in value.platforms],
                "identity": sorted([str(i.platform), i.config_digest] for i in value.images)}
        return rc.result({"index": value.digest}, blobs=blobs, metadata={**meta, **(metadata or {})})
    # the config digest names the image's content (diff_ids, config) whatever compressed it
    meta = {"platform": str(value.platform) if value.platform else "", "identity": value.config_digest}
    return rc.result({"manifest": value.digest}, blobs=[d for d, _ in value.blobs()],
                     metadata={**meta, **(metadata or {})})


def dep_image(rc: forge.RunContext, action: forge.Action):
    """The Image a dependency action produced."""
    from forge.core.oci.image import load_image

    return load_image(rc.cas, rc.dep(action).outputs["manifest"])


def materialize_image(cas: Any, result: ActionResult, dest: Path) -> None:
    """Write the image or index as an OCI layout directory at ``dest``."""
    from forge.core.oci.image import load
    from forge.core.oci.layout import write_layout

    digest = result.outputs.get("index") or result.outputs["manifest"]
    write_layout(cas, load(cas, digest), dest)


def image_platform(ctx: forge.AnalysisContext, base: Any) -> forge.Platform:
    """A target's platform: its own attribute, else its base image's, else the default."""
    own = getattr(ctx.attr, "platform", None)
    base_platform = base[forge.ImageInfo].platform if base is not None and forge.ImageInfo in base else None
    if own is not None and base_platform is not None and own != base_platform:
        raise ctx.fail(f"platform {own} differs from its base {base.label}'s platform {base_platform}")
    return own or base_platform or ctx.platform
