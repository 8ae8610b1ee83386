"""A directory holding its own WORKSPACE.toml is another workspace, as in Bazel: the outer
workspace's ``//...`` does not enter it, its globs do not list it, and a label or load()
into it is an error that says where the target lives and how to build it there."""

from __future__ import annotations

import os

from forge.core.loading import list_package
from forge.core.session import Session

PLUGIN = '[workspace]\nname = "{name}"\n[plugins]\nmodules = ["tests.core.fake_rules"]\n'

# The outer workspace has //app; inner/ is a workspace of its own whose BUILD file loads
# its macros by a label that means something only from inner/ (//pkg:defs.star).
FILES = {
    "WORKSPACE.toml": PLUGIN.format(name="outer"),
    "BUILD": 'concat(name = "everything", srcs = glob(["**"]))\n',
    "app/BUILD": 'concat(name = "app", srcs = ["app.txt"])\n',
    "app/app.txt": "app\n",
    "inner/WORKSPACE.toml": PLUGIN.format(name="inner"),
    "inner/pkg/BUILD": 'load("//pkg:defs.star", "two")\ntwo("t")\n',
    "inner/pkg/defs.star": (
        "def two(name):\n"
        "    concat(name = name, srcs = ['a.txt'])\n"
        "    concat(name = name + '-b', deps = [':' + name])\n"
    ),
    "inner/pkg/a.txt": "a\n",
    "inner/loose.txt": "not the outer workspace's\n",
}


def analyzed_inputs(root, label: str) -> list[str]:
    old = os.getcwd()
    os.chdir(root)
    try:
        targets, _ = Session(root).analyze([label])
    finally:
        os.chdir(old)
    return sorted(i.relpath for t in targets for a in t.actions for i in a.inputs)


def test_recursive_pattern_does_not_enter_a_nested_workspace(forge_workspace):
    ws = forge_workspace(FILES)
    out = ws.run("query", "targets", "//...").assert_success()
    assert out.stdout.split() == ["concat", "//:everything", "concat", "//app:app"]
    ws.run("build", "//...").assert_success()
    # inside it, the nested workspace is a workspace like any other
    inner = type(ws)(ws.root / "inner", ws.cache)
    out = inner.run("query", "targets", "//...").assert_success()
    assert out.stdout.split() == ["concat", "//pkg:t", "concat", "//pkg:t-b"]
    inner.run("build", "//pkg:t-b").assert_success()
    assert (ws.root / "inner/forge-out").is_dir() and not (ws.root / "forge-out/inner").exists()


def test_only_nested_workspaces_below_says_so(forge_workspace):
    ws = forge_workspace({
        "WORKSPACE.toml": PLUGIN.format(name="outer"),
        "examples/a/WORKSPACE.toml": PLUGIN.format(name="a"),
        "examples/a/p/BUILD": 'concat(name = "x")\n',
        "examples/b/WORKSPACE.toml": PLUGIN.format(name="b"),
        "examples/b/BUILD": 'concat(name = "y")\n',
    })
    for pattern in ("//...", "//examples/..."):
        out = ws.run("build", pattern).assert_failure(2)
        assert f"no packages (BUILD files) under {pattern} (not entered: the nested workspaces " \
               "examples/a, examples/b; run forge inside them)" in out.stderr


def test_a_label_into_a_nested_workspace_names_it_and_the_label_there(forge_workspace):
    ws = forge_workspace(FILES)
    cases = {
        "//inner/pkg:t": "//pkg:t",
        "//inner/pkg:all": "//pkg:all",
        "//inner/pkg": "//pkg:pkg",
        "//inner/...": "//...",
        "//inner/pkg/...": "//pkg/...",
    }
    for label, there in cases.items():
        out = ws.run("build", label).assert_failure(2)
        assert "is in inner/, a workspace of its own (it has its own WORKSPACE.toml)" in out.stderr, out.stderr
        assert f"there it is {there}: cd inner && forge build {there}" in out.stderr, (label, out.stderr)
    # as a dependency: the referring target is named too
    ws.write({"dep/BUILD": 'concat(name = "d", deps = ["//inner/pkg:t"])\n'})
    out = ws.run("build", "//dep:d").assert_failure(2)
    assert "//dep:d" in out.stderr and "cd inner && forge build //pkg:t" in out.stderr


def test_load_from_a_nested_workspace_is_refused(forge_workspace):
    ws = forge_workspace({**FILES, "user/BUILD": 'load("//inner/pkg:defs.star", "two")\ntwo("u")\n'})
    out = ws.run("build", "//user:u").assert_failure(2)
    assert "user/BUILD:1" in out.stderr
    assert "load('//inner/pkg:defs.star'): //inner/pkg:defs.star is in inner/, a workspace of its own" in out.stderr


def test_glob_does_not_list_a_nested_workspace(forge_workspace):
    ws = forge_workspace(FILES)
    assert analyzed_inputs(ws.root, "//:everything") == ["BUILD", "WORKSPACE.toml"]
    listed = list_package(ws.root, ws.root)
    assert not [f for f in listed if f.startswith(("inner/", "app/"))], listed


def test_glob_keeps_a_symlink_into_a_nested_workspace_as_a_link(forge_workspace):
    ws = forge_workspace({
        **FILES,
        "BUILD": "",
        "lib/BUILD": 'concat(name = "lib", srcs = glob(["**"]))\n',
        "lib/own.txt": "own\n",
        "inner/data/x.txt": "the inner workspace's\n",
    })
    # a plain directory of the nested workspace (no BUILD file of its own): one entry, the link
    (ws.root / "lib/into-inner").symlink_to("../inner/data")
    (ws.root / "lib/to-app").symlink_to("../app")  # a subpackage: not entered either
    listed = list_package(ws.root / "lib", ws.root)
    assert listed == ["BUILD", "into-inner", "own.txt"], listed


def test_a_workspace_nested_deeper_is_found_at_its_own_root(forge_workspace):
    ws = forge_workspace({
        "WORKSPACE.toml": PLUGIN.format(name="outer"),
        "a/BUILD": 'concat(name = "a")\n',
        "a/b/WORKSPACE.toml": PLUGIN.format(name="b"),
        "a/b/BUILD": 'concat(name = "root-of-b")\n',
        "a/b/c/BUILD": 'concat(name = "c")\n',
    })
    out = ws.run("query", "targets", "//a/...").assert_success()
    assert out.stdout.split() == ["concat", "//a:a"]
    out = ws.run("build", "//a/b/c:c").assert_failure(2)
    assert "cd a/b && forge build //c:c" in out.stderr
    out = ws.run("build", "//a/b:root-of-b").assert_failure(2)
    assert "cd a/b && forge build //:root-of-b" in out.stderr
    out = ws.run("query", "targets", "//...").assert_success()  # from the root: //a only
    assert out.stdout.split() == ["concat", "//a:a"]
