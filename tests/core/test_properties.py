"""Property-based tests (hypothesis) for the two encodings everything else trusts.

1. The action key: what must not change it (dict and input-list order, fields documented
   as outside the key) and what must (every single field that enters ``key_manifest``),
   plus the params rules (no floats, JSON values round-trip, distinct params differ).
   Keys are built only through ``make_action`` -> ``key_manifest`` -> ``action_key`` and
   compared as equal/different, never by the manifest's shape, so new manifest fields
   (a format version, an epoch) do not break these tests.
2. Labels and patterns: printing and parsing are inverse for valid labels and patterns,
   and arbitrary text either parses or raises ``LabelError`` — nothing else.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import blake3
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from forge.core.actions import (
    Action,
    InputDigest,
    SourceFile,
    _freeze_params,
    action_key,
    canonical_json,
    key_manifest,
    make_action,
)
from forge.core.errors import LabelError
from forge.core.labels import Label, Pattern, parse_label, parse_pattern
from forge.core.platforms import Platform, parse_platform

SETTINGS = settings(max_examples=200, deadline=None, database=None)
LABEL = Label("p", "t")


def _run(_ctx):  # a plain module-level function, as make_action requires; never called
    raise AssertionError("not run in these tests")


# --------------------------------------------------------------------------- strategies

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
params_dicts = st.dictionaries(st.text(max_size=8), json_values, max_size=3)

digests = st.binary(max_size=8).map(lambda b: blake3.blake3(b).hexdigest())
relpaths = st.text(min_size=1, max_size=12)
symlink_targets = st.none() | st.text(min_size=1, max_size=12)
input_digests = st.builds(
    InputDigest, relpath=relpaths, executable=st.booleans(), digest=digests, symlink=symlink_targets
)
# Inputs of one action have distinct relpaths (they are files of one package).
input_lists = st.lists(input_digests, max_size=5, unique_by=lambda i: i.relpath)

PLATFORMS: list[Platform | None] = [None] + sorted(
    {parse_platform(p) for p in ("amd64", "arm64", "armv7", "armv6", "386", "riscv64", "s390x")}
    | {Platform("windows", "amd64")}
)
ACTION_FIELDS = {f.name for f in dataclasses.fields(Action)}


@dataclasses.dataclass(frozen=True)
class Spec:
    """Everything that enters a key, as plain values."""

    mnemonic: str
    version: int
    params: dict[str, Any]
    platform: Platform | None
    hermetic: bool
    inputs: tuple[InputDigest, ...]
    deps: tuple[str, ...]
    epoch: int | None = None

    def action(self, **extra: Any) -> Action:
        kwargs: dict[str, Any] = dict(
            label=LABEL, mnemonic=self.mnemonic, run=_run, version=self.version,
            params=self.params, platform=self.platform, hermetic=self.hermetic,
        )
        if "epoch" in ACTION_FIELDS:
            kwargs["epoch"] = self.epoch
        kwargs.update(extra)
        return make_action(**kwargs)

    def key(self, **extra: Any) -> str:
        return action_key(key_manifest(self.action(**extra), list(self.inputs), list(self.deps)))


specs = st.builds(
    Spec,
    mnemonic=st.text(min_size=1, max_size=10),
    version=st.integers(min_value=0, max_value=10_000),
    params=params_dicts,
    platform=st.sampled_from(PLATFORMS),
    hermetic=st.booleans(),
    inputs=input_lists.map(tuple),
    deps=st.lists(digests, max_size=4).map(tuple),
    epoch=st.none() | st.integers(min_value=0, max_value=2**32),
)


def _params_key(params: dict[str, Any]) -> str:
    return Spec("M", 1, params, None, True, (), ()).key()


# ------------------------------------------------------------------ key: what must not change it


@SETTINGS
@given(params=params_dicts, data=st.data())
def test_param_insertion_order_never_changes_the_key(params, data):
    """Reordering the items of any dict, at any depth, gives the same bytes and key."""

    def shuffle(value):
        if isinstance(value, dict):
            items = data.draw(st.permutations(list(value.items())))
            return {k: shuffle(v) for k, v in items}
        if isinstance(value, list):
            return [shuffle(v) for v in value]
        return value

    reordered = shuffle(params)
    assert canonical_json(reordered) == canonical_json(params)
    assert _freeze_params(reordered) == _freeze_params(params)
    assert _params_key(reordered) == _params_key(params)


@SETTINGS
@given(spec=specs, data=st.data())
def test_input_listing_order_never_changes_the_key(spec, data):
    shuffled = tuple(data.draw(st.permutations(spec.inputs)))
    assert dataclasses.replace(spec, inputs=shuffled).key() == spec.key()


@SETTINGS
@given(spec=specs, label=st.sampled_from([Label("", "x"), Label("other/pkg", "y")]),
       executor=st.none() | st.text(max_size=6), index=st.integers(0, 50),
       description=st.text(max_size=10))
def test_fields_outside_the_key_never_change_it(spec, label, executor, index, description):
    """Label, executor, index, description and the absolute path of a source are not keyed."""
    changed = spec.key(label=label, executor=executor, index=index, description=description,
                       inputs=[SourceFile(f"/somewhere/{i.relpath}", i.relpath) for i in spec.inputs])
    assert changed == spec.key()


# ---------------------------------------------------------------------- key: what must change it


def _other(data, strategy, old, nudge):
    """A drawn value unlike ``old``; ``nudge(old)`` when the draw repeats it (no filtering)."""
    new = data.draw(strategy)
    return nudge(old) if new == old else new


def _fresh(data, strategy, taken):
    """A drawn name not in ``taken``."""
    new = data.draw(strategy)
    while new in taken:
        new += "~"
    return new


def _other_digest(data, old):
    return _other(data, digests, old, lambda d: blake3.blake3(d.encode()).hexdigest())


MUTATIONS = [
    "param value", "param added", "param removed", "param renamed",
    "relpath", "executable", "content digest", "symlink target", "input added", "input removed",
    "dep digest", "dep added", "dep removed",
    "platform", "mnemonic", "version", "hermetic",
] + (["epoch"] if "epoch" in ACTION_FIELDS else [])


def _ensure_room(spec: Spec, what: str, data) -> Spec:
    """Give ``spec`` the param, input or dep that mutation ``what`` changes, if it has none."""
    if what.startswith("param") and what != "param added" and not spec.params:
        return dataclasses.replace(spec, params={data.draw(st.text(max_size=8)): data.draw(json_values)})
    input_fields = ("relpath", "executable", "content digest", "symlink target", "input removed")
    if what in input_fields and not spec.inputs:
        return dataclasses.replace(spec, inputs=(data.draw(input_digests),))
    if what in ("dep digest", "dep removed") and not spec.deps:
        return dataclasses.replace(spec, deps=(data.draw(digests),))
    return spec


def _mutate(spec: Spec, what: str, data) -> Spec:
    """``spec`` with exactly the one change ``what``."""
    replace = dataclasses.replace
    if what in ("param value", "param removed", "param renamed"):
        name = data.draw(st.sampled_from(sorted(spec.params)))
        params = dict(spec.params)
        if what == "param value":
            old, new = params[name], data.draw(json_values)
            params[name] = [new] if canonical_json(new) == canonical_json(old) else new
        elif what == "param removed":
            del params[name]
        else:
            new_name = _fresh(data, st.text(max_size=8), set(params))
            params[new_name] = params.pop(name)
        return replace(spec, params=params)
    if what == "param added":
        name = _fresh(data, st.text(max_size=8), set(spec.params))
        return replace(spec, params={**spec.params, name: data.draw(json_values)})
    if what == "mnemonic":
        return replace(spec, mnemonic=_other(data, st.text(min_size=1, max_size=10), spec.mnemonic,
                                             lambda m: m + "~"))
    if what == "version":
        return replace(spec, version=_other(data, st.integers(0, 10_000), spec.version, lambda v: v + 1))
    if what == "platform":
        return replace(spec, platform=_other(data, st.sampled_from(PLATFORMS), spec.platform,
                                             lambda p: PLATFORMS[PLATFORMS.index(p) - 1]))
    if what == "hermetic":
        return replace(spec, hermetic=not spec.hermetic)
    if what == "epoch":
        epochs = st.none() | st.integers(0, 2**32)
        return replace(spec, epoch=_other(data, epochs, spec.epoch, lambda e: 0 if e is None else None))
    if what in ("dep added", "dep digest", "dep removed"):
        deps = list(spec.deps)
        if what == "dep added":
            deps.insert(data.draw(st.integers(0, len(deps))), data.draw(digests))
        else:
            at = data.draw(st.integers(0, len(deps) - 1))
            if what == "dep digest":
                deps[at] = _other_digest(data, deps[at])
            else:
                del deps[at]
        return replace(spec, deps=tuple(deps))
    inputs = list(spec.inputs)
    taken = {i.relpath for i in inputs}
    at = data.draw(st.integers(0, max(len(inputs) - 1, 0)))
    if what == "input added":
        new = data.draw(input_digests)
        inputs.insert(at, replace(new, relpath=_fresh(data, st.just(new.relpath), taken)))
        return replace(spec, inputs=tuple(inputs))
    old = inputs[at]
    if what == "input removed":
        del inputs[at]
    elif what == "relpath":
        inputs[at] = replace(old, relpath=_fresh(data, relpaths, taken))
    elif what == "executable":
        inputs[at] = replace(old, executable=not old.executable)
    elif what == "content digest":
        inputs[at] = replace(old, digest=_other_digest(data, old.digest))
    elif what == "symlink target":
        inputs[at] = replace(old, symlink=_other(data, symlink_targets, old.symlink,
                                                 lambda t: "target" if t is None else None))
    else:
        raise AssertionError(what)
    return replace(spec, inputs=tuple(inputs))


@pytest.mark.parametrize("what", MUTATIONS)
@settings(max_examples=40, deadline=None, database=None)
@given(spec=specs, data=st.data())
def test_changing_any_single_keyed_field_changes_the_key(what, spec, data):
    spec = _ensure_room(spec, what, data)
    changed = _mutate(spec, what, data)
    assert repr(changed) != repr(spec)  # not ==: in Python {"x": False} == {"x": 0}
    assert changed.key() != spec.key()


@SETTINGS
@given(deps=st.lists(digests, min_size=2, max_size=5, unique=True), data=st.data())
def test_dep_results_are_keyed_in_declaration_order(deps, data):
    reordered = data.draw(st.permutations(deps))
    assume(reordered != deps)
    spec = Spec("M", 1, {}, None, True, (), tuple(deps))
    assert dataclasses.replace(spec, deps=tuple(reordered)).key() != spec.key()


@SETTINGS
@given(a=params_dicts, b=params_dicts)
def test_different_params_give_different_keys(a, b):
    # Compared as JSON: in Python True == 1 and [False] == [0], but as params they differ.
    assume(canonical_json(a) != canonical_json(b))
    assert _params_key(a) != _params_key(b)


# ----------------------------------------------------------------------------- params rules


@SETTINGS
@given(params=params_dicts)
def test_json_params_are_accepted_and_round_trip(params):
    action = make_action(label=LABEL, mnemonic="M", run=_run, params=params)
    assert action.params == params
    assert canonical_json(action.params) == canonical_json(params)  # type-exact: True stays True


def _with_one(inner: st.SearchStrategy) -> st.SearchStrategy:
    """Params with ``inner`` somewhere inside: a top-level value, in a list, in a nested dict."""
    nested = st.recursive(
        inner,
        lambda child: st.tuples(st.lists(json_values, max_size=2), child, st.lists(json_values, max_size=2))
        .map(lambda t: [*t[0], t[1], *t[2]])
        | st.tuples(st.dictionaries(st.text(max_size=4), json_values, max_size=2), st.text(max_size=4), child)
        .map(lambda t: {**t[0], t[1]: t[2]}),
        max_leaves=4,
    )
    return st.tuples(params_dicts, st.text(max_size=6), nested).map(lambda t: {**t[0], t[1]: t[2]})


def _assert_float_rejected(params):
    with pytest.raises(TypeError, match="float"):
        _freeze_params(params)
    with pytest.raises(TypeError, match="float"):
        make_action(label=LABEL, mnemonic="M", run=_run, params=params)


@SETTINGS
@given(params=_with_one(st.floats(allow_nan=False, allow_infinity=False)))
def test_finite_floats_anywhere_in_params_are_rejected_with_type_error(params):
    _assert_float_rejected(params)


@SETTINGS
@given(params=_with_one(st.sampled_from([math.nan, math.inf, -math.inf])))
def test_non_finite_floats_anywhere_in_params_are_rejected_with_type_error(params):
    # Same rule as for finite floats: a float is a TypeError naming the parameter.
    _assert_float_rejected(params)


# ------------------------------------------------------------------------- labels: strategies

PKG_CHARS = r"[A-Za-z0-9_.\-]"
NAME_FIRST = r"[A-Za-z0-9_.+\-@=,~]"
NAME_CHARS = r"[A-Za-z0-9_.+\-@=,~/]"

components = st.from_regex(rf"{PKG_CHARS}{{1,8}}", fullmatch=True).filter(lambda c: c not in (".", "..", "..."))
packages = st.lists(components, max_size=4).map("/".join)
nonempty_packages = st.lists(components, min_size=1, max_size=4).map("/".join)
names = st.from_regex(rf"{NAME_FIRST}{NAME_CHARS}{{0,10}}", fullmatch=True).filter(
    lambda n: not {"..", "..."} & set(n.split("/"))
)
labels = st.builds(Label, packages, names)

# Text made of label-ish characters reaches the interesting branches far more often than
# st.text() alone; both are used.
labelish = st.text(alphabet="/:.a-b@*\n _", max_size=14) | st.builds(
    lambda pre, body: pre + body, st.sampled_from(["//", "//:", ":", "", "@", "/"]),
    st.text(alphabet="/:.ab@*\n", max_size=10),
)
any_text = st.text() | labelish


def _is_valid_label(label: Label) -> bool:
    """The documented grammar, written independently of labels.py's regexes."""
    pkg_ok = label.package == "" or all(
        re.fullmatch(rf"{PKG_CHARS}+", c) and c not in (".", "..") for c in label.package.split("/")
    )
    name_ok = bool(re.fullmatch(rf"{NAME_FIRST}{NAME_CHARS}*", label.name)) and (
        ".." not in label.name.split("/")
    )
    return pkg_ok and name_ok


