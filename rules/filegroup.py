"""filegroup: a named set of source files, as Bazel's; a Dockerfile context can be one.

``filegroup(name = "atom-sources", srcs = glob(["languages/**", "third-party/**"]))`` and
``dockerfile(context = "//:atom-sources", ...)``: the context is rooted at the
filegroup's package and holds its files (its package's ``.dockerignore`` applied).
A filegroup runs nothing.
"""

from __future__ import annotations

from typing import Any

import forge
from forge import attr


class FileGroup(forge.Rule):
    name = "filegroup"
    doc = """A named set of package files (use it as a Dockerfile `context`)."""
    attrs = {
        "srcs": attr.sources(doc="the files", example='srcs = glob(["languages/**"])'),
    }

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        return [forge.FilesInfo(tuple(ctx.files(ctx.attr.srcs)), ctx.label.package)]
