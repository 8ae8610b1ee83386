"""How a build shows itself: live progress on a terminal, plain lines in CI, JSON Lines
for machines, and the summary table at the end.

Reporters are plugins on the report hooks (``ReporterPlugin``; the scheduler fires only
those, some from worker threads) and must be cheap: a null build of thousands of actions
goes through ``action_finished`` for each.
``rich`` is imported only by the live reporter.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from forge.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from forge.core.actions import Action
    from forge.core.execution import Outcome
    from forge.core.session import TargetSummary


# CSI sequences (colours, cursor moves) and OSC sequences (titles, links) that engines and
# the tools they run write into their output.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]+[0-~]|\x1b[0-9=>@-Z\\-_]")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (Docker's output has colours)."""
    return _ANSI.sub("", text)


def counts_line(summaries: list[TargetSummary], seconds: float, counts: dict[str, int]) -> str:
    """The closing line of a build, the same in every mode: targets, time, action counts."""
    return (f"{len(summaries)} target(s) in {seconds:.2f}s: "
            + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


def human_size(n: int) -> str:
    """``n`` bytes as people read them: 512 B, 1.5 KB, 3.2 MB, 1.1 GB."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


class Reporter:
    """Base reporter: ignores everything. Subclasses override what they show."""

    def build_started(self, total: int) -> None: ...
    def action_started(self, action: Action) -> None: ...
    def action_log(self, action: Action, line: str) -> None: ...
    def action_finished(self, outcome: Outcome) -> None: ...
    def warning(self, message: str) -> None: ...
    def build_finished(self, summaries: list[TargetSummary], seconds: float, counts: dict[str, int]) -> None: ...


NullReporter = Reporter


class ReporterPlugin:
    """A reporter as a plugin on the report hooks (core/hookspecs.py): the only way the
    scheduler tells anyone what happens. Registered by the session."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter

    @hookimpl
    def forge_build_started(self, total: int) -> None:
        self.reporter.build_started(total)

    @hookimpl
    def forge_action_started(self, action: Action) -> None:
        self.reporter.action_started(action)

    @hookimpl
    def forge_action_log(self, action: Action, line: str) -> None:
        self.reporter.action_log(action, line)

    @hookimpl
    def forge_action_finished(self, outcome: Outcome) -> None:
        self.reporter.action_finished(outcome)

    @hookimpl
    def forge_warning(self, message: str) -> None:
        self.reporter.warning(message)

    @hookimpl
    def forge_build_finished(self, summaries: list[TargetSummary], seconds: float,
                             counts: dict[str, int]) -> None:
        self.reporter.build_finished(summaries, seconds, counts)


def summary_json(summaries: list[TargetSummary], seconds: float, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "event": "summary",
        "seconds": round(seconds, 3),
        "counts": counts,
        "targets": [
            {
                "label": str(s.label), "platform": s.platform, "status": s.status,
                "seconds": round(s.seconds, 3), "digest": s.digest, "size": s.size,
                "outputs": s.outputs, "path": s.path, "hermetic": s.hermetic,
            }
            for s in summaries
        ],
    }


class PlainReporter(Reporter):
    """One line per event: for CI logs and pipes."""

    def __init__(self, stream: IO[str] | None = None, show_logs: bool = True):
        self.stream = stream or sys.stderr
        self.show_logs = show_logs
        self._lock = threading.Lock()
        self.done = 0
        self.total = 0

    def _print(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def build_started(self, total: int) -> None:
        self.total = total

    def action_started(self, action: Action) -> None:
        self._print(f"[start] {action}")

    def action_log(self, action: Action, line: str) -> None:
        if self.show_logs:
            self._print(f"  {action.label} | {line}")

    def action_finished(self, outcome: Outcome) -> None:
        self.done += 1
        if outcome.status in ("built", "failed", "cached-remote"):
            extra = f": {outcome.error}" if outcome.error else ""
            self._print(f"[{self.done}/{self.total}] {outcome.status} {outcome.action} "
                        f"({outcome.seconds:.1f}s){extra}")

    def warning(self, message: str) -> None:
        self._print(f"WARNING: {message}")

    def build_finished(self, summaries, seconds, counts) -> None:
        self._print(counts_line(summaries, seconds, counts))
        for s in summaries:
            flag = "" if s.hermetic else " (non-hermetic)"
            self._print(f"  {s.label}  {s.platform or '-'}  {s.status}{flag}  {s.seconds:.1f}s  "
                        f"{s.digest[:19] or '-'}  {human_size(s.size)}")


class JsonReporter(Reporter):
    """JSON Lines on stdout: one object per action, a summary object last."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def _emit(self, obj: dict[str, Any]) -> None:
        with self._lock:
            self.stream.write(json.dumps(obj, sort_keys=True) + "\n")
            self.stream.flush()

    def action_finished(self, outcome: Outcome) -> None:
        a = outcome.action
        event = {
            "event": "action", "label": str(a.label), "mnemonic": a.mnemonic, "id": a.id,
            "description": a.description, "key": outcome.key, "status": outcome.status,
            "seconds": round(outcome.seconds, 4),
            "platform": str(a.platform) if a.platform else None, "hermetic": a.hermetic,
        }
        if outcome.error:  # engines colour their output: machines get the text
            event["error"] = strip_ansi(outcome.error)
        if outcome.log_path is not None and outcome.log_path.exists():
            event["log"] = str(outcome.log_path)
        if outcome.result is not None:
            event["outputs"] = {k: d.digest for k, d in outcome.result.outputs.items()}
        if outcome.counters:
            event["counters"] = dict(outcome.counters)
        if outcome.started is not None:  # wall clock: started + seconds is its span
            event["started"] = round(outcome.started, 4)
        for name, value in outcome.notes.items():  # rc.note: "engine"
            event.setdefault(name, value)  # never replaces a standard field
        self._emit(event)

    def warning(self, message: str) -> None:
        self._emit({"event": "warning", "message": message})

    def build_finished(self, summaries, seconds, counts) -> None:
        self._emit(summary_json(summaries, seconds, counts))


class LiveReporter(Reporter):
    """rich live view: the build's elapsed time and counts, running actions with their
    elapsed time and last log line; failures in full as they happen; the summary table
    and the same counts line as plain mode at the end."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = console or Console(stderr=True)
        self._running: dict[Any, tuple[float, str]] = {}
        self._counts: dict[str, int] = {}
        self._total = 0
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._live = Live(console=self.console, refresh_per_second=8, transient=True,
                          get_renderable=self._render)

    def _render(self):
        from rich.markup import escape
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        table.add_column(no_wrap=True, overflow="ellipsis")  # one line per row: the view stays put
        done = sum(self._counts.values())
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self._counts.items())) or "starting"
        now = time.monotonic()
        table.add_row(f"[bold]forge[/] {now - self._started:.1f}s  {done}/{self._total} actions: {counts}")
        with self._lock:
            running = list(self._running.items())
        for action, (start, last) in running[:12]:
            # an action's text and its log line are not markup ("[internal] load", colours)
            table.add_row(f"  [cyan]{now - start:5.1f}s[/] {escape(str(action))}  "
                          f"[dim]{escape(strip_ansi(last)[:80])}[/]")
        return table

    def build_started(self, total: int) -> None:
        self._total = total
        self._started = time.monotonic()
        self._live.start()

    def action_started(self, action: Action) -> None:
        with self._lock:
            self._running[action] = (time.monotonic(), "")

    def action_log(self, action: Action, line: str) -> None:
        with self._lock:
            if action in self._running:
                self._running[action] = (self._running[action][0], line)

    def action_finished(self, outcome: Outcome) -> None:
        with self._lock:
            self._running.pop(outcome.action, None)
            self._counts[outcome.status] = self._counts.get(outcome.status, 0) + 1
        if outcome.status == "failed":
            from rich.text import Text

            # The error is the engine's text: its brackets are not markup, its colours stay
            text = Text("failed", style="red") + Text(f" {outcome.action}: ") + Text.from_ansi(outcome.error)
            if outcome.log_path is not None and outcome.log_path.exists():
                text += Text(f"\n  log: {outcome.log_path}", style="dim")
            self.console.print(text)

    def warning(self, message: str) -> None:
        from rich.text import Text

        self.console.print(Text("warning:", style="yellow") + Text(f" {message}"))

    def build_finished(self, summaries, seconds, counts) -> None:
        from rich.table import Table

        self._live.stop()
        table = Table(title="forge")
        for col in ("target", "platform", "status", "time", "digest", "size"):
            table.add_column(col)
        colors = {"built": "green", "cached-local": "blue", "cached-remote": "magenta", "failed": "red"}
        for s in summaries:
            status = f"[{colors.get(s.status, 'white')}]{s.status}[/]"
            if not s.hermetic:
                status += " [yellow](non-hermetic)[/]"
            table.add_row(str(s.label), s.platform or "-", status, f"{s.seconds:.1f}s",
                          s.digest[:19] or "-", human_size(s.size))
        self.console.print(table)
        self.console.print(counts_line(summaries, seconds, counts), markup=False, highlight=False)
