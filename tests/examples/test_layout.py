"""The examples are workspaces of their own, laid out as their real repositories are
(analysis only: no engine, no network, fast).

    cd examples/atom && forge build //atom:graphics-aarch64
    cd examples/fleet && forge build //...
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from click.testing import CliRunner

from forge.cli import main
from forge.core.actions import action_key, key_manifest
from forge.core.session import Session

REPO = Path(__file__).resolve().parents[2]
ATOM = REPO / "examples/atom"
FLEET = REPO / "examples/fleet"
FLAVORS = ("stock", "graphics", "extras", "atom")


def query(root: Path, *patterns: str) -> tuple[int, list[str], str]:
    """``forge query targets PATTERNS`` run in ``root``: exit code, labels, stderr."""
    old = os.getcwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(main, ["query", "targets", *patterns])
    finally:
        os.chdir(old)
    labels = [line.split()[1] for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, labels, result.stderr


def the_action(root: Path, label: str):
    old = os.getcwd()
    os.chdir(root)
    try:
        targets, _ = Session(root).analyze([label])
    finally:
        os.chdir(old)
    (action,) = targets[0].actions
    return action


def test_atom_is_a_workspace_with_an_atom_package():
    assert (ATOM / "WORKSPACE.toml").is_file() and (ATOM / "atom/BUILD").is_file()
    for flavor in FLAVORS:  # Atom's numbered Dockerfile folders, in the atom package
        assert sorted((ATOM / "atom" / flavor).glob("[0-9][0-9]-Dockerfile-*")), flavor
    code, labels, err = query(ATOM, "//...")
    assert code == 0, err
    assert {f"//atom:{f}-{p}" for f in FLAVORS for p in ("amd64", "aarch64")} <= set(labels)
    assert {"//atom:base-aarch64", "//atom:graphics", "//atom:graphics-aarch64-production"} <= set(labels)
    assert all(label.startswith("//atom:") for label in labels), labels
    # the promised command's target, from the workspace root and from inside the package
    for where in (ATOM, ATOM / "atom/graphics"):
        code, labels, err = query(where, "//atom:graphics-aarch64")
        assert (code, labels) == (0, ["//atom:graphics-aarch64"]), err


def test_fleet_is_a_workspace_with_a_fleet_package():
    assert (FLEET / "WORKSPACE.toml").is_file() and (FLEET / "fleet/BUILD").is_file()
    code, labels, err = query(FLEET, "//...")
    assert code == 0, err
    for service in ("web", "metrics", "broker", "radio"):
        assert {f"//fleet:{service}", f"//fleet:{service}-amd64", f"//fleet:{service}-aarch64"} <= set(labels)
    assert all(label.startswith("//fleet:") for label in labels), labels


def test_the_fleet_bootstrap_is_the_atom_base_to_the_letter():
    """Two workspaces on one cache share one bootstrap per platform only if the actions'
    keys are equal: the fleet's packages list must follow the Atom example's."""
    for p in ("amd64", "aarch64"):
        atom = the_action(ATOM, f"//atom:base-{p}")
        fleet = the_action(FLEET, f"//fleet:bootstrap-{p}")
        assert atom.mnemonic == fleet.mnemonic == "Debootstrap"
        assert action_key(key_manifest(atom, [], [])) == action_key(key_manifest(fleet, [], []))


def test_the_repository_root_does_not_enter_the_examples():
    code, labels, err = query(REPO, "//...")
    assert not [label for label in labels if label.startswith("//examples/")], labels
    if code != 0:  # the root has no package of its own (today)
        assert "not entered: the nested workspaces examples/atom, examples/fleet" in err, err
    code, _, err = query(REPO, "//examples/atom/atom:graphics-aarch64")
    assert code != 0
    assert "cd examples/atom && forge build //atom:graphics-aarch64" in err, err


def test_docs_and_scripts_use_the_workspaces_labels():
    stale = re.compile(r"//examples/(atom|fleet)\b")
    for rel in ("README.md", "examples/README.md", "scripts/quickstart.sh", "benchmarks/atom_example.py",
                *(str(p.relative_to(REPO)) for p in (*ATOM.rglob("*"), *FLEET.rglob("*"))
                  if p.is_file() and "forge-out" not in p.parts)):
        text = (REPO / rel).read_text(errors="replace")
        assert not stale.search(text), f"{rel} still names //examples/...: {stale.search(text).group()}"
    quickstart = (REPO / "scripts/quickstart.sh").read_text()
    assert 'WORKSPACE_DIR="examples/atom"' in quickstart
    assert 'TARGET="${1:-//atom:graphics-aarch64}"' in quickstart
    head = (REPO / "README.md").read_text().split("## Concepts")[0]
    assert "cd examples/atom && forge build //atom:graphics-aarch64" in head
