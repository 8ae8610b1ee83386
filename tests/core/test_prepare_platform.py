"""forge_prepare_platform: a plugin that cannot help returns None and the next one may
offer itself; when none can, the action fails with the reasons plugins give."""

from __future__ import annotations

from types import SimpleNamespace

import pluggy
import pytest

import forge
from forge.core import hookspecs
from forge.core.errors import PlatformError
from forge.core.execution import Scheduler
from forge.core.platforms import host_platform, parse_platform

RISCV = parse_platform("linux/riscv64")


class Declines:
    asked: list = []

    @forge.hookimpl(tryfirst=True)
    def forge_prepare_platform(self, platform, executor, workspace):
        self.asked.append(str(platform))
        return None

    @forge.hookimpl
    def forge_platform_unavailable(self, platform, executor, workspace):
        return f"{platform}: no riscv board attached (plug one in)"


class Offers:
    @forge.hookimpl
    def forge_prepare_platform(self, platform, executor, workspace):
        return f"a native {platform} engine" if platform == RISCV else None


def ready(*plugins, platform=RISCV) -> str:
    pm = pluggy.PluginManager("forge")
    pm.add_hookspecs(hookspecs)
    for plugin in plugins:
        pm.register(plugin)
    fake = SimpleNamespace(hooks=pm.hook, session=SimpleNamespace(workspace=None))
    action = SimpleNamespace(platform=platform, executor="docker")
    return Scheduler._platform_ready(fake, action)


def test_a_plugin_that_cannot_help_lets_the_next_offer_itself():
    Declines.asked = []
    assert ready(Declines(), Offers()) == "a native linux/riscv64 engine"
    assert Declines.asked == ["linux/riscv64"]  # it was asked first, and declined


def test_nobody_answers_fails_with_the_plugins_reasons():
    with pytest.raises(PlatformError) as err:
        ready(Declines())
    assert "no riscv board attached (plug one in)" in str(err.value)
    with pytest.raises(PlatformError) as err:
        ready()
    assert "no plugin prepared it" in str(err.value)


def test_the_host_platform_needs_no_plugin():
    assert ready(platform=host_platform()) == "native"
