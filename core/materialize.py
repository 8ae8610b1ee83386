"""Getting built images out of forge: ``--load`` into an executor's runtime, ``push`` to a
registry."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from forge.core.errors import UsageError

if TYPE_CHECKING:
    from forge.core.session import Session, TargetSummary


def default_tag(summary: TargetSummary) -> str:
    """``forge/<pkg>/<name>:latest``, lower-cased into a valid repository name."""
    parts = [p for p in ("forge", *summary.label.package.split("/"), summary.label.name) if p]
    repo = "/".join(re.sub(r"[^a-z0-9._-]+", "-", p.lower()).strip("-._") or "x" for p in parts)
    return f"{repo}:latest"


def platform_suffix(platform) -> str:
    """The tag suffix of a platform, as Docker users spell it: amd64, arm64, arm-v7."""
    variant = f"-{platform.variant}" if platform.variant and platform.architecture == "arm" else ""
    return platform.architecture + variant


def load_into_engine(session: Session, summary: TargetSummary,
                     tag: str | None) -> list[tuple[str, dict[str, int]]]:
    """Load an image target into an executor's runtime; an index loads each platform's
    image under ``<tag>-<platform>`` (e.g. ``app:1-arm64``). The executor is the one that
    built the target (its default action's ``executor``), else the workspace's choice for
    the image's platform (``[build] platform_executors``, then ``[build] executor``). It
    sends only the layers the runtime lacks: an image built there is tagged, not sent.
    Returns each ref with the executor's transfer counters (``cas_to_engine_bytes``…)."""
    from forge.core.oci.image import load, load_image
    from forge.core.platforms import parse_platform

    ref = tag or default_tag(summary)
    if summary.outputs.get("manifest"):
        images = [(ref, load_image(session.cas, summary.outputs["manifest"]))]
    elif summary.outputs.get("index"):
        index = load(session.cas, summary.outputs["index"])
        images = [(f"{ref}-{platform_suffix(image.platform)}", image) for image in index.images]
    else:
        return []
    selection = session.executor_selection
    loaded = []
    for name, image in images:
        platform = image.platform or (parse_platform(summary.platform) if summary.platform else None)
        chosen = summary.executor or selection.resolve(platform, needed_by=f"--load of {summary.label}")
        loaded.append((name, session.executor(chosen).load(session.cas, image, name, platform)))
    return loaded


def push_target(session: Session, label_text: str, ref: str) -> str:
    """Build (from cache) one image or index target and push it; returns the digest."""
    from forge.core.oci.image import load
    from forge.core.oci.registry import push_image

    summaries, outcomes = session.build([label_text])
    from forge.core.execution import raise_for_failures

    raise_for_failures(outcomes)
    if len(summaries) != 1:
        raise UsageError(f"push takes one target; {label_text} matched {len(summaries)}")
    outputs = summaries[0].outputs
    digest = outputs.get("index") or outputs.get("manifest")
    if not digest:
        raise UsageError(f"{label_text} is not an image or index target")
    return push_image(session.cas, load(session.cas, digest), ref)
