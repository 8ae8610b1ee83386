"""The plugin manager and the registries plugins fill: rules and executors, and which
registered executor a target's container work runs on (``ExecutorSelection``).

Built-in plugins are registered exactly like third-party ones (entry points in the
``forge`` group, then modules named in ``[plugins] modules``), then
``pm.check_pending()`` catches misspelt hook implementations.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from forge.core import hookspecs
from forge.core.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from forge.core.platforms import Platform
    from forge.core.workspace import Workspace

BUILTIN_PLUGINS: tuple[str, ...] = (
    "forge.rules.builtin",
    "forge.plugins.docker",
    "forge.plugins.buildah",
    "forge.plugins.qemu",
    "forge.plugins.oci_cache",
    "forge.plugins.cache_push",
    "forge.plugins.supply_chain",
    "forge.plugins.deltas",
)


class RuleRegistry:
    def __init__(self) -> None:
        self._rules: dict[str, type] = {}

    def add(self, rule_cls: type) -> None:
        name = getattr(rule_cls, "name", None)
        if not name or not isinstance(name, str):
            raise ConfigError(f"rule class {rule_cls.__qualname__} has no `name`")
        if name in self._rules and self._rules[name] is not rule_cls:
            other = self._rules[name]
            raise ConfigError(
                f"rule '{name}' registered twice: {other.__module__}.{other.__qualname__} "
                f"and {rule_cls.__module__}.{rule_cls.__qualname__}"
            )
        self._rules[name] = rule_cls

    def get(self, name: str) -> type:
        try:
            return self._rules[name]
        except KeyError:
            raise ConfigError(f"unknown rule '{name}'{did_you_mean(name, self._rules)}") from None

    def names(self) -> list[str]:
        return sorted(self._rules)

    def items(self) -> list[tuple[str, type]]:
        return sorted(self._rules.items())


class ExecutorRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, Callable[[Any], Any]] = {}
        self._instances: dict[str, Any] = {}
        self._lock = threading.Lock()

    def add(self, name: str, factory: Callable[[Any], Any]) -> None:
        if name in self._factories:
            raise ConfigError(f"executor '{name}' registered twice")
        self._factories[name] = factory

    def get(self, name: str, workspace: Any) -> Any:
        """The one instance of executor ``name`` (created on first use; workers call this
        concurrently, so creation is under a lock: two threads never get two engines)."""
        with self._lock:
            if name not in self._instances:
                if name not in self._factories:
                    raise ConfigError(f"executor '{name}': {unknown_executor(name, self.names())}")
                self._instances[name] = self._factories[name](workspace)
            return self._instances[name]

    def names(self) -> list[str]:
        return sorted(self._factories)


def unknown_executor(name: str, registered: Iterable[str]) -> str:
    """The tail of every "no such executor" message: the nearest and all registered names."""
    registered = sorted(registered)
    return (f"no executor of that name is registered{did_you_mean(name, registered)}; "
            f"registered executors: {', '.join(registered) or 'none'}")


class ExecutorSelection:
    """Which executor runs a target's container work, chosen and checked at analysis.

    A target's ``executor`` attribute wins; else ``[build] platform_executors`` for the
    action's platform; else ``[build] executor`` (default ``docker``). The name is checked
    against the registered executors here, so a misspelt one is an error at the BUILD or
    WORKSPACE.toml line that wrote it, before anything runs; the action carries the name
    (``Action.executor``) and its run function asks ``rc.executor(rc.action.executor)``.

    Not in the action key (core/actions.py, ``Action.executor``): an executor is where a
    Dockerfile step runs, as an engine version or a native-versus-QEMU builder is. The
    key covers what defines the step (Dockerfile, context, args, base, platform…), so CI
    on Docker and a laptop on another executor share one remote cache; switching
    executors reuses the results already built (``forge clean`` forgets them). An
    executor whose builds mean something else than the Dockerfile says is a different
    rule, not a different executor.
    """

    def __init__(self, registered: Iterable[str] | None, workspace: Workspace | None = None):
        """``registered``: the executor names plugins registered (None: names are not
        checked, for an analysis context made by hand); ``workspace``: whose ``[build]``
        choices apply (None: the default, ``docker``)."""
        self.registered = None if registered is None else tuple(sorted(registered))
        self._workspace = workspace

    def configured(self, platform: Platform | None) -> tuple[str, str]:
        """(name, where it is written) of the workspace's choice for ``platform``."""
        if self._workspace is None:
            from forge.core.workspace import DEFAULT_EXECUTOR

            return DEFAULT_EXECUTOR, f"[build] executor (default {DEFAULT_EXECUTOR!r})"
        return self._workspace.configured_executor(platform)

    def problem(self, name: str) -> str:
        """'' when ``name`` is registered, else what is wrong, with the registered names."""
        if self.registered is None or name in self.registered:
            return ""
        return unknown_executor(name, self.registered)

    def resolve(self, platform: Platform | None, needed_by: str = "") -> str:
        """The workspace's executor for ``platform``; ConfigError at its WORKSPACE.toml line
        when no such executor is registered (``needed_by`` says which target asked)."""
        name, where = self.configured(platform)
        problem = self.problem(name)
        if problem:
            asked = f" (needed by {needed_by})" if needed_by else ""
            raise ConfigError(f"{where}{asked}: {problem}")
        return name


