"""forge doctor on this machine, and with emulation taken away."""

import pytest

from tests.services import require_binfmt, require_docker

pytestmark = pytest.mark.integration


def test_doctor_names_each_check(forge_workspace):
    require_docker()
    require_binfmt("aarch64")
    ws = forge_workspace({"WORKSPACE.toml": '[build]\nplatforms = ["amd64", "aarch64"]\n', "BUILD": ""})
    out = ws.run("doctor").assert_success()
    for name in ("engine unix://", "platform linux/amd64: native", "binfmt linux/arm64/v8: qemu-aarch64 enabled",
                 "binfmt linux/arm/v7", "remote cache", "cache:", "plugins:", "rules:"):
        assert name in out.stdout, name
    assert "Docker 20." in out.stdout or "Docker " in out.stdout


def test_doctor_fails_when_a_configured_platform_cannot_run(forge_workspace, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    ws = forge_workspace({"WORKSPACE.toml": '[build]\nplatforms = ["amd64", "aarch64"]\n', "BUILD": ""})
    out = ws.run("doctor", env={"FORGE_BINFMT_DIR": str(empty)})
    assert out.exit_code == 1
    assert "[FAIL] binfmt linux/arm64/v8: binfmt_misc is not mounted" in out.stdout
    assert "update-binfmts --enable qemu-aarch64" in out.stdout
    assert "[warn] binfmt linux/arm/v7" in out.stdout  # not configured: a warning only


def test_doctor_reports_a_dead_engine(forge_workspace):
    ws = forge_workspace({"WORKSPACE.toml": "[workspace]\nname = 'x'\n", "BUILD": ""})
    out = ws.run("doctor", env={"DOCKER_HOST": "tcp://127.0.0.1:9"})
    assert out.exit_code == 1
    assert "[FAIL] engine tcp://127.0.0.1:9: no Docker engine answers at tcp://127.0.0.1:9" in out.stdout
    assert "scripts/services.sh" in out.stdout
