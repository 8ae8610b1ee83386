"""Shared fixtures: ``forge.testing`` gives ``forge_workspace``; the services live in
``tests/services.py`` (each test that needs the engine, registry or QEMU asks for it)."""

import contextlib

import pytest

from tests.services import require_docker

# Tags forge and its tests give images; only these are ever removed, and only when the
# image appeared during the test (the engine may be shared with other users and builds).
OWN_TAG_PREFIXES = ("forge-test/", "forge-base/", "forge-build:")


def created_images(client, before: set[str]) -> list:
    """Images that appeared since ``before`` and carry a forge or forge-test tag.

    Listed by the low-level API (one call, no per-image inspect), so an image another
    process removes meanwhile on the shared engine is not an ImageNotFound here."""
    import docker.errors

    found = []
    for row in client.api.images():
        if row["Id"] not in before and any(t.startswith(OWN_TAG_PREFIXES) for t in row.get("RepoTags") or ()):
            with contextlib.suppress(docker.errors.NotFound):
                found.append(client.images.get(row["Id"]))
    return found


@pytest.fixture
def docker_client():
    """The real engine. Afterwards, images the test created (new, and tagged forge-test/
    or forge-base/) are untagged and removed; nothing else is touched."""
    client = require_docker()
    before = {row["Id"] for row in client.api.images(all=True)}
    client.forge_images_before = before
    yield client
    for img in created_images(client, before):
        for tag in img.tags:
            if tag.startswith(OWN_TAG_PREFIXES):
                with contextlib.suppress(Exception):  # best effort; never force
                    client.images.remove(tag)
