"""Tests of forge.core.oci: layers, images, validation, layouts, archives, registries."""
