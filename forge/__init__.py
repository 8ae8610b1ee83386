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

An image rule composes immutable ``forge.Image`` values (``append_layers``, ``with_config``,
``write_layer``) and returns ``forge.image_result(rc, image)``; an executor or remote cache
implements ``forge.Executor`` / ``forge.RemoteCache``; ``forge.oci`` (registries,
importers, media types, image deltas) and ``forge.elf`` (a static ldd) are namespaces;
``forge.delta_apply`` is the device-side delta applier (standard library + pyzstd).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from forge._lazy import lazy_getattr

hookimpl = pluggy.HookimplMarker("forge")

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it (dynamic)

# Names resolve on first use (PEP 562) so that `forge --version` does not import the
# engine (networkx, blake3, starlark).
_LAZY = {
    # rules, attributes, actions and providers
    "attr": ("forge.core.attrs", None),
    "Action": ("forge.core.actions", "Action"),
    "ActionResult": ("forge.core.actions", "ActionResult"),
    "Descriptor": ("forge.core.cas", "Descriptor"),
    "SourceFile": ("forge.core.actions", "SourceFile"),
    "canonical_json": ("forge.core.canonical", "canonical_json"),
    "CAS": ("forge.core.cas", "CAS"),
    "RunContext": ("forge.core.execution", "RunContext"),
    "Session": ("forge.core.session", "Session"),
    "PlainReporter": ("forge.core.report", "PlainReporter"),
    "DoctorCheck": ("forge.core.doctor", "Check"),
    "human_size": ("forge.core.report", "human_size"),
    "write_atomic": ("forge.core.fsutil", "write_atomic"),
    "raise_for_failures": ("forge._documented", "raise_for_failures"),
    "Label": ("forge.core.labels", "Label"),
    "parse_label": ("forge.core.labels", "parse_label"),
    "Platform": ("forge.core.platforms", "Platform"),
    "parse_platform": ("forge.core.platforms", "parse_platform"),
    "automatic_args": ("forge.core.platforms", "automatic_args"),
    "buildx_spelling": ("forge.core.platforms", "buildx_spelling"),
    "host_platform": ("forge._documented", "host_platform"),
    "DefaultInfo": ("forge.core.providers", "DefaultInfo"),
    "ImageInfo": ("forge.core.providers", "ImageInfo"),
    "IndexInfo": ("forge.core.providers", "IndexInfo"),
    "LayerInfo": ("forge.core.providers", "LayerInfo"),
    "FilesInfo": ("forge.core.providers", "FilesInfo"),
    "ContextDir": ("forge.core.attrs", "ContextDir"),
    "provider": ("forge.core.providers", "provider"),
    "AnalysisContext": ("forge.core.rule", "AnalysisContext"),
    "ConfiguredTarget": ("forge.core.rule", "ConfiguredTarget"),
    "Rule": ("forge.core.rule", "Rule"),
    "Workspace": ("forge.core.workspace", "Workspace"),
    # errors (all ForgeError: the CLI prints them without a traceback)
    "ActionFailed": ("forge.core.errors", "ActionFailed"),
    "AnalysisError": ("forge.core.errors", "AnalysisError"),
    "BuildFileError": ("forge.core.errors", "BuildFileError"),
    "CacheError": ("forge.core.errors", "CacheError"),
    "ConfigError": ("forge.core.errors", "ConfigError"),
    "ExecutorError": ("forge.core.errors", "ExecutorError"),
    "ForgeError": ("forge.core.errors", "ForgeError"),
    "PlatformError": ("forge.core.errors", "PlatformError"),
    "RegistryError": ("forge.core.errors", "RegistryError"),
    "RemoteCacheError": ("forge.core.errors", "RemoteCacheError"),
    "RemoteEntryInvalid": ("forge.core.errors", "RemoteEntryInvalid"),
    "UsageError": ("forge.core.errors", "UsageError"),
    "did_you_mean": ("forge.core.errors", "did_you_mean"),
    "secret_source": ("forge.core.overrides", "secret_source"),
    # contracts for executor and remote cache plugins
    "Executor": ("forge.contracts", "Executor"),
    "BuildOptions": ("forge.core.options", "BuildOptions"),
    "RemoteCache": ("forge.contracts", "RemoteCache"),
    "LazyRemoteCache": ("forge.contracts", "LazyRemoteCache"),
    # images: immutable values, operations return new ones
    "Image": ("forge.core.oci.image", "Image"),
    "Layer": ("forge.core.oci.image", "Layer"),
    "Index": ("forge.core.oci.image", "Index"),
    "EMPTY_IMAGE": ("forge.core.oci.image", "EMPTY_IMAGE"),
    "append_layers": ("forge.core.oci.image", "append_layers"),
    "with_config": ("forge.core.oci.image", "with_config"),
    "make_index": ("forge.core.oci.image", "make_index"),
    "store_image": ("forge.core.oci.image", "store_image"),
    "load_image": ("forge._documented", "load_image"),
    "LayerEntry": ("forge.core.oci.layer_writer", "LayerEntry"),
    "entries_from_files": ("forge.core.oci.layer_writer", "entries_from_files"),
    "write_layer": ("forge.core.oci.layer_writer", "write_layer"),
    # images as action results
    "image_result": ("forge.core.oci.results", "image_result"),
    "image_descriptors": ("forge.core.oci.results", "image_descriptors"),
    "dep_image": ("forge.core.oci.results", "dep_image"),
    "materialize_image": ("forge.core.oci.results", "materialize_image"),
    "image_platform": ("forge.core.oci.results", "image_platform"),
    # namespaces: registries, importers, media types; the static ldd
    "oci": ("forge.oci", None),
    "elf": ("forge.elf", None),
    # the supply chain: SBOMs, provenance, signatures, referrers
    "supply": ("forge.supply", None),
    # the device-side delta applier (standard library + pyzstd; `python -m forge.delta_apply`)
    "delta_apply": ("forge.delta_apply", None),
}

