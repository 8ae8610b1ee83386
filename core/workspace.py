"""WORKSPACE.toml: where the workspace is and what it configures.

Every table and key is declared in ``SCHEMA`` so that an unknown key is an error that names
the file, the key and the nearest valid key: a misspelt ``[remote_cahce]`` must never be
silently ignored. Every value is type-checked (elements of lists too) and a mistake names
the file, the line, the key, what was expected and what was given. ``[plugins.<name>]``
tables are free-form and handed to that plugin; ``[executors.<name>]`` likewise to the
executor (their ``hosts`` tables, ``platform = "engine URL"``, are checked here). Which
executor runs a platform's container work is ``[build] executor`` and
``platform_executors``.
"""

from __future__ import annotations

import functools
import os
import re
import reprlib
import tempfile
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge.core.errors import ConfigError, ForgeError, did_you_mean

if TYPE_CHECKING:
    from forge.core.platforms import Platform

WORKSPACE_FILE = "WORKSPACE.toml"
OUT_DIR_NAME = "forge-out"  # at the workspace root; never globbed, never a package
DEFAULT_GLOB_EXCLUDES: tuple[str, ...] = (".git",)
MAX_TOML_NESTING = 100  # arrays and inline tables within each other (tomllib recurses)
DEFAULT_EXECUTOR = "docker"  # [build] executor when WORKSPACE.toml names none

# table -> {key: (type, default)}; a table mapped to None takes arbitrary sub-tables.
# A type may be ``list[str]``: a list whose every element is a str.
SCHEMA: dict[str, dict[str, tuple[Any, Any]] | None] = {
    "workspace": {"name": (str, ""), "external_roots": (list[str], [])},
    "build": {
        "jobs": (int, 0),
        "platforms": (list[str], []),
        "keep_going": (bool, False),
        "glob_excludes": (list[str], list(DEFAULT_GLOB_EXCLUDES)),
        "reproducible": (bool, False),
        # Which executor runs container work (Dockerfile steps): ``executor`` for every
        # platform, ``platform_executors`` per platform, spelled as an inline table
        # ``{arm64 = "podman"}`` (or a ``[build.platform_executors]`` table): a key of
        # [build], so the schema checks it like any other, where a ``[build.executors]``
        # sub-table would be a table of [build] the schema has no place for. A target's
        # own ``executor`` attribute beats both (core/registry.py ExecutorSelection).
        "executor": (str, DEFAULT_EXECUTOR),
        "platform_executors": (dict, {}),
    },
    "cache": {"dir": (str, ""), "max_size": (str, "")},
    "remote_cache": {
        "url": (str, ""),
        "read": (bool, True),
        "write": (bool, False),
        "insecure": (bool, False),
        "required": (bool, False),
        # signed records (plugins/oci_cache.py): writers sign with signing_key, readers
        # with trusted_keys restore only what one of those keys signed
        "signing_key": (str, ""),
        "trusted_keys": (list[str], []),
    },
    "plugins": None,
    "executors": None,
}

_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_VIRTUAL_FS = ("/proc", "/sys", "/dev")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlevel = 3


class Listed(list):
    """A list read from WORKSPACE.toml that remembers where (``file:line [table] key``)."""

    def __init__(self, items: Any = (), where: str = ""):
        super().__init__(items)
        self.where = where


