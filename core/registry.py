"""The plugin manager and the registries plugins fill: rules and executors.

Built-in plugins are registered exactly like third-party ones (entry points in the
``forge`` group, then modules named in ``[plugins] modules``), then
``pm.check_pending()`` catches misspelt hook implementations.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import pluggy

from forge.core import hookspecs
from forge.core.errors import ConfigError, did_you_mean

BUILTIN_PLUGINS: tuple[str, ...] = (
    "forge.rules.builtin",
    "forge.plugins.docker",
    "forge.plugins.qemu",
    "forge.plugins.oci_cache",
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
                    raise ConfigError(
                        f"unknown executor '{name}'{did_you_mean(name, self._factories)}"
                    )
                self._instances[name] = self._factories[name](workspace)
            return self._instances[name]

    def names(self) -> list[str]:
        return sorted(self._factories)


def _import(name: str, where: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import plugin module '{name}': {exc}") from None


def make_plugin_manager(extra_modules: list[str] = ()) -> pluggy.PluginManager:
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
            pm.register(_import(name, "WORKSPACE.toml [plugins] modules"), name=name)
    pm.check_pending()
    return pm


def plugin_names(pm: pluggy.PluginManager) -> list[str]:
    return sorted(name for name, _ in pm.list_name_plugin())
