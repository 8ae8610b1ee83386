"""Providers: the typed facts a target hands to the targets that depend on it.

A provider is a frozen dataclass; a configured target holds at most one of each type and
is indexed by type (``dep[ImageInfo]``), as in Bazel. Providers reference actions (whose
results exist only at execution), never results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from forge.core.actions import Action
from forge.core.platforms import Platform


def provider(cls: type) -> type:
    """Declare a provider type (a frozen dataclass)."""
    return dataclass(frozen=True)(cls)


@provider
class DefaultInfo:
    """The action whose outputs are the target's product (materialized under forge-out)."""

    action: Action


@provider
class LayerInfo:
    """A filesystem layer blob: the action's ``layer`` output."""

    action: Action


@provider
class ImageInfo:
    """A single-platform OCI image: the action's ``manifest`` output is its manifest."""

    action: Action
    platform: Platform


@provider
class IndexInfo:
    """A multi-platform OCI index: the action's ``index`` output."""

    action: Action
    platforms: tuple[Platform, ...] = field(default=())


@provider
class FilesInfo:
    """Source files a target names (``filegroup``): the files, keyed by their path in
    ``package``, and that package (a Dockerfile context rooted there reads them)."""

    files: tuple[Any, ...]  # SourceFile, package-relative
    package: str
