"""Registers the built-in rules as an ordinary plugin."""

from __future__ import annotations

import importlib

import forge

RULE_MODULES = (
    ("forge.rules.layer", "Layer"),
    ("forge.rules.images", "ImageRule"),
    ("forge.rules.images", "ImageIndexRule"),
    ("forge.rules.base_images", "OciImport"),
    ("forge.rules.base_images", "OciPull"),
    ("forge.rules.dockerfile", "Dockerfile"),
    ("forge.rules.dockerfile", "DockerfileChain"),
    ("forge.rules.debootstrap", "Debootstrap"),
    ("forge.rules.minimize", "Minimize"),
    ("forge.rules.production", "Production"),
    ("forge.rules.delta", "ImageDeltaRule"),
    ("forge.rules.filegroup", "FileGroup"),
)


@forge.hookimpl
def forge_register_rules(registry) -> None:
    for module_name, class_name in RULE_MODULES:
        registry.add(getattr(importlib.import_module(module_name), class_name))