__all__ = ["hookimpl", *_LAZY]


__getattr__ = lazy_getattr(globals(), "forge", _LAZY)


if TYPE_CHECKING:  # for type checkers and IDEs
    from forge import delta_apply, elf, oci  # noqa: F401
    from forge._documented import host_platform, load_image, raise_for_failures  # noqa: F401
    from forge.contracts import Executor, LazyRemoteCache, RemoteCache  # noqa: F401
    from forge.core import attrs as attr  # noqa: F401
    from forge.core.actions import Action, ActionResult, SourceFile  # noqa: F401
    from forge.core.attrs import ContextDir  # noqa: F401
    from forge.core.canonical import canonical_json  # noqa: F401
    from forge.core.cas import CAS, Descriptor  # noqa: F401
    from forge.core.errors import (  # noqa: F401
        ActionFailed,
        AnalysisError,
        BuildFileError,
        CacheError,
        ConfigError,
        ExecutorError,
        ForgeError,
        PlatformError,
        RegistryError,
        RemoteCacheError,
        RemoteEntryInvalid,
        UsageError,
        did_you_mean,
    )
    from forge.core.execution import RunContext  # noqa: F401
    from forge.core.labels import Label, parse_label  # noqa: F401
    from forge.core.oci.image import (  # noqa: F401
        EMPTY_IMAGE,
        Image,
        Index,
        Layer,
        append_layers,
        make_index,
        store_image,
        with_config,
    )
    from forge.core.oci.layer_writer import LayerEntry, entries_from_files, write_layer  # noqa: F401
    from forge.core.oci.results import (  # noqa: F401
        dep_image,
        image_descriptors,
        image_platform,
        image_result,
        materialize_image,
    )
    from forge.core.options import BuildOptions  # noqa: F401
    from forge.core.platforms import Platform, automatic_args, buildx_spelling, parse_platform  # noqa: F401
    from forge.core.providers import (  # noqa: F401
        DefaultInfo,
        FilesInfo,
        ImageInfo,
        IndexInfo,
        LayerInfo,
        provider,
    )
    from forge.core.rule import AnalysisContext, ConfiguredTarget, Rule  # noqa: F401
    from forge.core.workspace import Workspace  # noqa: F401
