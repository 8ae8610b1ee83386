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

import blake3
import networkx as nx

from forge.core.action_cache import ActionCache
from forge.core.actions import Action, ActionResult, InputDigest, compute_key
from forge.core.cas import CAS, BlobMissing, Descriptor
from forge.core.digests import FileDigests
from forge.core.errors import (
    ActionFailed,
    CacheError,
    ForgeError,
    PlatformError,
    RemoteCacheError,
    RemoteEntryInvalid,
)
from forge.core.fsutil import write_atomic
from forge.core.platforms import host_platform

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
    counters: dict[str, int] = field(default_factory=dict)
    # small facts about where/how it ran (rc.note: the docker executor's "engine"),
    # reported with the action (--json: top-level keys), never in its result or key
    notes: dict[str, str] = field(default_factory=dict)
    started: float | None = None  # wall-clock time the worker took it (--json "started")


class RunContext:
    """What an action's ``run`` function gets, and nothing more: its declared params,
    inputs, platform and epoch, its dependencies' results, the CAS, executors, a log.

    There is no way from here back to the session, the workspace or the options: a run
    function that could read them could read a value outside its key.
    """

    def __init__(self, action: Action, results: dict[Action, ActionResult], cas: CAS,
                 executors: Callable[[str], Any], log: Callable[[str], None],
                 warn: Callable[[str], None], cancelled: threading.Event,
                 options: Any = None):
        self.action = action
        # The one unkeyed thing a run function gets, by BuildKit's rule: credentials are
        # not inputs. The target's secrets (id -> path or env:NAME) under --secret's,
        # and the SSH agents of the target and --ssh. Sources only: never their values.
        self.secrets: dict[str, str] = {**dict(action.secrets),
                                        **dict(getattr(options, "secrets", ()) or ())}
        self.ssh: tuple[str, ...] = tuple(dict.fromkeys(
            (*action.ssh, *(getattr(options, "ssh", ()) or ()))))
        self.cas: CAS = cas
        self.params = action.params
        self.platform = action.platform
        self.cancelled = cancelled
        self._results = results
        self._executors = executors
        self._log = log
        self._warn = warn
        self._tempdirs: list[Path] = []
        self.counters: dict[str, int] = {}
        self.notes: dict[str, str] = {}
        self._count_lock = threading.Lock()

    def count(self, name: str, n: int) -> None:
        """Add ``n`` to a counter of this run (bytes moved, layers sent…): reported with
        the action (``--json``: ``counters``), never part of its result or key."""
        with self._count_lock:
            self.counters[name] = self.counters.get(name, 0) + int(n)

    def note(self, name: str, value: str) -> None:
        """A fact about this run (e.g. ``engine``: the engine that ran it): reported with
        the action (``--json``: a top-level key of its event), never part of its result
        or key. A later note of the same name replaces the earlier one."""
        with self._count_lock:
            self.notes[name] = str(value)

    @property
    def epoch(self) -> int:
        """The SOURCE_DATE_EPOCH to write; only for actions declared with timestamps=True
        (so the epoch is in their key)."""
        if self.action.epoch is None:
            raise RuntimeError(f"{self.action} writes timestamps but was not declared with "
                               "timestamps=True, so the epoch is not in its key")
        return self.action.epoch

    def dep(self, action: Action) -> ActionResult:
        """The result of a dependency action (must be one of this action's deps)."""
        if action not in self.action.deps:
            raise RuntimeError(f"{self.action} reads {action} without declaring it as a dep")
        return self._results[action]

    def source(self, relpath: str = "") -> Path:
        """Where a declared input file is on this machine, or a directory that holds
        declared inputs (``""``: their package directory). A location, not content: the
        key holds the inputs' contents, and only declared inputs can be named."""
        prefix = relpath.rstrip("/") + "/" if relpath else ""
        for f in self.action.inputs:
            if f.relpath == relpath or f.relpath.startswith(prefix):
                root = f.abspath[: len(f.abspath) - len(f.relpath)]
                return Path(root + relpath) if relpath else Path(root)
        raise RuntimeError(f"{self.action} reads {relpath or 'its package'!r}, which holds no "
                           "declared input")

    def log(self, line: str) -> None:
        self._log(line.rstrip("\n"))

    def warn(self, message: str) -> None:
        """A warning for the user (the reporter) and the action's log."""
        self._log(f"warning: {message}")
        self._warn(f"{self.action.label}: {message}")

    def tempdir(self) -> Path:
        path = self.cas.tempdir()
        self._tempdirs.append(path)
        return path

    def executor(self, name: str) -> Any:
        return self._executors(name)

    def result(self, outputs: dict[str, Descriptor], blobs: Iterable[Descriptor] = (),
               metadata: dict[str, Any] | None = None) -> ActionResult:
        """The action's result: typed descriptors of its outputs and every blob they need,
        each checked against the CAS (present, with the size the descriptor says)."""
        for name, d in outputs.items():
            if not isinstance(d, Descriptor):
                raise TypeError(f"{self.action}: output {name!r} must be a Descriptor "
                                f"(e.g. rc.cas.put_bytes(...)), not {type(d).__name__}")
        result = ActionResult.make(outputs, blobs, metadata)
        for d in result.blobs:
            if self.cas.size(d.digest) != d.size:
                raise CacheError(f"{self.action}: blob {d.digest} is {self.cas.size(d.digest)} "
                                 f"bytes in the CAS, its descriptor says {d.size}")
        return result

    def cleanup(self) -> None:
        import shutil

        for path in self._tempdirs:
            shutil.rmtree(path, ignore_errors=True)


