"""Valid seed workspaces and hypothesis strategies that break them (tests/test_bad_input.py).

A seed is a small workspace that builds (the ``concat`` test rule, a ``layer``, a macro
from a ``.star`` file, a glob, a dependency on another package). A variant is the seed
with one file (a BUILD, the ``.star`` file or WORKSPACE.toml) mutated: a value of the
wrong type, an unknown name, a bad label, another encoding, deep nesting, a huge value,
a truncation or flipped bytes.
"""

from __future__ import annotations

import re

from hypothesis import strategies as st

WORKSPACE = """\
[workspace]
name = "fuzz"

[build]
jobs = 2
platforms = ["linux/amd64"]
keep_going = false
glob_excludes = [".git"]

[cache]
max_size = "1G"

[executors.docker.hosts]
arm64 = "tcp://127.0.0.1:1"

[plugins]
modules = ["tests.core.fake_rules"]
"""

BUILD = """\
load("//defs:macros.star", "pair")

# the seed: every target builds without an engine
concat(name = "base", srcs = ["a.txt"], text = "x")

concat(
    name = "top",
    srcs = glob(["*.txt"], exclude = ["b.txt"]),
    deps = [":base", "//q:leaf"],
    platform = "linux/amd64",
)

pair(name = "duo", text = "y")

layer(name = "files", srcs = ["a.txt", "b.txt"], prefix = "/data", mode_map = {"a.txt": "0644"})
"""

LEAF_BUILD = 'concat(name = "leaf", text = "leaf")\n'

MACROS = """\
def pair(name, text = ""):
    \"\"\"Two concat targets, the second depending on the first.\"\"\"
    concat(name = name + "-a", text = text)
    concat(name = name + "-b", deps = [":" + name + "-a"], text = package_name() + text)

SUFFIXES = ["-a", "-b"]
"""

SEED: dict[str, str] = {
    "WORKSPACE.toml": WORKSPACE,
    "p/BUILD": BUILD,
    "p/a.txt": "A\n",
    "p/b.txt": "B\n",
    "q/BUILD": LEAF_BUILD,
    "defs/BUILD": "",
    "defs/macros.star": MACROS,
}

STARLARK_FILES = ("p/BUILD", "defs/macros.star")

# -- Starlark values and names ---------------------------------------------------------

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
near_misses = st.sampled_from(["concta", "conact", "layr", "srsc", "dep", "txt", "nmae", "glb",
                               "package_nme", "pari", "Concat", "load_", "True_", "none"])
labelish = st.one_of(
    st.text(alphabet="/:.ab@*-_ \n\\", max_size=20),
    st.builds(lambda pre, body: pre + body,
              st.sampled_from(["//", "//:", ":", "", "@", "/", "//q:", "//p/..:", "//nope:"]),
              st.text(alphabet="/:.abq@*\n", max_size=12)),
    st.sampled_from(["//q:leaf2", "//q", "//p:top", ":top", "//defs:macros.star", "//p:a.txt", "//:x",
                     "//p:" + "n" * 300, "//" + "/".join(["d"] * 600) + ":x", "//" + "p" * 250 + ":x"]),
)
starlark_strings = st.one_of(
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8),
    labelish,
    st.sampled_from(["", " ", "0755", "/data", "../x", "/etc/passwd", "linux/arm64", "aarch46", "*"]),
)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_scalars = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["None", "True", "False", "0", "-1", "1.5", "1e308", "0x10", "[]", "{}", "()",
                     "glob", "concat", "package_name()", "glob([])", "glob(1)", "lambda: 1", "undefined_name"]),
    starlark_strings.map(_quote),
)
starlark_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.dictionaries(starlark_strings.map(_quote), inner, max_size=3).map(
            lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"),
        st.tuples(inner, st.sampled_from(["+", "*", "%", "-", "|", "==", "and", "if True else"]), inner).map(
            lambda t: f"{t[0]} {t[1]} {t[2]}"),
    ),
    max_leaves=8,
)
rule_names = st.one_of(st.sampled_from(["concat", "layer", "pair", "glob", "package_name", "image",
                                        "load", "print", "fail"]), near_misses, identifiers)
attr_names = st.one_of(st.sampled_from(["name", "srcs", "deps", "text", "fail", "platform", "prefix",
                                        "mode_map", "owner", "tags", "visibility"]), near_misses, identifiers)


