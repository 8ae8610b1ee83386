"""Evaluating BUILD and ``.star`` files with starlark-pyo3.

Evaluation is hermetic: the only I/O a BUILD file can do is ``glob()`` inside its own
package and ``load()`` of another ``.star`` file in the workspace. Rules appear as
Starlark functions; calling one records a ``TargetDef`` in the package being loaded
(macros in loaded files call the same functions, so they land in the caller's package).
Errors are reported as ``file:line:column: message`` with a "did you mean".
"""

from __future__ import annotations

import bisect
import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import starlark as sl

from forge.core.errors import BuildFileError, ForgeError, LabelError, did_you_mean
from forge.core.labels import Label, Pattern, parse_label
from forge.core.registry import RuleRegistry
from forge.core.rule import TargetDef

BUILD_NAMES = ("BUILD", "BUILD.bazel")
SKIP_DIRS = {"forge-out", ".git", "__pycache__", "node_modules", ".venv"}
_LOC_RE = re.compile(r"-->\s*(\S+?):(\d+):(\d+)")
_VAR_RE = re.compile(r"Variable `([^`]+)` not found")
_NAME_ATTR_RE = re.compile(r"""name\s*=\s*["']([^"']+)["']""")


@dataclass
class Package:
    name: str
    directory: Path
    build_file: Path
    targets: dict[str, TargetDef] = field(default_factory=dict)
    listing: list[str] | None = None  # the package's files, listed on first glob()
    name_lines: dict[str, int] | None = None  # target name -> BUILD line, for messages


def _first_location(text: str) -> str:
    m = _LOC_RE.search(text)
    return f"{m.group(1)}:{m.group(2)}:{m.group(3)}" if m else ""


