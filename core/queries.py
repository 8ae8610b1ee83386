"""Target-level queries (deps, rdeps), the graph picture over analyzed targets, and
``query why`` (which builds a minimize target to read its report)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from forge.core.errors import UsageError
from forge.core.labels import Label, parse_label
from forge.core.loading import Loader

if TYPE_CHECKING:
    from forge.core.session import Session

# The rule whose action writes the harvest report (rules/minimize.py registers it under
# this name); named, not imported: the core imports no rule.
MINIMIZE_RULE = "minimize"


def target_graph(loader: Loader, roots: list[Label]) -> nx.DiGraph:
    """Targets reachable from ``roots`` (loading only); edges run dependent -> dependency."""
    graph = nx.DiGraph()
    todo = list(roots)
    while todo:
        label = todo.pop()
        if label in graph and graph.nodes[label].get("loaded"):
            continue
        target = loader.target(label)
        graph.add_node(label, loaded=True, rule=target.rule.name)
        for _, dep in target.deps():
            graph.add_edge(label, dep)
            todo.append(dep)
    return graph


def deps(loader: Loader, roots: list[Label]) -> list[Label]:
    return sorted(target_graph(loader, roots).nodes)


def rdeps(loader: Loader, universe: list[Label], roots: list[Label]) -> list[Label]:
    graph = target_graph(loader, universe)
    out: set[Label] = set(r for r in roots if r in graph)
    for root in roots:
        if root in graph:
            out |= nx.ancestors(graph, root)
    return sorted(out)


# The fill of an action in `forge graph`: the status of its last build (keys.json).
STATUS_COLORS = {
    "built": "palegreen", "cached-local": "lightblue", "cached-remote": "plum",
    "failed": "salmon", "skipped": "lightgrey",
}
NOT_BUILT = "white"  # no record: never built in this workspace


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(graph: nx.DiGraph, title: str, statuses: dict[str, str] | None = None) -> str:
    """Actions grouped per target, edges from dependency to dependent; each action filled
    with the colour of its last build's status (``statuses``: action id -> status), dashed
    when non-hermetic, and a legend saying so."""
    statuses = statuses or {}
    lines = [f'digraph "{_quote(title)}" {{', "  rankdir=LR;",
             '  node [shape=box, fontname="Helvetica", style=filled, fillcolor=white];']
    ids = {node: f"n{i}" for i, node in enumerate(graph.nodes)}
    clusters: dict[str, list] = {}
    for node in graph.nodes:
        clusters.setdefault(str(node.label), []).append(node)
    for ci, (label, nodes) in enumerate(sorted(clusters.items())):
        lines.append(f'  subgraph cluster_{ci} {{ label="{_quote(label)}"; style=rounded; color=grey;')
        for node in nodes:
            text = _quote(node.mnemonic) + (f"\\n{_quote(node.description)}" if node.description else "")
            if node.platform:
                text += f"\\n{node.platform}"
            style = "filled" if node.hermetic else "filled,dashed"
            fill = STATUS_COLORS.get(statuses.get(node.id, ""), NOT_BUILT)
            lines.append(f'    {ids[node]} [label="{text}", style="{style}", fillcolor={fill}];')
        lines.append("  }")
    for a, b in graph.edges:
        lines.append(f"  {ids[a]} -> {ids[b]};")
    lines.extend(_legend())
    lines.append("}")
    return "\n".join(lines) + "\n"


def _legend() -> list[str]:
    """A cluster of sample nodes (no edges: they stack in one rank): the fill colours (status
    of the last build) and the dashed outline (non-hermetic: uses the network)."""
    lines = ['  subgraph cluster_legend { label="legend: status of the last build"; style=rounded; '
             'color=grey; fontname="Helvetica";']
    samples = [*STATUS_COLORS.items(), ("not built", NOT_BUILT)]
    for i, (status, fill) in enumerate(samples):
        lines.append(f'    legend{i} [label="{status}", fillcolor={fill}];')
    lines.append(f'    legend{len(samples)} [label="non-hermetic\\n(uses the network)", style="filled,dashed"];')
    lines.append("  }")
    return lines


def render(dot_text: str, fmt: str, output: Path) -> Path:
    exe = shutil.which("dot")
    if exe is None:
        raise UsageError(
            f"--format {fmt} needs Graphviz's `dot`: install it (apt-get install graphviz) "
            "or use --format dot"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, f"-T{fmt}", "-o", str(output)], input=dot_text.encode(), check=True)
    return output


# -- forge query why -----------------------------------------------------------------------


def load_report(session: Session, text: str) -> dict[str, Any]:
    """Build (normally: find in the cache) the minimize target ``text`` and read its report."""
    from forge.core.execution import raise_for_failures

    label = parse_label(text, "")
    rule = session.loader.target(label).rule.name
    if rule != MINIMIZE_RULE:
        raise UsageError(f"{label} is a {rule} target; `forge query why` reads the report of a "
                         f"{MINIMIZE_RULE} target")
    summaries, outcomes = session.build([str(label)])
    raise_for_failures(outcomes)
    return json.loads(session.cas.read_bytes(summaries[0].outputs["report"]))  # a digest


def explain_path(session: Session, label: str, path: str) -> list[str]:
    """``forge query why LABEL PATH``: why ``path`` is in the layer of ``label``."""
    from forge.core.elf.harvest import why_chain  # loads pyelftools: only for this query

    return why_chain(load_report(session, label), path)