def _import(name: str, where: str) -> Any:
    """Import a plugin module; any failure is a ConfigError naming it and the file:line."""
    try:
        return importlib.import_module(name)
    except SyntaxError as exc:
        at = f"{exc.filename}:{exc.lineno}" if exc.filename else f"line {exc.lineno}"
        raise ConfigError(f"{where}: plugin module '{name}' does not compile: {at}: "
                          f"{type(exc).__name__}: {exc.msg}") from exc
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(f"{where}: cannot import plugin module '{name}': {exc} "
                              "(is it on PYTHONPATH, or installed?)") from None
        raise ConfigError(f"{where}: plugin module '{name}' failed to import: "
                          f"{_last_frame(exc)}{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # its top level raised: a bug in the plugin, located
        raise ConfigError(f"{where}: plugin module '{name}' failed to import: "
                          f"{_last_frame(exc)}{type(exc).__name__}: {exc}") from exc


def _last_frame(exc: BaseException) -> str:
    """``file:line: `` of the innermost frame outside importlib, or ''."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename
              and not f.filename.startswith("<frozen")]
    return f"{frames[-1].filename}:{frames[-1].lineno}: " if frames else ""


def make_plugin_manager(extra_modules: list[str] = (), where: str | None = None) -> pluggy.PluginManager:
    """Built-ins, entry points, then ``extra_modules``; ``where`` says where those were
    listed, for messages (default: the list's own ``where``, as ``Workspace.plugin_modules``
    has, ``/ws/WORKSPACE.toml:12: [plugins] modules``)."""
    where = where or getattr(extra_modules, "where", "") or "WORKSPACE.toml [plugins] modules"
    pm = pluggy.PluginManager("forge")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # a built-in not written yet
                continue
            raise
        pm.register(module, name=name)
    for ep in entry_points(group="forge"):
        if pm.get_plugin(ep.name) is None:
            pm.register(ep.load(), name=ep.name)
    for name in extra_modules:
        if pm.get_plugin(name) is None:
            module = _import(name, where)
            try:
                pm.register(module, name=name)
            except pluggy.PluginValidationError as exc:
                raise ConfigError(f"{where}: plugin module '{name}' ({getattr(module, '__file__', '?')}): "
                                  f"{exc}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(_unknown_hook_message(pm, exc)) from exc
    return pm


def _unknown_hook_message(pm: pluggy.PluginManager, exc: pluggy.PluginValidationError) -> str:
    """Which plugin, file:line and hook, with the nearest real hook name."""
    import re

    m = re.search(r"unknown hook '([^']+)'", str(exc))
    if not m:
        return f"plugin {pm.get_name(exc.plugin) or exc.plugin!r}: {exc}"
    hook = m.group(1)
    where = ""
    for impl in getattr(pm.hook, hook).get_hookimpls():
        code = getattr(impl.function, "__code__", None)
        if code is not None:
            where = f" ({code.co_filename}:{code.co_firstlineno})"
            break
    known = [h for h in vars(pm.hook) if not h.startswith("_") and getattr(pm.hook, h).has_spec()]
    return (f"plugin {pm.get_name(exc.plugin) or exc.plugin!r}{where}: unknown hook '{hook}'"
            f"{did_you_mean(hook, known)}; hooks: {', '.join(sorted(known))}")


def plugin_names(pm: pluggy.PluginManager) -> list[str]:
    return sorted(name for name, _ in pm.list_name_plugin())