@dataclass
class Workspace:
    root: Path
    name: str
    config: dict[str, dict[str, Any]]
    plugin_tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugin_modules: list[str] = field(default_factory=list)
    lines: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False)  # key path -> line
    _usable_cache: Path | None = field(default=None, init=False, repr=False)

    @property
    def jobs(self) -> int:
        return self.config["build"]["jobs"] or (os.cpu_count() or 1)

    @property
    def platforms(self) -> list[str]:
        return list(self.config["build"]["platforms"])

    @functools.cached_property
    def platform_executors(self) -> dict[Platform, tuple[str, str]]:
        """``[build] platform_executors`` by normalized platform: (the key as written, the
        executor name). Checked when the file was read, so this cannot fail."""
        from forge.core.platforms import parse_platform

        return {parse_platform(k): (k, v) for k, v in self.config["build"]["platform_executors"].items()}

    def configured_executor(self, platform: Platform | None) -> tuple[str, str]:
        """The executor this workspace chooses for ``platform`` (``[build]
        platform_executors``, else ``[build] executor``) and, for messages, where that
        choice is written (``/ws/WORKSPACE.toml:4: [build] executor = 'docker'``)."""
        chosen = self.platform_executors.get(platform) if platform is not None else None
        if chosen is not None:
            text, name = chosen
            return name, (f"{self.where('build', 'platform_executors', text)}: [build] "
                          f"platform_executors {text} = {name!r}")
        name = self.config["build"]["executor"]
        if ("build", "executor") in self.lines:
            return name, f"{self.where('build', 'executor')}: [build] executor = {name!r}"
        return name, f"{self.where('build')}: [build] executor (default {name!r})"

    @property
    def external_roots(self) -> tuple[str, ...]:
        """Directories outside the workspace that targets may read from ([workspace]
        external_roots; relative paths are relative to the workspace root)."""
        return tuple(os.path.normpath(os.path.join(self.root, os.path.expanduser(r)))
                     for r in self.config["workspace"]["external_roots"])

    @property
    def glob_excludes(self) -> list[str]:
        """Directory names ``glob()`` never enters ([build] glob_excludes, default .git)."""
        return list(self.config["build"]["glob_excludes"])

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
    def cache_dir_source(self) -> str:
        """Where ``cache_dir`` comes from, for messages."""
        if os.environ.get("FORGE_CACHE"):
            return "FORGE_CACHE"
        if self.config["cache"]["dir"]:
            return f"{self.where('cache', 'dir')} [cache] dir"
        return "the default, $XDG_CACHE_HOME/forge"

    def checked_cache_dir(self) -> Path:
        """``cache_dir``, created if missing; ConfigError when it cannot be used."""
        if self._usable_cache is None:
            self._usable_cache = check_cache_dir(self.cache_dir, self.cache_dir_source)
        return self._usable_cache

    @property
    def out_dir(self) -> Path:
        return self.root / OUT_DIR_NAME

    def section(self, name: str) -> dict[str, Any]:
        return self.config.get(name, {})

    def where(self, *key: str) -> str:
        """``/path/WORKSPACE.toml:LINE`` of a key (or of its table), for messages."""
        return _where(self.root / WORKSPACE_FILE, self.lines, key)


def find_workspace_root(start: Path) -> Path:
    start = start.resolve()
    for directory in (start, *start.parents):
        if (directory / WORKSPACE_FILE).is_file():
            return directory
    raise ConfigError(
        f"no {WORKSPACE_FILE} in {start} or any parent directory; "
        f"create one (it may hold only `[workspace]\\nname = \"mine\"`)"
    )


