"""Transfers over a bad link (tests/cut_proxy.py between forge and the real registry): a
download cut every megabyte completes with each byte sent about once (Range honoured),
a corrupted byte stores nothing, uploads survive a broken connection, and the device-side
applier resumes too, across runs."""

from __future__ import annotations

import os
import uuid

import pytest

from forge import delta_apply
from forge.core.cas import CAS
from forge.core.oci.registry import ContentMismatch, RegistryClient
from tests.cut_proxy import CutProxy
from tests.services import require_registry

pytestmark = pytest.mark.integration

MB = 1_000_000


@pytest.fixture(scope="module")
def big_blob(tmp_path_factory) -> tuple[str, str, bytes]:
    """(repository, digest, bytes) of a 64 MiB random blob pushed to the real registry."""
    host = require_registry()
    data = os.urandom(64 << 20)
    cas = CAS(tmp_path_factory.mktemp("src") / "cas")
    digest = cas.put_bytes(data).digest
    repo = f"forge-test/transfer-{uuid.uuid4().hex[:12]}"
    RegistryClient(host).push_blob(cas, repo, digest)
    return repo, digest, data


def _tmp_entries(cas: CAS) -> list[str]:
    return sorted(p.name for p in (cas.root / "tmp").iterdir()) if (cas.root / "tmp").is_dir() else []


def test_a_pull_cut_every_megabyte_completes_sending_each_byte_once(big_blob, tmp_path):
    repo, digest, data = big_blob
    with CutProxy(require_registry(), cut_down_every=MB) as proxy:
        cas = CAS(tmp_path / "cas")
        RegistryClient(proxy.host, insecure=True).pull_blob(cas, repo, digest, len(data))
        assert proxy.cuts >= 64, proxy.cuts  # the link really broke, again and again
        # every resume asked for the bytes after what had arrived (Range), none again
        assert proxy.down_bytes <= 1.05 * len(data), proxy.down_bytes / len(data)
    assert cas.read_bytes(digest) == data and cas.verify(digest)
    assert _tmp_entries(cas) == []


def test_a_corrupted_byte_fails_verification_and_stores_nothing(big_blob, tmp_path):
    repo, digest, data = big_blob
    with CutProxy(require_registry(), corrupt_down_at=len(data) // 2) as proxy:
        cas = CAS(tmp_path / "cas")
        with pytest.raises(ContentMismatch):
            RegistryClient(proxy.host, insecure=True).pull_blob(cas, repo, digest, len(data))
    assert not cas.has(digest)
    assert _tmp_entries(cas) == []  # the partial blob is gone too


@pytest.mark.parametrize("size, cut", [(8 << 20, 4 << 20), (40 << 20, 20 << 20)],
                         ids=["monolithic", "chunked"])
def test_an_upload_survives_a_broken_connection(size, cut, tmp_path):
    data = os.urandom(size)
    cas = CAS(tmp_path / "cas")
    digest = cas.put_bytes(data).digest
    repo = f"forge-test/upload-{uuid.uuid4().hex[:12]}"
    with CutProxy(require_registry(), cut_up_after=cut, cut_up_times=1) as proxy:
        assert RegistryClient(proxy.host, insecure=True).push_blob(cas, repo, digest)
        assert proxy.cuts == 1
    dest = CAS(tmp_path / "dest")
    RegistryClient(require_registry()).pull_blob(dest, repo, digest, size)
    assert dest.read_bytes(digest) == data


def test_the_device_applier_resumes_a_cut_download_and_an_interrupted_run(big_blob, tmp_path):
    repo, digest, data = big_blob
    with CutProxy(require_registry(), cut_down_every=MB) as proxy:
        registry = delta_apply.Registry(proxy.host, insecure=True, log=lambda line: None)
        out = registry.fetch_blob(repo, digest, len(data), tmp_path / "blob", tmp_path / "partial")
        assert out.read_bytes() == data
        assert proxy.cuts >= 64 and proxy.down_bytes <= 1.05 * len(data)
    # a run killed half-way left a partial file: the next run fetches only the rest
    partial = tmp_path / "partial2"
    partial.mkdir()
    (partial / digest.split(":")[1]).write_bytes(data[: len(data) // 2])
    with CutProxy(require_registry()) as proxy:
        registry = delta_apply.Registry(proxy.host, insecure=True, log=lambda line: None)
        out = registry.fetch_blob(repo, digest, len(data), tmp_path / "blob2", partial)
        assert out.read_bytes() == data
        assert proxy.down_bytes <= 0.55 * len(data)
    # a corrupting link: refused, the partial file discarded
    with CutProxy(require_registry(), corrupt_down_at=10 * MB) as proxy:
        registry = delta_apply.Registry(proxy.host, insecure=True, log=lambda line: None)
        with pytest.raises(delta_apply.Refused):
            registry.fetch_blob(repo, digest, len(data), tmp_path / "blob3", tmp_path / "partial3")
    assert not (tmp_path / "blob3").exists()
    assert list((tmp_path / "partial3").iterdir()) == []


def test_a_registry_that_sends_nothing_still_fails_at_once(tmp_path):
    """Resuming is for links that bring bytes; a dead registry is not waited for."""
    repo, digest = "forge-test/none", "sha256:" + "0" * 64
    with CutProxy(require_registry(), cut_down_every=1) as proxy:
        with pytest.raises(Exception) as info:
            RegistryClient(proxy.host, insecure=True).pull_blob(CAS(tmp_path / "cas"), repo, digest, 10)
        assert proxy.connections <= 8
    assert "failed" in str(info.value) or "registry" in str(info.value)
