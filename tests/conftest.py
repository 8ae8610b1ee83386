"""Shared fixtures: ``forge.testing`` gives ``forge_workspace``; the services live in
``tests/services.py`` (each test that needs the engine, registry or QEMU asks for it)."""

import contextlib

import pytest

from tests.services import require_docker


@pytest.fixture
def docker_client():
    """The real engine; images a test creates are removed afterwards."""
    client = require_docker()
    before = {img.id for img in client.images.list(all=True)}
    yield client
    for img in client.images.list(all=True):
        if img.id not in before:
            with contextlib.suppress(Exception):  # best effort cleanup
                client.images.remove(img.id, force=True)
