"""``forge doctor``: one screen of what works and what does not on this machine.

Each check says what it looked at and, when it fails, how to fix it. The exit status is
non-zero when something the workspace needs is missing: the engine, emulation for a
configured foreign platform, or a configured remote cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from forge.core.session import Session


@dataclass
class Check:
    """One line of ``forge doctor``: what was looked at, whether it works, the detail (and
    the fix when it does not); ``needed`` checks that fail make doctor exit 1."""

    name: str
    ok: bool
    detail: str
    needed: bool = True


def run_checks(session: Session) -> Iterator[Check]:
    from forge.core.cache_admin import stats
    from forge.core.platforms import host_platform
    from forge.core.report import human_size

    ws = session.workspace
    yield Check("workspace", True, f"{ws.name} at {ws.root}")
    host = host_platform()
    yield Check("host platform", True, str(host))

    for checks in session.pm.hook.forge_doctor_checks(session=session):
        yield from checks or ()  # engines (docker plugin), emulation per platform (qemu plugin)

    remote = ws.section("remote_cache")
    if remote.get("url"):
        from forge.core.oci.registry import redact_url

        shown = redact_url(remote["url"])  # a URL may carry a password: never print it
        try:
            backends = session.remote_caches()
        except Exception as exc:  # noqa: BLE001
            backends = None
            yield Check(f"remote cache {shown}", False, str(exc))
        for backend in backends or ():
            try:
                ping = getattr(backend, "ping", None)
                detail = ping() if ping else "configured"
            except Exception as exc:  # noqa: BLE001
                yield Check(f"remote cache {backend.describe()}", False, str(exc))
            else:
                yield Check(f"remote cache {backend.describe()}", True, detail)
        if backends == []:
            yield Check("remote cache", False, f"{shown} configured but no backend loaded")
    else:
        yield Check("remote cache", True, "not configured ([remote_cache] url)", needed=False)

    data = stats(session)
    yield Check("cache", True, f"{data['dir']}: {data['blobs']} blobs, {human_size(data['bytes'])}, "
                f"{data['actions']} action results")
    yield Check("plugins", True, ", ".join(sorted(n for n, _ in session.pm.list_name_plugin())))
    yield Check("rules", True, ", ".join(session.rules.names()))
