"""Check that an image in the CAS agrees with itself, down to every layer byte.

``validate_image`` is what tests run on every image they produce, and what a user runs
before trusting an image: the manifest parses, the config blob has the digest and size the
manifest says, every layer blob is there with the right digest and size, each layer
decompresses to a tar whose sha256 is the config's diff_id at that position, and the
platform is named (and, in an index, matches the entry). Every disagreement found is
listed in one error, each naming the blob and what was expected.
"""

from __future__ import annotations

from forge.core.cas import CAS, BlobMissing
from forge.core.oci import compression as comp
from forge.core.oci.image import Image, Index, Layer, load
from forge.core.oci.media import ImageFormatError


class InvalidImage(ImageFormatError):
    """An image or index whose parts disagree; the message lists each disagreement."""


def validate_image(cas: CAS, manifest_digest: str) -> Image | Index:
    """Validate the image or index stored under ``manifest_digest``; return it loaded."""
    try:
        value = load(cas, manifest_digest)
    except (ImageFormatError, BlobMissing) as e:
        raise InvalidImage(f"{manifest_digest}: {e}") from e
    problems: list[str] = []
    if isinstance(value, Index):
        for platform, image in zip(value.platforms, value.images, strict=True):
            if platform is None:
                problems.append(f"index entry {image.digest} names no platform")
            elif image.platform != platform:
                problems.append(
                    f"index entry {image.digest} says {platform}; its config says {image.platform}"
                )
            problems.extend(f"image {image.digest}: {p}" for p in _image_problems(cas, image))
    else:
        problems.extend(_image_problems(cas, value))
    if problems:
        raise InvalidImage(
            f"{manifest_digest} is not a valid image:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    return value


def _image_problems(cas: CAS, image: Image) -> list[str]:
    problems = []
    config = image.config
    for field in ("architecture", "os"):
        if not config.get(field):
            problems.append(f"config {image.config_digest} has no {field}")
    if (config.get("rootfs") or {}).get("type") != "layers":
        problems.append(f"config {image.config_digest} rootfs.type is not 'layers'")
    for i, layer in enumerate(image.layers):
        problem = _layer_problem(cas, layer)
        if problem:
            problems.append(f"layer {i} ({layer.digest}): {problem}")
    return problems


def _layer_problem(cas: CAS, layer: Layer) -> str | None:
    """Read the blob once: hash it as stored and as decompressed."""
    if not cas.has(layer.digest):
        return "blob is missing from the CAS"
    size = cas.size(layer.digest)
    if size != layer.size:
        return f"manifest says {layer.size} bytes; the blob has {size}"
    error = None
    with cas.open(layer.digest) as fh:
        raw = comp.HashingReader(fh)
        diff = comp.HashingReader(comp.open_decompressed(raw, layer.compression))
        try:
            diff.drain()
        except comp.DECOMPRESSION_ERRORS as e:
            error = e
        raw.drain()
    if raw.digest != layer.digest:
        cas.evict(layer.digest)
        return f"blob content hashes to {raw.digest} (evicted from the CAS)"
    if error is not None:
        return f"does not decompress as {layer.compression}: {error}"
    if diff.digest != layer.diff_id:
        return f"uncompressed tar is {diff.digest}; config rootfs.diff_ids says {layer.diff_id}"
    return None
