"""Evaluating BUILD and ``.star`` files with starlark-pyo3.

Evaluation is hermetic: the only I/O a BUILD file can do is ``glob()`` inside its own
package and ``load()`` of another ``.star`` file in the workspace. Rules appear as
Starlark functions; calling one records a ``TargetDef`` in the package being loaded
(macros in loaded files call the same functions, so they land in the caller's package).
Errors are reported as ``file:line:column: message`` with a "did you mean".

Hostile input is a message, never a crash. starlark-pyo3 overflows the native stack
(SIGSEGV) on deep syntax trees, so before it parses anything a file must be UTF-8 and
pass ``check_nesting``: at most ``MAX_NESTING`` open brackets and ``MAX_EXPRESSION``
levels of brackets plus chained operators (``a + b + ...``, ``x.y.z``, ``f()()``,
``not not x``) in one expression; a ``load()`` cycle is an error naming the chain.
A BUILD file that could build deep values at run time (it has loops, functions or
loads) is parsed and evaluated on one long-lived thread with a large stack
(``EVAL_STACK_BYTES``), so that such values go very deep before they could overflow it.
Rules reach Starlark through a small prelude that passes ``call_stack()`` along, so a
target a macro declares is located at the BUILD line that called the macro.

glob semantics: a glob lists the files of its package, recursively, not entering
subpackages (directories with a BUILD file). Directories named in ``[build]
glob_excludes`` (default ``[".git"]``) are skipped at any depth, and the workspace's
``forge-out`` always. A symlink to a directory whose resolved target lies inside the
workspace (and not in ``forge-out`` or an excluded directory) is followed, except
into a directory already being listed on the current path (a loop); any other
directory symlink is listed as one entry, the link itself, which rules keep as a
symlink and never read through. Symlinks to files and dangling links are entries too.
A package is listed once per build, on its first ``glob()``. Package discovery
(``//...``) skips hidden directories, ``forge-out`` and the ``glob_excludes`` names,
and does not follow symlinks.

Nested workspaces: a directory below the root that holds its own ``WORKSPACE.toml`` is
another workspace (as a nested WORKSPACE is another repository in Bazel). ``//...``
does not enter it, a glob does not list it, and a label or ``load()`` of a package in it
is an error that names the workspace and the label there (``cd examples/atom && forge
build //atom:...``); its BUILD files mean what they say only from its own root.
"""

from __future__ import annotations

import bisect
import fnmatch
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import starlark as sl

from forge.core.errors import BuildFileError, ForgeError, LabelError, did_you_mean
from forge.core.labels import MAX_COMPONENT_BYTES, MAX_PATH_BYTES, Label, Pattern, parse_label
from forge.core.registry import RuleRegistry
from forge.core.rule import TargetDef
from forge.core.workspace import DEFAULT_GLOB_EXCLUDES, OUT_DIR_NAME, WORKSPACE_FILE

BUILD_NAMES = ("BUILD", "BUILD.bazel")
T = TypeVar("T")

# Measured with starlark-pyo3 2026.1.3 on an 8 MiB stack (the main thread's usual
# limit), in a subprocess, since the overflow kills the process: SIGSEGV from about
# 1,030 nested lambdas, 2,050 nested dicts, 2,350 nested lists, 2,500 nested calls,
# 3,250 chained `+`/`and`/unary/index operators, 9,500 chained string `+`. The limits
# below keep the worst case (lambdas, weighted 3) under a quarter of that stack.
MAX_NESTING = 200  # open brackets at once
MAX_EXPRESSION = 1000  # brackets + chained operators on one path of one expression
# Parse and evaluation run on a thread with this much stack (reserved, touched only as
# used): deep values built at run time (`for i in range(n): x = [x]`, then `str(x)`)
# overflow 8 MiB at about 75,000 levels and this at about 4.8 million.
EVAL_STACK_BYTES = 512 << 20
# Rules reach BUILD files as Starlark functions that pass the call stack along, so a target
# made by a macro is located at the BUILD line that called the macro.
PRELUDE_FILE = "<forge rules>"
_FRAME_RE = re.compile(r"^\s*\* (.+?):(\d+), in ", re.M)
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
    source: str = ""  # the BUILD file's text, as evaluated