@st.composite
def calls(draw) -> str:
    rule = draw(rule_names)
    kwargs = draw(st.lists(st.tuples(attr_names, starlark_values), max_size=4))
    if draw(st.booleans()):
        kwargs.insert(0, ("name", _quote(draw(st.one_of(identifiers, starlark_strings)))))
    positional = draw(st.lists(starlark_values, max_size=1))
    return f"{rule}({', '.join([*positional, *(f'{k} = {v}' for k, v in kwargs)])})"


# -- mutations on text -----------------------------------------------------------------

_VALUE_RE = re.compile(r"(?<==\s)(\"[^\"\n]*\"|\[[^\]\n]*\]|[A-Za-z0-9_.]+\([^\n]*?\)|[A-Za-z0-9_.]+)")
_NAME_RE = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
_STRING_RE = re.compile(r"\"[^\"\n]*\"")


@st.composite
def _replace_match(draw, text: str, regex: re.Pattern, replacement) -> str:
    matches = list(regex.finditer(text))
    if not matches:
        return text
    m = draw(st.sampled_from(matches))
    return text[: m.start()] + draw(replacement) + text[m.end():]


@st.composite
def _insert_line(draw, text: str, lines_strategy) -> str:
    lines = text.split("\n")
    at = draw(st.integers(0, len(lines)))
    lines.insert(at, draw(lines_strategy))
    return "\n".join(lines)


def _wrap(depth: int, opener: str, closer: str, inner: str = "1") -> str:
    return opener * depth + inner + closer * depth


nested_values = st.builds(
    lambda depth, kind: {
        "list": _wrap(depth, "[", "]"),
        "dict": _wrap(depth, '{"k": ', "}"),
        "call": _wrap(depth, "str(", ")"),
        "paren": _wrap(depth, "(", ")"),
        "plus": " + ".join(['"a"'] * depth),
        "not": "not " * depth + "True",
        "index": "[1]" + "[0]" * depth,
    }[kind],
    st.integers(1, 400),  # in-process: far below where starlark-pyo3 crashes (2,000+)
    st.sampled_from(["list", "dict", "call", "paren", "plus", "not", "index"]),
)
huge_values = st.one_of(
    st.integers(1, 100_000).map(lambda n: _quote("x" * n)),
    st.integers(150, 1200).map(lambda n: _quote("n" * n)),
    st.integers(100, 600).map(lambda n: _quote("/".join(["d"] * n))),
    st.integers(1, 5000).map(lambda n: "[" + ", ".join(['"a.txt"'] * n) + "]"),
    st.integers(1, 3000).map(lambda n: "[" + ", ".join(f'":t{i}"' for i in range(n)) + "]"),
    st.just(str(2**63)), st.just("-" + str(2**63)), st.just('"\\x00"'), st.just('"a" * 1000'),
)


# Valid Starlark that fails later: in analysis (cycles, providers, missing files or
# targets) or in the build (a failing action), so the fuzz reaches those stages too.
SEMANTIC_LINES = [
    'concat(name = "cyc1", deps = [":cyc2"])\nconcat(name = "cyc2", deps = [":cyc1"])',
    'concat(name = "self", deps = [":self"])',
    'concat(name = "bad", fail = True)',
    'concat(name = "bad2", deps = [":bad"])\nconcat(name = "bad", fail = True, srcs = ["a.txt"])',
    'image(name = "img", base = ":base")',
    'image(name = "img", layers = [":top"])',
    'concat(name = "m", srcs = ["missing.txt"])',
    'concat(name = "d", deps = ["//nope:x"])',
    'concat(name = "d", deps = ["//q:nope"])',
    'layer(name = "o", srcs = ["../q/BUILD"])',
    'layer(name = "o", srcs = ["/etc/hostname"])',
    'concat(name = "g", srcs = glob(["nomatch/*"], allow_empty = False))',
    'concat(name = "g", srcs = glob(["../*"]))',
    'layer(name = "lm", srcs = ["a.txt"], mode_map = {"a.txt": "9z"})',
    'layer(name = "lo", srcs = ["a.txt"], owner = "root")',
    'pair(name = "base")',
    'pair(name = "x" * 190)',
    'concat(name = "plat", platform = "linux/arm64")',
    'concat(name = "plat", platform = "aarch46")',
]


