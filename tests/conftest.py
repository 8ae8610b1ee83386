"""Shared fixtures: ``forge.testing`` gives ``forge_workspace``; the services live in
``tests/services.py`` (each test that needs the engine, registry or QEMU asks for it)."""

pytest_plugins: list[str] = []
