"""The public surface: what plugin authors may import, that it is documented, and that the
built-in rules and plugins keep to it (STYLE.md 6 and 19; issue 12).

Import rules, read from the AST (a string naming a module does not count):

- ``rules/`` and ``plugins/`` import ``forge`` and its public namespaces (``forge.oci``,
  ``forge.elf``, ``forge.contracts``, ``forge.testing``) only, like a third-party plugin;
  a module may import its own package (a rule module another rule module: a third-party
  plugin package imports its own submodules too). Never ``forge.core``, and never the
  other built-in package.
- ``core/`` and ``forge/cli.py`` import no ``forge.plugins``/``forge.rules`` module.

Each exception is in an allow-list below with its reason; an entry that no longer matches
anything fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import forge
from forge import contracts

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_NAMESPACES = ("forge.oci", "forge.elf", "forge.contracts", "forge.testing")

# (file relative to the checkout, imported module) -> why the crossing stays
ALLOWED_PLUGIN_IMPORTS = {
    ("rules/debootstrap.py", "forge.plugins.qemu"):
        "issue 12: a host-run chroot is no executor action, so forge_prepare_platform "
        "cannot serve the QEMU second stage yet",
}
ALLOWED_CORE_IMPORTS: dict[tuple[str, str], str] = {}  # none: doctor checks and commands are hooks


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``, nested ones included."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def plugin_crossings() -> dict[tuple[str, str], int]:
    """Imports of rules/ and plugins/ that a third-party plugin could not make."""
    out = {}
    for folder, own in (("rules", "forge.rules"), ("plugins", "forge.plugins")):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for line, module in imported_modules(path):
                if not _within(module, "forge") or module == "forge" or _within(module, own):
                    continue
                if any(_within(module, ns) for ns in PUBLIC_NAMESPACES):
                    continue
                out[rel, module] = line
    return out


def core_crossings() -> dict[tuple[str, str], int]:
    """Imports of built-in plugins or rules by the engine and the CLI."""
    out = {}
    for path in sorted([*(ROOT / "core").rglob("*.py"), ROOT / "forge" / "cli.py"]):
        rel = str(path.relative_to(ROOT))
        for line, module in imported_modules(path):
            if _within(module, "forge.plugins") or _within(module, "forge.rules"):
                out[rel, module] = line
    return out


@pytest.mark.parametrize("crossings, allowed", [
    pytest.param(plugin_crossings, ALLOWED_PLUGIN_IMPORTS, id="rules-and-plugins-import-only-forge"),
    pytest.param(core_crossings, ALLOWED_CORE_IMPORTS, id="core-imports-no-plugin-or-rule"),
])
def test_import_boundary(crossings, allowed):
    found = crossings()
    unexpected = [f"{path}:{line} imports {module}" for (path, module), line in sorted(found.items())
                  if (path, module) not in allowed]
    assert not unexpected, (
        "import through `forge` (or forge.oci / forge.elf), or export what is missing there:\n  "
        + "\n  ".join(unexpected))
    stale = sorted(f"{path} -> {module}" for path, module in set(allowed) - set(found))
    assert not stale, f"allow-list entries that no longer match an import; remove them: {stale}"
    assert all(reason.strip() for reason in allowed.values())


def _public(namespace) -> list[tuple[str, object]]:
    return [(f"{namespace.__name__}.{name}", getattr(namespace, name)) for name in namespace.__all__]


def test_every_public_name_resolves_and_is_documented():
    names = _public(forge)
    for sub in (forge.oci, forge.elf, contracts):
        assert inspect.getdoc(sub), f"{sub.__name__} has no module docstring"
        names += _public(sub)
    undocumented = [name for name, value in names if not (inspect.getdoc(value) or "").strip()]
    assert not undocumented, f"public names without a docstring: {undocumented}"
    assert len(set(forge.__all__)) == len(forge.__all__)


def test_public_names_resolve_lazily():
    """`forge --version` must not import the engine: the table is names, not imports."""
    source = (ROOT / "forge" / "__init__.py").read_text()
    runtime = source.split("if TYPE_CHECKING:")[0]
    assert not re.search(r"^(from forge\.core|import forge\.core)", runtime, re.M)


def test_protocol_members_are_documented():
    for proto in (forge.Executor, forge.RemoteCache, forge.LazyRemoteCache):
        members = [m for m in vars(proto) if not m.startswith("_") and callable(vars(proto)[m])]
        assert members
        for member in members:
            assert inspect.getdoc(getattr(proto, member)), f"{proto.__name__}.{member}"


class _Workspace:
    """Just what DockerExecutor's constructor reads."""

    def section(self, name):
        return {}


def test_builtin_executor_and_cache_satisfy_the_contracts():
    from forge.plugins.cache_settings import CacheSettings
    from forge.plugins.docker import DockerExecutor
    from forge.plugins.oci_cache import OciCache

    executor = DockerExecutor(_Workspace())
    assert isinstance(executor, forge.Executor)
    cache = OciCache(CacheSettings("127.0.0.1:5000/forge/contract-test"))
    assert isinstance(cache, forge.RemoteCache)
    assert isinstance(cache, forge.LazyRemoteCache)
    assert not cache.writable
    assert cache.describe() == "127.0.0.1:5000/forge/contract-test"


def test_contracts_are_structural():
    """A plugin need not subclass: an object with the members is an executor."""

    class Fake:
        def build(self, rc, *, package_dir, base): ...
        def version(self, platform=None): return "fake 1"
        def host_for(self, platform): return "nowhere"
        def is_native_remote(self, platform): return False
        def load(self, cas, image, ref, platform): return {}
        def clean(self, select, *, dry_run=False): return []

    assert isinstance(Fake(), forge.Executor)
    assert not isinstance(object(), forge.Executor)
    assert not isinstance(Fake(), forge.RemoteCache)


def test_plugin_hooks_are_documented():
    """Every hook in core/hookspecs.py is named in the README (Datasette's test)."""
    from forge.core import hookspecs

    hooks = [name for name, value in vars(hookspecs).items()
             if name.startswith("forge_") and inspect.isfunction(value)]
    assert hooks
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in hooks if not re.search(rf"\b{name}\b", readme)]
    assert not missing, f"hooks the README does not document: {missing}"

