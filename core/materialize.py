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


def platform_ref(ref: str, platform) -> str:
    """``app:1`` -> ``app:1-arm64``; a ref without a tag gets ``latest-arm64``."""
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    return f"{name}:{tag}-{platform_suffix(platform)}"


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
        images = [(platform_ref(ref, image.platform), image) for image in index.images]
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
    summaries, outcomes = session.build([label_text])
    from forge.core.execution import raise_for_failures

    raise_for_failures(outcomes)
    return push_summaries(session, summaries, outcomes, ref, label_text)


def push_summaries(session: Session, summaries: list[TargetSummary], outcomes: dict, ref: str,
                   what: str) -> str:
    """Push the one image or index target of ``summaries`` to ``ref`` (``forge push``,
    ``forge build --push``); returns its digest."""
    from forge.core.oci.image import load
    from forge.core.oci.reference import parse_reference
    from forge.core.oci.registry_client import RegistryClient
    from forge.core.oci.registry_transfer import push_image

    if len(summaries) != 1:
        raise UsageError(f"push takes one image target; {what} matched {len(summaries)}")
    outputs = summaries[0].outputs
    digest = outputs.get("index") or outputs.get("manifest")
    if not digest:
        raise UsageError(f"{summaries[0].label} is not an image or index target")
    r = parse_reference(ref)
    client = RegistryClient(r.registry)
    pushed = push_image(session.cas, load(session.cas, digest), ref, client=client)
    hook = getattr(session.pm.hook, "forge_target_pushed", None)
    if hook is not None and hook.get_hookimpls():  # attachments follow the image (the supply chain's referrers)
        label = summaries[0].label
        results = {a: o.result for a, o in outcomes.items() if o.result is not None}
        hook(session=session, label=label, results=results, client=client,
             repository=r.repository, digest=pushed)
    return pushed


def combine_platforms(session: Session, runs: list[list[TargetSummary]]) -> list[TargetSummary]:
    """``--platform a,b``: each target built once per platform becomes one summary; image
    targets whose platforms differ become an OCI index of their images (stored in the CAS
    and written to forge-out like any index), as ``buildx --platform`` makes a manifest
    list. A target that gave one image for every platform (its platform is fixed) stays
    that image."""
    from dataclasses import replace

    from forge.core.oci.image import load_image, make_index, store_image
    from forge.core.oci.layout import write_layout

    combined = []
    for same in zip(*runs, strict=True):
        first = same[0]
        manifests = [s.outputs.get("manifest") for s in same]
        if not all(manifests) or len(set(manifests)) == 1:
            combined.append(first)
            continue
        index = make_index(load_image(session.cas, m) for m in dict.fromkeys(manifests))
        store_image(session.cas, index)
        write_layout(session.cas, index, session.out_dir(first.label), ref_name="latest")
        statuses = {s.status for s in same}
        status = next((x for x in ("failed", "skipped", "built", "cached-remote") if x in statuses),
                      "cached-local")
        combined.append(replace(
            first, platform=",".join(s.platform for s in same), status=status,
            seconds=sum(s.seconds for s in same), digest=index.digest,
            size=sum(s.size for s in same), outputs={"index": index.digest},
            hermetic=all(s.hermetic for s in same)))
    return combined