def check_cache_dir(path: Path, source: str = "") -> Path:
    """Make sure ``path`` can hold the cache (creating it); else a ConfigError saying
    "cache dir X is unusable: why". ``source`` says where the path was configured."""
    origin = f" (from {source})" if source else ""

    def unusable(why: str) -> ConfigError:
        return ConfigError(f"cache dir {path}{origin} is unusable: {why}; "
                           "set FORGE_CACHE or [cache] dir to a writable directory")

    if "\0" in str(path):
        raise unusable("the path contains a NUL byte")
    try:
        resolved = Path(os.path.realpath(path))
    except (OSError, ValueError) as exc:
        raise unusable(f"cannot resolve it: {exc}") from None
    for virtual in _VIRTUAL_FS:
        if resolved == Path(virtual) or Path(virtual) in resolved.parents:
            raise unusable(f"{resolved} is under {virtual}, a virtual file system")
    if resolved.exists() and not resolved.is_dir():
        raise unusable(f"{resolved} is a file, not a directory")
    try:
        resolved.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise unusable(f"cannot create it: {exc.strerror or exc}") from None
    if not os.access(resolved, os.W_OK | os.X_OK):
        raise unusable("it is not writable by this user")
    try:
        fd, probe = tempfile.mkstemp(dir=resolved, prefix=".forge-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise unusable(f"cannot write in it: {exc.strerror or exc}") from None
    return path


# -- reading --------------------------------------------------------------------------------

_TOML_TOKEN_RE = re.compile(
    r"""
      (?P<str>\"\"\"(?:[^"\\]|\\.|"(?!""))*(?:\"\"\"|\Z)
             |'''(?:[^']|'(?!''))*(?:'''|\Z)
             |"(?:[^"\\\n]|\\.)*"?
             |'[^'\n]*'?)
    | (?P<comment>\#[^\n]*)
    | (?P<open>[\[{])
    | (?P<close>[\]}])
    """,
    re.X | re.S,
)


def _check_toml_nesting(path: Path, text: str) -> None:
    """tomllib recurses per level: refuse absurd nesting before it does (RecursionError)."""
    if text.count("[") + text.count("{") <= MAX_TOML_NESTING:
        return
    depth = 0
    for m in _TOML_TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "open":
            depth += 1
            if depth > MAX_TOML_NESTING:
                line = text.count("\n", 0, m.start()) + 1
                raise ConfigError(f"{path}:{line}: nested too deep: more than {MAX_TOML_NESTING} "
                                  f"arrays or inline tables within each other (limit {MAX_TOML_NESTING})")
        elif kind == "close":
            depth = max(0, depth - 1)


def _read(path: Path) -> str:
    from forge.core.fsutil import read_utf8

    return read_utf8(path, str(path), ConfigError, WORKSPACE_FILE)


_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_HEADER_RE = re.compile(rf"^\s*\[\[?\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?")
_ASSIGN_RE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_PART_RE = re.compile(_KEY_PART)


def _key_path(text: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART_RE.findall(text))


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Best-effort map of every table and key path to the line that defines it."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        m = _HEADER_RE.match(line)
        if m:
            table = _key_path(m.group(1))
            for i in range(1, len(table) + 1):  # [a.b.c] defines a and a.b too
                lines.setdefault(table[:i], number)
            continue
        m = _ASSIGN_RE.match(line)
        if m:
            key = table + _key_path(m.group(1))
            for i in range(len(table) + 1, len(key) + 1):  # a.b.c = 1 defines a.b too
                lines.setdefault(key[:i], number)
    return lines


def _where(path: Path, lines: dict[tuple[str, ...], int], key: tuple[str, ...]) -> str:
    for i in range(len(key), 0, -1):
        if key[:i] in lines:
            return f"{path}:{lines[key[:i]]}"
    return str(path)


def _describe(typ: Any) -> str:
    if isinstance(typ, types.GenericAlias):
        return f"a list of {_describe(typ.__args__[0]).removeprefix('a ')}s"
    return {bool: "a boolean (true/false)", int: "a whole number", str: "a string",
            list: "a list", dict: "a table"}.get(typ, getattr(typ, "__name__", str(typ)))


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", str: "string", float: "float", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)


def _is(value: Any, typ: type) -> bool:
    return isinstance(value, typ) and not (typ is int and isinstance(value, bool))


def _type_error(value: Any, typ: Any) -> str | None:
    """None when ``value`` is a ``typ``; else what was given instead."""
    if isinstance(typ, types.GenericAlias):
        if not isinstance(value, list):
            return f"{_type_name(value)} {_short.repr(value)}"
        (elem,) = typ.__args__
        for i, item in enumerate(value):
            if not _is(item, elem):
                return f"{_type_name(item)} {_short.repr(item)} at index {i}"
        return None
    return None if _is(value, typ) else f"{_type_name(value)} {_short.repr(value)}"


def _validate(path: Path, data: dict[str, Any], lines: dict[tuple[str, ...], int]) -> dict[str, dict[str, Any]]:
    def at(*key: str) -> str:
        return _where(path, lines, key)

    config: dict[str, dict[str, Any]] = {}
    for table, value in data.items():
        if table not in SCHEMA:
            raise ConfigError(f"{at(table)}: unknown table [{table}]{did_you_mean(table, SCHEMA)}; "
                              f"valid tables: {', '.join(SCHEMA)}")
        if not isinstance(value, dict):
            raise ConfigError(f"{at(table)}: {table} must be a table ([{table}]), got "
                              f"{_type_name(value)} {_short.repr(value)}")
    for table, keys in SCHEMA.items():
        given = data.get(table, {})
        if keys is None:
            config[table] = dict(given)
            continue
        section: dict[str, Any] = {}
        for key, val in given.items():
            if key not in keys:
                raise ConfigError(
                    f"{at(table, key)}: unknown key '{key}' in [{table}]{did_you_mean(key, keys)}; "
                    f"valid keys: {', '.join(sorted(keys))}"
                )
            typ = keys[key][0]
            got = _type_error(val, typ)
            if got is not None:
                if (table, key) == ("remote_cache", "url"):  # may hold a password: type only
                    got = _type_name(val)
                raise ConfigError(f"{at(table, key)}: [{table}] {key} should be {_describe(typ)}, got {got}")
            section[key] = val
        for key, (_, default) in keys.items():
            section.setdefault(key, default)
        config[table] = section
    _check_values(config, at)
    return config


def _check_values(config: dict[str, dict[str, Any]], at: Any) -> None:
    """What the types alone do not say."""
    from forge.core.platforms import parse_platform

    build = config["build"]
    if build["jobs"] < 0:
        raise ConfigError(f"{at('build', 'jobs')}: [build] jobs should be 0 (one per CPU) or more, "
                          f"got {build['jobs']}")
    for i, text in enumerate(build["platforms"]):
        try:
            parse_platform(text)
        except ForgeError as exc:
            raise ConfigError(f"{at('build', 'platforms')}: [build] platforms[{i}]: {exc}") from None
    for i, name in enumerate(build["glob_excludes"]):
        if not name or "/" in name or "\0" in name or name in (".", ".."):
            raise ConfigError(f"{at('build', 'glob_excludes')}: [build] glob_excludes[{i}] = "
                              f"{_short.repr(name)} should be a directory name (no '/', not '.' or '..')")
    _check_executor_choices(build, at)
    if "\0" in config["cache"]["dir"]:
        raise ConfigError(f"{at('cache', 'dir')}: [cache] dir contains a NUL byte")
    for name, table in config["executors"].items():
        if not isinstance(table, dict):
            raise ConfigError(f"{at('executors', name)}: executors.{name} should be a table "
                              f"([executors.{name}]), got {_type_name(table)} {_short.repr(table)}")
        hosts = table.get("hosts")
        if hosts is None:
            continue
        if not isinstance(hosts, dict):
            raise ConfigError(f"{at('executors', name, 'hosts')}: [executors.{name}] hosts should be a table "
                              f"of platform = \"engine URL\", got {_type_name(hosts)} {_short.repr(hosts)}")
        for platform, url in hosts.items():
            where = at("executors", name, "hosts", platform)
            try:
                parse_platform(platform)
            except ForgeError as exc:
                raise ConfigError(f"{where}: [executors.{name}.hosts] {exc}") from None
            if not isinstance(url, str) or not url or "\0" in url:
                raise ConfigError(f"{where}: [executors.{name}.hosts] {platform} should be an engine URL "
                                  f"string, got {_type_name(url)} {_short.repr(url)}")


def _check_executor_choices(build: dict[str, Any], at: Any) -> None:
    """``[build] executor`` is a name; ``platform_executors`` maps platforms (each named
    once, in any spelling) to names. Whether a name is registered is only known once the
    plugins are loaded: analysis checks it (core/registry.py ExecutorSelection)."""
    from forge.core.platforms import parse_platform

    if not _is_name(build["executor"]):
        raise ConfigError(f"{at('build', 'executor')}: [build] executor should be an executor name "
                          f"(e.g. \"docker\"), got {_short.repr(build['executor'])}")
    seen: dict[Any, str] = {}
    for text, name in build["platform_executors"].items():
        where = at("build", "platform_executors", text)
        try:
            platform = parse_platform(text)
        except ForgeError as exc:
            raise ConfigError(f"{where}: [build] platform_executors: {exc}") from None
        if platform in seen:
            raise ConfigError(f"{where}: [build] platform_executors names {platform} twice "
                              f"({seen[platform]!r} and {text!r})")
        seen[platform] = text
        if not isinstance(name, str) or not _is_name(name):
            raise ConfigError(f"{where}: [build] platform_executors {text} should be an executor name "
                              f"string (e.g. \"docker\"), got {_type_name(name)} {_short.repr(name)}")


def _is_name(text: str) -> bool:
    return bool(text) and text.strip() == text and "\0" not in text


def _decode_error(path: Path, text: str, message: str) -> str:
    """tomllib's "msg (at line 3, column 5)" as "file:3:5: msg"."""
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if m:
        return f"{path}:{m.group(1)}:{m.group(2)}: {message[:m.start()]}"
    m = re.search(r"\s*\(at end of document\)$", message)
    if m:
        return f"{path}:{text.count(chr(10)) + 1}: {message[:m.start()]} (at the end of the file)"
    return f"{path}: {message}"


def load_workspace(root: Path) -> Workspace:
    path = root / WORKSPACE_FILE
    text = _read(path)
    _check_toml_nesting(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_decode_error(path, text, str(exc))) from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deep for the TOML parser (limit {MAX_TOML_NESTING})") from None
    lines = _key_lines(text)
    config = _validate(path, data, lines)
    plugins = config["plugins"]
    modules = plugins.get("modules", [])
    where = _where(path, lines, ("plugins", "modules"))
    got = _type_error(modules, list[str])
    if got is not None:
        raise ConfigError(f"{where}: [plugins] modules should be a list of module names (strings), got {got}")
    for i, module in enumerate(modules):
        if not _MODULE_RE.fullmatch(module):
            raise ConfigError(f"{where}: [plugins] modules[{i}] = {_short.repr(module)} is not a Python module "
                              "name (dotted identifiers, e.g. \"my_plugin\" or \"tools.forge_rules\")")
    tables = {k: v for k, v in plugins.items() if isinstance(v, dict)}
    extra = [k for k, v in plugins.items() if k != "modules" and not isinstance(v, dict)]
    if extra:
        raise ConfigError(
            f"{_where(path, lines, ('plugins', extra[0]))}: unknown key '{extra[0]}' in [plugins]"
            f"{did_you_mean(extra[0], ['modules'])}; use `modules = [...]` or a [plugins.<name>] table"
        )
    name = config["workspace"]["name"] or root.name
    return Workspace(root, name, config, tables, Listed(modules, f"{where}: [plugins] modules"), lines)


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


@functools.lru_cache(maxsize=8)
def external_roots(root: str) -> tuple[str, ...]:
    """``[workspace] external_roots`` of the workspace at ``root`` (read once per process)."""
    if not os.path.isfile(os.path.join(root, WORKSPACE_FILE)):
        return ()
    return load_workspace(Path(root)).external_roots
