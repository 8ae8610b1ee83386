"""A Session is one forge invocation's world: workspace, plugins, caches, reporter.

It owns the Load -> Analyze -> Key -> Execute -> Materialize flow (``build``), so the
CLI, ``forge.testing`` and benchmarks drive builds the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from forge.core.action_cache import ActionCache
from forge.core.actions import Action
from forge.core.analysis import Analyzer, action_graph
from forge.core.attach import attach_actions, materialized
from forge.core.cas import CAS
from forge.core.digests import FileDigests
from forge.core.errors import UsageError
from forge.core.execution import Outcome, Scheduler
from forge.core.keys_record import KeysRecord
from forge.core.labels import Label, parse_pattern
from forge.core.loading import Loader
from forge.core.options import BuildOptions
from forge.core.platforms import Platform, host_platform, parse_platform
from forge.core.providers import DefaultInfo, ImageInfo, IndexInfo
from forge.core.registry import (
    ExecutorRegistry,
    ExecutorSelection,
    RuleRegistry,
    make_plugin_manager,
)
from forge.core.report import NullReporter, Reporter, ReporterPlugin
from forge.core.rule import ConfiguredTarget
from forge.core.workspace import Workspace, find_workspace_root, load_workspace


@dataclass
class TargetSummary:
    label: Label
    platform: str
    status: str
    seconds: float
    digest: str
    size: int
    outputs: dict[str, str]
    path: str
    hermetic: bool
    executor: str | None = None  # the executor of the target's default action (--load uses it)


class Session:
    """One forge invocation: the workspace, its plugins, the caches and a reporter; ``build``
    runs Load -> Analyze -> Key -> Execute -> Materialize (plugin commands use it too)."""

    def __init__(self, start: Path | None = None, *, reporter: Reporter | None = None,
                 options: Mapping[str, Any] | None = None):
        self.options = options  # frozen: BuildOptions (a property)
        root = find_workspace_root(Path(start or os.getcwd()))
        self.workspace: Workspace = load_workspace(root)
        self.pm = make_plugin_manager(self.workspace.plugin_modules)
        self.rules = RuleRegistry()
        self.executors = ExecutorRegistry()
        self.pm.hook.forge_register_rules.call_historic(kwargs={"registry": self.rules})
        self.pm.hook.forge_register_executors.call_historic(kwargs={"registry": self.executors})
        configure_plugins(self.pm, self.workspace)
        self.reporter = reporter or NullReporter()
        # the reporter is a plugin on the report hooks, the one channel builds speak on
        self.pm.register(ReporterPlugin(self.reporter), name="forge-reporter")
        self.loader = Loader(self.workspace.root, self.rules, self.workspace.glob_excludes)
        self._cas: CAS | None = None
        self._ac: ActionCache | None = None
        self._digests: FileDigests | None = None

    @property
    def options(self) -> BuildOptions:
        """The command line's choices, frozen (``forge.BuildOptions``); assigning new
        ones (a mapping) replaces them whole, nobody edits them in place."""
        return self._options

    @options.setter
    def options(self, value: Mapping[str, Any] | None) -> None:
        self._options = value if isinstance(value, BuildOptions) else BuildOptions(value)

    # -- caches (created on first use so `forge query` never touches them) ----------
    @property
    def cache_dir(self) -> Path:
        return self.workspace.cache_dir

    @property
    def cas(self) -> CAS:
        if self._cas is None:
            self._cas = CAS(self.workspace.checked_cache_dir() / "cas")
        return self._cas

    @property
    def action_cache(self) -> ActionCache:
        if self._ac is None:
            self._ac = ActionCache(self.workspace.checked_cache_dir() / "ac", self.cas)
        return self._ac

    @property
    def file_digests(self) -> FileDigests:
        if self._digests is None:
            ws = blake3.blake3(str(self.workspace.root).encode()).hexdigest()[:16]
            self._digests = FileDigests(self.workspace.checked_cache_dir() / "stat-memo" / f"{ws}.json")
        return self._digests

    def executor(self, name: str) -> Any:
        return self.executors.get(name, self.workspace)

    @property
    def executor_selection(self) -> ExecutorSelection:
        """Which registered executor runs container work: the workspace's ``[build]
        executor`` / ``platform_executors``, checked against the registered names."""
        return ExecutorSelection(self.executors.names(), self.workspace)

    # -- platform ---------------------------------------------------------------------
    @property
    def default_platform(self) -> Platform:
        given = self.options.platform
        if given:
            return parse_platform(given)
        if self.workspace.platforms:
            return parse_platform(self.workspace.platforms[0])
        return host_platform()

    @property
    def epoch(self) -> int:
        """SOURCE_DATE_EPOCH, read once per build here and nowhere else: rules get it from
        the analysis context, and it enters the key of every action that writes a time."""
        from forge.core.workspace import source_date_epoch

        return source_date_epoch(os.environ.get("SOURCE_DATE_EPOCH"))

    # -- load + analyze ---------------------------------------------------------------
    def resolve(self, patterns: list[str]) -> list[Label]:
        if not patterns:
            raise UsageError("no target given; e.g. `forge build //...`")
        labels: dict[Label, None] = {}
        for text in patterns:
            labels.update(dict.fromkeys(self.loader.expand(parse_pattern(text))))
        return list(labels)

    def analyze(self, patterns: list[str]) -> tuple[list[ConfiguredTarget], Analyzer]:
        overrides = list(self.options.overrides)
        analyzer = Analyzer(self.loader, self.default_platform, self.epoch,
                            bool(self.workspace.section("build")["reproducible"]),
                            self.executor_selection, overrides)
        targets = [analyzer.analyze(label) for label in self.resolve(patterns)]
        for message in dict.fromkeys(analyzer.warnings):
            self.reporter.warning(message)
        if overrides:
            from forge.core.overrides import check_used

            check_used(overrides, analyzer.seen)
        return targets, analyzer

    # -- paths ------------------------------------------------------------------------
    def out_dir(self, label: Label) -> Path:
        return self.workspace.out_dir / label.package / label.name

    def log_path(self, action: Action) -> Path:
        return (self.workspace.out_dir / "logs" / action.label.package / action.label.name
                / f"{action.index:02d}-{action.mnemonic}.log")

    @property
    def keys_file(self) -> Path:
        return self.workspace.out_dir / ".forge" / "keys.json"

    def previous_keys(self) -> dict[str, Any]:
        """What the last builds keyed (``forge-out/.forge/keys.json``, core/keys_record.py)."""
        return KeysRecord(self.keys_file).load()

    # -- build ------------------------------------------------------------------------
    def remote_caches(self) -> list[Any]:
        found = self.pm.hook.forge_remote_caches(workspace=self.workspace, options=self.options)
        return [b for group in found if group for b in group]

    def build(self, patterns: list[str], *, no_cache: bool = False
              ) -> tuple[list[TargetSummary], dict[Action, Outcome]]:
        """Build ``patterns``; ``no_cache`` re-runs the requested targets' own actions (not
        their dependencies'), recording the new results."""
        targets, analyzer = self.analyze(patterns)
        attached = attach_actions(self, targets, analyzer)  # plugins' (SBOM, provenance…)
        graph = action_graph(targets)
        jobs = int(self.options.jobs or self.workspace.jobs)
        keep_going = self.options.keep_going or bool(self.workspace.section("build")["keep_going"])
        toplevel = frozenset(t.get(DefaultInfo).action for t in targets if t.get(DefaultInfo) is not None)
        toplevel |= attached
        fresh = frozenset(a for t in targets for a in t.actions) if no_cache else frozenset()
        scheduler = Scheduler(self, graph, jobs, keep_going, self.remote_caches(), toplevel=toplevel,
                              no_cache=fresh)
        try:
            outcomes = scheduler.run()
        finally:
            self.file_digests.save()
            self._save_keys(scheduler.manifests)
        summaries = []
        try:
            for target in targets:
                summaries.append(self._summarize(target, outcomes))
                self._materialize(target, outcomes)
        finally:
            self.cas.save()
        return summaries, outcomes

    def _save_keys(self, manifests: dict[str, Any]) -> None:
        KeysRecord(self.keys_file).save(manifests)

    def _summarize(self, target: ConfiguredTarget, outcomes: dict[Action, Outcome]) -> TargetSummary:
        default = target.get(DefaultInfo)
        own = [outcomes[a] for a in target.actions if a in outcomes]
        statuses = {o.status for o in own}
        for status in ("failed", "skipped", "built", "cached-remote", "cached-local"):
            if status in statuses:
                break
        else:
            status = "cached-local"
        seconds = sum(o.seconds for o in own)
        outcome = outcomes.get(default.action) if default else None
        result = outcome.result if outcome else None
        digest = ""
        outputs: dict[str, str] = {}
        size = 0
        if result is not None:
            outputs = {k: d.digest for k, d in result.outputs.items()}
            digest = next((outputs[k] for k in ("index", "manifest", "layer") if k in outputs),
                          next(iter(outputs.values()), ""))
            size = sum(d.size for d in result.blobs)
        platform = ""
        if ImageInfo in target:
            platform = str(target[ImageInfo].platform)
        elif IndexInfo in target:
            platform = ",".join(str(p) for p in target[IndexInfo].platforms)
        hermetic = all(a.hermetic for a in target.actions)
        return TargetSummary(target.label, platform, status, seconds, digest, size, outputs,
                             str(self.out_dir(target.label)), hermetic,
                             default.action.executor if default else None)

    def _materialize(self, target: ConfiguredTarget, outcomes: dict[Action, Outcome]) -> None:
        default = target.get(DefaultInfo)
        if default is None:
            return
        outcome = outcomes.get(default.action)
        if outcome is None or outcome.result is None:
            return
        dest = self.out_dir(target.label)
        if default.action.materialize is not None:
            default.action.materialize(self.cas, outcome.result, dest)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            for name, desc in outcome.result.outputs.items():
                self.cas.copy_out(desc.digest, dest / name)
        materialized(self, target, outcomes, dest)


