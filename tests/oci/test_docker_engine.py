"""A forge-built image goes into Debian's dockerd as a docker-archive, runs, and comes back."""

from __future__ import annotations

import uuid

import pytest

from forge.core.oci.docker_archive import import_docker_archive, write_docker_archive
from forge.core.oci.validate import validate_image
from tests.services import require_docker

from .conftest import HELLO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_load_run_and_save_back(tmp_path, cas, fresh_cas, busybox_image):
    client = require_docker()
    tag = f"forge-test/oci-busybox:{uuid.uuid4().hex[:12]}"
    archive = tmp_path / "busybox.tar"
    write_docker_archive(cas, busybox_image, archive, repo_tags=[tag])
    with open(archive, "rb") as fh:
        loaded = client.images.load(fh)
    try:
        assert [image.id for image in loaded] == [busybox_image.config_digest]
        out = client.containers.run(tag, remove=True, network_mode="none")
        assert out == HELLO

        saved = tmp_path / "saved.tar"  # what `docker save` writes (Docker 20.10's own layout)
        with open(saved, "wb") as fh:
            for chunk in client.images.get(tag).save(named=True):
                fh.write(chunk)
        back = import_docker_archive(fresh_cas, saved)
        assert back.config_digest == busybox_image.config_digest
        assert back.diff_ids == busybox_image.diff_ids
        validate_image(fresh_cas, back.digest)
    finally:
        client.images.remove(tag, force=True)
