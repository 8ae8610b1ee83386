"""What a new user reads: explain's names and reasons, --json errors, the live display, the
failure excerpt, the graph legend, doctor's extra checks, and --help summaries (issue 15).

This module is also the workspace plugin of its tests (``[plugins] modules =
["tests.test_cli_ux"]``): a ``ux_chain`` rule declares one action per source file, named
after it as a Dockerfile chain step is, and can fail at one of them with a coloured error.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections import namedtuple
from pathlib import Path

import pytest

import forge
from forge import attr

PLUGIN = '[workspace]\nname = "ux"\n[plugins]\nmodules = ["tests.test_cli_ux"]\n'
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class UxChain(forge.Rule):
    name = "ux_chain"
    doc = "One action per file of srcs, each on the one before (test rule)."
    attrs = {
        "srcs": attr.sources(doc="the steps, in order"),
        "fail_at": attr.string(default="", doc="the file whose step fails"),
        "hermetic": attr.boolean(default=True, doc="whether the steps are hermetic"),
    }

    def analyze(self, ctx):
        previous = None
        for src in ctx.files(ctx.attr.srcs):
            previous = ctx.action(
                "Step", run_step, inputs=[src], deps=[previous] if previous else [],
                params={"fail": src.relpath == ctx.attr.fail_at}, hermetic=ctx.attr.hermetic,
                description=src.relpath,
            )
        return [forge.DefaultInfo(previous)]


def run_step(rc):
    rc.log(f"running {rc.action.description}")
    if rc.params["fail"]:
        raise forge.ActionFailed("\x1b[31mboom\x1b[0m: [internal] the step failed")
    data = b"".join([rc.cas.read_bytes(rc.dep(d).outputs["out"].digest) for d in rc.action.deps]
                    + [f.path.read_bytes() for f in rc.action.inputs])
    return rc.result({"out": rc.cas.put_bytes(data)})


@forge.hookimpl
def forge_register_rules(registry):
    registry.add(UxChain)


STEPS = ["10-Dockerfile-base", "20-Dockerfile-tools", "30-Dockerfile-final"]


def chain_ws(forge_workspace, fail_at="", extra=""):
    srcs = ", ".join(f'"{s}"' for s in STEPS)
    build = f'ux_chain(name = "chain", srcs = [{srcs}], fail_at = "{fail_at}")\n' + extra
    return forge_workspace({"WORKSPACE.toml": PLUGIN, "p/BUILD": build,
                            **{f"p/{s}": f"{s}\n" for s in STEPS}})


# -- 1. explain ---------------------------------------------------------------------------


def test_explain_names_chain_steps_by_their_file(forge_workspace):
    ws = chain_ws(forge_workspace)
    ws.run("build", "//p:chain").assert_success()
    (ws.root / "p/20-Dockerfile-tools").write_text("edited\n")
    out = ws.run("explain", "//p:chain").assert_success().stdout
    assert "//p:chain#Step.0 (10-Dockerfile-base): up to date" in out
    assert "//p:chain#Step.1 (20-Dockerfile-tools): would rebuild because:" in out
    assert "input 20-Dockerfile-tools content changed" in out
    assert "//p:chain#Step.2 (30-Dockerfile-final): would rebuild (a dependency would rebuild)" in out
    ws.run("build", "//p:chain").assert_success()
    out = ws.run("explain", "//p:chain").assert_success().stdout
    assert "output of //p:chain#Step.1 (20-Dockerfile-tools) changed" in out


def test_explain_after_a_failed_step_says_it_failed_with_its_log(forge_workspace):
    ws = chain_ws(forge_workspace, fail_at="20-Dockerfile-tools")
    ws.run("build", "//p:chain").assert_failure(1)
    log = ws.root / "forge-out/logs/p/chain/01-Step.log"
    assert log.exists()
    out = ws.run("explain", "//p:chain").assert_success().stdout
    assert "no longer in the cache" not in out
    assert "//p:chain#Step.0 (10-Dockerfile-base): up to date" in out
    assert (f"//p:chain#Step.1 (20-Dockerfile-tools): would rebuild because:\n"
            f"    - the last build of it failed (log: {log}); nothing was recorded") in out
    # an edit since the failure: what changed, and that the last build failed
    (ws.root / "p/20-Dockerfile-tools").write_text("edited\n")
    out = ws.run("explain", "//p:chain").assert_success().stdout
    assert "input 20-Dockerfile-tools content changed" in out
    assert f"its last build, before these changes, failed (log: {log})" in out


# -- 2. --json ----------------------------------------------------------------------------


def _error_event(out):
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert events and events[-1]["event"] == "error", out.stdout
    return events[-1]


def test_json_usage_build_and_config_errors_are_json_on_stdout(forge_workspace):
    ws = chain_ws(forge_workspace)
    missing = ws.run("build", "--json").assert_failure(2)
    event = _error_event(missing)
    assert event == {"event": "error", "kind": "UsageError", "exit_code": 2,
                     "message": "Missing argument 'PATTERNS...'."}
    assert "Missing argument" in missing.stderr
    unknown = ws.run("build", "//p:chain", "--json", "--no-such-flag").assert_failure(2)
    assert "--no-such-flag" in _error_event(unknown)["message"]
    label = ws.run("build", "//nowhere:x", "--json").assert_failure(2)
    assert _error_event(label)["kind"] == "LabelError" and "forge: error:" in label.stderr
    (ws.root / "p/BUILD").write_text('ux_chain(name = "chain", srcs = [], nope = 1)\n')
    bad_build = _error_event(ws.run("build", "//p:chain", "--json").assert_failure(2))
    assert bad_build["exit_code"] == 2 and "nope" in bad_build["message"]
    assert bad_build["kind"] == "BuildFileError"
    (ws.root / "WORKSPACE.toml").write_text(PLUGIN + "[build]\nno_such_key = 1\n")
    config = _error_event(ws.run("build", "//p:chain", "--json").assert_failure(2))
    assert config["kind"] == "ConfigError" and config["exit_code"] == 2
    # without --json, stdout stays empty
    assert ws.run("build", "//p:chain").assert_failure(2).stdout == ""


def test_json_failed_action_carries_its_log_and_no_escapes(forge_workspace):
    ws = chain_ws(forge_workspace, fail_at="20-Dockerfile-tools")
    out = ws.run("build", "//p:chain", "--json").assert_failure(1)
    failed = next(e for e in out.actions() if e["status"] == "failed")
    assert failed["error"] == "boom: [internal] the step failed"
    assert Path(failed["log"]) == ws.root / "forge-out/logs/p/chain/01-Step.log"
    assert "running 20-Dockerfile-tools" in Path(failed["log"]).read_text()
    event = _error_event(out)
    assert event["exit_code"] == 1 and "\x1b" not in event["message"]


# -- 3. the live display and the failure excerpt -----------------------------------------


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


class _FakeAction:
    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def _summary(label, status):
    from forge.core.labels import parse_label
    from forge.core.session import TargetSummary

    return TargetSummary(parse_label(label, ""), "linux/amd64", status, 1.5, "", 0, {}, "", True)


def test_live_reporter_shows_elapsed_time_whole_failures_and_the_counts_line(monkeypatch, tmp_path):
    from rich.console import Console

    from forge.core import report
    from forge.core.execution import Outcome

    clock = _Clock()
    monkeypatch.setattr(report, "time", clock)
    buf = io.StringIO()
    screen = Console(file=buf, force_terminal=True, width=200, color_system=None)
    monkeypatch.setattr("rich.console.Console", lambda **kw: screen)  # the reporter's terminal
    live = report.LiveReporter()
    live.build_started(3)
    clock.now += 75.3
    snapshot = Console(file=io.StringIO(), width=200, color_system=None)
    snapshot.print(live._render())
    assert "forge 75.3s  0/3 actions: starting" in snapshot.file.getvalue()
    clock.now += 2
    snapshot = Console(file=io.StringIO(), width=200, color_system=None)
    snapshot.print(live._render())
    assert "forge 77.3s" in snapshot.file.getvalue()  # it runs on

    log = tmp_path / "00-DockerBuild.log"
    log.write_text("the log\n")
    error = ("Dockerfile: failed at Step 3/3 : RUN pip install x\n  last output:\n"
             "    [internal] load metadata\n    \x1b[31merror\x1b[0m: externally-managed-environment")
    action = _FakeAction("DockerBuild //app:img (Dockerfile)")
    live.action_started(action)
    live.action_log(action, "[notice] a \x1b[1mbold\x1b[0m line [/]")  # neither markup nor an error
    snapshot = Console(file=io.StringIO(), width=200, color_system=None)
    snapshot.print(live._render())
    assert "[notice] a bold line [/]" in snapshot.file.getvalue()
    live.action_finished(Outcome(action, "failed", error=error, log_path=log))
    live.action_finished(Outcome(_FakeAction("Concat //p:a"), "built"))
    summaries = [_summary("//app:img", "failed"), _summary("//p:a", "built")]
    counts = {"built": 1, "failed": 1}
    live.build_finished(summaries, 2.0, counts)
    shown = report.strip_ansi(buf.getvalue())
    assert "[internal] load metadata" in shown
    assert "error: externally-managed-environment" in shown
    assert f"log: {log}" in shown
    plain = io.StringIO()
    report.PlainReporter(plain).build_finished(summaries, 2.0, counts)
    counts_line = plain.getvalue().splitlines()[0]
    assert counts_line == "2 target(s) in 2.00s: 1 built, 1 failed"
    assert counts_line in shown


PEP668 = """\
Collecting requests
  Downloading requests-2.31.0-py3-none-any.whl (62 kB)
