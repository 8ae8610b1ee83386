"""forge_configure goes through pluggy, one plugin at a time, each with its own table."""

from __future__ import annotations

import pytest

from forge.core.errors import ConfigError
from forge.core.session import Session
from tests.cfg_one import sample as one
from tests.cfg_two import sample as two

MODULES = '[plugins]\nmodules = ["tests.cfg_one.sample", "tests.cfg_two.sample"]\n'


@pytest.fixture(autouse=True)
def _fresh():
    one.SEEN.clear()
    two.SEEN.clear()


def session(tmp_path, toml: str) -> Session:
    (tmp_path / "WORKSPACE.toml").write_text('[workspace]\nname = "cfg"\n' + MODULES + toml)
    return Session(tmp_path)


def test_each_plugin_gets_its_own_table_by_full_name(tmp_path):
    session(tmp_path, '[plugins."tests.cfg_one.sample"]\nlevel = 3\n')
    assert one.SEEN == [{"level": 3}]
    assert two.SEEN == [{}]


def test_a_short_name_two_plugins_share_is_ambiguous(tmp_path):
    with pytest.raises(ConfigError) as err:
        session(tmp_path, "[plugins.sample]\nlevel = 3\n")
    message = str(err.value)
    assert "WORKSPACE.toml:" in message and "ambiguous" in message
    assert "tests.cfg_one.sample" in message and "tests.cfg_two.sample" in message


def test_a_unique_short_name_still_works_and_a_typo_is_named(tmp_path):
    session(tmp_path, "[plugins.qemu]\nbinfmt_dir = \"/proc/sys/fs/binfmt_misc\"\n")
    with pytest.raises(ConfigError) as err:
        session(tmp_path, "[plugins.qemuu]\n")
    assert "did you mean 'qemu'" in str(err.value)


def test_configure_calls_go_through_pluggy(tmp_path):
    """A hookwrapper sees every plugin's configure call (the calls are not made by hand)."""
    (tmp_path / "WORKSPACE.toml").write_text('[workspace]\nname = "cfg"\n' + MODULES)
    from forge.core.registry import make_plugin_manager

    seen = []

    class Tracer:
        @forge_hookwrapper
        def forge_configure(self, config):
            seen.append(dict(config))
            yield

    from forge.core.session import configure_plugins
    from forge.core.workspace import load_workspace

    ws = load_workspace(tmp_path)
    pm = make_plugin_manager(ws.plugin_modules)
    pm.register(Tracer(), name="tracer")
    configure_plugins(pm, ws)
    configured = len(pm.hook.forge_configure.get_hookimpls()) - 1  # all but the tracer
    assert len(seen) == configured >= 3  # qemu and the two samples, each call wrapped
    assert one.SEEN == [{}] and two.SEEN == [{}]  # and each called exactly once


def forge_hookwrapper(fn):
    import forge

    return forge.hookimpl(hookwrapper=True)(fn)
