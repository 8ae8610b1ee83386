"""Lazy public names (PEP 562): the one ``__getattr__`` behind ``forge``, ``forge.oci``
and ``forge.elf``, so a name's module is imported on first use and ``forge --version``
stays fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(namespace: dict[str, Any], package: str,
                 table: Mapping[str, tuple[str, str | None]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``table[name] = (module, attribute or None for
    the module itself)`` and caching the value in ``namespace``."""

    def __getattr__(name: str) -> Any:
        try:
            module_name, attr_name = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        module = importlib.import_module(module_name)
        value = module if attr_name is None else getattr(module, attr_name)
        namespace[name] = value
        return value

    return __getattr__
