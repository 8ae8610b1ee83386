"""``forge.testing``: a pytest plugin for testing forge and forge plugins.

    def test_layer(forge_workspace):
        ws = forge_workspace({"BUILD": 'layer(name = "l", srcs = ["a.txt"])', "a.txt": "hi"})
        out = ws.run("build", "//:l", "--json")
        out.assert_success()
        assert out.actions()[0]["status"] == "built"

``forge_workspace(files)`` writes a workspace (a ``WORKSPACE.toml`` is added when the
dict has none) in a temporary directory with its own cache dir, and ``ws.run(...)`` runs
the CLI in-process, returning a ``RunOutcome`` with the exit code, output and the JSON
events of ``--json`` runs.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class RunOutcome:
    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def assert_success(self) -> RunOutcome:
        assert self.exit_code == 0, (
            f"forge {' '.join(self.args)} exited {self.exit_code}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}\n--- exception\n{self.exception!r}"
        )
        return self

    def assert_failure(self, code: int | None = None) -> RunOutcome:
        assert self.exit_code != 0, f"forge {' '.join(self.args)} unexpectedly succeeded"
        if code is not None:
            assert self.exit_code == code, f"exit {self.exit_code} != {code}\n{self.stderr}"
        return self

    def actions(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "action"]

    def statuses(self) -> dict[str, str]:
        """action id (label#Mnemonic.index) -> status."""
        return {e["id"]: e["status"] for e in self.actions()}

    def executed(self) -> list[str]:
        """Ids of actions that actually ran (built or failed)."""
        return sorted(e["id"] for e in self.actions() if e["status"] in ("built", "failed"))

    def summary(self) -> dict[str, Any]:
        return next(e for e in reversed(self.events) if e.get("event") == "summary")


class Workspace:
    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.cache = cache

    def write(self, files: dict[str, str | bytes]) -> None:
        for rel, content in files.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(textwrap.dedent(content))

    def run(self, *args: str, env: dict[str, str] | None = None) -> RunOutcome:
        from click.testing import CliRunner

        from forge.cli import main

        environ = {"FORGE_CACHE": str(self.cache), **(env or {})}
        runner = CliRunner()
        old = os.getcwd()
        os.chdir(self.root)
        try:
            result = runner.invoke(main, list(args), env=environ, catch_exceptions=True)
        finally:
            os.chdir(old)
        exc = result.exception if not isinstance(result.exception, SystemExit) else None
        events = []
        if "--json" in args:
            for line in result.stdout.splitlines():
                line = line.strip()
                if line.startswith("{"):
                    events.append(json.loads(line))
        return RunOutcome(tuple(args), result.exit_code, result.stdout, result.stderr, exc, events)


@pytest.fixture
def forge_workspace(tmp_path: Path) -> Callable[..., Workspace]:
    """Factory: ``forge_workspace(files, name="ws", cache=None) -> Workspace``."""

    def make(files: dict[str, str | bytes], name: str = "ws", cache: Path | None = None) -> Workspace:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        ws = Workspace(root, cache or tmp_path / "cache")
        if "WORKSPACE.toml" not in files:
            files = {"WORKSPACE.toml": f'[workspace]\nname = "{name}"\n', **files}
        ws.write(files)
        return ws

    return make
