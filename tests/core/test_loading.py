"""BUILD evaluation: errors carry file:line:column and suggest the nearest valid name."""

PLUGIN = '[workspace]\nname = "t"\n[plugins]\nmodules = ["tests.core.fake_rules"]\n'


def test_unknown_attribute_suggests(forge_workspace):
    ws = forge_workspace({"WORKSPACE.toml": PLUGIN, "p/BUILD": '\n\nconcat(name = "a", srsc = [])\n'})
    out = ws.run("build", "//p:a").assert_failure(2)
    assert "p/BUILD:3:1" in out.stderr
    assert "unknown attribute 'srsc'" in out.stderr
    assert "did you mean 'srcs'" in out.stderr


def test_unknown_rule_suggests(forge_workspace):
    ws = forge_workspace({"WORKSPACE.toml": PLUGIN, "p/BUILD": 'concta(name = "a")\n'})
    out = ws.run("build", "//p:a").assert_failure(2)
    assert "p/BUILD:1:1" in out.stderr and "did you mean 'concat'" in out.stderr


def test_syntax_error_has_location(forge_workspace):
    ws = forge_workspace({"WORKSPACE.toml": PLUGIN, "p/BUILD": 'concat(name = "a"\nx = \n'})
    out = ws.run("query", "targets", "//p:all").assert_failure(2)
    assert "p/BUILD:" in out.stderr


def test_wrong_attribute_type(forge_workspace):
    ws = forge_workspace({"WORKSPACE.toml": PLUGIN, "p/BUILD": 'concat(name = "a", text = 3)\n'})
    out = ws.run("build", "//p:a").assert_failure(2)
    assert "p/BUILD:1:1" in out.stderr and "attribute 'text' should be a string" in out.stderr


def test_unknown_label_suggests(forge_workspace):
    ws = forge_workspace({
        "WORKSPACE.toml": PLUGIN,
        "p/BUILD": 'concat(name = "base", text = "x")\n\nconcat(name = "top", deps = [":bsae"])\n',
    })
    out = ws.run("build", "//p:top").assert_failure(2)
    assert "p/BUILD:3" in out.stderr
    assert "no target 'bsae'" in out.stderr and "did you mean 'base'" in out.stderr


def test_unknown_package(forge_workspace):
    ws = forge_workspace({"WORKSPACE.toml": PLUGIN, "pkg/BUILD": 'concat(name = "a")\n'})
    out = ws.run("build", "//pkk:a").assert_failure(2)
    assert "no package '//pkk'" in out.stderr and "did you mean 'pkg'" in out.stderr


def test_load_macro_and_package_name(forge_workspace):
    ws = forge_workspace({
        "WORKSPACE.toml": PLUGIN,
        "defs/BUILD": "",
        "defs/macros.star": (
            "def pair(name, text):\n"
            "    concat(name = name + '-a', text = text + package_name())\n"
            "    concat(name = name + '-b', deps = [':' + name + '-a'])\n"
        ),
        "app/BUILD": 'load("//defs:macros.star", "pair")\npair("x", "hello")\n',
    })
    out = ws.run("query", "targets", "//app:all").assert_success()
    assert "//app:x-a" in out.stdout and "//app:x-b" in out.stdout
    ws.run("build", "//app:x-b").assert_success()
    blob = (ws.root / "forge-out/app/x-b/out").read_text()
    assert blob == "helloapp"


def test_load_missing_file(forge_workspace):
    ws = forge_workspace({"WORKSPACE.toml": PLUGIN, "app/BUILD": 'load("//defs:nope.star", "m")\n'})
    out = ws.run("query", "targets", "//app:all").assert_failure(2)
    assert "nope.star" in out.stderr


def test_glob_sorted_excludes_and_stays_in_package(forge_workspace):
    ws = forge_workspace({
        "WORKSPACE.toml": PLUGIN,
        "p/BUILD": 'concat(name = "g", srcs = glob(["**/*.txt"], exclude = ["skip.txt"]))\n',
        "p/b.txt": "B", "p/a.txt": "A", "p/skip.txt": "S", "p/d/c.txt": "C",
        "p/sub/BUILD": "", "p/sub/hidden.txt": "H",
    })
    ws.run("build", "//p:g").assert_success()
    assert (ws.root / "forge-out/p/g/out").read_text() == "ABC"
    bad = forge_workspace({"WORKSPACE.toml": PLUGIN, "p/BUILD": 'concat(name = "g", srcs = glob(["../*"]))\n'},
                          name="bad")
    out = bad.run("build", "//p:g").assert_failure(2)
    assert "stay inside the package" in out.stderr


def test_workspace_unknown_key(forge_workspace):
    ws = forge_workspace({"WORKSPACE.toml": '[build]\njbos = 2\n', "BUILD": ""})
    out = ws.run("query", "targets", "//...").assert_failure(2)
    assert "WORKSPACE.toml" in out.stderr and "unknown key 'jbos'" in out.stderr
    assert "did you mean 'jobs'" in out.stderr
    ws2 = forge_workspace({"WORKSPACE.toml": '[remote_cahce]\nurl = "x"\n', "BUILD": ""}, name="w2")
    out = ws2.run("query", "targets", "//...").assert_failure(2)
    assert "did you mean 'remote_cache'" in out.stderr


def test_cycle_is_reported_as_chain(forge_workspace):
    ws = forge_workspace({
        "WORKSPACE.toml": PLUGIN,
        "p/BUILD": (
            'concat(name = "a", deps = [":b"])\n'
            'concat(name = "b", deps = ["//q:c"])\n'
        ),
        "q/BUILD": 'concat(name = "c", deps = ["//p:a"])\n',
    })
    out = ws.run("build", "//p:a").assert_failure(2)
    assert "dependency cycle: //p:a -> //p:b -> //q:c -> //p:a" in out.stderr


def test_unknown_platform_suggests(forge_workspace):
    ws = forge_workspace({"WORKSPACE.toml": PLUGIN, "p/BUILD": 'concat(name = "a", platform = "aarch46")\n'})
    out = ws.run("build", "//p:a").assert_failure(2)
    assert "unknown platform 'aarch46'" in out.stderr and "did you mean 'aarch64'" in out.stderr
