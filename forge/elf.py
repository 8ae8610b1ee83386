"""``forge.elf``: a static ``ldd`` for rules that read images (``minimize``).

Which shared libraries glibc's loader would map for the ELF files of an image, found by
reading the image's layers — nothing runs, so it works for any architecture without an
emulator::

    with forge.elf.LayeredRootFS([rc.cas.path(l.digest) for l in image.layers]) as fs:
        llp = forge.elf.env_value(image.config["config"].get("Env"), "LD_LIBRARY_PATH")
        resolution = forge.elf.LibraryResolver(fs, llp).resolve(["/usr/bin/app"])

The harvest engine of the ``minimize`` rule (``forge.core.elf.harvest``) is here too:
``harvest(fs, HarvestRequest(paths=...), base_fs)`` returns the layer's nodes and the
report; ``fit_to_base``/``layer_conflicts`` place a layer over a production base;
``why_chain`` reads a report back.

Names resolve on first use (pyelftools loads only then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forge._lazy import lazy_getattr

_LAZY: dict[str, tuple[str, str]] = {
    "LayeredRootFS": ("forge.core.elf", "LayeredRootFS"),
    "DirectoryRootFS": ("forge.core.elf", "DirectoryRootFS"),
    "LibraryResolver": ("forge.core.elf", "LibraryResolver"),
    "env_value": ("forge.core.elf", "env_value"),
    "arch_spec": ("forge.core.elf.loaderconf", "arch_spec"),
    "system_dirs": ("forge.core.elf.loaderconf", "system_dirs"),
    # the harvest (the minimize rule's engine)
    "Harvest": ("forge.core.elf.harvest", "Harvest"),
    "HarvestRequest": ("forge.core.elf.harvest", "HarvestRequest"),
    "MinimizeError": ("forge.core.elf.harvest", "MinimizeError"),
    "excluded_by": ("forge.core.elf.harvest", "excluded_by"),
    "expand_pattern": ("forge.core.elf.harvest", "expand_pattern"),
    "fit_to_base": ("forge.core.elf.harvest", "fit_to_base"),
    "harvest": ("forge.core.elf.harvest", "harvest"),
    "layer_conflicts": ("forge.core.elf.harvest", "layer_conflicts"),
    "missing_message": ("forge.core.elf.harvest", "missing_message"),
    "why_chain": ("forge.core.elf.harvest", "why_chain"),
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(globals(), "forge.elf", _LAZY)


if TYPE_CHECKING:  # for type checkers and IDEs
    from forge.core.elf import DirectoryRootFS, LayeredRootFS, LibraryResolver, env_value  # noqa: F401
    from forge.core.elf.harvest import (  # noqa: F401
        Harvest,
        HarvestRequest,
        MinimizeError,
        excluded_by,
        expand_pattern,
        fit_to_base,
        harvest,
        layer_conflicts,
        missing_message,
        why_chain,
    )
    from forge.core.elf.loaderconf import arch_spec, system_dirs  # noqa: F401
