"""Bazel-style labels and target patterns.

``//pkg/sub:name`` names one target; ``//pkg`` means ``//pkg:pkg``; ``:name`` is relative
to the package of the BUILD file that wrote it. Patterns select many: ``//pkg:all``,
``//pkg/...``, ``//...``. Labels are values (frozen, ordered, hashable) so they can key
dicts and graph nodes.

Packages and names become paths (``forge-out/<pkg>/<name>/``, ``forge-out/logs/...``),
so each ``/``-separated component is at most ``MAX_COMPONENT_BYTES`` and a package or a
name at most ``MAX_PATH_BYTES`` long: what any file system holds (NAME_MAX is 255 on
most, PATH_MAX 4096).
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass

from forge.core.errors import LabelError

MAX_COMPONENT_BYTES = 200
MAX_PATH_BYTES = 1000

_PKG_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+\-@=,~][A-Za-z0-9_.+\-@=,~/]*$")


@dataclass(frozen=True, order=True)
class Label:
    package: str  # "" for the workspace root
    name: str

    def __str__(self) -> str:
        return f"//{self.package}:{self.name}"

    @property
    def short(self) -> str:
        """``//pkg`` when the name equals the last package component, else the full label."""
        last = self.package.rsplit("/", 1)[-1]
        return f"//{self.package}" if self.package and last == self.name else str(self)


def _short(text: str) -> str:
    return repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text)} characters)"


def _check_length(value: str, what: str, text: str) -> None:
    # labels are ASCII (the regexes), so characters are bytes
    if len(value) > MAX_PATH_BYTES:
        raise LabelError(f"{what} in label {_short(text)} is {len(value)} bytes long "
                         f"(limit {MAX_PATH_BYTES}): forge-out/ could not hold its outputs")
    longest = max(value.split("/"), key=len)
    if len(longest) > MAX_COMPONENT_BYTES:
        raise LabelError(
            f"{what} in label {_short(text)} has a path component of {len(longest)} bytes "
            f"(limit {MAX_COMPONENT_BYTES} per `/`-separated part): forge-out/ could not hold its outputs"
        )


def _check_package(pkg: str, text: str) -> str:
    # a "..." component would read as a recursive pattern
    if pkg and (not _PKG_RE.fullmatch(pkg) or any(p in (".", "..", "...") for p in pkg.split("/"))):
        raise LabelError(f"invalid package in label {_short(text)}: {_short(pkg)}")
    _check_length(pkg, "package", text)
    return pkg


def _check_name(name: str, text: str) -> str:
    # fullmatch: `$` would accept a trailing newline; a `...` segment would read as a pattern
    if not name or not _NAME_RE.fullmatch(name) or {"..", "..."} & set(name.split("/")):
        raise LabelError(f"invalid target name in label {_short(text)}: {_short(name)}")
    _check_length(name, "target name", text)
    return name


def parse_label(text: str, current_package: str | None = None) -> Label:
    """Parse an absolute label, or a relative ``:name``/``name`` inside ``current_package``."""
    if not isinstance(text, str) or not text:
        raise LabelError(f"empty or non-string label: {reprlib.repr(text)}")
    if text.startswith("@"):
        raise LabelError(f"external repositories are not supported: {_short(text)}")
    if text.startswith("//"):
        body = text[2:]
        pkg, sep, name = body.partition(":")
        if not sep:
            name = pkg.rsplit("/", 1)[-1]
            if not name:
                raise LabelError(f"label {_short(text)} names no target; write //:name")
        return Label(_check_package(pkg.rstrip("/"), text), _check_name(name, text))
    if current_package is None:
        raise LabelError(f"label {_short(text)} must be absolute (start with //)")
    name = text[1:] if text.startswith(":") else text
    return Label(current_package, _check_name(name, text))


@dataclass(frozen=True)
class Pattern:
    """A target pattern: one label, all targets of a package, or a package tree."""

    package: str
    name: str | None  # None with recursive=False means ":all"
    recursive: bool = False

    def __str__(self) -> str:
        if self.recursive:
            return f"//{self.package}/..." if self.package else "//..."
        return f"//{self.package}:{self.name or 'all'}"

    def matches_package(self, pkg: str) -> bool:
        if self.recursive:
            return not self.package or pkg == self.package or pkg.startswith(self.package + "/")
        return pkg == self.package


def parse_pattern(text: str) -> Pattern:
    """Parse ``//pkg:name``, ``//pkg``, ``//pkg:all``, ``//pkg:*``, ``//pkg/...``, ``//...``."""
    if not text.startswith("//"):
        if text.startswith(":") or not text.startswith("/"):
            raise LabelError(f"pattern {_short(text)} must start with // (e.g. //{text.lstrip(':/')[:60]})")
        raise LabelError(f"pattern {_short(text)} must start with //")
    body = text[2:]
    if body == "..." or body.endswith("/..."):
        pkg = body[: -len("...")].rstrip("/")
        return Pattern(_check_package(pkg, text), None, recursive=True)
    pkg, sep, name = body.partition(":")
    if sep and name in ("all", "*", "all-targets"):
        return Pattern(_check_package(pkg, text), None)
    label = parse_label(text)
    return Pattern(label.package, label.name)
