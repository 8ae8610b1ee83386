"""WORKSPACE.toml: where the workspace is and what it configures.

Every table and key is declared in ``SCHEMA`` so that an unknown key is an error that names
the file, the key and the nearest valid key: a misspelt ``[remote_cahce]`` must never be
silently ignored. ``[plugins.<name>]`` tables are free-form and handed to that plugin;
``[executors.<name>]`` likewise to the executor.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge.core.errors import ConfigError, did_you_mean

WORKSPACE_FILE = "WORKSPACE.toml"

# table -> {key: (type, default)}; a table mapped to None takes arbitrary sub-tables.
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], Any]] | None] = {
    "workspace": {"name": (str, "")},
    "build": {"jobs": (int, 0), "platforms": (list, []), "keep_going": (bool, False)},
    "cache": {"dir": (str, ""), "max_size": (str, "")},
    "remote_cache": {
        "url": (str, ""),
        "read": (bool, True),
        "write": (bool, False),
        "insecure": (bool, False),
        "required": (bool, False),
    },
    "plugins": None,
    "executors": None,
}


@dataclass
class Workspace:
    root: Path
    name: str
    config: dict[str, dict[str, Any]]
    plugin_tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugin_modules: list[str] = field(default_factory=list)

    @property
    def jobs(self) -> int:
        return self.config["build"]["jobs"] or (os.cpu_count() or 1)

    @property
    def platforms(self) -> list[str]:
        return list(self.config["build"]["platforms"])

    @property
    def cache_dir(self) -> Path:
        env = os.environ.get("FORGE_CACHE")
        if env:
            return Path(env).expanduser()
        configured = self.config["cache"]["dir"]
        if configured:
            path = Path(configured).expanduser()
            return path if path.is_absolute() else self.root / path
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(xdg) / "forge"

    @property
    def out_dir(self) -> Path:
        return self.root / "forge-out"

    def section(self, name: str) -> dict[str, Any]:
        return self.config.get(name, {})


def find_workspace_root(start: Path) -> Path:
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / WORKSPACE_FILE).is_file():
            return directory
    raise ConfigError(
        f"no {WORKSPACE_FILE} in {start} or any parent directory; "
        f"create one (it may hold only `[workspace]\\nname = \"mine\"`)"
    )


def _validate(path: Path, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {}
    for table, value in data.items():
        if table not in SCHEMA:
            raise ConfigError(f"{path}: unknown table [{table}]{did_you_mean(table, SCHEMA)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{table}] must be a table, not {type(value).__name__}")
    for table, keys in SCHEMA.items():
        given = data.get(table, {})
        if keys is None:
            config[table] = dict(given)
            continue
        section: dict[str, Any] = {}
        for key, val in given.items():
            if key not in keys:
                raise ConfigError(
                    f"{path}: unknown key '{key}' in [{table}]{did_you_mean(key, keys)}; "
                    f"valid keys: {', '.join(sorted(keys))}"
                )
            typ = keys[key][0]
            if not isinstance(val, typ) or (typ is int and isinstance(val, bool)):
                raise ConfigError(
                    f"{path}: [{table}] {key} = {val!r} should be a {getattr(typ, '__name__', typ)}"
                )
            section[key] = val
        for key, (_, default) in keys.items():
            section.setdefault(key, default)
        config[table] = section
    return config


def load_workspace(root: Path) -> Workspace:
    path = root / WORKSPACE_FILE
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    config = _validate(path, data)
    plugins = config["plugins"]
    modules = plugins.get("modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(f"{path}: [plugins] modules must be a list of module names")
    tables = {k: v for k, v in plugins.items() if isinstance(v, dict)}
    extra = [k for k, v in plugins.items() if k != "modules" and not isinstance(v, dict)]
    if extra:
        raise ConfigError(
            f"{path}: unknown key '{extra[0]}' in [plugins]{did_you_mean(extra[0], ['modules'])}; "
            "use `modules = [...]` or a [plugins.<name>] table"
        )
    name = config["workspace"]["name"] or root.name
    return Workspace(root, name, config, tables, list(modules))


def source_date_epoch(raw: str | None) -> int:
    """The build's timestamp from a SOURCE_DATE_EPOCH value: unset or empty means 0."""
    raw = (raw or "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds") from None
    if value < 0:
        raise ConfigError(f"SOURCE_DATE_EPOCH={raw!r} is negative")
    return value