_LOC_RE_ANY = re.compile(r"-->\s*(.+?):(\d+):(\d+)\s*$", re.M)
_STARLARK_DYM_RE = re.compile(r", did you mean `([^`]+)`\?")
_SERDE_RE = re.compile(r"Operation `serde::serialize` not supported on type `([^`]+)`")


class Loader:
    """Loads packages on demand and remembers them for the rest of the build."""

    def __init__(self, root: Path, rules: RuleRegistry, glob_excludes: Iterable[str] | None = None):
        self.root = root
        self.rules = rules
        if glob_excludes is None:  # not given: [build] glob_excludes of the workspace, if any
            glob_excludes = _configured_glob_excludes(root)
        self.glob_excludes = frozenset(glob_excludes)
        self.packages: dict[str, Package] = {}
        self.nested_workspaces: list[str] = []  # roots of nested workspaces //... passed by
        self._modules: dict[str, sl.FrozenModule] = {}  # by resolved label
        self._loading: list[str] = []  # labels of the .star files being evaluated, outermost first
        self._star_package: str | None = None  # package of the .star file being evaluated
        self._current: Package | None = None
        self._pending: ForgeError | None = None
        self._pending_at = ""  # file:line:column of the rule call that raised _pending
        self._sources: dict[str, str] = {}  # workspace-relative path -> text, for columns
        self._globals = sl.Globals.extended_by([sl.LibraryExtension.CallStack])
        self._prelude = sl.parse(PRELUDE_FILE, "".join(
            f"def {name}(*args, **kwargs):\n    _forge_rule_{name}(call_stack(), *args, **kwargs)\n"
            for name in rules.names()
        ))
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
        """The packages at and below ``under``, not entering nested workspaces (their
        roots are kept in ``self.nested_workspaces`` for messages)."""
        self._refuse_nested(under, f"//{under + '/' if under else ''}...")
        start = self.root / under
        found = []
        out = os.path.join(str(self.root), OUT_DIR_NAME)
        for dirpath, dirnames, filenames in os.walk(start):
            if WORKSPACE_FILE in filenames and dirpath != str(self.root):
                # another workspace: a boundary, as in Bazel (``start`` is never one here)
                rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                if rel not in self.nested_workspaces:
                    self.nested_workspaces.append(rel)
                dirnames[:] = []
                continue
            dirnames[:] = sorted(
                d for d in dirnames
                if not d.startswith(".") and d not in self.glob_excludes
                and os.path.join(dirpath, d) != out
            )
            if any(n in filenames for n in BUILD_NAMES):
                rel = os.path.relpath(dirpath, self.root)
                found.append("" if rel == "." else rel.replace(os.sep, "/"))
        return sorted(found)

    def nested_workspace(self, pkg: str) -> str | None:
        """The outermost directory (workspace-relative) at or above package directory
        ``pkg``, below the root, that holds its own WORKSPACE.toml; None if there is none."""
        if not pkg:
            return None
        parts = pkg.split("/")
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            if os.path.isfile(os.path.join(str(self.root), rel, WORKSPACE_FILE)):
                return rel
        return None

    def _refuse_nested(self, pkg: str, what: str) -> None:
        """A LabelError when package directory ``pkg`` lies in a nested workspace: it is
        that workspace's, and its labels (and loads) mean what they say only from there."""
        nested = self.nested_workspace(pkg)
        if nested is None:
            return
        inner = pkg[len(nested):].lstrip("/")
        rest = what[len(f"//{pkg}"):] if what.startswith(f"//{pkg}") else ""
        there = f"//{inner}{rest}" if inner else f"//{rest.lstrip('/')}"
        raise LabelError(
            f"{what} is in {nested}/, a workspace of its own (it has its own {WORKSPACE_FILE}), "
            f"which this one does not enter; there it is {there}: cd {nested} && forge build {there}"
        )

    def expand(self, pattern: Pattern) -> list[Label]:
        if pattern.recursive:
            pkgs = self.all_packages(pattern.package)
            if not pkgs:
                skipped = [w for w in self.nested_workspaces
                           if not pattern.package or w.startswith(pattern.package + "/")]
                nested = (f" (not entered: the nested workspace{'s' if len(skipped) > 1 else ''} "
                          f"{', '.join(skipped)}; run forge inside {'them' if len(skipped) > 1 else 'it'})"
                          if skipped else "")
                raise LabelError(f"no packages (BUILD files) under {pattern}{nested}")
            return [lbl for p in pkgs for lbl in self._labels_of(p)]
        if pattern.name is None:
            self._refuse_nested(pattern.package, str(pattern))
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
            if label.package not in self.packages:
                self._refuse_nested(label.package, str(label))
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

    def _read_inside(self, path: Path) -> str:
        """A BUILD or .star file's text, after checking where it really is: a symlink (or a
        symlinked directory) that leads out of the workspace is a BuildFileError, never read."""
        real = os.path.realpath(path)
        root = os.path.realpath(self.root)
        if not (real == root or real.startswith(root + os.sep)):
            raise BuildFileError(f"{self._rel(path)}: resolves to {real}, outside the workspace "
                                 f"{self.root}; forge reads BUILD and .star files only inside it")
        return read_source(path, self._rel(path))

    def package(self, name: str) -> Package:
        if name in self.packages:
            return self.packages[name]
        self._refuse_nested(name, f"//{name}")
        build_file = self.build_file(name)
        if build_file is None:
            near = did_you_mean(name, self.all_packages())
            raise LabelError(f"no package '//{name}': no BUILD file in {self.root / name}{near}")
        self._check_package_path(name, build_file)
        pkg = Package(name, build_file.parent, build_file)
        pkg.source = self._read_inside(build_file)
        if _may_build_deep_values(pkg.source):
            run_with_large_stack(lambda: self._evaluate(pkg))
        else:
            self._evaluate(pkg)
        self.packages[name] = pkg
        return pkg

    def _check_package_path(self, name: str, build_file: Path) -> None:
        """forge-out/<pkg>/<name>/ and forge-out/logs/<pkg>/... are made from the package
        path: it must fit a file system (the name is checked where the BUILD file says it)."""
        where = f"{self._rel(build_file)}:1"  # the whole file: its package path is the mistake
        if len(name.encode()) > MAX_PATH_BYTES:
            raise BuildFileError(f"{where}: package path //{name[:40]}... is {len(name.encode())} bytes "
                                 f"(limit {MAX_PATH_BYTES}): forge-out/ could not hold its outputs")
        for part in name.split("/"):
            if len(part.encode()) > MAX_COMPONENT_BYTES:
                raise BuildFileError(
                    f"{where}: package directory {part[:40]!r}... is {len(part.encode())} bytes long "
                    f"(limit {MAX_COMPONENT_BYTES} per path component): forge-out/ could not hold its outputs"
                )

    # -- evaluation -----------------------------------------------------------------
    def _module(self) -> sl.Module:
        mod = sl.Module()
        mod.add_callable("glob", self._glob)
        mod.add_callable("package_name", self._package_name)
        for name in self.rules.names():
            mod.add_callable(f"_forge_rule_{name}", self._rule_function(name))
        sl.eval(mod, self._prelude, self._globals)
        return mod

    def _rel(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    def _evaluate(self, pkg: Package) -> None:
        previous, self._current = self._current, pkg
        try:
            self._eval_file(pkg.build_file, self._module(), pkg.source)
        finally:
            self._current = previous

    def _eval_file(self, path: Path, module: sl.Module, text: str | None = None) -> None:
        rel = self._rel(path)
        if text is None:
            text = self._read_inside(path)
        check_nesting(rel, text)
        self._sources[rel] = text
        try:
            ast = sl.parse(rel, text)
            sl.eval(module, ast, self._globals, sl.FileLoader(self._load))
        except sl.StarlarkError as exc:
            pending, self._pending = self._pending, None
            at, self._pending_at = self._pending_at, ""
            if pending is not None:
                loc = at or self._error_location(str(exc))
                msg = str(pending)
                raise type(pending)(f"{loc}: {msg}" if loc and not msg.startswith(loc) else msg) from None
            raise BuildFileError(self._describe_starlark_error(str(exc), rel, text)) from None
        except BaseException as exc:
            if type(exc).__name__ != "PanicException":  # pyo3's, for a Rust panic (no Exception subclass)
                raise
            self._pending = None
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "internal error"
            raise BuildFileError(f"{rel}: evaluation failed inside Starlark (starlark-pyo3 panicked, "
                                 f"which gives no line): {message}") from None

    def _error_location(self, text: str) -> str:
        """file:line:column of a StarlarkError: its span, or (when that is in the rule
        prelude) the innermost frame of its traceback that is not."""
        m = _LOC_RE_ANY.search(text)
        if m and m.group(1) != PRELUDE_FILE:
            return f"{m.group(1)}:{m.group(2)}:{m.group(3)}"
        frames = [(f, int(n)) for f, n in _FRAME_RE.findall(text) if f != PRELUDE_FILE]
        return self._call_site(frames, "")

    def _describe_starlark_error(self, text: str, rel: str = "", source: str = "") -> str:
        loc = self._error_location(text)
        lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
        message = lines[-1][len("error:") :].strip() if lines else text.strip()
        m = _SERDE_RE.search(message)
        if not loc and m and rel:  # no frame: it is the value of the file's last statement
            code = [i for i, ln in enumerate(source.split("\n"), 1) if ln.strip() and not ln.lstrip().startswith("#")]
            return (f"{rel}:{code[-1] if code else 1}: the file ends with an expression whose value, "
                    f"a {m.group(1)}, is not plain data; end it with a call or an assignment")
        loc = loc or rel
        message = _SERDE_RE.sub(lambda m: f"a {m.group(1)} cannot be a rule attribute value "
                                "(only None, bools, numbers, strings, lists, tuples and dicts)", message)
        message = _STARLARK_DYM_RE.sub(r" (did you mean '\1'?)", message)  # in forge's style
        m = _VAR_RE.search(message)
        if m and "did you mean" not in message:
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
        key = str(label)
        if key in self._modules:
            return self._modules[key]
        if key in self._loading:
            chain = [*self._loading[self._loading.index(key):], key]
            self._pending = BuildFileError(f"load({module_name!r}): load cycle: {' -> '.join(chain)}")
            raise RecursionError(module_name)
        try:
            self._refuse_nested(label.package, key)
        except LabelError as exc:
            self._pending = BuildFileError(f"load({module_name!r}): {exc}")
            raise
        path = self.root / label.package / label.name
        if not path.is_file() or not path.name.endswith(".star"):
            self._pending = BuildFileError(
                f"load({module_name!r}): {self._rel(path)} is not a .star file in the workspace"
            )
            raise FileNotFoundError(module_name)
        module = self._module()
        previous, self._star_package = self._star_package, label.package
        self._loading.append(key)
        try:
            self._eval_file(path, module)
        except ForgeError as exc:  # carried through Starlark to the load() that asked
            self._pending = exc
            raise
        finally:
            self._loading.pop()
            self._star_package = previous
        frozen = module.freeze()
        self._modules[key] = frozen
        return frozen

    def _package_name(self) -> str:
        return self._current.name if self._current else ""

    def _glob(self, include: list[str], exclude: list[str] | None = None, allow_empty: bool = False) -> list[str]:
        """``glob(include, exclude = [], allow_empty = False)``: as Bazel (8's default), a
        pattern that matches nothing is an error unless ``allow_empty = True``."""
        pkg = self._current
        if pkg is None:
            return []
        if pkg.listing is None:
            pkg.listing = list_package(pkg.directory, self.root, self.glob_excludes)
        try:
            return glob_package(pkg.directory, include, exclude or [], allow_empty, pkg.listing)
        except ForgeError as exc:
            self._pending = exc
            raise

    def _rule_function(self, rule_name: str) -> Callable[..., None]:
        def call(stack: str, *args: Any, **kwargs: Any) -> None:
            frames = [(f, int(n)) for f, n in _FRAME_RE.findall(stack) if f != PRELUDE_FILE]
            try:
                self._declare(rule_name, args, kwargs, frames)
            except ForgeError as exc:
                self._pending = exc
                self._pending_at = self._call_site(frames, rule_name)
                raise
            return None

        call.__name__ = rule_name
        return call

    def _call_site(self, frames: list[tuple[str, int]], rule_name: str) -> str:
        """file:line:column of the innermost call (the column of `rule(`, as Starlark says)."""
        if not frames:
            return ""
        file, line = frames[-1]
        lines = self._sources.get(file, "").split("\n")
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        col = text.find(rule_name + "(") if rule_name else -1
        col = col if col >= 0 else len(text) - len(text.lstrip())
        return f"{file}:{line}:{col + 1}"

    def _declare(self, rule_name: str, args: tuple, kwargs: dict[str, Any],
                 frames: list[tuple[str, int]] = ()) -> None:
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
        if name in ("all", "all-targets", "*"):  # the package wildcard: never addressable
            raise BuildFileError(f"target name '{name}' is reserved: //{pkg.name}:{name} means every "
                                 "target of the package; choose another name")
        if name in pkg.targets:
            raise BuildFileError(f"duplicate target name '{name}' in //{pkg.name} "
                                 f"(first declared at {pkg.targets[name].location})")
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
        pkg.targets[name] = TargetDef(label, rule, values, self._locate(pkg, name, frames), pkg.directory)

    def _locate(self, pkg: Package, name: str, frames: list[tuple[str, int]] = ()) -> str:
        """file:line of the target's declaration: the BUILD line of the outermost call on
        the stack (a macro's call for a target it makes), else found by `name = "x"`."""
        rel = self._rel(pkg.build_file)
        for file, line in frames:
            if file == rel:
                return f"{rel}:{line}"
        if frames:  # declared while a loaded .star file ran its top level
            return f"{frames[0][0]}:{frames[0][1]}"
        if pkg.name_lines is None:
            text = pkg.source
            pkg.name_lines = {}
            for m in _NAME_ATTR_RE.finditer(text):
                pkg.name_lines.setdefault(m.group(1), text.count("\n", 0, m.start()) + 1)
        line = pkg.name_lines.get(name)
        return f"{rel}:{line}" if line else rel


def _configured_glob_excludes(root: Path) -> tuple[str, ...]:
    from forge.core.workspace import WORKSPACE_FILE, load_workspace

    if not (root / WORKSPACE_FILE).is_file():
        return DEFAULT_GLOB_EXCLUDES
    return tuple(load_workspace(root).glob_excludes)


def read_source(path: Path, rel: str) -> str:
    """A BUILD or .star file's text; not UTF-8 (or unreadable) is a BuildFileError."""
    from forge.core.fsutil import read_utf8

    return read_utf8(path, rel, BuildFileError, "BUILD and .star files")


# Tokens that matter for depth; identifiers and numbers are one `word` token each, and
# whitespace is skipped. Strings (any prefix, triple-quoted, unterminated) and comments
# are single tokens, so brackets inside them do not count.
_TOKEN_RE = re.compile(
    r"""
      (?P<str>[rRbB]{0,2}(?:\"\"\"(?:[^"\\]|\\.|"(?!""))*(?:\"\"\"|\Z)
                       |'''(?:[^'\\]|\\.|'(?!''))*(?:'''|\Z)
                       |"(?:[^"\\\n]|\\.)*"?
                       |'(?:[^'\\\n]|\\.)*'?))
    | (?P<comment>\#[^\n]*)
    | (?P<word>\w+)
    | (?P<open>[\[({])
    | (?P<close>[\])}])
    | (?P<cont>\\\n)
    | (?P<nl>[\n;])
    | (?P<sep>,|(?:<<|>>|//|[-+*/%&|^])?=(?!=))
    | (?P<op>//|<<|>>|<=|>=|==|!=|->|[-+*/%&|^~<>.!])
    | (?P<colon>:)
    """,
    re.X | re.S,
)
_KEYWORD_OPS = {"and": 1, "or": 1, "not": 1, "in": 1, "if": 1, "else": 1, "for": 1, "lambda": 3}
_NOT_OPERANDS = {*_KEYWORD_OPS, "return", "def", "elif", "while", "load", "pass", "break", "continue"}


def check_nesting(rel: str, text: str) -> None:
    """Refuse source whose syntax tree would be too deep for starlark-pyo3.

    Counts, without parsing, the open brackets and, on top of them, the operators
    chained in each bracket's current element (a left-deep ``a + b + c`` is as deep as
    it is long; ``,``, ``=`` and the end of a statement start a new element). A call or
    index after an operand (``f(x)``, ``x[0][0]``) is one more link in the chain.
    """
    if _surely_shallow(text):
        return
    chains = [0]  # per open bracket (and the statement itself): operators in the element
    score = 0  # len(chains) - 1 + sum(chains): the depth of the tree at this point
    operand = False  # the previous token ends an operand
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "word":
            weight = _KEYWORD_OPS.get(m.group())
            if weight is None:
                operand = m.group() not in _NOT_OPERANDS
                continue
            chains[-1] += weight
            score += weight
            operand = False
        elif kind == "open":
            if operand:
                chains[-1] += 1
                score += 1
            chains.append(0)
            score += 1
            operand = False
            if len(chains) > MAX_NESTING + 1:
                raise BuildFileError(f"{rel}:{_line_at(text, m.start())}: nested too deep: more than "
                                     f"{MAX_NESTING} open brackets (limit {MAX_NESTING})")
        elif kind == "close":
            if len(chains) > 1:
                score -= 1 + chains.pop()
            operand = True
            continue
        elif kind == "op":
            chains[-1] += 1
            score += 1
            operand = False
        elif kind == "sep" or (kind == "nl" and len(chains) == 1):
            score -= chains[-1]
            chains[-1] = 0
            operand = False
            continue
        elif kind == "str":
            operand = True
            continue
        else:  # a colon, a comment, a line continuation, a newline inside brackets
            operand = operand and kind != "colon"
            continue
        if score > MAX_EXPRESSION:
            raise BuildFileError(
                f"{rel}:{_line_at(text, m.start())}: expression too long: more than {MAX_EXPRESSION} "
                f"chained operators and brackets in one expression (limit {MAX_EXPRESSION}); split it up"
            )


def _surely_shallow(text: str) -> bool:
    """A quick upper bound on the score (C-speed counts, strings included)."""
    opens = text.count("(") + text.count("[") + text.count("{")
    if opens > MAX_NESTING:
        return False
    bound = 2 * opens + sum(text.count(c) for c in "+-*/%&|^~<>.!")
    bound += sum(text.count(k) * w for k, w in _KEYWORD_OPS.items())
    return bound <= MAX_EXPRESSION


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _may_build_deep_values(text: str) -> bool:
    """False when evaluating ``text`` surely builds no value deeper than a small stack
    holds: without loops, functions or loads every level of a value is a bracket or
    call written in the file (nesting itself is bounded by ``check_nesting``)."""
    return (any(word in text for word in ("for", "def", "lambda", "load"))
            or text.count("[") + text.count("(") + text.count("{") > 20_000)


class _LargeStackWorker:
    """One daemon thread with ``EVAL_STACK_BYTES`` of stack that runs jobs in turn (a
    thread per package would fault in fresh stack pages for every BUILD file)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], dict[str, Any], threading.Event]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.failed = False  # the system refused such a thread: run jobs inline

    def _start(self) -> bool:
        with self._lock:
            if self._thread is not None or self.failed:
                return not self.failed
            try:
                old = threading.stack_size(EVAL_STACK_BYTES)
            except (ValueError, RuntimeError):
                self.failed = True
                return False
            try:
                thread = threading.Thread(target=self._serve, name="forge-starlark", daemon=True)
                thread.start()
                self._thread = thread
            except (RuntimeError, MemoryError):
                self.failed = True
            finally:
                threading.stack_size(old)
            return not self.failed

    def _serve(self) -> None:
        while True:
            fn, outcome, done = self._jobs.get()
            try:
                outcome["value"] = fn()
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc
            finally:
                done.set()

    def run(self, fn: Callable[[], T]) -> T:
        if threading.current_thread() is self._thread or not self._start():
            return fn()
        outcome: dict[str, Any] = {}
        done = threading.Event()
        self._jobs.put((fn, outcome, done))
        done.wait()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


_worker = _LargeStackWorker()


def run_with_large_stack(fn: Callable[[], T]) -> T:
    """``fn()`` on the loader's thread with ``EVAL_STACK_BYTES`` of stack (in this thread
    if the system refuses one), so that a deep Starlark value overflows far later, if ever."""
    return _worker.run(fn)


def list_package(directory: Path, root: Path | None = None,
                 excludes: Iterable[str] = DEFAULT_GLOB_EXCLUDES) -> list[str]:
    """Every file of a package (not entering subpackages or nested workspaces: directories
    with a BUILD or a WORKSPACE.toml file), package-relative, sorted.

    ``root`` is the workspace (default: the package itself): its ``forge-out`` is never
    listed, and a symlinked directory is followed only when it resolves inside it, not
    into ``forge-out`` or an excluded directory, and not into a directory being listed
    on the current path; otherwise the link is one entry. Directories named in
    ``excludes`` are skipped at any depth.
    """
    excluded = frozenset(excludes)
    base = os.path.realpath(directory)
    top = os.path.realpath(root) if root is not None else base
    out_dir = os.path.join(top, OUT_DIR_NAME)
    files: list[str] = []
    # (directory, its package-relative prefix, its realpath, the realpaths of its ancestors)
    todo: list[tuple[str, str, str, frozenset[str]]] = [(str(directory), "", base, frozenset())]
    while todo:
        path, prefix, real_dir, ancestors = todo.pop()
        seen = ancestors | {real_dir}
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            continue  # unreadable or vanished: nothing to list there
        for entry in entries:
            rel = prefix + entry.name
            try:
                is_dir = entry.is_dir()  # through a symlink
            except OSError:
                is_dir = False
            if not is_dir:
                files.append(rel)
                continue
            if entry.name in excluded:
                continue
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                inside = real == top or real.startswith(top + os.sep)
                if (not inside or real == out_dir or real.startswith(out_dir + os.sep) or real in seen
                        or excluded.intersection(real[len(top) + 1:].split(os.sep))):
                    files.append(rel)  # the link itself: kept as a symlink, never read through
                    continue
            else:
                real = os.path.join(real_dir, entry.name)
                if real == out_dir:
                    continue
            if any(os.path.isfile(os.path.join(entry.path, b)) for b in BUILD_NAMES):
                continue  # a subpackage
            if real != top and os.path.isfile(os.path.join(entry.path, WORKSPACE_FILE)):
                continue  # a nested workspace (a link back to this one's root is not one)
            if entry.is_symlink() and _in_nested_workspace(real, top):
                files.append(rel)  # into another workspace: the link itself, never read through
                continue
            todo.append((entry.path, rel + "/", real, seen))
    files.sort()
    return files


def _in_nested_workspace(real: str, top: str) -> bool:
    """Whether ``real`` (a resolved path inside ``top``) lies in a nested workspace: some
    directory below ``top``, at or above it, holds a WORKSPACE.toml."""
    path = real
    while path != top and path.startswith(top + os.sep):
        if os.path.isfile(os.path.join(path, WORKSPACE_FILE)):
            return True
        path = os.path.dirname(path)
    return False


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
    empty: list[str] = []
    for pattern in include:
        before = len(found)
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
        if len(found) == before and not any(f.startswith(prefix) and _compile_glob(pattern).match(f)
                                            for f in files[lo:hi]):
            empty.append(pattern)
    out = sorted(f for f in found if not any(r.match(f) for r in exc))
    if not allow_empty and (empty or not out):
        what = (f"glob pattern {empty[0]!r} matches no file" if empty
                else f"glob({include}, exclude = {exclude}) leaves no file")
        raise BuildFileError(f"{what} in {directory.name or directory}/ (pass allow_empty = True "
                             "when an empty list is meant)")
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