@st.composite
def starlark_text(draw, text: str) -> str:
    kind = draw(st.sampled_from(["value", "name", "label", "line", "nest", "huge", "truncate", "dup",
                                 "comment", "indent", "semantic", "semantic"]))
    if kind == "semantic":
        return draw(_insert_line(text, st.sampled_from(SEMANTIC_LINES)))
    if kind == "value":
        return draw(_replace_match(text, _VALUE_RE, starlark_values))
    if kind == "name":
        return draw(_replace_match(text, _NAME_RE, st.one_of(identifiers, near_misses, rule_names)))
    if kind == "label":
        return draw(_replace_match(text, _STRING_RE, labelish.map(_quote)))
    if kind == "line":
        return draw(_insert_line(text, st.one_of(calls(), st.builds(lambda n, v: f"{n} = {v}", identifiers,
                                                                    starlark_values))))
    if kind == "nest":
        return draw(_replace_match(text, _VALUE_RE, nested_values))
    if kind == "huge":
        return draw(_replace_match(text, _VALUE_RE, huge_values))
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    if kind == "dup":
        lines = text.split("\n")
        i = draw(st.integers(0, len(lines) - 1))
        return "\n".join(lines[: i + 1] + lines[i:])
    if kind == "comment":
        return draw(_insert_line(text, st.text(max_size=30).map(lambda t: "# " + t.replace("\n", " "))))
    lines = text.split("\n")  # indent: a stray space or tab at the start of a line
    i = draw(st.integers(0, len(lines) - 1))
    lines[i] = draw(st.sampled_from([" ", "\t", "    "])) + lines[i]
    return "\n".join(lines)


# -- TOML --------------------------------------------------------------------------------

_toml_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str),
    st.sampled_from(["true", "false", "1.5", "nan", "-inf", "1979-05-27", "07:32:00", "1979-05-27T07:32:00Z",
                     '""', '"0"', '"linux/arm64"', '"linux/bogus"', '"../x"', '"a/b"', '"."', '"\\u0000"',
                     '"tests.core.fake_rules"', '"no_such_module_zz"', '"os"', '"sys.nope"', '""" """']),
    st.text(max_size=15).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"')
                             .replace("\n", "\\n").replace("\r", "\\r") + '"'),
)
toml_values = st.recursive(
    _toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), inner, max_size=3).map(
            lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}"),
    ),
    max_leaves=6,
)
toml_keys = st.one_of(
    st.sampled_from(["name", "jobs", "platforms", "keep_going", "glob_excludes", "dir", "max_size", "url",
                     "read", "write", "modules", "hosts", "arm64", "amd64", "binfmt_dir", "jbos", "platfroms"]),
    st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True),
)
toml_tables = st.sampled_from(["[workspace]", "[build]", "[cache]", "[plugins]", "[plugins.qemu]",
                               "[plugins.nope]", "[executors]",
                               "[executors.docker]", "[executors.docker.hosts]", "[executors.other]",
                               "[remote_cahce]", "[[build]]", "[build.jobs]", "[workspace.x.y]"])
_TOML_VALUE_RE = re.compile(r"(?<== )[^\n]+")
_TOML_KEY_RE = re.compile(r"^[a-z_]+(?= =)", re.M)


@st.composite
def toml_text(draw, text: str) -> str:
    kind = draw(st.sampled_from(["value", "key", "table", "line", "nest", "truncate", "dup"]))
    if kind == "value":
        return draw(_replace_match(text, _TOML_VALUE_RE, toml_values))
    if kind == "key":
        return draw(_replace_match(text, _TOML_KEY_RE, toml_keys))
    if kind == "table":
        return draw(_insert_line(text, toml_tables))
    if kind == "line":
        return draw(_insert_line(text, st.builds(lambda k, v: f"{k} = {v}", toml_keys, toml_values)))
    if kind == "nest":
        depth = draw(st.integers(1, 300))  # tomllib is pure Python: no crash, a RecursionError at worst
        inner = draw(st.sampled_from([("[", "]"), ("{a = ", "}")]))
        return draw(_replace_match(text, _TOML_VALUE_RE, st.just(_wrap(depth, *inner))))
    if kind == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    lines = text.split("\n")
    i = draw(st.integers(0, len(lines) - 1))
    return "\n".join(lines[: i + 1] + lines[i:])


# -- bytes ---------------------------------------------------------------------------------


@st.composite
def encoded(draw, text: str) -> bytes:
    """The text's bytes: UTF-8, or another encoding, or with bytes flipped or inserted."""
    kind = draw(st.sampled_from(["utf-8"] * 8 + ["latin-1", "utf-16", "utf-8-sig", "flip", "insert", "ff-comment"]))
    if kind == "latin-1":
        return (text + "# café\n").encode("latin-1", errors="replace")
    if kind in ("utf-16", "utf-8-sig"):
        return text.encode(kind)
    data = bytearray(text.encode())
    if kind == "flip" and data:
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "insert":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=4))
    elif kind == "ff-comment":
        data += b"# one bad byte: \xff\n"
    return bytes(data)