class _InputsChanged(Exception):
    """Sources changed between keying an action and the end of its run (an editor saving
    during the build): what it read may not be what its key hashed."""

    def __init__(self, files: list[str]):
        super().__init__(", ".join(files))
        self.files = files


class _Retry(Exception):
    """An action found dependencies whose blobs are corrupt, or gone from the remote cache
    they came from: re-run them, then it."""

    def __init__(self, deps: list[Action], why: str | None = "corrupt blobs in"):
        super().__init__(", ".join(str(d) for d in deps))
        self.deps = deps
        self.why = why


@dataclass
class Scheduler:
    session: Session
    graph: nx.DiGraph
    jobs: int
    keep_going: bool = False
    remote_caches: list[Any] = field(default_factory=list)
    # Actions whose bytes are needed when they come from a remote cache (the requested
    # targets' outputs, Bazel's --remote_download_toplevel); every other remote hit
    # brings its result record only, and its blobs when an action is about to read them.
    toplevel: frozenset[Action] = frozenset()
    # --no-cache: these actions run whatever the caches hold, and their results replace
    # the entries under their keys
    no_cache: frozenset[Action] = frozenset()
    outcomes: dict[Action, Outcome] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cas = self.session.cas
        self.ac: ActionCache = self.session.action_cache
        self.digests: FileDigests = self.session.file_digests
        self.hooks = self.session.pm.hook
        self.remote_required = self.session.options.remote_cache_required
        self.results: dict[Action, ActionResult] = {}
        self.cancelled = threading.Event()
        self._platform_lock = threading.Lock()
        self._prepared: dict[tuple[str, str], str | BaseException] = {}
        self._remote_lock = threading.Lock()
        self._warned: set[str] = set()
        self._keyed_inputs: dict[Action, list[InputDigest]] = {}
        self._lazy: dict[Action, tuple[Any, str]] = {}  # remote hits without their blobs
        self._fetch_locks: dict[Action, threading.Lock] = {}
        self._lost: set[str] = set()  # keys whose remote bytes are gone: build them here

    # -- keys -----------------------------------------------------------------------
    def compute_key(self, action: Action) -> str:
        """The pure ``compute_key``, plus this build's bookkeeping: the input digests for
        the after-the-run check, and the shown manifest for keys.json."""
        keyed = compute_key(action, self.digests, self.results)
        self._keyed_inputs[action] = list(keyed.inputs)
        self.manifests[action.id] = {
            "key": keyed.key, "manifest": shown_manifest(keyed.manifest),
            "label": str(action.label), "deps": [d.id for d in action.deps],
        }
        return keyed.key

    # -- the walk -------------------------------------------------------------------
    def run(self) -> dict[Action, Outcome]:
        graph = self.graph
        order = {a: i for i, a in enumerate(nx.lexicographical_topological_sort(graph, key=lambda a: a.id))}
        waiting = {a: graph.in_degree(a) for a in graph}
        ready = deque(sorted((a for a, n in waiting.items() if n == 0), key=order.get))
        to_run: deque[tuple[Action, str]] = deque()
        running: dict[Future, Action] = {}
        # Recovery: a dependency re-run because its blobs were corrupt goes through this
        # same walk (keyed, looked up, prepared, hooked, logged); the actions that found it
        # corrupt wait for it in `rerun_for` and are then re-keyed and run again, once.
        rerun_for: dict[Action, list[Action]] = {}
        retried: set[Action] = set()
        rekeyed: set[Action] = set()  # re-run once because their sources changed mid-run
        failed = False
        self.hooks.forge_build_started(total=len(graph))
        pool = ThreadPoolExecutor(max_workers=max(1, self.jobs), thread_name_prefix="forge-action")

        def finish(outcome: Outcome) -> None:
            action = outcome.action
            self.outcomes[action] = outcome
            if action.id in self.manifests:
                self.manifests[action.id]["status"] = outcome.status
            if outcome.result is not None:
                self.results[action] = outcome.result
            self.hooks.forge_action_finished(action=action, result=outcome.result,
                                             status=outcome.status, outcome=outcome)
            if action in rerun_for:  # a recovery re-run: wake only those waiting for it
                for waiter in rerun_for.pop(action):
                    waiting[waiter] -= 1
                    if waiting[waiter] == 0:
                        ready.append(waiter)
                return
            for succ in sorted(graph.successors(action), key=order.get):
                waiting[succ] -= 1
                if waiting[succ] == 0:
                    ready.append(succ)

        def recover(action: Action, corrupt: list[Action]) -> None:
            retried.add(action)
            waiting[action] = 0
            for dep in corrupt:
                self.ac.remove(self.outcomes[dep].key)
                self.results.pop(dep, None)
                if dep not in rerun_for:
                    rerun_for[dep] = []
                    ready.append(dep)
                rerun_for[dep].append(action)
                waiting[action] += 1

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
                    hit = None if action in self.no_cache else self.ac.lookup(key)
                    if hit is not None:
                        finish(Outcome(action, CACHED_LOCAL, key, hit))
                    else:
                        to_run.append((action, key))
                while to_run and len(running) < max(1, self.jobs) and not (failed and not self.keep_going):
                    action, key = to_run.popleft()
                    running[pool.submit(self._execute, action, key, action not in retried)] = action
                if failed and not self.keep_going:
                    while to_run:
                        finish(Outcome(to_run.popleft()[0], SKIPPED))
                if not running:
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    action = running.pop(fut)
                    try:
                        outcome = fut.result()
                    except _InputsChanged as exc:
                        if action in rekeyed:
                            finish(Outcome(action, FAILED, error=(
                                f"source files changed while the action ran, twice: {exc}; "
                                "nothing was recorded — build again when the files are saved"),
                                log_path=self.session.log_path(action)))
                            failed = True
                        else:  # run it once more, keyed on what the files hold now
                            rekeyed.add(action)
                            self.hooks.forge_warning(message=f"{action}: {exc} changed while it ran; "
                                                  "running it again on the new content")
                            ready.append(action)
                        continue
                    except _Retry as retry:
                        if retry.why:
                            self.hooks.forge_warning(message=f"{action}: {retry.why} {retry}; re-running them")
                        recover(action, retry.deps)
                        continue
                    if outcome.status == FAILED:
                        failed = True
                    finish(outcome)
        except KeyboardInterrupt:
            # Ctrl-C: tell running actions to stop (engine builds check this between output
            # chunks), drop queued ones, record nothing more, and do not wait.
            self.cancelled.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        except BaseException:
            # A failure that must stop the build (--remote-cache-required): the same, but
            # wait for running actions to stop so no engine build goes on behind our back.
            self.cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return self.outcomes

    # -- one action, in a worker ----------------------------------------------------
    def _execute(self, action: Action, key: str, may_retry: bool = True) -> Outcome:
        start = time.monotonic()
        started = time.time()
        remote = None if action in self.no_cache else self._remote_lookup(action, key)
        if remote is not None:
            if action not in self._lazy:  # recorded locally once its blobs are here
                remote = self.ac.record(key, remote, {"label": str(action.label), "mnemonic": action.mnemonic})
            return Outcome(action, CACHED_REMOTE, key, remote, time.monotonic() - start, started=started)
        lost = [dep for dep in action.deps if not self._fetch(dep)]
        if lost:  # their remote bytes are gone: run the producers here, then this action
            raise _Retry(lost, why=None)  # _fetch warned
        lines: list[str] = []
        log_path = self.session.log_path(action)

        def log(line: str) -> None:
            lines.append(line)
            self.hooks.forge_action_log(action=action, line=line)

        ctx = RunContext(action, self.results, self.cas, self.session.executor, log,
                         self._warn, self.cancelled, options=self.session.options)
        self.hooks.forge_action_started(action=action)
        try:
            self._prepare_platform(action)
            result = action.run(ctx)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an outcome
            corrupt = self._corrupt_deps(action) if isinstance(exc, BlobMissing) and may_retry else []
            message = str(exc) if isinstance(exc, ForgeError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, ForgeError | KeyboardInterrupt):
                lines.append(traceback.format_exc())
            self._write_log(log_path, lines)
            if corrupt:
                raise _Retry(corrupt) from None
            return Outcome(action, FAILED, key, None, time.monotonic() - start, message, log_path,
                           dict(ctx.counters), dict(ctx.notes), started)
        finally:
            ctx.cleanup()
        changed = self._changed_inputs(action)
        if changed:  # never record a result under a key of other content
            self._write_log(log_path, [*lines, f"inputs changed during the action: {', '.join(changed)}"])
            raise _InputsChanged(changed)
        self._write_log(log_path, lines)
        if lines:
            log_blob = self.cas.put_bytes(("\n".join(lines) + "\n").encode())
            result = result.with_log(log_blob.digest)
        held = self.ac.record(key, result, {"label": str(action.label), "mnemonic": action.mnemonic},
                              replace=action in self.no_cache)
        if held.digest != result.digest:  # another forge sharing the cache recorded it first
            log(f"another build recorded {key[:12]} first; using its result")
            result = held
        else:
            self._remote_upload(action, key, result)
        return Outcome(action, BUILT, key, result, time.monotonic() - start, log_path=log_path,
                       counters=dict(ctx.counters), notes=dict(ctx.notes), started=started)

    def _changed_inputs(self, action: Action) -> list[str]:
        """Inputs whose content is no longer what the key hashed (checked after the run,
        as Bazel does: cheap when stat data is unchanged, a re-hash when it is not)."""
        keyed = self._keyed_inputs.get(action, [])
        changed = []
        for src, before in zip(action.inputs, keyed, strict=True):
            try:
                now = self.digests.digest(src)
            except ForgeError:
                now = None
            if now != before:
                changed.append(src.relpath)
        return changed

    def _corrupt_deps(self, action: Action) -> list[Action]:
        """The dependencies whose blobs no longer verify (verify evicts the bad ones)."""
        corrupt = []
        for dep in action.deps:
            result = self.results.get(dep)
            if result is not None and not all([self.cas.verify(d) for d in result.all_blobs()]):
                corrupt.append(dep)
        return corrupt

    def _prepare_platform(self, action: Action) -> None:
        if action.executor is None or action.platform is None:
            return
        ident = (str(action.platform), action.executor)
        with self._platform_lock:
            if ident not in self._prepared:
                try:
                    self._prepared[ident] = self._platform_ready(action)
                except BaseException as exc:
                    self._prepared[ident] = exc
            state = self._prepared[ident]
        if isinstance(state, BaseException):
            raise state

    def _platform_ready(self, action: Action) -> str:
        """How ``action.platform`` runs for its executor: the first plugin that can make it
        runnable says how; the host's own platform needs none; else PlatformError with
        every reason the plugins give."""
        ask = {"platform": action.platform, "executor": action.executor,
               "workspace": self.session.workspace}
        how = self.hooks.forge_prepare_platform(**ask)
        if how is not None:
            return how
        if action.platform == host_platform():
            return "native"
        reasons = [r for r in self.hooks.forge_platform_unavailable(**ask) if r]
        raise PlatformError("; ".join(reasons) or (
            f"nothing can run {action.platform} actions on this {host_platform()} host for "
            f"executor {action.executor!r}: no plugin prepared it (is the qemu plugin loaded, "
            "or a native engine configured?)"))

    def _warn(self, message: str) -> None:
        self.hooks.forge_warning(message=message)

    # -- remote cache ---------------------------------------------------------------
    def _warn_once(self, ident: str, message: str) -> None:
        with self._remote_lock:
            if ident in self._warned:
                return
            self._warned.add(ident)
        self._warn(message)

    def _degrade(self, backend: Any, exc: BaseException) -> None:
        """A transport failure: stop using the backend for this build (one warning), or,
        under --remote-cache-required, stop the build."""
        with self._remote_lock:
            if backend in self.remote_caches:
                self.remote_caches.remove(backend)
        name = backend.describe()
        if self.remote_required:
            self.cancelled.set()
            raise RemoteCacheError(f"remote cache {name} failed (--remote-cache-required): {exc}")
        self._warn_once(name, f"remote cache {name} unusable, building locally: {exc}")

    def _remote_lookup(self, action: Action, key: str) -> ActionResult | None:
        if key in self._lost:
            return None
        lazy = action not in self.toplevel
        for backend in list(self.remote_caches):
            try:
                if lazy and hasattr(backend, "lookup_record") and hasattr(backend, "fetch"):
                    result = backend.lookup_record(key)
                    if result is not None and not all(self.cas.has(d) for d in result.all_blobs()):
                        with self._remote_lock:
                            self._lazy[action] = (backend, key)
                else:
                    result = backend.lookup(key, self.cas)
            except RemoteEntryInvalid as exc:
                # One bad entry costs one miss, not the backend.
                if self.remote_required:
                    self.cancelled.set()
                    raise RemoteCacheError(f"remote cache {backend.describe()}: {exc}") from None
                self._warn_once(f"{backend.describe()}#{key}",
                                f"remote cache {backend.describe()}: entry {key} for {action} is "
                                f"unusable, building it locally: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - a broken remote never fails a build
                self._degrade(backend, exc)
                continue
            if result is not None:
                return result
        return None

    def _fetch(self, action: Action) -> bool:
        """Bring the blobs of a result that came from a remote without them (called before
        an action that reads it runs); True when they are here. False when the remote no
        longer has them (evicted, deleted, unreachable): the result is lost, and its key
        is built here (Bazel's --rewind_lost_inputs), never reported as cached again."""
        with self._remote_lock:
            if action not in self._lazy:
                return True
            lock = self._fetch_locks.setdefault(action, threading.Lock())
        with lock:
            with self._remote_lock:
                pending = self._lazy.get(action)
            if pending is None:
                return action in self.results
            backend, key = pending
            result = self.results[action]
            try:
                backend.fetch(key, result, self.cas)
            except Exception as exc:  # noqa: BLE001 - lost bytes re-run their producer
                with self._remote_lock:
                    self._lazy.pop(action, None)
                    self._lost.add(key)
                if isinstance(exc, RemoteEntryInvalid):
                    self._warn_once(f"{backend.describe()}#{key}#lost",
                                    f"remote cache {backend.describe()}: the blobs of {action} "
                                    f"are gone ({exc}); building it here")
                else:  # the remote failed: one warning says so, and it is used no more
                    self._degrade(backend, exc)
                return False
            self.ac.record(key, result, {"label": str(action.label), "mnemonic": action.mnemonic})
            with self._remote_lock:
                self._lazy.pop(action, None)
            return True

    def _remote_upload(self, action: Action, key: str, result: ActionResult) -> None:
        for backend in list(self.remote_caches):
            if not getattr(backend, "writable", False):
                continue
            try:
                backend.upload(key, result, self.cas)
            except RemoteEntryInvalid as exc:
                # The key holds another (complete) result, e.g. a non-reproducible action
                # built twice: the cache stays consistent, so warn once and go on.
                self._warn_once(f"{backend.describe()}#{key}",
                                f"remote cache {backend.describe()}: {action}: {exc}")
            except Exception as exc:  # noqa: BLE001
                self._degrade(backend, exc)

    def _write_log(self, path: Path, lines: list[str]) -> None:
        if not lines:
            return
        with contextlib.suppress(OSError):  # a log that cannot be written fails no build
            write_atomic(path, ("\n".join(lines) + "\n").encode())


def shown_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The key manifest as written to keys.json and shown by ``forge explain``: build-arg
    values (often tokens from args files) appear as hashes, so a change is still named
    ("parameter 'build_args' changed") but no value is ever written out."""
    params = manifest.get("params") or {}
    if not isinstance(params.get("build_args"), dict):
        return manifest
    hidden = {k: "blake3:" + blake3.blake3(str(v).encode()).hexdigest()[:16]
              for k, v in params["build_args"].items()}
    return {**manifest, "params": {**params, "build_args": hidden}}


def raise_for_failures(outcomes: dict[Action, Outcome]) -> None:
    failures = [o for o in outcomes.values() if o.status == FAILED]
    if failures:
        parts = []
        for o in failures:
            where = f"\n  log: {o.log_path}" if o.log_path and o.log_path.exists() else ""
            parts.append(f"{o.action}: {o.error}{where}")
        raise ActionFailed("build failed:\n" + "\n".join(parts))
