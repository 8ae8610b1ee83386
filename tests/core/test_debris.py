"""``cas/tmp`` debris: what a killed forge leaves behind is removed by the next build and by
``forge cache gc``; what a running forge is writing is never touched (core/cas.py,
"Debris": one flock-held lock file per CAS instance, ``cas/locks/<owner>.lock``)."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from forge.core.cas import CAS

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = '[workspace]\nname = "t"\n[plugins]\nmodules = ["tests.core.fake_rules"]\n'
FILES = {
    "WORKSPACE.toml": PLUGIN,
    "p/BUILD": 'concat(name = "solo", srcs = ["s.txt"])\nconcat(name = "other", srcs = ["o.txt"])\n',
    "p/s.txt": "S", "p/o.txt": "O",
}
OWNER = re.compile(r"(?:\.tmp|work)-([0-9]+-[0-9a-f]{8})-")

# A process that holds debris of every kind open: a work directory with a file and a
# sub-directory, and a half-written blob. It prints "ready", then waits to be killed.
HOLDER = """
import sys, time
from forge.core.cas import CAS
cas = CAS(sys.argv[1])
work = cas.tempdir()
(work / "part").write_bytes(b"w" * 4096)
(work / "sub").mkdir()
(work / "sub" / "f").write_bytes(b"x")
writer = cas.writer()
w = writer.__enter__()
w.write(b"half a blob " * 100)
w.flush()
print("ready", flush=True)
time.sleep(600)
"""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}


def _forge(ws, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "forge.cli", *args], cwd=ws.root,
                            env=_env({"FORGE_CACHE": str(ws.cache), **(env or {})}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _holder(cas_root: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(cas_root)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.poll() is not None else line
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _entries(tmp: Path) -> set[str]:
    return {p.name for p in tmp.iterdir()}


def _owners(names: set[str]) -> set[str]:
    return {m.group(1) for n in names if (m := OWNER.match(n))}


def _wait_for_write(tmp: Path, proc: subprocess.Popen, known: set[str] = frozenset()) -> set[str]:
    """The names of the temp blobs ``proc`` started streaming (not in ``known``)."""
    deadline = time.time() + 30
    while time.time() < deadline:
        if tmp.exists():
            fresh = {p.name for p in tmp.iterdir() if p.name.startswith(".tmp-")
                     and p.name not in known and p.stat().st_size > 0}
            if fresh:
                return fresh
        if proc.poll() is not None:
            raise AssertionError(f"forge exited before writing: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the action never started writing")


def test_next_build_removes_what_a_sigkilled_build_left(forge_workspace):
    ws = forge_workspace(FILES)
    tmp, locks = ws.cache / "cas/tmp", ws.cache / "cas/locks"
    holder = _holder(ws.cache / "cas")  # a work directory and a half-written blob
    build = _forge(ws, "build", "//p:solo", "--json", env={"FORGE_TEST_SLOW_WRITE": "5"})
    _wait_for_write(tmp, build, known=_entries(tmp))
    _kill(build)
    _kill(holder)
    debris = _entries(tmp)
    assert any(n.startswith(".tmp-") for n in debris) and any(n.startswith("work-") for n in debris)
    dead = _owners(debris)
    assert len(dead) == 2 and {f"{o}.lock" for o in dead} <= _entries(locks)

    out = ws.run("build", "//p:solo", "--json").assert_success()
    assert out.executed() == ["//p:solo#Concat.0"]
    assert _entries(tmp) == set()
    assert not {f"{o}.lock" for o in dead} & _entries(locks)


def test_gc_removes_debris_but_not_a_live_builds_temp_files(forge_workspace, monkeypatch):
    ws = forge_workspace(FILES)
    monkeypatch.setenv("FORGE_CACHE", str(ws.cache))
    cas_root = ws.cache / "cas"
    tmp = cas_root / "tmp"
    ws.run("build", "//p:other").assert_success()  # the cache exists
    live = _forge(ws, "build", "//p:solo", "--json", env={"FORGE_TEST_SLOW_WRITE": "8"})
    holder = None
    try:
        writing = _wait_for_write(tmp, live)
        holder = _holder(cas_root)  # a second live process, with a work directory too
        alive = _entries(tmp)
        assert writing <= alive and len(_owners(alive)) == 2
        _kill(_holder(cas_root))  # opened after the live ones, killed: its entries are debris
        dead = _entries(tmp) - alive
        assert len(_owners(dead)) == 1 and len(dead) == 2
        # Entries an older forge wrote carry no owner: removed only when old.
        two_hours_ago = time.time() - 2 * 3600
        (tmp / ".tmp-abcdefgh").write_bytes(b"old")
        os.utime(tmp / ".tmp-abcdefgh", (two_hours_ago, two_hours_ago))
        (tmp / "work-oldoldol").mkdir()
        (tmp / "work-oldoldol" / "f").write_bytes(b"old")
        os.utime(tmp / "work-oldoldol" / "f", (two_hours_ago, two_hours_ago))
        os.utime(tmp / "work-oldoldol", (two_hours_ago, two_hours_ago))
        (tmp / ".tmp-freshfre").write_bytes(b"fresh")

        from forge.core.cache_admin import collect
        from forge.core.session import Session

        report = collect(Session(ws.root), 10 << 30)
        assert report.debris.entries == 4 and report.removed == 0  # dead owner's 2, old 2
        assert _entries(tmp) == alive | {".tmp-freshfre"}
        sizes = {n: (tmp / n).stat().st_size for n in writing}

        (tmp / ".tmp-freshfre").unlink()
        _kill(_holder(cas_root))
        assert _entries(tmp) != alive
        ws.run("build", "//p:other", "--json").assert_success()  # opening the CAS collects
        assert _entries(tmp) == alive
        ws.run("cache", "gc", "--max-size", "10G").assert_success()
        assert _entries(tmp) == alive

        (tmp / ".tmp-freshfre").write_bytes(b"fresh")
        report = collect(Session(ws.root), 10 << 30, debris_max_age=0)
        assert report.debris.entries == 1 and _entries(tmp) == alive  # the fresh unowned file
        assert all((tmp / n).stat().st_size >= size for n, size in sizes.items())  # still written
    finally:
        if holder is not None:
            _kill(holder)
    stdout, stderr = live.communicate(timeout=60)
    assert live.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert [e["status"] for e in events if e.get("event") == "action"] == ["built"]
    assert (ws.root / "forge-out/p/solo/out").read_bytes().startswith(b"S")
    ws.run("cache", "gc", "--max-size", "10G").assert_success()
    assert _entries(tmp) == set()  # the finished build left nothing, the killed holder's went


def test_a_cas_of_this_process_keeps_another_ones_entries(tmp_path):
    a = CAS(tmp_path / "cas")
    work = a.tempdir()
    with a.writer() as w:
        w.write(b"streaming")
        b = CAS(tmp_path / "cas")  # opening collects: a's entries are a live owner's
        assert work.is_dir() and len(_entries(a.root / "tmp")) == 2
        assert b.collect_debris(0).entries == 0
    assert work.is_dir()
    # Once a is gone, what it left behind (a work directory nobody removed) is debris.
    del a, w
    gc.collect()
    assert b.collect_debris().entries == 1 and not work.exists()
    assert _entries(b.root / "tmp") == set()


def test_a_lock_nobody_holds_is_a_dead_owner(tmp_path):
    cas = CAS(tmp_path / "cas")
    (cas.root / "locks").mkdir(exist_ok=True)
    (cas.root / "locks" / "999999-0badc0de.lock").write_bytes(b"")  # died before any entry
    (cas.root / "tmp" / ".tmp-999999-0badc0de-zzzzzzzz").write_bytes(b"x" * 10)
    (cas.root / "tmp" / "work-888888-0badc0de-yyyyyyyy").mkdir()  # its lock is gone too
    # A killed run with this very pid (a container gives a build the same pid every run).
    (cas.root / "locks" / f"{os.getpid()}-deadbeef.lock").write_bytes(b"")
    (cas.root / "tmp" / f"work-{os.getpid()}-deadbeef-xxxxxxxx").mkdir()
    got = cas.collect_debris()
    assert (got.entries, got.locks) == (3, 2) and got.bytes >= 10
    assert _entries(cas.root / "tmp") == set() and _entries(cas.root / "locks") == set()


def test_without_flock_entries_carry_no_owner_and_age_decides(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    cas = CAS(tmp_path / "cas")
    work = cas.tempdir()
    with cas.writer() as w:
        w.write(b"still written")
    assert re.fullmatch(r"work-[a-z0-9_]{8}", work.name) and cas.has(w.digest)
    assert _entries(cas.root / "locks") == set()
    assert CAS(tmp_path / "cas").collect_debris().entries == 0 and work.is_dir()
    assert CAS(tmp_path / "cas").collect_debris(max_age_s=-1).entries == 1 and not work.exists()
