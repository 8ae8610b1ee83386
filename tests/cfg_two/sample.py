"""A plugin whose last name, ``sample``, another test plugin shares (tests/test_configure.py)."""

import forge

SEEN: list[dict] = []


@forge.hookimpl
def forge_configure(workspace, config):
    SEEN.append(dict(config))
