"""Plugins add doctor checks and CLI commands through hooks; the core imports no plugin."""

from __future__ import annotations

import subprocess
import sys

PLUGIN = '''
import click
import forge


@forge.hookimpl
def forge_cli_commands():
    @click.command("hello")
    def hello():
        """Say hello (a test plugin's command)."""
        click.echo("hello from a plugin")
    return {"hello": hello, "cache hello": hello}


@forge.hookimpl
def forge_doctor_checks(session):
    return [forge.DoctorCheck("test plugin", True, "checked " + session.workspace.name)]
'''


def test_a_plugin_adds_a_command_and_a_doctor_check(forge_workspace, monkeypatch):
    ws = forge_workspace({
        "WORKSPACE.toml": '[workspace]\nname = "pc"\n[plugins]\nmodules = ["cmd_plugin"]\n',
        "cmd_plugin.py": PLUGIN, "BUILD": "",
    })
    monkeypatch.syspath_prepend(str(ws.root))
    assert "hello from a plugin" in ws.run("hello").assert_success().stdout
    assert "hello from a plugin" in ws.run("cache", "hello").assert_success().stdout
    assert "hello" in ws.run("--help").assert_success().stdout
    doctor = ws.run("doctor")
    assert "[ok  ] test plugin: checked pc" in doctor.stdout
    assert ws.run("nonsense").exit_code == 2


def test_version_loads_no_plugin():
    code = ("import sys; from click.testing import CliRunner; from forge.cli import main; "
            "r = CliRunner().invoke(main, ['--version']); "
            "print(r.output.strip(), any(m.startswith(('forge.plugins', 'forge.core')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False"), out
