"""``forge doctor``: one screen of what works and what does not on this machine.

Each check says what it looked at and, when it fails, how to fix it. The exit status is
non-zero when something the workspace needs is missing: the engine, emulation for a
configured foreign platform, or a configured remote cache.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

    failed: list[str] = []  # the names of failed plugin checks: no second probe of a dead engine
    for checks in session.pm.hook.forge_doctor_checks(session=session):
        for check in checks or ():  # engines (docker plugin), emulation per platform (qemu plugin)
            if not check.ok:
                failed.append(check.name)
            yield check
    yield from builder_checks(session, failed)
    yield tool_check("debootstrap", ["--version"], "debootstrap targets build Debian roots with it",
                     "apt-get install debootstrap")
    yield tool_check("dot", ["-V"], "`forge graph --format svg|png` draws with Graphviz's dot "
                     "(--format dot works without it)", "apt-get install graphviz", name="graphviz dot")

    remote = ws.section("remote_cache")
    if remote.get("url"):
        from forge.core.oci.reference import redact_url

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
    yield disk_check(Path(session.cache_dir))
    yield Check("plugins", True, ", ".join(sorted(n for n, _ in session.pm.list_name_plugin())))
    yield Check("rules", True, ", ".join(session.rules.names()))


LOW_DISK = 5 * 1024**3  # below this much free space next to the cache, doctor warns


def disk_check(cache_dir: Path) -> Check:
    """Free space on the file system of the cache dir (or of its nearest existing parent)."""
    from forge.core.report import human_size

    where = cache_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Check("disk space", False, f"{where}: {exc}", needed=False)
    detail = f"{human_size(usage.free)} free of {human_size(usage.total)} at {where}"
    if usage.free < LOW_DISK:
        return Check("disk space", False, f"{detail}: under {human_size(LOW_DISK)}; image builds "
                     "may run out of space (`forge cache gc --max-size 10G` trims the cache)", needed=False)
    return Check("disk space", True, detail)


def find_tool(name: str) -> str | None:
    """``name`` on PATH, or in the sbin directories a user's PATH often lacks (debootstrap)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/local/sbin", "/usr/sbin", "/sbin"):
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def tool_check(tool: str, version_args: list[str], why: str, install: str, name: str = "") -> Check:
    """A program forge runs for some targets or commands: where it is and its version, or
    why it is wanted and how to install it (a warning: only some workspaces need it)."""
    path = find_tool(tool)
    if path is None:
        return Check(name or tool, False, f"not found; {why}: {install}", needed=False)
    try:
        run = subprocess.run([path, *version_args], capture_output=True, text=True, timeout=10)
        version = (run.stdout.strip() or run.stderr.strip()).splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        version = ""
    return Check(name or tool, True, f"{path}" + (f" ({version})" if version else ""))


def builder_checks(session: Session, failed: list[str]) -> Iterator[Check]:
    """Which builders each engine offers, for executors that expose engine clients the
    Docker way (``hosts``, ``host_for``, ``client``): engines whose check failed are not
    asked again."""
    for name in session.executors.names():
        try:
            executor = session.executor(name)
        except Exception:  # noqa: BLE001 - the executor's own check says why
            continue
        if not all(hasattr(executor, a) for a in ("hosts", "host_for", "client")):
            continue
        hosts = {executor.host_for(None): None}
        for platform in executor.hosts:
            hosts.setdefault(executor.host_for(platform), platform)
        members = getattr(executor, "members", None)  # engine pools: every member
        for platform, member in members() if callable(members) else ():
            hosts.setdefault(member.url, platform)
        by_url = "host" in inspect.signature(executor.client).parameters
        for url, platform in hosts.items():
            if any(f.startswith(f"engine {url}") for f in failed):
                continue
            try:
                detail = engine_builders(executor.client(platform, url) if by_url
                                         else executor.client(platform))
            except Exception as exc:  # noqa: BLE001
                yield Check(f"builders {url}", False, f"could not ask the engine: {exc}", needed=False)
                continue
            yield Check(f"builders {url}", True, detail)


def engine_builders(client: Any) -> str:
    """The builders a Docker engine offers: the classic one always (forge's builds use it);
    BuildKit when the engine says it is its default (``Builder-Version: 2`` on /_ping,
    API 1.40+) or serves BuildKit's ``/session`` endpoint (Docker 18.09+; without the
    upgrade header it answers 400, an engine without BuildKit 404)."""
    api = client.api
    ping = api._get(api._url("/_ping"))
    default = ping.headers.get("Builder-Version", "")
    if default == "2":
        return "BuildKit (the engine's default), classic (forge builds with it)"
    session = api._post(api._url("/session"))
    if session.status_code != 404:
        return "classic (the engine's default; forge builds with it), BuildKit"
    return "classic only (forge builds with it; no BuildKit: Docker 18.09 and later have it)"