# ----------------------------------------------------------------------- labels: round trips


@SETTINGS
@given(label=labels)
def test_printed_label_parses_back(label):
    assert parse_label(str(label)) == label
    assert parse_label(label.short) == label


@SETTINGS
@given(pkg=nonempty_packages)
def test_package_only_label_names_its_last_component(pkg):
    assert parse_label(f"//{pkg}") == Label(pkg, pkg.rsplit("/", 1)[-1])


@SETTINGS
@given(pkg=packages, name=names)
def test_relative_label_resolves_in_the_current_package(pkg, name):
    assert parse_label(f":{name}", current_package=pkg) == Label(pkg, name)
    if name.startswith("@"):  # bare @name reads as an external repository
        with pytest.raises(LabelError):
            parse_label(name, current_package=pkg)
    else:
        assert parse_label(name, current_package=pkg) == Label(pkg, name)


@SETTINGS
@given(pkg=packages, spelling=st.sampled_from(["all", "*", "all-targets"]))
def test_all_targets_pattern_round_trips(pkg, spelling):
    pattern = parse_pattern(f"//{pkg}:{spelling}")
    assert pattern == Pattern(pkg, None)
    assert str(pattern) == f"//{pkg}:all"
    assert parse_pattern(str(pattern)) == pattern
    assert pattern.matches_package(pkg)


