"""Executing the action graph: keys, cache lookups, running, recording.

The main thread walks the graph in topological order. For each ready action it computes
the key (cheap: stat-memoized file digests + dependency result digests) and looks it up
in the local action cache; only misses go to the worker pool, where the remote cache is
asked and, failing that, the action runs. So a null build never touches a thread, and
``-j`` bounds only real work. A result is recorded only after all its blobs are in the
CAS; a failed, interrupted or killed action records nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from forge.core.action_cache import ActionCache
from forge.core.actions import Action, ActionResult, action_key, key_manifest
from forge.core.cas import CAS, BlobMissing
from forge.core.digests import FileDigests
from forge.core.errors import ActionFailed, ForgeError, RemoteCacheError

if TYPE_CHECKING:
    from forge.core.session import Session


BUILT, CACHED_LOCAL, CACHED_REMOTE, FAILED, SKIPPED = (
    "built", "cached-local", "cached-remote", "failed", "skipped",
)


@dataclass
class Outcome:
    action: Action
    status: str
    key: str = ""
    result: ActionResult | None = None
    seconds: float = 0.0
    error: str = ""
    log_path: Path | None = None


class RunContext:
    """What an action's ``run`` function gets: inputs, dependency results, CAS, logging."""

    def __init__(self, session: Session, action: Action, results: dict[Action, ActionResult],
                 log: Callable[[str], None], cancelled: threading.Event):
        self.session = session
        self.action = action
        self.cas: CAS = session.cas
        self.workspace = session.workspace
        self.params = action.params
        self.platform = action.platform
        self.cancelled = cancelled
        self._results = results
        self._log = log
        self._tempdirs: list[Path] = []

    def dep(self, action: Action) -> ActionResult:
        """The result of a dependency action (must be one of this action's deps)."""
        if action not in self.action.deps:
            raise RuntimeError(f"{self.action} reads {action} without declaring it as a dep")
        return self._results[action]

    def log(self, line: str) -> None:
        self._log(line.rstrip("\n"))

    def tempdir(self) -> Path:
        path = self.cas.tempdir()
        self._tempdirs.append(path)
        return path

    def executor(self, name: str) -> Any:
        return self.session.executor(name)

    def result(self, outputs: dict[str, str], blobs: Iterable[str] = (),
               metadata: dict[str, Any] | None = None) -> ActionResult:
        """Build a result, recording each blob's size so cache hits can check it cheaply."""
        all_blobs = sorted(set(blobs) | set(outputs.values()))
        sizes = {d: self.cas.size(d) for d in all_blobs}
        return ActionResult(dict(outputs), tuple(sorted(set(blobs))), sizes, metadata or {})

    def cleanup(self) -> None:
        import shutil

        for path in self._tempdirs:
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class Scheduler:
    session: Session
    graph: nx.DiGraph
    jobs: int
    keep_going: bool = False
    remote_caches: list[Any] = field(default_factory=list)
    outcomes: dict[Action, Outcome] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cas = self.session.cas
        self.ac: ActionCache = self.session.action_cache
        self.digests: FileDigests = self.session.file_digests
        self.reporter = self.session.reporter
        self.hooks = self.session.pm.hook
        self.results: dict[Action, ActionResult] = {}
        self.cancelled = threading.Event()
        self._platform_lock = threading.Lock()
        self._prepared: dict[tuple[str, str], str | BaseException] = {}
        self._remote_lock = threading.Lock()
        self._warned: set[str] = set()

    # -- keys -----------------------------------------------------------------------
    def compute_key(self, action: Action) -> str:
        inputs = [self.digests.digest(src) for src in action.inputs]
        deps = [self.results[d].digest for d in action.deps]
        manifest = key_manifest(action, inputs, deps)
        key = action_key(manifest)
        self.manifests[action.id] = {
            "key": key, "manifest": manifest, "label": str(action.label),
            "deps": [d.id for d in action.deps],
        }
        return key

    # -- the walk -------------------------------------------------------------------
    def run(self) -> dict[Action, Outcome]:
        graph = self.graph
        order = {a: i for i, a in enumerate(nx.lexicographical_topological_sort(graph, key=lambda a: a.id))}
        waiting = {a: graph.in_degree(a) for a in graph}
        ready = deque(sorted((a for a, n in waiting.items() if n == 0), key=order.get))
        to_run: deque[tuple[Action, str]] = deque()
        running: dict[Future, Action] = {}
        failed = False
        self.reporter.build_started(len(graph))
        pool = ThreadPoolExecutor(max_workers=max(1, self.jobs), thread_name_prefix="forge-action")

        def finish(outcome: Outcome) -> None:
            action = outcome.action
            self.outcomes[action] = outcome
            if action.id in self.manifests:
                self.manifests[action.id]["status"] = outcome.status
            if outcome.result is not None:
                self.results[action] = outcome.result
            self.reporter.action_finished(outcome)
            for succ in sorted(graph.successors(action), key=order.get):
                waiting[succ] -= 1
                if waiting[succ] == 0:
                    ready.append(succ)

        try:
            while ready or to_run or running:
                while ready:
                    action = ready.popleft()
                    if failed and not self.keep_going or any(
                        self.outcomes[d].status in (FAILED, SKIPPED) for d in action.deps
                    ):
                        finish(Outcome(action, SKIPPED))
                        continue
                    try:
                        key = self.compute_key(action)
                    except ForgeError as exc:
                        finish(Outcome(action, FAILED, error=str(exc)))
                        failed = True
                        continue
                    hit = self.ac.lookup(key)
                    if hit is not None:
                        finish(Outcome(action, CACHED_LOCAL, key, hit))
                        self.hooks.forge_action_finished(action=action, result=hit, status=CACHED_LOCAL)
                    else:
                        to_run.append((action, key))
                while to_run and len(running) < max(1, self.jobs) and not (failed and not self.keep_going):
                    action, key = to_run.popleft()
                    running[pool.submit(self._execute, action, key)] = action
                if failed and not self.keep_going:
                    while to_run:
                        finish(Outcome(to_run.popleft()[0], SKIPPED))
                if not running:
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    running.pop(fut)
                    outcome = fut.result()
                    if outcome.status == FAILED:
                        failed = True
                    finish(outcome)
        except KeyboardInterrupt:
            self.cancelled.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return self.outcomes

    # -- one action, in a worker ----------------------------------------------------
    def _execute(self, action: Action, key: str) -> Outcome:
        start = time.monotonic()
        remote = self._remote_lookup(action, key)
        if remote is not None:
            self.ac.record(key, remote, {"label": str(action.label), "mnemonic": action.mnemonic})
            self.hooks.forge_action_finished(action=action, result=remote, status=CACHED_REMOTE)
            return Outcome(action, CACHED_REMOTE, key, remote, time.monotonic() - start)
        lines: list[str] = []
        log_path = self.session.log_path(action)

        def log(line: str) -> None:
            lines.append(line)
            self.reporter.action_log(action, line)

        ctx = RunContext(self.session, action, self.results, log, self.cancelled)
        self.reporter.action_started(action)
        self.hooks.forge_action_started(action=action)
        try:
            self._prepare_platform(action)
            result = self._run_with_retry(action, ctx)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an outcome
            message = str(exc) if isinstance(exc, ForgeError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, ForgeError | KeyboardInterrupt):
                lines.append(traceback.format_exc())
            self._write_log(log_path, lines)
            self.hooks.forge_action_finished(action=action, result=None, status=FAILED)
            return Outcome(action, FAILED, key, None, time.monotonic() - start, message, log_path)
        finally:
            ctx.cleanup()
        self._write_log(log_path, lines)
        if lines:
            log_blob = self.cas.put_bytes(("\n".join(lines) + "\n").encode())
            result = ActionResult(result.outputs, result.blobs, result.sizes, result.metadata, log_blob.digest)
        self.ac.record(key, result, {"label": str(action.label), "mnemonic": action.mnemonic})
        self._remote_upload(action, key, result)
        self.hooks.forge_action_finished(action=action, result=result, status=BUILT)
        return Outcome(action, BUILT, key, result, time.monotonic() - start, log_path=log_path)

    def _run_with_retry(self, action: Action, ctx: RunContext) -> ActionResult:
        """Run; when a dependency's blob turns out corrupt, rebuild that dep once and retry."""
        try:
            return action.run(ctx)
        except BlobMissing:
            rebuilt = False
            for dep in action.deps:
                result = self.results[dep]
                if not all(self.cas.verify(d) for d in result.all_blobs()):
                    dep_key = self.outcomes[dep].key
                    self.ac.remove(dep_key)
                    dep_ctx = RunContext(self.session, dep, self.results, ctx._log, self.cancelled)
                    try:
                        new = dep.run(dep_ctx)
                    finally:
                        dep_ctx.cleanup()
                    self.ac.record(dep_key, new, {"label": str(dep.label), "mnemonic": dep.mnemonic})
                    self.results[dep] = new
                    rebuilt = True
            if not rebuilt:
                raise
            return action.run(ctx)

    def _prepare_platform(self, action: Action) -> None:
        if action.executor is None or action.platform is None:
            return
        ident = (str(action.platform), action.executor)
        with self._platform_lock:
            if ident not in self._prepared:
                try:
                    how = self.hooks.forge_prepare_platform(
                        platform=action.platform, executor=action.executor,
                        workspace=self.session.workspace,
                    )
                    self._prepared[ident] = how or "native"
                except BaseException as exc:
                    self._prepared[ident] = exc
            state = self._prepared[ident]
        if isinstance(state, BaseException):
            raise state

    # -- remote cache ---------------------------------------------------------------
    def _degrade(self, backend: Any, exc: BaseException) -> None:
        with self._remote_lock:
            if backend in self.remote_caches:
                self.remote_caches.remove(backend)
            name = backend.describe()
            if name not in self._warned:
                self._warned.add(name)
                self.reporter.warning(f"remote cache {name} unusable, building locally: {exc}")
        if self.session.options.get("remote_cache_required"):
            raise RemoteCacheError(f"remote cache {backend.describe()} failed: {exc}")

    def _remote_lookup(self, action: Action, key: str) -> ActionResult | None:
        for backend in list(self.remote_caches):
            try:
                result = backend.lookup(key, self.cas)
            except RemoteCacheError as exc:
                self._degrade(backend, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a broken remote never fails a build
                self._degrade(backend, exc)
                continue
            if result is not None:
                return result
        return None

    def _remote_upload(self, action: Action, key: str, result: ActionResult) -> None:
        for backend in list(self.remote_caches):
            if not getattr(backend, "writable", False):
                continue
            try:
                backend.upload(key, result, self.cas)
            except Exception as exc:  # noqa: BLE001
                self._degrade(backend, exc)

    def _write_log(self, path: Path, lines: list[str]) -> None:
        if not lines:
            return
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")


def raise_for_failures(outcomes: dict[Action, Outcome]) -> None:
    failures = [o for o in outcomes.values() if o.status == FAILED]
    if failures:
        parts = []
        for o in failures:
            where = f"\n  log: {o.log_path}" if o.log_path and o.log_path.exists() else ""
            parts.append(f"{o.action}: {o.error}{where}")
        raise ActionFailed("build failed:\n" + "\n".join(parts))
