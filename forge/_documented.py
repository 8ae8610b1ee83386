"""Documented entry points for engine functions that ``forge`` exports but whose engine
definitions carry no docstring yet (they live in core modules owned elsewhere; issue 12
moves the docstrings there, and then the public names point at the engine directly).

Each wrapper imports the engine on call, so importing ``forge`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forge.core.cas import CAS
    from forge.core.oci.image import Image, Index
    from forge.core.platforms import Platform


def host_platform() -> Platform:
    """The platform of this machine: what runs here without emulation."""
    from forge.core.platforms import host_platform as engine

    return engine()


def raise_for_failures(outcomes: dict[Any, Any]) -> None:
    """Raise ``forge.ActionFailed`` listing every failed action (with its log path) of a
    build's outcomes; do nothing when none failed. For commands that build and then read
    the results."""
    from forge.core.execution import raise_for_failures as engine

    engine(outcomes)


def load_image(cas: CAS, digest: str) -> Image:
    """The Image whose manifest has ``digest``, read from the CAS (an index is an error)."""
    from forge.core.oci.image import load_image as engine

    return engine(cas, digest)


def load_index(cas: CAS, digest: str) -> Index:
    """The Index whose manifest has ``digest``, read from the CAS (an image is an error)."""
    from forge.core.oci.image import load_index as engine

    return engine(cas, digest)


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``: the OCI digest of a blob."""
    from forge.core.cas import sha256_digest as engine

    return engine(data)
