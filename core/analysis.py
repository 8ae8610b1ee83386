"""Analysis: targets -> configured targets -> one networkx DiGraph of actions.

Targets are analyzed depth-first from the requested labels; the stack doubles as cycle
detection, so a target cycle is reported as the chain of labels that forms it.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx

from forge.core.actions import Action
from forge.core.errors import AnalysisError, CycleError, ForgeError
from forge.core.labels import Label
from forge.core.loading import Loader
from forge.core.platforms import Platform
from forge.core.providers import DefaultInfo
from forge.core.rule import AnalysisContext, ConfiguredTarget


class Analyzer:
    def __init__(self, loader: Loader, default_platform: Platform, epoch: int = 0):
        self.loader = loader
        self.default_platform = default_platform
        self.epoch = epoch
        self.configured: dict[Label, ConfiguredTarget] = {}
        self._stack: list[Label] = []

    def analyze(self, label: Label, referrer: str = "") -> ConfiguredTarget:
        if label in self.configured:
            return self.configured[label]
        if label in self._stack:
            chain = self._stack[self._stack.index(label) :] + [label]
            raise CycleError("dependency cycle: " + " -> ".join(str(x) for x in chain))
        target = self.loader.target(label, referrer)
        self._stack.append(label)
        try:
            deps = {dep: self.analyze(dep, f"{target.location}: {label}") for _, dep in target.deps()}
            ctx = AnalysisContext(target, deps, self.default_platform, self.epoch)
            try:
                returned = list(target.rule().analyze(ctx) or [])
            except ForgeError:
                raise
            except Exception as exc:  # a rule bug: say which rule and target
                raise AnalysisError(
                    f"{target.location}: rule {target.rule.name} failed on {label}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        finally:
            self._stack.pop()
        providers = {type(p): p for p in returned}
        if DefaultInfo not in providers and ctx.actions:
            providers[DefaultInfo] = DefaultInfo(ctx.actions[-1])
        configured = ConfiguredTarget(label, target.rule.name, providers, ctx.actions, target.location)
        self.configured[label] = configured
        return configured


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
