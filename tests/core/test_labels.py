import pytest

from forge.core.errors import LabelError
from forge.core.labels import Label, parse_label, parse_pattern


@pytest.mark.parametrize(
    "text, pkg, expected",
    [
        ("//a/b:c", None, Label("a/b", "c")),
        ("//a/b", None, Label("a/b", "b")),
        ("//:root", None, Label("", "root")),
        (":x", "p/q", Label("p/q", "x")),
        ("x", "p", Label("p", "x")),
        ("//a:dir/file.txt", None, Label("a", "dir/file.txt")),
    ],
)
def test_parse_label(text, pkg, expected):
    assert parse_label(text, pkg) == expected


@pytest.mark.parametrize(
    "text, pkg, message",
    [
        ("", None, "empty"),
        (":x", None, "must be absolute"),
        ("//a/../b:c", None, "invalid package"),
        ("//a:", None, "invalid target name"),
        ("@repo//a:b", None, "external repositories"),
        ("//", None, "names no target"),
        ("//a:b c", None, "invalid target name"),
    ],
)
def test_parse_label_errors(text, pkg, message):
    with pytest.raises(LabelError, match=message):
        parse_label(text, pkg)


def test_label_str_and_short():
    assert str(Label("a/b", "c")) == "//a/b:c"
    assert Label("a/b", "b").short == "//a/b"


@pytest.mark.parametrize(
    "text, package, name, recursive",
    [
        ("//a:b", "a", "b", False),
        ("//a", "a", "a", False),
        ("//a:all", "a", None, False),
        ("//a:*", "a", None, False),
        ("//a/...", "a", None, True),
        ("//...", "", None, True),
    ],
)
def test_parse_pattern(text, package, name, recursive):
    p = parse_pattern(text)
    assert (p.package, p.name, p.recursive) == (package, name, recursive)


def test_pattern_matching_and_errors():
    assert parse_pattern("//a/...").matches_package("a/b")
    assert not parse_pattern("//a/...").matches_package("ab")
    assert parse_pattern("//...").matches_package("anything")
    with pytest.raises(LabelError, match="must start with //"):
        parse_pattern("a:b")
