"""The ``forge`` command line.

Heavy modules (docker, oras, rich, networkx, starlark) are imported inside the commands
that need them, so ``forge --version`` and ``forge --help`` start in milliseconds.
Exit codes: 0 success, 1 build failure, 2 usage/BUILD/config error, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from forge import __version__


def _fail(exc: BaseException, verbose: bool, as_json: bool = False) -> None:
    from forge.core.errors import ForgeError

    if verbose:
        import traceback

        traceback.print_exception(exc)
    code = exc.exit_code if isinstance(exc, ForgeError) else 1
    if as_json:
        _json_error(type(exc).__name__.rstrip("_"), str(exc), code)  # AttributeError_ too
    click.echo(f"forge: error: {exc}", err=True)
    sys.exit(code)


def _wants_json(args: list[str]) -> bool:
    """Whether the command line asks for JSON output (``--json``, ``--progress=json``), read
    from the arguments themselves: an error may come before any command parsed them."""
    for i, arg in enumerate(args):
        if arg == "--":
            return False
        if arg in ("--json", "--progress=json") or (arg == "--progress" and args[i + 1:i + 2] == ["json"]):
            return True
    return False


def _json_error(kind: str, message: str, exit_code: int) -> None:
    """An error as the last JSON Lines event on stdout (the human message goes to stderr)."""
    from forge.core.report import strip_ansi

    click.echo(json.dumps({"event": "error", "kind": kind, "message": strip_ansi(message),
                           "exit_code": exit_code}, sort_keys=True))


def _summary(cmd: click.Command, limit: int) -> str:
    """A command's line in ``--help``, never cut off with "...": its ``short_help``, else
    the first sentence of its help when it fits, else the longest part of that sentence
    before a " (", ";", ":" or "," that fits (parentheses balanced), else the sentence."""
    import re

    if cmd.short_help:
        return cmd.short_help
    text = " ".join((cmd.help or "").split("\n\n")[0].split())
    match = re.match(r"(.*?\.)(?:\s|$)", text)
    sentence = match.group(1) if match else text
    if len(sentence) <= limit:
        return sentence
    cuts = [m.start() for m in re.finditer(r" \(|[;:,] ", sentence) if m.start() <= limit]
    for cut in reversed(cuts):
        head = sentence[:cut]
        if head.count("(") == head.count(")"):
            return head
    return sentence


class ForgeGroup(click.Group):
    """Turns ForgeError into a one-line message and an exit code; under ``--json`` the error
    is also a JSON object on stdout (click's usage errors too). Command summaries in
    ``--help`` are whole (click cuts them at ~45 characters with "...")."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, _summary(cmd, limit)) for name, cmd in rows])

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        given = list(args)  # parsing consumes them; invoke reads them again for --json
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # an option of the group itself: `forge --bad build --json`
            self._usage_json(exc, given)
            raise
        ctx.forge_args = given
        return ctx

    @staticmethod
    def _usage_json(exc: click.UsageError, args: list[str]) -> None:
        if _wants_json(list(args)) and not getattr(exc, "forge_json_shown", False):
            exc.forge_json_shown = True  # an outer group sees the same exception
            _json_error("UsageError", exc.format_message(), exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        from forge.core.errors import ForgeError

        args = getattr(ctx, "forge_args", [])
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a missing argument, an unknown option or command
            self._usage_json(exc, args)
            raise
        except ForgeError as exc:
            _fail(exc, ctx.obj.get("verbose", False) if ctx.obj else False, _wants_json(args))
        except KeyboardInterrupt:
            if _wants_json(args):
                _json_error("Interrupted", "interrupted; nothing half-done was recorded", 130)
                sys.stdout.flush()
            click.echo("forge: interrupted; nothing half-done was recorded", err=True)
            sys.stderr.flush()
            os._exit(130)


class PluginGroup(ForgeGroup):
    """A group that also offers the commands plugins add (``forge_cli_commands``), looked
    up only when a name is not built in (or for ``--help``): plugins are never loaded for
    ``forge --version`` or a built-in command."""

    def _path(self, ctx: click.Context) -> str:
        names = []  # the group's path below the root: "" for forge itself, "cache", ...
        while ctx.parent is not None:
            names.append(ctx.info_name or "")
            ctx = ctx.parent
        return " ".join(reversed(names))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        if found is not None:
            return found
        return plugin_commands(ctx).get(f"{self._path(ctx)} {name}".strip())

    def list_commands(self, ctx: click.Context) -> list[str]:
        here = self._path(ctx)
        extra = [path.rsplit(" ", 1)[-1] for path in plugin_commands(ctx)
                 if (path.rsplit(" ", 1)[0] if " " in path else "") == here]
        return sorted({*super().list_commands(ctx), *extra})


def plugin_commands(ctx: click.Context) -> dict[str, click.Command]:
    """Every plugin's commands by path ("cache push"): built-in plugins, entry points and
    the workspace's [plugins] modules when a workspace is found from the working dir."""
    root = ctx.find_root()
    cache = root.meta.setdefault("forge.plugin_commands", {})
    if not cache:
        from forge.core.registry import make_plugin_manager
        from forge.core.workspace import find_workspace_root, load_workspace

        modules: list[str] = []
        try:
            start = Path((root.obj or {}).get("cwd") or os.getcwd())
            modules = load_workspace(find_workspace_root(start)).plugin_modules
        except Exception:  # noqa: BLE001 - no (valid) workspace here: built-in plugins only
            pass
        for table in make_plugin_manager(modules).hook.forge_cli_commands():
            cache.update(table or {})
    return cache


def _session(ctx: click.Context, reporter=None, **options: Any):
    from forge.core.session import Session

    opts = dict(ctx.obj.get("options", {}))
    opts.update({k: v for k, v in options.items() if v is not None})
    return Session(Path(ctx.obj.get("cwd") or os.getcwd()), reporter=reporter, options=opts)


def _reporter(as_json: bool, progress: str = "auto"):
    """The reporter ``--progress`` names; ``auto``: live on a terminal outside CI, plain
    lines otherwise."""
    from forge.core.report import JsonReporter, LiveReporter, PlainReporter

    if as_json or progress == "json":
        return JsonReporter()
    if progress == "tty" or (progress == "auto" and sys.stderr.isatty()
                             and os.environ.get("CI", "").lower() not in ("true", "1")):
        return LiveReporter()
    return PlainReporter()


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="forge")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.option("-C", "--directory", "cwd", type=click.Path(file_okay=False), help="Run as if started in DIR.")
@click.pass_context
def main(ctx: click.Context, verbose: bool, cwd: str | None) -> None:
    """forge: build container images the way Bazel builds code."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["cwd"] = cwd


# -- build --------------------------------------------------------------------------------


PROGRESS = ("auto", "tty", "plain", "json")


@main.command(short_help="Build targets (like docker buildx bake, keyed and cached).")
@click.argument("patterns", nargs=-1, required=True)
@click.option("-j", "--jobs", type=int, help="Actions to run at once (default: CPU count).")
@click.option("-k", "--keep-going", is_flag=True, help="Build what can be built after a failure.")
@click.option("--platform", help="Platform(s) for targets that set none: linux/arm64, or "
                                 "amd64,arm64 to build each target for each (image targets "
                                 "then become an index).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines events on stdout (= --progress=json).")
@click.option("--progress", type=click.Choice(PROGRESS), default="auto", show_default=True,
              help="How to show progress: a live display on a terminal (tty), one line per "
                   "event (plain, what CI=true gives), JSON Lines (json).")
@click.option("--no-cache", is_flag=True, help="Run the named targets' own actions again (not "
                                                "their dependencies'), recording the new results.")
@click.option("--dry-run", is_flag=True, help="Print every action with its key and what the build "
                                               "would do (cached or run); run nothing.")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
              help="A build argument for every Dockerfile target (repeatable).")
@click.option("--set", "sets", multiple=True, metavar="TARGET.ATTR=VALUE",
              help="Override an attribute, as bake's --set: '//app:img.target=prod', "
                   "'*.build_args.V=2' (repeatable).")
@click.option("--secret", "secrets", multiple=True, metavar="id=ID,src=PATH|env=NAME",
              help="A secret for RUN --mount=type=secret in every Dockerfile step; never in "
                   "a key, a log or --json (repeatable).")
@click.option("--ssh", "ssh", multiple=True, metavar="ID[=SOCKET]",
              help="Forward an SSH agent (default: $SSH_AUTH_SOCK) to RUN --mount=type=ssh "
                   "(repeatable; not in keys).")
@click.option("--load", is_flag=True, help="Load built single-platform images into the Docker engine.")
@click.option("--tag", help="Tag for --load (default forge/<pkg>/<name>:latest).")
@click.option("--push", "push_ref", metavar="REF", help="Push the built image or index to REF.")
@click.option("--remote-cache", "remote_cache", help="Remote cache URL (registry/repository).")
@click.option("--remote-cache-write", is_flag=True, default=None, help="Upload results to the remote cache.")
@click.option("--no-remote-cache", is_flag=True, help="Do not use any remote cache.")
@click.option("--remote-cache-required", is_flag=True, help="Fail instead of warning when the remote cache fails.")
@click.pass_context
def build(ctx, patterns, jobs, keep_going, platform, as_json, progress, no_cache, dry_run,
          build_args, sets, secrets, ssh, load, tag, push_ref, remote_cache, remote_cache_write,
          no_remote_cache, remote_cache_required) -> None:
    """Build the targets matched by PATTERNS (//pkg:name, //pkg:all, //pkg/..., //...)."""
    from forge.core.execution import raise_for_failures
    from forge.core.overrides import parse_build_arg, parse_secret, parse_set

    overrides = [*(parse_build_arg(b) for b in build_args), *(parse_set(s) for s in sets)]
    options = dict(
        jobs=jobs, keep_going=keep_going or None, remote_cache_url=remote_cache,
        remote_cache_write=remote_cache_write, no_remote_cache=no_remote_cache or None,
        remote_cache_required=remote_cache_required or None, overrides=overrides or None,
        secrets=tuple(parse_secret(x) for x in secrets) or None, ssh=tuple(ssh) or None,
    )
    platforms = [p.strip() for p in (platform or "").split(",") if p.strip()] or [None]
    if dry_run:
        _print_plan(ctx, list(patterns), platforms, options, as_json or progress == "json", no_cache)
        return
    reporter = _reporter(as_json or progress == "json", progress)
    start = time.monotonic()
    runs = []
    counts: dict[str, int] = {}
    for one in platforms:
        session = _session(ctx, reporter, platform=one, **options)
        summaries, outcomes = session.build(list(patterns), no_cache=no_cache)
        for o in outcomes.values():
            counts[o.status] = counts.get(o.status, 0) + 1
        if len(platforms) > 1 and one != platforms[-1]:
            raise_for_failures(outcomes)  # the next platform's build would only repeat it
        runs.append(summaries)
    if len(platforms) > 1:
        from forge.core.materialize import combine_platforms

        summaries = combine_platforms(session, runs)
    session.pm.hook.forge_build_finished(summaries=summaries, seconds=time.monotonic() - start,
                                         counts=counts)
    raise_for_failures(outcomes)
    if load:
        from forge.core.errors import UsageError
        from forge.core.materialize import load_into_engine
        from forge.core.report import human_size

        loadable = [s for s in summaries if s.outputs.get("manifest") or s.outputs.get("index")]
        if tag and len(loadable) > 1:  # one tag cannot name two images: never overwrite silently
            raise UsageError(f"--tag {tag} names one image, but {len(loadable)} image targets were built "
                             f"({', '.join(str(s.label) for s in loadable)}); load them one at a "
                             "time, or leave out --tag (each gets forge/<pkg>/<name>:latest)")
        if not loadable:
            raise UsageError("--load: none of the targets is an image or an index")
        for s in loadable:
            for ref, counters in load_into_engine(session, s, tag):
                sent = counters.get("cas_to_engine_bytes", 0)
                click.echo(f"loaded {s.label} as {ref} ({human_size(sent)} of layers sent)", err=True)
    if push_ref:
        from forge.core.materialize import push_summaries

        digest = push_summaries(session, summaries, outcomes, push_ref, " ".join(patterns))
        click.echo(f"pushed {push_ref}@{digest}", err=True)


def _print_plan(ctx, patterns: list[str], platforms: list[str | None], options: dict,
                as_json: bool, no_cache: bool) -> None:
    """``--dry-run`` / ``aquery``: every action, keyed where a key is knowable, run never."""
    from forge.core.dryrun import plan

    for one in platforms:
        session = _session(ctx, None, platform=one, **options)
        fresh = frozenset()
        if no_cache:
            targets, _ = session.analyze(patterns)
            fresh = frozenset(a for t in targets for a in t.actions)
        for item in plan(session, patterns, no_cache=fresh,
                         remote=not options.get("no_remote_cache")):
            if as_json:
                click.echo(json.dumps(item.to_json(), sort_keys=True))
                continue
            key = item.key[:12] if item.key else "?" * 12
            waits = f" (after {', '.join(item.waits_for)})" if item.waits_for else ""
            platform = str(item.action.platform) if item.action.platform else "-"
            click.echo(f"{item.would:13} {key}  {item.action.id}  {platform}  "
                       f"{item.action.description}{waits}")


@main.command(short_help="List every action of a build with its key; run nothing.")
@click.argument("patterns", nargs=-1, required=True)
@click.option("--platform", help="As for build (a,b lists each platform's actions).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per action.")
@click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE")
@click.option("--set", "sets", multiple=True, metavar="TARGET.ATTR=VALUE")
@click.option("--no-remote-cache", is_flag=True, help="Do not ask any remote cache.")
@click.pass_context
def aquery(ctx, patterns, platform, as_json, build_args, sets, no_remote_cache) -> None:
    """Print every action the build of PATTERNS would consider: id, mnemonic, platform,
    inputs, params, deps and key, and whether it would be cached or run (Bazel's aquery;
    `forge build --dry-run` prints the same). An action below one that would run has no
    key yet: its key hashes that action's result."""
    from forge.core.overrides import parse_build_arg, parse_set

    overrides = [*(parse_build_arg(b) for b in build_args), *(parse_set(s) for s in sets)]
    platforms = [p.strip() for p in (platform or "").split(",") if p.strip()] or [None]
    _print_plan(ctx, list(patterns), platforms,
                {"overrides": overrides or None, "no_remote_cache": no_remote_cache or None},
                as_json, False)


@main.command(short_help="Build an image or index and push it to a registry.")
@click.argument("label")
@click.argument("ref")
@click.option("--platform", help="Default platform, as for build.")
@click.pass_context
def push(ctx, label, ref, platform) -> None:
    """Build LABEL (an image or index) and push it to REF (registry/repo:tag)."""
    from forge.core.materialize import push_target
    from forge.core.report import PlainReporter

    session = _session(ctx, PlainReporter(), platform=platform)
    digest = push_target(session, label, ref)
    click.echo(f"pushed {label} to {ref} ({digest})")
    click.echo(digest)


# -- query / graph / explain --------------------------------------------------------------


@main.group(cls=PluginGroup, short_help="Ask about targets: deps, rdeps, targets, why and more.")
def query() -> None:
    """Ask about targets: deps, rdeps, targets, why (plugins add sbom, provenance)."""


@query.command("targets")
@click.argument("patterns", nargs=-1, required=True)
@click.pass_context
def query_targets(ctx, patterns) -> None:
    """List targets matched by PATTERNS with their rule."""
    session = _session(ctx)
    for label in session.resolve(list(patterns)):
        click.echo(f"{session.loader.target(label).rule.name:16} {label}")


@query.command("deps", short_help="What PATTERNS depend on, transitively (them included).")
@click.argument("patterns", nargs=-1, required=True)
@click.pass_context
def query_deps(ctx, patterns) -> None:
    """Targets the PATTERNS depend on, transitively (themselves included)."""
    from forge.core.queries import deps

    session = _session(ctx)
    for label in deps(session.loader, session.resolve(list(patterns))):
        click.echo(str(label))


@query.command("rdeps")
@click.argument("patterns", nargs=-1, required=True)
@click.option("--universe", default="//...", show_default=True, help="Where to look for dependents.")
@click.pass_context
def query_rdeps(ctx, patterns, universe) -> None:
    """Targets in the universe that depend on PATTERNS, transitively."""
    from forge.core.queries import rdeps

    session = _session(ctx)
    roots = session.resolve(list(patterns))
    for label in rdeps(session.loader, session.resolve([universe]), roots):
        click.echo(str(label))


@query.command("why", short_help="Why PATH is in the layer of a minimize target.")
@click.argument("label")
@click.argument("path")
@click.option("--platform", help="Default platform, as for build.")
@click.pass_context
def query_why(ctx, label, path, platform) -> None:
    """Why PATH is in the layer of the minimize target LABEL: the chain of files that
    needed it, back to the requested path (builds LABEL first if it is not cached)."""
    from forge.core.queries import explain_path

    session = _session(ctx, platform=platform)
    for line in explain_path(session, label, path):
        click.echo(line)


@main.command(short_help="Draw the action graph (dot text, svg or png).")
@click.argument("patterns", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["dot", "svg", "png"]), default="dot", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File to write (svg/png default: forge-out/graph.<fmt>).")
@click.pass_context
def graph(ctx, patterns, fmt, output) -> None:
    """Draw the action graph of PATTERNS (dot text, or a picture through Graphviz)."""
    from forge.core.analysis import action_graph
    from forge.core.queries import render, to_dot

    session = _session(ctx)
    targets, _ = session.analyze(list(patterns))
    statuses = {ident: record.get("status", "") for ident, record in session.previous_keys().items()
                if isinstance(record, dict)}  # the last build's, coloured in the picture
    dot_text = to_dot(action_graph(targets), " ".join(patterns), statuses)
    if fmt == "dot" and not output:
        click.echo(dot_text, nl=False)
        return
    if fmt == "dot":
        Path(output).write_text(dot_text)
        return
    path = render(dot_text, fmt, Path(output) if output else session.workspace.out_dir / f"graph.{fmt}")
    click.echo(str(path))


@main.command(short_help="Say why LABEL's actions rebuilt, or would rebuild.")
@click.argument("label")
@click.option("--platform", help="Default platform, as for build.")
@click.pass_context
def explain(ctx, label, platform) -> None:
    """Say which inputs of which actions of LABEL changed, so why it rebuilt or would."""
    from forge.core.inspect import explain_target

    session = _session(ctx, platform=platform)
    for line in explain_target(session, label):
        click.echo(line)


# -- rules / plugins ----------------------------------------------------------------------


@main.command(short_help="Print the rules with their attributes and docs.")
@click.argument("names", nargs=-1)
@click.option("--markdown", is_flag=True, help="Print the README's rule reference.")
@click.pass_context
def rules(ctx, names, markdown) -> None:
    """Print every rule (or NAMES) with its attributes, types, defaults and docs."""
    from forge.core.inspect import describe_rules, rules_markdown

    session = _session(ctx)
    click.echo(rules_markdown(session.rules) if markdown else describe_rules(session.rules, list(names)))


@main.command()
@click.pass_context
def plugins(ctx) -> None:
    """List loaded plugins and the hooks each implements."""
    session = _session(ctx)
    for name, plugin in sorted(session.pm.list_name_plugin()):
        hooks = sorted(h.name for h in session.pm.get_hookcallers(plugin) or [])
        click.echo(f"{name}: {', '.join(hooks) or '-'}")


@main.command(short_help="Check engines, emulation, tools, caches and disk space.")
@click.pass_context
def doctor(ctx) -> None:
    """Check the engine(s), QEMU binfmt per platform, remote cache, cache dir, plugins."""
    from forge.core.doctor import run_checks

    session = _session(ctx)
    failed = False
    for check in run_checks(session):
        mark = "ok  " if check.ok else ("FAIL" if check.needed else "warn")
        failed |= not check.ok and check.needed
        first, *rest = check.detail.splitlines() or [""]
        click.echo(f"[{mark}] {check.name}: {first}")
        for line in rest:
            click.echo(f"       {line}")
    if failed:
        sys.exit(1)


# -- cache / clean ------------------------------------------------------------------------


@main.group(cls=PluginGroup, short_help="Inspect, trim and push the local cache.")
def cache() -> None:
    """Inspect and trim the local cache; push results to the remote cache."""


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def cache_stats(ctx, as_json) -> None:
    """Blob count and size, action cache entries, cache location."""
    from forge.core.cache_admin import stats
    from forge.core.report import human_size

    session = _session(ctx)
    data = stats(session)
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
        return
    click.echo(f"cache dir:      {data['dir']}")
    click.echo(f"blobs:          {data['blobs']} ({human_size(data['bytes'])})")
    click.echo(f"action results: {data['actions']}")


@cache.command("gc", short_help="Trim the cache to a size, least recently used first.")
@click.option("--max-size", required=True, help="Trim to this size, least recently used first (e.g. 10G, 500M).")
@click.option("--max-age", default="1h", show_default=True,
              help="Also remove cas/tmp entries that name no owner once this old (e.g. 30m, 2d); "
                   "those of dead forge processes go whatever their age.")
@click.pass_context
def cache_gc(ctx, max_size, max_age) -> None:
    """Delete whole results, least recently used first, until the cache fits MAX_SIZE, and
    what killed builds left in cas/tmp (never a running build's temp files)."""
    from forge.core.cache_admin import collect, parse_duration, parse_size
    from forge.core.report import human_size

    session = _session(ctx)
    cas = session.cas
    ours = _clean_engines(session, cas.has, dry_run=True)  # engine images of results held now
    report = collect(session, parse_size(max_size), debris_max_age=parse_duration(max_age))
    click.echo(f"removed {report.removed} blobs ({human_size(report.freed)}), {report.dropped} action "
               f"results, {report.debris.entries} temp entries of dead builds "
               f"({human_size(report.debris.bytes)})")
    _clean_engines(session, lambda d: d in ours and not cas.has(d))  # those of dropped results


def _clean_engines(session, select, dry_run: bool = False) -> set[str]:
    """What each executor left in its runtime for the results ``select`` picks; a runtime
    that does not answer is named, and skipped."""
    from forge.core.errors import ForgeError

    picked: set[str] = set()
    for name in session.executors.names():
        try:
            executor = session.executor(name)
            if not hasattr(executor, "clean"):
                continue
            found = executor.clean(select, dry_run=dry_run)
        except ForgeError as e:
            if not dry_run:
                click.echo(f"{name}: engine not cleaned: {e}", err=True)
            continue
        picked.update(found)
        if not dry_run:
            click.echo(f"{name}: removed the engine images of {len(found)} results")
    return picked


@main.command(short_help="Delete forge-out/ (and the cache or engine images).")
@click.option("--expunge", is_flag=True, help="Also delete the whole local cache directory.")
@click.option("--engine", is_flag=True,
              help="Also remove the engine images forge tagged for results in this cache.")
@click.pass_context
def clean(ctx, expunge, engine) -> None:
    """Delete forge-out/ (with --expunge the cache, with --engine forge's engine images)."""
    import shutil

    session = _session(ctx)
    if engine:  # first: which engine images are ours is known from the cache
        _clean_engines(session, session.cas.has)
    shutil.rmtree(session.workspace.out_dir, ignore_errors=True)
    click.echo(f"removed {session.workspace.out_dir}")
    if expunge:
        shutil.rmtree(session.cache_dir, ignore_errors=True)
        click.echo(f"removed {session.cache_dir}")


if __name__ == "__main__":  # pragma: no cover
    main()