class Loader:
    """Loads packages on demand and remembers them for the rest of the build."""

    def __init__(self, root: Path, rules: RuleRegistry):
        self.root = root
        self.rules = rules
        self.packages: dict[str, Package] = {}
        self._modules: dict[str, sl.FrozenModule] = {}  # by resolved label
        self._star_package: str | None = None  # package of the .star file being evaluated
        self._current: Package | None = None
        self._pending: ForgeError | None = None
        self._globals = sl.Globals.standard()
        self._builtin_names = ["glob", "package_name", *rules.names()]

    # -- discovery ------------------------------------------------------------------
    def build_file(self, pkg: str) -> Path | None:
        directory = self.root / pkg
        for name in BUILD_NAMES:
            path = directory / name
            if path.is_file():
                return path
        return None

    def all_packages(self, under: str = "") -> list[str]:
        start = self.root / under
        found = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            if any(n in filenames for n in BUILD_NAMES):
                rel = os.path.relpath(dirpath, self.root)
                found.append("" if rel == "." else rel.replace(os.sep, "/"))
        return sorted(found)

    def expand(self, pattern: Pattern) -> list[Label]:
        if pattern.recursive:
            pkgs = self.all_packages(pattern.package)
            if not pkgs:
                raise LabelError(f"no packages (BUILD files) under {pattern}")
            return [lbl for p in pkgs for lbl in self._labels_of(p)]
        if pattern.name is None:
            return self._labels_of(pattern.package)
        label = Label(pattern.package, pattern.name)
        self.target(label)  # raises a helpful error when absent
        return [label]

    def _labels_of(self, pkg: str) -> list[Label]:
        return [Label(pkg, n) for n in sorted(self.package(pkg).targets)]

    # -- targets --------------------------------------------------------------------
    def target(self, label: Label, referrer: str = "") -> TargetDef:
        where = f"{referrer}: " if referrer else ""
        try:
            pkg = self.package(label.package)
        except LabelError as exc:
            raise LabelError(f"{where}{exc}") from None
        try:
            return pkg.targets[label.name]
        except KeyError:
            raise LabelError(
                f"{where}no target '{label.name}' in package //{label.package} "
                f"({pkg.build_file.relative_to(self.root)}){did_you_mean(label.name, pkg.targets)}"
            ) from None

    def package(self, name: str) -> Package:
        if name in self.packages:
            return self.packages[name]
        build_file = self.build_file(name)
        if build_file is None:
            near = did_you_mean(name, self.all_packages())
            raise LabelError(f"no package '//{name}': no BUILD file in {self.root / name}{near}")
        pkg = Package(name, build_file.parent, build_file)
        self._evaluate(pkg)
        self.packages[name] = pkg
        return pkg

    # -- evaluation -----------------------------------------------------------------
    def _module(self) -> sl.Module:
        mod = sl.Module()
        mod.add_callable("glob", self._glob)
        mod.add_callable("package_name", self._package_name)
        for name in self.rules.names():
            mod.add_callable(name, self._rule_function(name))
        return mod

    def _rel(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    def _evaluate(self, pkg: Package) -> None:
        previous, self._current = self._current, pkg
        try:
            self._eval_file(pkg.build_file, self._module())
        finally:
            self._current = previous

    def _eval_file(self, path: Path, module: sl.Module) -> None:
        rel = self._rel(path)
        try:
            ast = sl.parse(rel, path.read_text())
            sl.eval(module, ast, self._globals, sl.FileLoader(self._load))
        except sl.StarlarkError as exc:
            pending, self._pending = self._pending, None
            if pending is not None:
                loc = _first_location(str(exc))
                msg = str(pending)
                raise type(pending)(f"{loc}: {msg}" if loc and not msg.startswith(loc) else msg) from None
            raise BuildFileError(self._describe_starlark_error(str(exc))) from None

    def _describe_starlark_error(self, text: str) -> str:
        loc = _first_location(text)
        lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
        message = lines[-1][len("error:") :].strip() if lines else text.strip()
        m = _VAR_RE.search(message)
        if m:
            message += did_you_mean(m.group(1), self._builtin_names)
        return f"{loc}: {message}" if loc else message

    def _load(self, module_name: str) -> sl.FrozenModule:
        # Resolve first, cache by the resolved label: `load(":defs.star")` in //a and in //b
        # are two different files, whatever order the packages load in.
        # A relative label is relative to the file that says load(): the BUILD file's
        # package, or, inside a loaded .star file, that file's own package (as in Bazel).
        here = self._star_package if self._star_package is not None else (
            self._current.name if self._current else None)
        try:
            label = parse_label(module_name, here)
        except LabelError as exc:
            self._pending = BuildFileError(f"load({module_name!r}): {exc}")
            raise
        if str(label) in self._modules:
            return self._modules[str(label)]
        path = self.root / label.package / label.name
        if not path.is_file() or not path.name.endswith(".star"):
            self._pending = BuildFileError(
                f"load({module_name!r}): {self._rel(path)} is not a .star file in the workspace"
            )
            raise FileNotFoundError(module_name)
        module = self._module()
        previous, self._star_package = self._star_package, label.package
        try:
            self._eval_file(path, module)
        finally:
            self._star_package = previous
        frozen = module.freeze()
        self._modules[str(label)] = frozen
        return frozen

    def _package_name(self) -> str:
        return self._current.name if self._current else ""

    def _glob(self, include: list[str], exclude: list[str] | None = None, allow_empty: bool = True) -> list[str]:
        pkg = self._current
        if pkg is None:
            return []
        if pkg.listing is None:
            pkg.listing = list_package(pkg.directory)
        try:
            return glob_package(pkg.directory, include, exclude or [], allow_empty, pkg.listing)
        except ForgeError as exc:
            self._pending = exc
            raise

    def _rule_function(self, rule_name: str):
        def call(*args: Any, **kwargs: Any) -> None:
            try:
                self._declare(rule_name, args, kwargs)
            except ForgeError as exc:
                self._pending = exc
                raise
            return None

        call.__name__ = rule_name
        return call

    def _declare(self, rule_name: str, args: tuple, kwargs: dict[str, Any]) -> None:
        pkg = self._current
        if pkg is None:
            raise BuildFileError(f"rule {rule_name}() called outside a BUILD file")
        if args:
            raise BuildFileError(f"{rule_name}() takes keyword arguments only (name = ...)")
        rule = self.rules.get(rule_name)
        name = kwargs.pop("name", None)
        if not isinstance(name, str) or not name:
            raise BuildFileError(f"{rule_name}() needs name = \"...\"")
        kwargs.pop("tags", None)
        kwargs.pop("visibility", None)
        label = parse_label(f":{name}", pkg.name)
        where = f"{label} ({rule_name})"
        if name in pkg.targets:
            raise BuildFileError(f"duplicate target name '{name}' in //{pkg.name}")
        values: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key not in rule.attrs:
                raise BuildFileError(
                    f"{where}: unknown attribute '{key}'{did_you_mean(key, rule.attrs)}; "
                    f"{rule_name} takes: {', '.join(['name', *rule.attrs])}"
                )
            values[key] = rule.attrs[key].coerce(value, pkg.name, f"{where}: attribute '{key}'")
        for key, attr in rule.attrs.items():
            if key not in values:
                if attr.mandatory:
                    raise BuildFileError(f"{where}: missing mandatory attribute '{key}'")
                default = attr.default_value()
                values[key] = (
                    attr.coerce(default, pkg.name, key)
                    if default is not None and attr.kind in ("label", "label_list")
                    else default
                )
        pkg.targets[name] = TargetDef(label, rule, values, self._locate(pkg, name), pkg.directory)

    def _locate(self, pkg: Package, name: str) -> str:
        """file:line of the target's declaration (best effort: finds `name = "x"`)."""
        if pkg.name_lines is None:
            try:
                text = pkg.build_file.read_text()
            except OSError:
                text = ""
            pkg.name_lines = {}
            for m in _NAME_ATTR_RE.finditer(text):
                pkg.name_lines.setdefault(m.group(1), text.count("\n", 0, m.start()) + 1)
        rel = self._rel(pkg.build_file)
        line = pkg.name_lines.get(name)
        return f"{rel}:{line}" if line else rel


def list_package(directory: Path) -> list[str]:
    """Every file of a package (not entering subpackages), package-relative, sorted."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        rel_dir = os.path.relpath(dirpath, directory)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
        dirnames[:] = [
            d for d in dirnames
            if d not in SKIP_DIRS and not any(os.path.isfile(os.path.join(dirpath, d, b)) for b in BUILD_NAMES)
        ]
        files.extend(f"{rel_dir}/{f}" if rel_dir else f for f in filenames)
    files.sort()
    return files


def _literal_prefix(pattern: str) -> str:
    """The leading directories of a pattern that hold no wildcard (``a/b/*.c`` -> ``a/b/``)."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return "/".join(fixed) + "/" if fixed else ""


def glob_package(directory: Path, include: list[str], exclude: list[str], allow_empty: bool = True,
                 listing: list[str] | None = None) -> list[str]:
    """Files under ``directory`` matching ``include`` minus ``exclude``, sorted.

    ``**`` matches any number of directories. Subpackages (directories with their own
    BUILD file) are not entered, as in Bazel. Patterns may not leave the package.
    ``listing`` is the package's file list when the caller already has it (the loader
    lists each package once, so a BUILD file with a thousand globs walks it once).
    """
    for pat in [*include, *exclude]:
        if not isinstance(pat, str) or pat.startswith("/") or ".." in pat.split("/"):
            raise BuildFileError(f"glob pattern {pat!r} must be relative and stay inside the package")
    files = listing if listing is not None else list_package(directory)
    exc = [_compile_glob(p) for p in exclude]
    found: set[str] = set()
    for pattern in include:
        prefix = _literal_prefix(pattern)
        lo = bisect.bisect_left(files, prefix)
        hi = bisect.bisect_left(files, prefix + "\uffff") if prefix else len(files)
        rest = pattern[len(prefix):]
        if rest == "*":  # the common `dir/*`: no regex needed
            found.update(f for f in files[lo:hi] if "/" not in f[len(prefix):])
        elif rest == "**":
            found.update(files[lo:hi])
        elif not any(c in pattern for c in "*?["):
            found.update(f for f in files[lo:hi] if f == pattern)
        else:
            regex = _compile_glob(pattern)
            found.update(f for f in files[lo:hi] if regex.match(f))
    out = sorted(f for f in found if not any(r.match(f) for r in exc))
    if not out and not allow_empty:
        raise BuildFileError(f"glob({include}) matched no files in {directory}")
    return out


_GLOB_CACHE: dict[str, re.Pattern] = {}


def _compile_glob(pattern: str) -> re.Pattern:
    if pattern not in _GLOB_CACHE:
        parts = []
        for i, seg in enumerate(pattern.split("/")):
            if seg == "**":
                parts.append("(?:.*/)?" if i < pattern.count("/") else ".*")
            else:
                parts.append(fnmatch.translate(seg).replace(r"\Z", "").replace("(?s:", "(?:")
                             .replace(".*", "[^/]*") + ("/" if i < pattern.count("/") else ""))
        _GLOB_CACHE[pattern] = re.compile("^" + "".join(parts) + "$")
    return _GLOB_CACHE[pattern]