\x1b[1;31merror\x1b[0m: \x1b[1mexternally-managed-environment\x1b[0m
\u00d7 This environment is externally managed
\u2570\u2500> To install Python packages system-wide, try apt install
    python3-xyz, where xyz is the package you are trying to
    install.
    If you wish to install a non-Debian-packaged Python package,
    create a virtual environment using python3 -m venv path/to/venv.
    Then use path/to/venv/bin/python and path/to/venv/bin/pip. Make
    sure you have python3-full installed.
    If you wish to install a non-Debian packaged Python application,
    it may be easiest to use pipx install xyz, which will manage a
    virtual environment for you. Make sure you have pipx installed.
    See /usr/share/doc/python3.11/README.venv for more information.
note: If you believe this is a mistake, please contact your Python installation or OS distribution provider.
hint: See PEP 668 for the detailed specification.
"""


def test_failure_excerpt_keeps_the_decisive_block():
    from forge.plugins.docker import failure_excerpt

    lines = [" ---> Running in 0123abcd", *PEP668.splitlines(), "Removing intermediate container 0123abcd"]
    shown = failure_excerpt(lines)
    assert shown[0] == "  Downloading requests-2.31.0-py3-none-any.whl (62 kB)"  # one line of context
    assert ANSI.sub("", shown[1]) == "error: externally-managed-environment"
    assert shown[-1] == "hint: See PEP 668 for the detailed specification."
    assert not any("Running in" in line or "intermediate container" in line for line in shown)
    # no decisive line (libgpg-error0 is a package name): the last 8 lines
    quiet = [f"Setting up libgpg-error0 ({i})" for i in range(20)]
    assert failure_excerpt(quiet) == quiet[-8:]
    # a very long block: its head, "...", its tail
    long = ["make: *** error 1", *(f"line {i}" for i in range(100))]
    shown = failure_excerpt(long)
    assert len(shown) == 30 and shown[0] == "make: *** error 1" and shown[-1] == "line 99"
    assert "..." in shown


# -- 4. graph and doctor ------------------------------------------------------------------


def test_graph_has_a_legend_and_the_last_build_s_colours(forge_workspace):
    extra = 'ux_chain(name = "net", srcs = ["10-Dockerfile-base"], hermetic = False)\n'
    ws = chain_ws(forge_workspace, fail_at="30-Dockerfile-final", extra=extra)
    node = re.compile(r'n\d+ \[label="Step\\n([^"]+)", style="([^"]+)", fillcolor=(\w+)\];')
    before = ws.run("graph", "//p:all").assert_success().stdout
    assert sorted(node.findall(before)) == [
        ("10-Dockerfile-base", "filled", "white"), ("10-Dockerfile-base", "filled,dashed", "white"),
        ("20-Dockerfile-tools", "filled", "white"), ("30-Dockerfile-final", "filled", "white"),
    ]  # nothing built yet
    ws.run("build", "//p:all", "-k").assert_failure(1)
    dot = ws.run("graph", "//p:all").assert_success().stdout
    assert sorted(node.findall(dot)) == [
        ("10-Dockerfile-base", "filled", "palegreen"), ("10-Dockerfile-base", "filled,dashed", "palegreen"),
        ("20-Dockerfile-tools", "filled", "palegreen"), ("30-Dockerfile-final", "filled", "salmon"),
    ]
    legend = dot[dot.index("subgraph cluster_legend"):]
    for text in ('label="built", fillcolor=palegreen', 'label="failed", fillcolor=salmon',
                 'label="cached-local"', 'label="not built"', "non-hermetic", "style=\"filled,dashed\""):
        assert text in legend, text
    assert dot.count("->") == 2  # the legend adds no edge
    if shutil.which("dot"):
        ws.run("graph", "//p:all", "--format", "svg").assert_success()


DiskUsage = namedtuple("DiskUsage", "total used free")


def test_doctor_checks_tools_and_disk_space(forge_workspace, monkeypatch):
    import forge.core.doctor as doctor

    ws = forge_workspace({"BUILD": ""})
    dead = {"DOCKER_HOST": "tcp://127.0.0.1:9"}  # no engine: its builders are not asked again
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(100 << 30, 98 << 30, 2 << 30))
    out = ws.run("doctor", env=dead).stdout
    assert re.search(r"^\[warn\] disk space: 2\.0 GB free of 100\.0 GB at .*under 5\.0 GB", out, re.M), out
    assert "forge cache gc" in out
    assert "builders tcp://127.0.0.1:9" not in out
    for tool, name in (("debootstrap", "debootstrap"), ("dot", "graphviz dot")):
        found = doctor.find_tool(tool)
        line = next(line for line in out.splitlines() if line[7:].startswith(f"{name}: "))
        assert line.startswith("[ok  ]" if found else "[warn]") and (not found or found in line)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(100 << 30, 10 << 30, 90 << 30))
    monkeypatch.setattr(doctor, "find_tool", lambda name: None)
    out = ws.run("doctor", env=dead).stdout
    assert "[ok  ] disk space: 90.0 GB free of 100.0 GB" in out
    assert "[warn] debootstrap: not found; debootstrap targets build Debian roots with it: " \
           "apt-get install debootstrap" in out
    assert "[warn] graphviz dot: not found;" in out and "apt-get install graphviz" in out


@pytest.mark.integration
def test_doctor_names_the_builders_of_the_engine(forge_workspace, docker_client):
    ws = forge_workspace({"BUILD": ""})
    out = ws.run("doctor").stdout
    line = next((line for line in out.splitlines() if line.startswith("[ok  ] builders ")), None)
    assert line is not None, out
    assert "classic" in line
    major = int(docker_client.version()["Version"].split(".")[0])
    if major >= 19:  # BuildKit is in every engine since 18.09
        assert "BuildKit" in line


# -- 5. --help ----------------------------------------------------------------------------


@pytest.mark.parametrize("group", [(), ("cache",), ("query",)])
def test_help_summaries_are_whole_single_lines(forge_workspace, group):
    ws = forge_workspace({"BUILD": ""})
    out = ws.run(*group, "--help", env={"COLUMNS": "80"}).assert_success().stdout
    rows = out.split("Commands:\n", 1)[1].splitlines()
    assert rows and all(re.match(r"^  \S+ +\S", row) for row in rows), rows  # none wraps
    for row in rows:
        assert not row.endswith("..."), row
        assert len(row) <= 80, row


# -- the same on the real engine ----------------------------------------------------------

PIP_SH = "printf '" + PEP668.replace("\x1b", "\\033").replace("\n", "\\n").replace("'", "'\\''") + "'\nexit 1\n"


@pytest.mark.integration
def test_docker_failures_show_the_decisive_lines_and_explain_names_the_step(forge_workspace, docker_client):
    from tests.docker.test_dockerfile import busybox_ws

    secret = "s3cret-build-arg-value"
    ws = busybox_ws(forge_workspace, {
        "app/chain/10-Dockerfile-base": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo base > /base\n",
        "app/chain/20-Dockerfile-pip": ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo libgpg-error0 set up\n"
                                        "COPY pip.sh /pip.sh\nRUN sh /pip.sh\n"),
        "app/chain/pip.sh": PIP_SH,
        "app/Dockerfile.parse": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nFORM typo\n",
        "app/BUILD": (
            'dockerfile_chain(name = "chain", dir = "chain", base = ":busybox-amd64")\n'
            'dockerfile(name = "parse", base = ":busybox-amd64", dockerfile = "Dockerfile.parse",'
            f' build_args = {{"TOKEN": "{secret}"}})\n'
        ),
    })
    out = ws.run("build", "//app:chain", "//app:parse", "-k", "--json").assert_failure(1)
    failed = {e["id"]: e for e in out.actions() if e["status"] == "failed"}
    pip = failed["//app:chain#DockerBuild.1"]
    assert "\x1b" not in pip["error"]
    assert "error: externally-managed-environment" in pip["error"]
    assert "hint: See PEP 668" in pip["error"]
    assert "libgpg-error0" not in pip["error"]  # the step before is not this failure
    assert Path(pip["log"]).name == "01-DockerBuild.log"
    parse = failed["//app:parse#DockerBuild.0"]
    assert parse["error"].startswith("app/Dockerfile.parse:3: dockerfile parse error"), parse["error"]
    assert "unknown instruction: form" in parse["error"].lower()
    assert "http+docker" not in out.stdout + out.stderr and secret not in out.stdout + out.stderr
    explained = ws.run("explain", "//app:chain").assert_success().stdout
    assert "//app:chain#DockerBuild.0 (10-Dockerfile-base): up to date" in explained
    assert ("//app:chain#DockerBuild.1 (20-Dockerfile-pip): would rebuild because:\n"
            f"    - the last build of it failed (log: {pip['log']})") in explained