@SETTINGS
@given(pkg=packages)
def test_recursive_pattern_round_trips(pkg):
    text = f"//{pkg}/..." if pkg else "//..."
    pattern = parse_pattern(text)
    assert pattern == Pattern(pkg, None, recursive=True)
    assert str(pattern) == text
    assert parse_pattern(str(pattern)) == pattern
    assert pattern.matches_package(pkg)
    assert pattern.matches_package(f"{pkg}/sub" if pkg else "sub")


@SETTINGS
@given(label=labels)
def test_a_label_is_a_pattern_naming_only_itself(label):
    assume(label.name not in ("all", "all-targets"))  # those spell the all-targets wildcard
    pattern = parse_pattern(str(label))
    assert pattern == Pattern(label.package, label.name)
    assert parse_pattern(str(pattern)) == pattern


def test_a_name_ending_in_dots_is_refused_it_would_read_as_a_pattern():
    """Found by the property above: //p:x/... parsed as a label but as a recursive pattern."""
    with pytest.raises(LabelError):
        parse_label("//p:x/...")


# ------------------------------------------------------------------- labels: arbitrary text


@SETTINGS
@given(text=any_text, current=st.none() | packages)
def test_parse_label_on_any_text_parses_or_raises_label_error(text, current):
    try:
        label = parse_label(text, current_package=current)
    except LabelError:
        return
    assert isinstance(label, Label)
    assert parse_label(str(label)) == label


@SETTINGS
@given(text=any_text, current=st.none() | packages)
# found: `$` in the regexes also matches before a trailing newline, so these parse
@example(text="0\n", current="")
@example(text="//a:b\n", current=None)
@example(text="//a\n:b", current=None)
def test_a_parsed_label_is_made_of_valid_characters_only(text, current):
    """Whatever parses is a label the documented grammar allows (no whitespace, no newline)."""
    try:
        label = parse_label(text, current_package=current)
    except LabelError:
        return
    assert _is_valid_label(label), (text, label)


@SETTINGS
@given(text=any_text)
def test_parse_pattern_on_any_text_parses_or_raises_label_error(text):
    try:
        pattern = parse_pattern(text)
    except LabelError:
        return
    assert isinstance(pattern, Pattern)
    assert parse_pattern(str(pattern)) == pattern


@SETTINGS
@given(text=any_text)
@example(text="//a\n/...")  # found: as for labels, a trailing newline passes the package check
@example(text="//a:b\n")
def test_a_parsed_pattern_is_made_of_valid_characters_only(text):
    try:
        pattern = parse_pattern(text)
    except LabelError:
        return
    assert _is_valid_label(Label(pattern.package, pattern.name or "all")), (text, pattern)
