"""forge: build container images the way Bazel builds code.

Write a plugin in five lines::

    import forge

    class Hello(forge.Rule):
        name = "hello"; doc = "Writes a greeting."; attrs = {"who": forge.attr.string(default="world")}
        def analyze(self, ctx):
            return [forge.DefaultInfo(ctx.action("Hello", hello))]

    def hello(rc):  # module level: an action's run function gets only what its key covers
        return rc.result({"out": rc.cas.put_bytes(b"hi")})

    @forge.hookimpl
    def forge_register_rules(registry): registry.add(Hello)

then list the module under ``[plugins] modules`` in WORKSPACE.toml, or expose it in the
``forge`` entry-point group of your package. This package is the whole public surface.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

hookimpl = pluggy.HookimplMarker("forge")

__version__ = "0.1.0"

# Names resolve on first use (PEP 562) so that `forge --version` does not import the
# engine (networkx, blake3, starlark).
_LAZY = {
    "attr": ("forge.core.attrs", None),
    "Action": ("forge.core.actions", "Action"),
    "ActionResult": ("forge.core.actions", "ActionResult"),
    "Descriptor": ("forge.core.cas", "Descriptor"),
    "SourceFile": ("forge.core.actions", "SourceFile"),
    "ActionFailed": ("forge.core.errors", "ActionFailed"),
    "AnalysisError": ("forge.core.errors", "AnalysisError"),
    "BuildFileError": ("forge.core.errors", "BuildFileError"),
    "ConfigError": ("forge.core.errors", "ConfigError"),
    "ExecutorError": ("forge.core.errors", "ExecutorError"),
    "ForgeError": ("forge.core.errors", "ForgeError"),
    "PlatformError": ("forge.core.errors", "PlatformError"),
    "RemoteCacheError": ("forge.core.errors", "RemoteCacheError"),
    "RunContext": ("forge.core.execution", "RunContext"),
    "Platform": ("forge.core.platforms", "Platform"),
    "parse_platform": ("forge.core.platforms", "parse_platform"),
    "DefaultInfo": ("forge.core.providers", "DefaultInfo"),
    "ImageInfo": ("forge.core.providers", "ImageInfo"),
    "IndexInfo": ("forge.core.providers", "IndexInfo"),
    "LayerInfo": ("forge.core.providers", "LayerInfo"),
    "provider": ("forge.core.providers", "provider"),
    "AnalysisContext": ("forge.core.rule", "AnalysisContext"),
    "ConfiguredTarget": ("forge.core.rule", "ConfiguredTarget"),
    "Rule": ("forge.core.rule", "Rule"),
}

__all__ = ["hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr_name = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'forge' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr_name is None else getattr(module, attr_name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # for type checkers and IDEs
    from forge.core import attrs as attr  # noqa: F401
    from forge.core.actions import Action, ActionResult, SourceFile  # noqa: F401
    from forge.core.cas import Descriptor  # noqa: F401
    from forge.core.errors import (  # noqa: F401
        ActionFailed,
        AnalysisError,
        BuildFileError,
        ConfigError,
        ExecutorError,
        ForgeError,
        PlatformError,
        RemoteCacheError,
    )
    from forge.core.execution import RunContext  # noqa: F401
    from forge.core.platforms import Platform, parse_platform  # noqa: F401
    from forge.core.providers import DefaultInfo, ImageInfo, IndexInfo, LayerInfo, provider  # noqa: F401
    from forge.core.rule import AnalysisContext, ConfiguredTarget, Rule  # noqa: F401