def configure_plugins(pm: Any, workspace: Workspace) -> None:
    """Call each plugin's ``forge_configure`` with its own ``[plugins.<name>]`` table,
    through pluggy (hookwrappers and tracing apply), one plugin at a time.

    A table names a plugin by its registered name (``[plugins."acme.docker"]``) or, when
    no other loaded plugin shares it, by that name's last component (``[plugins.qemu]``
    for ``forge.plugins.qemu``); a table naming no loaded plugin, or a short name two
    plugins share, is an error at its WORKSPACE.toml line.
    """
    from forge.core.errors import ConfigError, did_you_mean

    plugins = dict(pm.list_name_plugin())
    short: dict[str, list[str]] = {}
    for name in plugins:
        short.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    tables: dict[str, dict[str, Any]] = {}
    for table, config in workspace.plugin_tables.items():
        if table in plugins:
            full = table
        elif len(short.get(table, [])) == 1:
            full = short[table][0]
        elif table in short:
            raise ConfigError(f"{workspace.where('plugins', table)}: [plugins.{table}] is ambiguous: "
                              f"{', '.join(sorted(short[table]))} are loaded; name one in full, "
                              f'e.g. [plugins."{sorted(short[table])[0]}"]')
        else:
            names = sorted({*short, *plugins})
            raise ConfigError(f"{workspace.where('plugins', table)}: [plugins.{table}] names no loaded "
                              f"plugin{did_you_mean(table, names)}; loaded: {', '.join(sorted(short))}")
        tables[full] = config
    impls = pm.hook.forge_configure.get_hookimpls()
    wrapping = {i.plugin_name for i in impls if i.hookwrapper or getattr(i, "wrapper", False)}
    for impl in impls:
        if impl.plugin_name in wrapping:
            continue
        # this plugin's implementation alone, inside every wrapper
        others = [i.plugin for i in impls if i.plugin_name not in (impl.plugin_name, *wrapping)]
        call = pm.subset_hook_caller("forge_configure", remove_plugins=others)
        call(workspace=workspace, config=tables.get(impl.plugin_name, {}))
