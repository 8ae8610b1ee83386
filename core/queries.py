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


def to_dot(graph: nx.DiGraph, title: str) -> str:
    """Actions grouped per target, edges from dependency to dependent."""
    lines = [f'digraph "{title}" {{', "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    ids = {node: f"n{i}" for i, node in enumerate(graph.nodes)}
    clusters: dict[str, list] = {}
    for node in graph.nodes:
        clusters.setdefault(str(node.label), []).append(node)
    for ci, (label, nodes) in enumerate(sorted(clusters.items())):
        lines.append(f'  subgraph cluster_{ci} {{ label="{label}"; style=rounded; color=grey;')
        for node in nodes:
            text = node.mnemonic + (f"\\n{node.description}" if node.description else "")
            if node.platform:
                text += f"\\n{node.platform}"
            style = "" if node.hermetic else ", style=dashed"
            lines.append(f'    {ids[node]} [label="{text}"{style}];')
        lines.append("  }")
    for a, b in graph.edges:
        lines.append(f"  {ids[a]} -> {ids[b]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


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
