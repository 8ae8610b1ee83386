"""BuildOptions: the command line's choices, frozen (issue 12)."""

from __future__ import annotations

import pytest

import forge
from forge.core.options import BuildOptions


def test_options_are_a_read_only_mapping_with_typed_views():
    o = BuildOptions({"jobs": 2, "overrides": ["x"], "platform": None, "keep_going": True})
    assert dict(o) == {"jobs": 2, "overrides": ("x",), "keep_going": True}  # None = not given
    assert o.jobs == 2 and o.keep_going and o.overrides == ("x",) and o.platform is None
    assert o.get("no_remote_cache") is None and {**o}["jobs"] == 2
    with pytest.raises(TypeError):
        o["jobs"] = 3  # type: ignore[index]
    with pytest.raises(AttributeError):
        o.jobs = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        o._values = {}
    new = o.replace(jobs=1, keep_going=None)
    assert (new.jobs, new.keep_going, o.jobs) == (1, False, 2)
    assert forge.BuildOptions is BuildOptions


def test_a_session_holds_frozen_options_and_hooks_cannot_write_into_them(tmp_path):
    (tmp_path / "WORKSPACE.toml").write_text('[workspace]\nname = "o"\n')
    session = forge.Session(tmp_path, options={"jobs": 3, "remote_cache_required": True})
    assert isinstance(session.options, BuildOptions) and session.options.jobs == 3
    assert session.options.remote_cache_required
    with pytest.raises(TypeError):
        session.options["jobs"] = 1  # type: ignore[index]
    session.options = {**session.options, "jobs": 1}  # replaced whole, still frozen
    assert isinstance(session.options, BuildOptions) and session.options.jobs == 1
