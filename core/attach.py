"""Actions plugins attach to the requested targets of a build (Bazel's aspects, for one
level): the supply chain plugin's SBOM and provenance are built this way, beside the
image, cached like any action.

After analysis, ``attach_actions`` calls ``forge_attach_actions(target, ctx)`` for every
requested target; the actions an implementation returns join that target's actions
(built with it, requested, so a remote hit brings their bytes), and after the target is
materialized ``forge_target_materialized`` tells plugins where its forge-out directory
is, with the results of all its actions. ``forge push`` calls ``forge_target_pushed``
after the image went up, so attachments can follow it (as referrers).

The core knows nothing about what is attached: no plugin, no hook implementation → no
extra action, no cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forge.core.actions import Action, SourceFile, make_action
from forge.core.labels import Label
from forge.core.platforms import Platform
from forge.core.providers import DefaultInfo
from forge.core.rule import ConfiguredTarget

if TYPE_CHECKING:
    from forge.core.analysis import Analyzer
    from forge.core.execution import Outcome
    from forge.core.session import Session


class AttachContext:
    """What a ``forge_attach_actions`` implementation sees: the build's analysis (read
    only) and a way to declare actions. One per build, shared by every target, so a
    plugin can declare an action once for two targets that share it (``memo``)."""

    def __init__(self, session: Session, analyzer: Analyzer):
        self.workspace = session.workspace
        self.options = session.options
        self.epoch = analyzer.epoch  # SOURCE_DATE_EPOCH; enters keys via timestamps=True
        self.memo: dict[Any, Any] = {}  # for the plugins: e.g. an action per base target
        self._analyzer = analyzer
        self._loader = session.loader
        self._counts: dict[Label, int] = {}

    def target(self, label: Label) -> ConfiguredTarget:
        """An analyzed target of this build."""
        return self._analyzer.configured[label]

    def dependencies(self, target: ConfiguredTarget) -> list[ConfiguredTarget]:
        """The targets ``target``'s attributes name, in attribute order, each once."""
        out: dict[Label, ConfiguredTarget] = {}
        for _, label in self._loader.target(target.label).deps():
            out.setdefault(label, self._analyzer.configured[label])
        return list(out.values())

    def action(
        self,
        target: ConfiguredTarget,
        mnemonic: str,
        run: Callable[..., Any],
        *,
        version: int = 1,
        params: dict[str, Any] | None = None,
        inputs: Iterable[SourceFile] = (),
        deps: Iterable[Action] = (),
        platform: Platform | None = None,
        hermetic: bool = True,
        timestamps: bool = False,
        description: str = "",
    ) -> Action:
        """Declare an action of ``target`` (as ``AnalysisContext.action`` does; its index
        follows the target's own actions, so its id is new)."""
        count = self._counts.get(target.label, len(target.actions))
        self._counts[target.label] = count + 1
        return make_action(
            label=target.label, mnemonic=mnemonic, run=run, version=version, params=params or {},
            inputs=tuple(inputs), deps=tuple(deps), platform=platform,
            epoch=self.epoch if timestamps else None, hermetic=hermetic, index=count,
            description=description,
        )


def attach_actions(session: Session, targets: list[ConfiguredTarget], analyzer: Analyzer) -> frozenset[Action]:
    """Ask the plugins for the actions to build with each requested target; add them to
    the target's actions and return them all."""
    hook = session.pm.hook.forge_attach_actions
    if not hook.get_hookimpls():
        return frozenset()
    ctx = AttachContext(session, analyzer)
    attached: list[Action] = []
    for target in targets:
        for group in hook(target=target, ctx=ctx):
            for action in group or ():
                if action not in target.actions:
                    target.actions.append(action)
                    attached.append(action)
    return frozenset(attached)


def target_results(target: ConfiguredTarget, outcomes: dict[Action, Outcome]) -> dict[Action, Any]:
    """The results of ``target``'s actions (its default one and attached ones included)
    and of every action they read, in this build."""
    todo = list(target.actions)
    default = target.get(DefaultInfo)
    if default is not None:
        todo.append(default.action)
    seen: dict[Action, None] = {}
    while todo:
        action = todo.pop()
        if action not in seen:
            seen[action] = None
            todo.extend(action.deps)
    return {a: outcomes[a].result for a in seen if a in outcomes and outcomes[a].result is not None}


def materialized(session: Session, target: ConfiguredTarget, outcomes: dict[Action, Outcome],
                 dest: Path) -> None:
    """Tell the plugins ``target`` is in forge-out at ``dest``."""
    hook = session.pm.hook.forge_target_materialized
    if hook.get_hookimpls():
        hook(session=session, label=target.label, results=target_results(target, outcomes), dest=dest)
