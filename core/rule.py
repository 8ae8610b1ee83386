"""The Rule base class and the context a rule analyzes in.

A rule turns a target's attributes plus its dependencies' providers into actions and
providers. It runs nothing: work happens later, in the action's ``run`` function, and
only when the action's key misses every cache.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

from forge.core.actions import Action, SourceFile, make_action
from forge.core.attrs import Attr
from forge.core.errors import AnalysisError
from forge.core.labels import Label
from forge.core.platforms import Platform

if TYPE_CHECKING:
    from forge.core.registry import ExecutorSelection


def sandbox_roots(workspace_root: str) -> tuple[str, ...]:
    """Extra roots a workspace allows reads from (``[workspace] external_roots``)."""
    from forge.core.workspace import external_roots

    return external_roots(workspace_root)


class Rule:
    """Subclass with ``name``, ``doc``, ``attrs`` and ``analyze``; register the class."""

    name: ClassVar[str] = ""
    doc: ClassVar[str] = ""
    attrs: ClassVar[dict[str, Attr]] = {}

    def analyze(self, ctx: AnalysisContext) -> Iterable[Any]:
        raise NotImplementedError


def labels_in(value: Any) -> list[Label]:
    """Every label in an attribute value (a label, or inside lists and dicts), in order."""
    if isinstance(value, Label):
        return [value]
    if isinstance(value, list | tuple):
        return [label for v in value for label in labels_in(v)]
    if isinstance(value, dict):
        return [label for v in value.values() for label in labels_in(v)]
    return []


def resolve_labels(value: Any, deps: dict[Label, Any]) -> Any:
    """The value with every label replaced by its configured target."""
    if isinstance(value, Label):
        return deps[value]
    if isinstance(value, list | tuple):
        return [resolve_labels(v, deps) for v in value]
    if isinstance(value, dict):
        return {k: resolve_labels(v, deps) for k, v in value.items()}
    return value


@dataclass
class TargetDef:
    """A target as the BUILD file declared it: rule, checked attributes, location."""

    label: Label
    rule: type[Rule]
    attrs: dict[str, Any]
    location: str  # "pkg/BUILD:12" for messages
    package_dir: Path = field(default_factory=Path)

    def deps(self) -> list[tuple[str, Label]]:
        """Every (attribute, label) this target depends on, in attribute order."""
        out: list[tuple[str, Label]] = []
        for name in self.rule.attrs:
            value = self.attrs.get(name)
            if value is not None:
                out.extend((name, label) for label in labels_in(value))
        return out


@dataclass
class ConfiguredTarget:
    """An analyzed target: its providers, indexed by type."""

    label: Label
    rule_name: str
    providers: dict[type, Any]
    actions: list[Action]
    location: str

    def __getitem__(self, provider_type: type) -> Any:
        try:
            return self.providers[provider_type]
        except KeyError:
            have = ", ".join(t.__name__ for t in self.providers) or "none"
            raise AnalysisError(
                f"{self.label} ({self.rule_name}) does not provide {provider_type.__name__} "
                f"(it provides: {have})"
            ) from None

    def get(self, provider_type: type) -> Any:
        return self.providers.get(provider_type)

    def __contains__(self, provider_type: type) -> bool:
        return provider_type in self.providers


class AnalysisContext:
    """What a rule sees during analysis."""

    def __init__(
        self,
        target: TargetDef,
        deps: dict[Label, ConfiguredTarget],
        default_platform: Platform,
        epoch: int = 0,
        reproducible: bool = False,
        executors: ExecutorSelection | None = None,
    ):
        self.label = target.label
        self.epoch = epoch  # SOURCE_DATE_EPOCH of this build; enters keys via timestamps=True
        # [build] reproducible: the default of rules that run engines and can clamp what
        # the engine wrote (a rule attribute of the same name overrides it)
        self.reproducible = reproducible
        self.location = target.location
        self.package_dir = target.package_dir
        self._target = target
        self._default_platform = default_platform
        # the registered executors and the workspace's choice among them (None: a context
        # made by hand, which checks no name and knows only the default)
        self._executors = executors
        self.actions: list[Action] = []
        self.warnings: list[str] = []  # said once analysis is done (ctx.warn)
        values: dict[str, Any] = {}
        for name in target.rule.attrs:
            values[name] = resolve_labels(target.attrs.get(name), deps)
        values["name"] = target.label.name
        self.attr = SimpleNamespace(**values)

    @property
    def platform(self) -> Platform:
        """The target's platform attribute, else the build's default platform."""
        value = getattr(self.attr, "platform", None)
        return value if isinstance(value, Platform) else self._default_platform

    def select_executor(self, requested: str | None, platform: Platform | None) -> str:
        """The name of the executor that runs this target's container work on ``platform``:
        ``requested`` (the target's ``executor`` attribute) when given, else the
        workspace's choice (``[build] platform_executors``, then ``[build] executor``).
        Pass it as ``ctx.action(..., executor=name)``; the run function then calls
        ``rc.executor(rc.action.executor)``.

        An unregistered name is an error naming the registered ones: at this target's
        BUILD line for ``requested``, at the WORKSPACE.toml line otherwise.
        """
        from forge.core.registry import ExecutorSelection

        selection = self._executors or ExecutorSelection(None)
        if requested is not None:
            problem = selection.problem(requested)
            if problem:
                raise self.fail(f"executor = {requested!r}: {problem}")
            return requested
        return selection.resolve(platform, needed_by=str(self.label))

    # -- the sandbox ------------------------------------------------------------------
    # Every file a target reads is checked on its *resolved* path: it must lie inside the
    # workspace (or a root it declares in [workspace] external_roots), whatever the string
    # says. A source that is itself a symlink is kept as a symlink entry (its target text
    # is keyed, never read), so only its directory must resolve inside; a file the rule
    # reads the content of (`follow`: a Dockerfile, an args file, a tarball) must resolve
    # inside itself, and is keyed by the content read.

    @property
    def workspace_root(self) -> str:
        depth = len(self.label.package.split("/")) if self.label.package else 0
        root = str(self.package_dir)
        for _ in range(depth):
            root = os.path.dirname(root)
        return root

    def _roots(self) -> tuple[str, ...]:
        roots = getattr(self, "_roots_cache", None)
        if roots is None:
            root = self.workspace_root
            extra = sandbox_roots(root)
            roots = tuple(os.path.realpath(r) for r in (root, *extra))
            self._roots_cache = roots
        return roots

    def _escape(self, attr: str, rel: str, real: str) -> AnalysisError:
        return self.fail(
            f"attribute '{attr}': {rel!r} resolves to {real}, outside the workspace "
            f"{self.workspace_root}; forge reads only files inside it (declare another root "
            "in WORKSPACE.toml [workspace] external_roots to allow one)")

    def _check_inside(self, attr: str, rel: str, real: str) -> None:
        if not any(real == r or real.startswith(r + os.sep) for r in self._roots()):
            raise self._escape(attr, rel, real)

    def source_path(self, rel: str, attr: str, *, kind: str = "file") -> Path:
        """The resolved path of a package file or directory the rule reads at analysis
        (``kind`` = "file" or "dir"), checked against the sandbox."""
        rel = self._relative(rel, attr)
        path = os.path.join(str(self.package_dir), rel)
        real = os.path.realpath(path)
        self._check_inside(attr, rel, real)
        ok = os.path.isdir(real) if kind == "dir" else os.path.isfile(real)
        if not ok:
            what = "directory" if kind == "dir" else "file"
            exists = "is not a " + what if os.path.lexists(path) else "does not exist"
            raise self.fail(f"attribute '{attr}': {rel!r} {exists} in {self.package_dir}")
        return Path(path)

    def _relative(self, rel: str, attr: str) -> str:
        if not isinstance(rel, str) or not rel or rel.startswith("/"):
            raise self.fail(f"attribute '{attr}': {rel!r} must be a path relative to the package")
        return rel.strip("/") if rel != "/" else rel

    def files(self, relpaths: Iterable[str], *, attr: str = "srcs",
              follow: bool = False) -> list[SourceFile]:
        """Source files of this package, by package-relative path, sandbox-checked.

        ``follow=False`` (layer and context sources): a symlink is a symlink entry.
        ``follow=True`` (files whose content the action reads): the link is followed, the
        target must be inside the workspace, and the content is what enters the key.
        """
        return self._files(str(self.package_dir), relpaths, attr, follow)

    def workspace_files(self, relpaths: Iterable[str], *, attr: str = "context",
                        follow: bool = False) -> list[SourceFile]:
        """Files anywhere in the workspace, by workspace-relative path (a build context
        that spans packages, as a Dockerfile's does), sandbox-checked like ``files``; the
        key names them by that path."""
        return self._files(self.workspace_root, relpaths, attr, follow)

    def tree(self, directory: str) -> list[str]:
        """Every file and symlink under a workspace-relative directory ("" = the root),
        as paths relative to it, sorted; ``.git`` directories and the workspace's
        ``forge-out`` are never part of it. Symlinked directories are not entered."""
        top = os.path.join(self.workspace_root, directory) if directory else self.workspace_root
        real = os.path.realpath(top)
        self._check_inside("context", directory or "//", real)
        if not os.path.isdir(real):
            raise self.fail(f"attribute 'context': //{directory} is not a directory")
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(top):
            rel = os.path.relpath(dirpath, top)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            keep = []
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if d == ".git" or (not directory and not rel and d == "forge-out"):
                    continue
                if os.path.islink(full):
                    out.append(rel + d)
                else:
                    keep.append(d)
            dirnames[:] = sorted(keep)
            out.extend(rel + f for f in filenames)
        return sorted(out)

    def _files(self, base: str, relpaths: Iterable[str], attr: str, follow: bool) -> list[SourceFile]:
        out = []
        resolved_dirs: dict[str, str] = {}
        for rel in relpaths:
            rel = self._relative(rel, attr)
            path = f"{base}/{rel}"  # plain strings: analysis of thousands of files stays cheap
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                raise AnalysisError(f"{self.location}: {self.label}: source file {rel!r} does not exist") from None
            directory = os.path.dirname(path)
            real_dir = resolved_dirs.get(directory)
            if real_dir is None:
                real_dir = resolved_dirs[directory] = os.path.realpath(directory)
                self._check_inside(attr, rel, real_dir)
            if stat.S_ISLNK(st.st_mode) and follow:
                real = os.path.realpath(path)
                self._check_inside(attr, rel, real)
                if not os.path.isfile(real):
                    raise self.fail(f"attribute '{attr}': {rel!r} points to {real}, which is not a file")
            out.append(SourceFile(path, rel, follow=follow))
        return out

    def action(
        self,
        mnemonic: str,
        run: Callable[..., Any],
        *,
        version: int = 1,
        params: dict[str, Any] | None = None,
        inputs: Iterable[SourceFile] = (),
        deps: Iterable[Action] = (),
        platform: Platform | None = None,
        executor: str | None = None,
        hermetic: bool = True,
        timestamps: bool = False,
        description: str = "",
        materialize: Callable[..., None] | None = None,
        secrets: dict[str, str] | None = None,
        ssh: Iterable[str] = (),
    ) -> Action:
        """Declare an action; the last one declared is the target's default output.

        ``run`` must be a module-level function: it receives only what is declared here.
        ``timestamps=True`` says the action writes times (layer mtimes, a config's
        ``created``): the build's epoch then enters its key and ``rc.epoch`` gives it.
        ``secrets`` (id -> a path or ``env:NAME``) and ``ssh`` (agent ids) reach the run
        function as ``rc.secrets`` / ``rc.ssh`` and never enter the key.
        """
        action = make_action(
            label=self.label,
            mnemonic=mnemonic,
            run=run,
            version=version,
            params=params or {},
            inputs=tuple(inputs),
            deps=tuple(deps),
            platform=platform,
            epoch=self.epoch if timestamps else None,
            executor=executor,
            hermetic=hermetic,
            index=len(self.actions),
            description=description,
            materialize=materialize,
            secrets=secrets or {},
            ssh=tuple(ssh),
        )
        self.actions.append(action)
        return action

    def warn(self, message: str) -> None:
        """A warning about this target (e.g. an args file nothing reads), said with its
        BUILD location when analysis is done; the build goes on."""
        self.warnings.append(f"{self.location}: {self.label}: {message}")

    def fail(self, message: str) -> AnalysisError:
        """An analysis error located at this target's BUILD line."""
        return AnalysisError(f"{self.location}: {self.label}: {message}")
