"""``forge cache push``: build targets (remote hits where possible, nothing written by the
build itself), then upload every action result of their graph to the remote cache,
writable whatever the configuration says (``push_results``), and the click command the
``forge_cli_commands`` hook adds (the CLI loads it only when asked).

The uploads are the backend's (``OciCache.push``, plugins/oci_cache.py); where the cache
is comes from plugins/cache_settings.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import forge
from forge import UsageError
from forge.plugins.cache_settings import settings_for
from forge.plugins.oci_cache import TRANSFER_THREADS, OciCache, PushStats


@dataclass
class PushSummary:
    remote: str
    actions: int = 0
    built: int = 0
    stats: PushStats = field(default_factory=PushStats)


def push_results(session: Any, patterns: list[str]) -> PushSummary:
    """Build ``patterns`` (cache hits where possible), then upload every action result of
    their graph to the remote cache, writable whatever the configuration says."""
    from forge import raise_for_failures

    settings = settings_for(session.workspace, {**session.options, "remote_cache_write": True})
    if settings is None:
        raise UsageError("no remote cache to push to: set [remote_cache] url in WORKSPACE.toml "
                         "or pass --remote-cache HOST/REPOSITORY")
    backend = OciCache(settings)
    options = session.options
    # The build itself only reads the remote; the uploads below count what they send.
    session.options = {**options, "remote_cache_write": False}
    try:
        _, outcomes = session.build(patterns)
    finally:
        session.options = options
    raise_for_failures(outcomes)
    summary = PushSummary(backend.describe())
    results = {o.key: o.result for o in outcomes.values() if o.key and o.result is not None}
    summary.actions = len(results)
    summary.built = sum(1 for o in outcomes.values() if o.status == "built")
    with ThreadPoolExecutor(max_workers=TRANSFER_THREADS, thread_name_prefix="forge-push") as pool:
        for stats in pool.map(lambda kv: backend.push(kv[0], kv[1], session.cas), sorted(results.items())):
            summary.stats.add(stats)
    return summary


@forge.hookimpl
def forge_cli_commands() -> dict[str, Any]:
    """``forge cache push``: this plugin's command (the CLI loads it only when asked)."""
    import os
    from pathlib import Path

    import click

    @click.command("push")
    @click.argument("patterns", nargs=-1, required=True)
    @click.option("--remote-cache", "remote_cache", help="Remote cache URL (default: [remote_cache] url).")
    @click.option("--platform", help="Default platform, as for build.")
    @click.option("-j", "--jobs", type=int, help="Actions to run at once, if some must be built.")
    @click.pass_context
    def cache_push(ctx, patterns, remote_cache, platform, jobs) -> None:
        """Upload every action result of PATTERNS' graph to the remote cache (building what
        the local cache lacks first), whether or not the remote is configured writable."""
        options = {k: v for k, v in {"platform": platform, "jobs": jobs,
                                     "remote_cache_url": remote_cache}.items() if v is not None}
        cwd = (ctx.find_root().obj or {}).get("cwd") or os.getcwd()
        session = forge.Session(Path(cwd), reporter=forge.PlainReporter(), options=options)
        s = push_results(session, list(patterns))
        click.echo(f"{s.actions} action results ({s.built} built now): {s.stats.results} pushed to "
                   f"{s.remote}, {s.stats.present} already there; {s.stats.blobs} blobs "
                   f"({forge.human_size(s.stats.bytes)}) uploaded")
        if s.stats.conflicts:
            click.echo(f"{s.stats.conflicts} key(s) already held another result in the remote: kept "
                       "(first writer wins; the action may not be reproducible)")
        if s.stats.repaired:
            click.echo(f"{s.stats.repaired} broken remote entr{'y' if s.stats.repaired == 1 else 'ies'} replaced")

    return {"cache push": cache_push}
