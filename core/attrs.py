"""Attribute schema types: what a rule accepts, and the documentation of it.

A rule's ``attrs`` dict maps names to ``Attr`` values made by the constructors below
(``attrs.string(...)``, ``attrs.label_list(...)``…). The schema is the documentation:
``forge rules`` prints it and BUILD calls are checked against it before analysis, so a
wrong type is reported at the BUILD file line, not deep inside a rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from forge.core.errors import AttributeError_, PlatformError
from forge.core.labels import parse_label
from forge.core.platforms import parse_platform

MISSING: Any = object()


@dataclass(frozen=True)
class Attr:
    kind: str
    default: Any = MISSING
    doc: str = ""
    example: str = ""
    values: tuple[str, ...] = ()

    @property
    def mandatory(self) -> bool:
        return self.default is MISSING

    def default_value(self) -> Any:
        if self.default is MISSING:
            return None
        if isinstance(self.default, list | dict):
            return type(self.default)(self.default)
        return self.default

    def describe_default(self) -> str:
        return "mandatory" if self.mandatory else repr(self.default)

    def coerce(self, value: Any, package: str, where: str) -> Any:
        """Check a BUILD value against the kind; return it in the form rules receive."""
        return _COERCERS[self.kind](self, value, package, where)


def _fail(where: str, expected: str, value: Any) -> AttributeError_:
    return AttributeError_(f"{where} should be {expected}, got {type(value).__name__} {value!r}")


def _string(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    if v is None and attr.default is None:
        return None
    if not isinstance(v, str):
        raise _fail(where, "a string", v)
    if attr.values and v not in attr.values:
        from forge.core.errors import did_you_mean

        raise AttributeError_(
            f"{where} = {v!r} is not one of {', '.join(attr.values)}{did_you_mean(v, attr.values)}"
        )
    return v


def _bool(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    if not isinstance(v, bool):
        raise _fail(where, "True or False", v)
    return v


def _int(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _fail(where, "an int", v)
    return v


def _label(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    if v is None and attr.default is None:
        return None
    if not isinstance(v, str):
        raise _fail(where, "a label string", v)
    return parse_label(v, pkg)


def _label_list(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    if not isinstance(v, list | tuple):
        raise _fail(where, "a list of labels", v)
    return [_label(attr, x, pkg, f"{where}[{i}]") for i, x in enumerate(v)]


def _string_list(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) for x in v):
        raise _fail(where, "a list of strings", v)
    return list(v)


def _sources(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    if isinstance(v, str):
        v = [v]
    items = _string_list(attr, v, pkg, where)
    for item in items:
        if item.startswith("/") or ".." in item.split("/"):
            raise AttributeError_(f"{where}: source {item!r} must be a path inside the package")
    return items


def _string_dict(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise _fail(where, "a dict of string to string", v)
    return dict(v)


def _platform(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    if v is None:
        return None
    if not isinstance(v, str):
        raise _fail(where, "a platform string like 'linux/arm64'", v)
    try:
        return parse_platform(v)
    except PlatformError as exc:
        raise AttributeError_(f"{where}: {exc}") from None


_COERCERS = {
    "string": _string,
    "bool": _bool,
    "int": _int,
    "label": _label,
    "label_list": _label_list,
    "string_list": _string_list,
    "sources": _sources,
    "string_dict": _string_dict,
    "platform": _platform,
}


def string(default: Any = MISSING, doc: str = "", example: str = "", values=()) -> Attr:
    return Attr("string", default, doc, example, tuple(values))


def boolean(default: Any = MISSING, doc: str = "", example: str = "") -> Attr:
    return Attr("bool", default, doc, example)


def integer(default: Any = MISSING, doc: str = "", example: str = "") -> Attr:
    return Attr("int", default, doc, example)


def label(default: Any = MISSING, doc: str = "", example: str = "") -> Attr:
    return Attr("label", default, doc, example)


def label_list(default: Any = MISSING, doc: str = "", example: str = "") -> Attr:
    return Attr("label_list", default, doc, example)


def string_list(default: Any = MISSING, doc: str = "", example: str = "") -> Attr:
    return Attr("string_list", default, doc, example)


def sources(default: Any = MISSING, doc: str = "", example: str = "") -> Attr:
    """Files of the package (paths relative to it, usually from ``glob()``)."""
    return Attr("sources", default, doc, example)


def string_dict(default: Any = MISSING, doc: str = "", example: str = "") -> Attr:
    return Attr("string_dict", default, doc, example)


def platform(default: Any = None, doc: str = "", example: str = "") -> Attr:
    """A platform; None means the build's default (``--platform`` or WORKSPACE)."""
    return Attr("platform", default, doc or "target platform; default: --platform, "
                "then [build] platforms[0], then the host", example or 'platform = "linux/arm64"')
