"""Every hook a forge plugin can implement, grouped by the build phase that calls it.

Registration and configuration hooks are ``historic`` so a plugin registered late (from
``[plugins]`` in WORKSPACE.toml) still sees them; "give me the one X" hooks are
``firstresult``. Never both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from forge.core.actions import Action, ActionResult
    from forge.core.attach import AttachContext
    from forge.core.doctor import Check
    from forge.core.execution import Outcome
    from forge.core.labels import Label
    from forge.core.oci.delta import DeltaCodecRegistry
    from forge.core.options import BuildOptions
    from forge.core.platforms import Platform
    from forge.core.registry import ExecutorRegistry, RuleRegistry
    from forge.core.rule import ConfiguredTarget
    from forge.core.session import Session, TargetSummary
    from forge.core.workspace import Workspace

hookspec = pluggy.HookspecMarker("forge")
hookimpl = pluggy.HookimplMarker("forge")  # the same marker as ``forge.hookimpl``, for core

# -- configure ------------------------------------------------------------------------


@hookspec
def forge_configure(workspace: Workspace, config: dict[str, Any]) -> None:
    """Called once the workspace is loaded, with this plugin's ``[plugins.<name>]`` table.

    forge calls each implementation with its own table (not historic: every plugin is
    registered before the workspace is configured).

    :param workspace: the loaded workspace (root, cache dir, sections).
    :param config: the plugin's own table (empty when absent); validate it and raise
        ``forge.ConfigError`` naming the key on a mistake.
    :returns: nothing.
    """


# -- rules ----------------------------------------------------------------------------


@hookspec(historic=True)
def forge_register_rules(registry: RuleRegistry) -> None:
    """Called at start-up so the plugin can add its rule classes.

    :param registry: call ``registry.add(RuleClass)``; a duplicate name is refused.
    :returns: nothing.
    """


# -- analysis -------------------------------------------------------------------------


@hookspec
def forge_attach_actions(target: ConfiguredTarget, ctx: AttachContext) -> list[Action] | None:
    """Called after analysis for each requested target, so a plugin can build more with
    it (the supply chain plugin's SBOM and provenance of an image).

    :param target: the analyzed target (``target[forge.ImageInfo]``, ``target.actions``).
    :param ctx: the build's analysis (``ctx.dependencies(target)``, ``ctx.workspace``,
        ``ctx.options``, ``ctx.memo``) and ``ctx.action(target, mnemonic, run, ...)``,
        which declares an action of the target as ``AnalysisContext.action`` does.
    :returns: the actions to build with the target (they join its actions, so they are
        requested: cached, keyed and reported like its own), or None.
    """


# -- execute --------------------------------------------------------------------------


@hookspec(historic=True)
def forge_register_executors(registry: ExecutorRegistry) -> None:
    """Called at start-up so the plugin can add executors (what runs containers).

    :param registry: call ``registry.add(name, factory)``; ``factory(workspace)``
        returns a ``forge.Executor``, created lazily on first use.
    :returns: nothing.
    """


@hookspec(firstresult=True)
def forge_prepare_platform(platform: Platform, executor: str, workspace: Workspace) -> str | None:
    """Called on a worker thread before the first action that must *execute* on
    ``platform`` runs (once per platform and executor in a build).

    A plugin that can make the platform runnable for ``executor`` (it runs natively, QEMU
    binfmt, a native remote engine) does so and returns a one-line description of how;
    one that cannot returns None, so the next implementation may offer itself. The
    first description wins. When none answers, the action fails with the reasons
    ``forge_platform_unavailable`` gives (a platform equal to the host's runs natively
    without any plugin).

    :param platform: the normalized target platform.
    :param executor: the executor name that will run the action (e.g. ``docker``).
    :param workspace: the loaded workspace.
    :returns: how the platform runs (``native``, ``QEMU emulation (…)``), or None.
    """


@hookspec
def forge_platform_unavailable(platform: Platform, executor: str, workspace: Workspace) -> str | None:
    """Called on a worker thread when no ``forge_prepare_platform`` implementation could
    make ``platform`` runnable: a plugin that knows why says so.

    :returns: one line with the exact fix (e.g. the ``update-binfmts`` command), or None.
    """


@hookspec(historic=True)
def forge_register_delta_codecs(registry: DeltaCodecRegistry) -> None:
    """Called when delta codecs are first needed (analysis of an ``image_delta`` target,
    ``forge delta``, ``forge apply-delta``) so the plugin can add codecs.

    :param registry: call ``registry.add(codec)``; a codec (``forge.oci.DeltaCodec``) has
        a ``name`` (what ``image_delta(codec = ...)`` says), the ``media_type`` of its delta
        blobs, ``fingerprint(level)`` (enters the delta action's key), ``make(sources,
        target, out, level)`` and ``apply(prefix, delta, out)``; a duplicate name is refused.
    :returns: nothing.
    """


# -- cache ----------------------------------------------------------------------------


@hookspec
def forge_remote_caches(workspace: Workspace, options: BuildOptions) -> list[Any] | None:
    """Called once per build to collect remote cache backends.

    :param workspace: the loaded workspace; ``[remote_cache]`` is in its sections.
    :param options: the build's frozen command-line choices (``forge.BuildOptions``, a
        read-only mapping): ``remote_cache_url``, ``remote_cache_write``,
        ``no_remote_cache``, ``remote_cache_required``, and ``url``, ``read``, ``write``,
        ``enabled``, ``insecure`` from plugin commands.
    :returns: a list of ``forge.RemoteCache`` backends (``lookup``, ``upload``, ``ping``,
        ``describe``, ``writable``), or None.
    """


# -- materialize and publish ------------------------------------------------------------


@hookspec
def forge_target_materialized(session: Session, label: Label, results: dict[Action, ActionResult],
                              dest: Path) -> None:
    """Called after a requested target was written to forge-out (its image layout).

    :param session: the session (workspace, options, CAS).
    :param label: the target.
    :param results: the results of the target's actions, attached ones included, and of
        every action they read (an index's images among them).
    :param dest: its forge-out directory.
    :returns: nothing.
    """


@hookspec
def forge_target_pushed(session: Session, label: Label, results: dict[Action, ActionResult],
                        client: Any, repository: str, digest: str) -> None:
    """Called by ``forge push`` after the target's image or index is in the registry.

    :param session: the session.
    :param label: the target pushed.
    :param results: the results of the build's actions (the target's, attached ones and
        what they read among them): a plugin picks those about ``digest``.
    :param client: the ``forge.oci.RegistryClient`` of the registry pushed to.
    :param repository: the repository in it.
    :param digest: the manifest (or index) digest pushed.
    :returns: nothing.
    """


# -- commands and checks -------------------------------------------------------------


@hookspec
def forge_doctor_checks(session: Session) -> list[Check] | None:
    """Called by ``forge doctor`` after the workspace and host lines, once per plugin.

    :param session: the session (workspace, executors, plugin manager).
    :returns: the plugin's checks (``forge.DoctorCheck``: name, ok, detail, needed), or None.
    """


@hookspec
def forge_cli_commands() -> dict[str, Any] | None:
    """Called when the CLI looks up a command it does not define itself (and for
    ``--help``), so ``forge --version`` and built-in commands never load plugins.

    :returns: click commands by their path, e.g. ``{"cache push": command}``, or None.
    """


# -- report ---------------------------------------------------------------------------
# One event channel: the scheduler fires these and nothing else; the terminal, plain and
# JSON reporters are plugins on them (``forge.core.report.ReporterPlugin``), pytest-style.
# Each says which thread calls it: an implementation called from worker threads must be
# thread-safe.


@hookspec
def forge_build_started(total: int) -> None:
    """Called on the main thread when the scheduler starts walking the action graph.

    :param total: the number of actions in the graph.
    :returns: nothing.
    """


@hookspec
def forge_action_started(action: Action) -> None:
    """Called from the worker thread that is about to execute ``action`` (not for cache
    hits).

    :param action: the action.
    :returns: nothing.
    """


@hookspec
def forge_action_log(action: Action, line: str) -> None:
    """Called from the worker thread running ``action`` for each line of its log.

    :param action: the action.
    :param line: one line, without its newline.
    :returns: nothing.
    """


@hookspec
def forge_action_finished(action: Action, result: ActionResult | None, status: str,
                          outcome: Outcome) -> None:
    """Called on the main thread when an action is done, once per action: built,
    cached-local, cached-remote, failed or skipped (a recovery re-run reports again).

    :param action: the action.
    :param result: its result (None when it failed or was skipped).
    :param status: ``built``, ``cached-local``, ``cached-remote``, ``failed`` or ``skipped``.
    :param outcome: everything known about it (key, seconds, error, log path, counters).
    :returns: nothing.
    """


@hookspec
def forge_warning(message: str) -> None:
    """Called (from any thread) for a warning the user must see, e.g. a remote cache
    turned off for the build.

    :param message: one line, never with credentials.
    :returns: nothing.
    """


@hookspec
def forge_build_finished(summaries: list[TargetSummary], seconds: float, counts: dict[str, int]) -> None:
    """Called on the main thread when a build is done, before anything is loaded or
    pushed.

    :param summaries: one per requested target.
    :param seconds: the build's wall-clock time.
    :param counts: actions per status.
    :returns: nothing.
    """
