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
    fields: tuple[tuple[str, Attr], ...] = ()  # struct_dict: the attributes of each entry

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


def _label_dict(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise _fail(where, "a dict of string to label", v)
    return {k: _label(attr, x, pkg, f"{where}[{k!r}]") for k, x in v.items()}


def _struct_dict(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    """name -> {field: value}, each field checked by its own attribute (missing: default)."""
    from forge.core.errors import did_you_mean

    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, dict) for k, x in v.items()):
        raise _fail(where, "a dict of name to dict", v)
    fields = dict(attr.fields)
    out = {}
    for name, entry in v.items():
        at = f"{where}[{name!r}]"
        for key in entry:
            if key not in fields:
                raise AttributeError_(f"{at}: unknown key '{key}'{did_you_mean(key, fields)}; "
                                      f"valid keys: {', '.join(fields)}")
        out[name] = {key: (fields[key].coerce(entry[key], pkg, f"{at}[{key!r}]") if key in entry
                           else fields[key].default_value()) for key in fields}
    return out


@dataclass(frozen=True)
class ContextDir:
    """A build context directory, workspace-relative ("" is the workspace root)."""

    path: str

    def __str__(self) -> str:
        return f"//{self.path}"


def _context(attr: Attr, v: Any, pkg: str, where: str) -> Any:
    """A directory (package-relative, or //dir from the workspace root) or a label of a
    target that provides files (a filegroup)."""
    import posixpath

    if v is None and attr.default is None:
        return None
    if not isinstance(v, str) or not v:
        raise _fail(where, "a directory ('.', 'docker', '//', '//third-party') or a label", v)
    if ":" in v:
        return parse_label(v, pkg)
    if v.startswith("/") and not v.startswith("//"):
        raise AttributeError_(f"{where} = {v!r}: an absolute path; use a package-relative "
                              "directory or //dir from the workspace root")
    joined = v[2:] if v.startswith("//") else posixpath.join(pkg, v)
    path = posixpath.normpath(joined) if joined else "."
    if path == ".." or path.startswith("../"):
        raise AttributeError_(f"{where} = {v!r} is outside the workspace")
    return ContextDir("" if path == "." else path)


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
    "label_dict": _label_dict,
    "struct_dict": _struct_dict,
    "context": _context,
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


def label_dict(default: Any = MISSING, doc: str = "", example: str = "") -> Attr:
    """name -> label (e.g. build-arg name -> image target); every label is a dependency."""
    return Attr("label_dict", default, doc, example)


def struct_dict(fields: dict[str, Attr], default: Any = MISSING, doc: str = "",
                example: str = "") -> Attr:
    """name -> {field: value}, each field checked by its attribute in ``fields``; labels
    in it are dependencies."""
    return Attr("struct_dict", default, doc, example, fields=tuple(fields.items()))


def context(default: Any = None, doc: str = "", example: str = "") -> Attr:
    """A build context: a directory (``ContextDir``) or a label of a files target."""
    return Attr("context", default, doc, example)


def platform(default: Any = None, doc: str = "", example: str = "") -> Attr:
    """A platform; None means the build's default (``--platform`` or WORKSPACE)."""
    return Attr("platform", default, doc or "target platform; default: --platform, "
                "then [build] platforms[0], then the host", example or 'platform = "linux/arm64"')
