"""The Rule base class and the context a rule analyzes in.

A rule turns a target's attributes plus its dependencies' providers into actions and
providers. It runs nothing: work happens later, in the action's ``run`` function, and
only when the action's key misses every cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from forge.core.actions import Action, SourceFile, make_action
from forge.core.attrs import Attr
from forge.core.errors import AnalysisError
from forge.core.labels import Label
from forge.core.platforms import Platform


class Rule:
    """Subclass with ``name``, ``doc``, ``attrs`` and ``analyze``; register the class."""

    name: ClassVar[str] = ""
    doc: ClassVar[str] = ""
    attrs: ClassVar[dict[str, Attr]] = {}

    def analyze(self, ctx: AnalysisContext) -> Iterable[Any]:
        raise NotImplementedError


@dataclass
class TargetDef:
    """A target as the BUILD file declared it: rule, checked attributes, location."""

    label: Label
    rule: type[Rule]
    attrs: dict[str, Any]
    location: str  # "pkg/BUILD:12" for messages
    package_dir: Path = field(default_factory=Path)

    def deps(self) -> list[tuple[str, Label]]:
        """Every (attribute, label) this target depends on, in attribute order."""
        out: list[tuple[str, Label]] = []
        for name, attr in self.rule.attrs.items():
            value = self.attrs.get(name)
            if value is None:
                continue
            if attr.kind == "label":
                out.append((name, value))
            elif attr.kind == "label_list":
                out.extend((name, v) for v in value)
        return out


@dataclass
class ConfiguredTarget:
    """An analyzed target: its providers, indexed by type."""

    label: Label
    rule_name: str
    providers: dict[type, Any]
    actions: list[Action]
    location: str

    def __getitem__(self, provider_type: type) -> Any:
        try:
            return self.providers[provider_type]
        except KeyError:
            have = ", ".join(t.__name__ for t in self.providers) or "none"
            raise AnalysisError(
                f"{self.label} ({self.rule_name}) does not provide {provider_type.__name__} "
                f"(it provides: {have})"
            ) from None

    def get(self, provider_type: type) -> Any:
        return self.providers.get(provider_type)

    def __contains__(self, provider_type: type) -> bool:
        return provider_type in self.providers


class AnalysisContext:
    """What a rule sees during analysis."""

    def __init__(
        self,
        target: TargetDef,
        deps: dict[Label, ConfiguredTarget],
        default_platform: Platform,
        epoch: int = 0,
    ):
        self.label = target.label
        self.epoch = epoch  # SOURCE_DATE_EPOCH of this build; enters keys via timestamps=True
        self.location = target.location
        self.package_dir = target.package_dir
        self._target = target
        self._default_platform = default_platform
        self.actions: list[Action] = []
        values: dict[str, Any] = {}
        for name, attr in target.rule.attrs.items():
            value = target.attrs.get(name)
            if attr.kind == "label" and value is not None:
                value = deps[value]
            elif attr.kind == "label_list":
                value = [deps[v] for v in value]
            values[name] = value
        values["name"] = target.label.name
        self.attr = SimpleNamespace(**values)

    @property
    def platform(self) -> Platform:
        """The target's platform attribute, else the build's default platform."""
        value = getattr(self.attr, "platform", None)
        return value if isinstance(value, Platform) else self._default_platform

    def files(self, relpaths: Iterable[str]) -> list[SourceFile]:
        """Source files of this package, by package-relative path."""
        out = []
        base = str(self.package_dir)
        for rel in relpaths:
            path = f"{base}/{rel}"  # plain strings: analysis of thousands of files stays cheap
            if not os.path.lexists(path):
                raise AnalysisError(f"{self.location}: {self.label}: source file {rel!r} does not exist")
            out.append(SourceFile(path, rel))
        return out

    def action(
        self,
        mnemonic: str,
        run: Callable[..., Any],
        *,
        version: int = 1,
        params: dict[str, Any] | None = None,
        inputs: Iterable[SourceFile] = (),
        deps: Iterable[Action] = (),
        platform: Platform | None = None,
        executor: str | None = None,
        hermetic: bool = True,
        timestamps: bool = False,
        description: str = "",
        materialize: Callable[..., None] | None = None,
    ) -> Action:
        """Declare an action; the last one declared is the target's default output.

        ``run`` must be a module-level function: it receives only what is declared here.
        ``timestamps=True`` says the action writes times (layer mtimes, a config's
        ``created``): the build's epoch then enters its key and ``rc.epoch`` gives it.
        """
        action = make_action(
            label=self.label,
            mnemonic=mnemonic,
            run=run,
            version=version,
            params=params or {},
            inputs=tuple(inputs),
            deps=tuple(deps),
            platform=platform,
            epoch=self.epoch if timestamps else None,
            executor=executor,
            hermetic=hermetic,
            index=len(self.actions),
            description=description,
            materialize=materialize,
        )
        self.actions.append(action)
        return action

    def fail(self, message: str) -> AnalysisError:
        """An analysis error located at this target's BUILD line."""
        return AnalysisError(f"{self.location}: {self.label}: {message}")
