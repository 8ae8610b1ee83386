"""Analysis: targets -> configured targets -> one networkx DiGraph of actions.

Targets are analyzed depth-first from the requested labels, on an explicit stack (a
chain of thousands of targets needs no Python recursion); the stack doubles as cycle
detection, so a target cycle is reported as the chain of labels that forms it, at the
BUILD file:line of the target that closes it. An error a rule raises without a location
(``ctx.attr.dep[ImageInfo]`` on a target that does not provide it) gets the BUILD
file:line of the target being analyzed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx

from forge.core.actions import Action
from forge.core.errors import AnalysisError, CycleError, ForgeError
from forge.core.labels import Label
from forge.core.loading import Loader
from forge.core.platforms import Platform
from forge.core.providers import DefaultInfo
from forge.core.rule import AnalysisContext, ConfiguredTarget, TargetDef

if TYPE_CHECKING:
    from forge.core.overrides import Override
    from forge.core.registry import ExecutorSelection

_LOCATED_RE = re.compile(r"^(?!//)[^\s:]+:\d+\b")  # "file:line" at the start of a message


@dataclass
class _Frame:
    label: Label
    target: TargetDef
    deps: list[tuple[str, Label]]
    next: int = 0


class Analyzer:
    def __init__(self, loader: Loader, default_platform: Platform, epoch: int = 0,
                 reproducible: bool = False, executors: ExecutorSelection | None = None,
                 overrides: list[Override] | None = None):
        self.loader = loader
        self.default_platform = default_platform
        self.epoch = epoch
        self.reproducible = reproducible
        self.executors = executors  # which executor a target's container work runs on
        self.overrides = list(overrides or [])  # --set / --build-arg, applied before analysis
        self.seen: list[TargetDef] = []  # every target read, for check_used
        self.configured: dict[Label, ConfiguredTarget] = {}
        self.warnings: list[str] = []  # from ctx.warn, in analysis order
        self._stack: list[Label] = []

    def analyze(self, label: Label, referrer: str = "") -> ConfiguredTarget:
        if label in self.configured:
            return self.configured[label]
        if label in self._stack:  # called back from inside a rule's analysis
            raise self._cycle(label, None, "")
        base = len(self._stack)
        frames: list[_Frame] = []

        def push(lbl: Label, target: TargetDef) -> None:
            if self.overrides:
                from forge.core.overrides import apply

                self.seen.append(target)
                target = apply(target, self.overrides)
            self._stack.append(lbl)
            frames.append(_Frame(lbl, target, target.deps()))

        try:
            push(label, self.loader.target(label, referrer))
            while frames:
                frame = frames[-1]
                if frame.next < len(frame.deps):
                    attr, dep = frame.deps[frame.next]
                    frame.next += 1
                    if dep in self.configured:
                        continue
                    if dep in self._stack:
                        raise self._cycle(dep, frame.target, attr)
                    push(dep, self.loader.target(dep, f"{frame.target.location}: {frame.label}"))
                    continue
                self.configured[frame.label] = self._configure(frame.target)
                frames.pop()
                self._stack.pop()
        finally:
            del self._stack[base:]
        return self.configured[label]

    def _cycle(self, label: Label, closer: TargetDef | None, attr: str) -> CycleError:
        chain = " -> ".join(str(x) for x in [*self._stack[self._stack.index(label):], label])
        if closer is None:
            return CycleError(f"dependency cycle: {chain}")
        return CycleError(f"{closer.location}: dependency cycle: {chain} "
                          f"({closer.label} closes it through '{attr}')")

    def _configure(self, target: TargetDef) -> ConfiguredTarget:
        label = target.label
        deps = {dep: self.configured[dep] for _, dep in target.deps()}
        ctx = AnalysisContext(target, deps, self.default_platform, self.epoch, self.reproducible,
                              self.executors)
        try:
            returned = list(target.rule().analyze(ctx) or [])
        except ForgeError as exc:
            message = str(exc)
            if not _LOCATED_RE.match(message):  # say which BUILD line asked
                where = f"{target.location}: " if target.location else ""
                exc.args = (f"{where}{label}: {message}" if str(label) not in message
                            else f"{where}{message}",)
            raise
        except Exception as exc:  # a rule bug: say which rule and target
            raise AnalysisError(
                f"{target.location}: rule {target.rule.name} failed on {label}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.warnings.extend(ctx.warnings)
        providers = {type(p): p for p in returned}
        if DefaultInfo not in providers and ctx.actions:
            providers[DefaultInfo] = DefaultInfo(ctx.actions[-1])
        return ConfiguredTarget(label, target.rule.name, providers, ctx.actions, target.location)


def action_graph(targets: Iterable[ConfiguredTarget]) -> nx.DiGraph:
    """Every action reachable from ``targets``; edges run dependency -> dependent."""
    graph = nx.DiGraph()
    todo: list[Action] = []
    for t in targets:
        todo.extend(t.actions)
        default = t.get(DefaultInfo)
        if default is not None:
            todo.append(default.action)
    seen: set[int] = set()
    while todo:
        action = todo.pop()
        if id(action) in seen:
            continue
        seen.add(id(action))
        graph.add_node(action)
        for dep in action.deps:
            graph.add_edge(dep, action)
            todo.append(dep)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        raise CycleError("action cycle: " + " -> ".join(str(a.label) for a, _ in cycle))
    return graph
