"""The remote cache carries a whole minimize + production graph: a developer with an
empty cache gets CI's production image without building (or compiling) anything."""

from __future__ import annotations

import pytest

from tests.minimize.test_e2e import compiled, target, workspace  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def test_minimize_and_production_restore_from_the_remote(forge_workspace, compiled, tmp_path,  # noqa: F811
                                                          cache_url):
    ci = workspace(forge_workspace, compiled, "ci", tmp_path / "cache-ci")
    first = ci.run("build", "//app:prod", "--json", "--remote-cache", cache_url,
                   "--remote-cache-write").assert_success()
    assert "//app:min#Minimize.0" in first.executed()

    dev = workspace(forge_workspace, compiled, "dev", tmp_path / "cache-dev")
    out = dev.run("build", "//app:prod", "//app:min", "--json", "--remote-cache", cache_url).assert_success()
    assert out.executed() == []
    assert set(out.statuses().values()) == {"cached-remote"}
    assert target(out, "//app:prod")["digest"] == target(first, "//app:prod")["digest"]
    assert (dev.root / "forge-out/app/min/report.json").exists()
