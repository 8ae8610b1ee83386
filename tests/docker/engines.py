"""A second, empty Docker engine of the test's own, reachable as ``tcp://127.0.0.1:PORT``.

    from tests.docker.engines import second_engine  # noqa: F401 - the fixture

    def test_x(second_engine):
        second_engine.host      # "tcp://127.0.0.1:PORT": forge's "remote" route (docker save)
        second_engine.socket    # "unix:///tmp/forge-engine-…/docker.sock": the same engine, local
        second_engine.client    # docker SDK client of it
        second_engine.prune()   # remove every image and container in it (it is ours alone)

    from tests.docker.engines import engine_pool  # noqa: F401 - POOL_SIZE engines at once

    def test_y(engine_pool):
        engine_pool             # a list of POOL_SIZE Engines, started in parallel
        engine_pool[0].kill()   # SIGKILL its dockerd (an engine that stops answering)

It is a ``/usr/sbin/dockerd`` with its own ``--data-root``, ``--exec-root`` and
``--pidfile`` in a temporary directory, no bridge, no iptables rules, and its own
containerd (dockerd starts one under its exec root when ``--containerd`` is not given:
Debian's docker.io runs no system containerd at ``/run/containerd/containerd.sock``, and
sharing the default engine's ``/var/run/docker/containerd/containerd.sock`` would tie
this engine's life to that one's). It starts with no images, which is the point: every
layer it holds, forge sent or it built. When it cannot start, the test fails under
``CI=true`` with the tail of dockerd's log, and is skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.services import unavailable

DOCKERD = Path("/usr/sbin/dockerd")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.splitlines()[-lines:])


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    found = []
    with contextlib.suppress(OSError), open("/proc/self/mounts") as fh:
        for line in fh:
            point = line.split()[1].replace("\\040", " ")
            if point.startswith(prefix):
                found.append(point)
    return sorted(found, key=len, reverse=True)  # innermost first


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Engine:
    root: Path
    port: int
    process: subprocess.Popen
    client: Any = None

    @property
    def host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def socket(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def log_tail(self, lines: int = 30) -> str:
        return _log_tail(self.log, lines)

    def kill(self) -> None:
        """SIGKILL the dockerd (its containerd is left to ``stop``): an engine that dies."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def running_build(self) -> bool:
        """Whether a build step runs on this engine now: a container of the classic
        builder, or a BuildKit step (dockerd runs BuildKit's ``runc`` as its own child)."""
        if self.client.api.containers():
            return True
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid and "runc" in stat.read_text().split(")")[0]:
                    return True
        return False

    def image_ids(self) -> set[str]:
        return {row["Id"] for row in self.client.api.images(all=True)}

    def prune(self) -> None:
        """Remove every container and image of this engine (the test's own engine)."""
        for row in self.client.api.containers(all=True):
            self.client.api.remove_container(row["Id"], force=True)
        for _ in range(5):  # children before parents; tags of one image all go with force
            rows = self.client.api.images(all=True)
            if not rows:
                return
            for row in rows:
                with contextlib.suppress(Exception):
                    self.client.api.remove_image(row["Id"], force=True)
        assert not self.client.api.images(all=True), "the second engine kept images"

    # -- life ------------------------------------------------------------------------------
    @classmethod
    def start(cls) -> Engine:
        root = Path(tempfile.mkdtemp(prefix="forge-engine-"))
        port = free_port()
        log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - the daemon writes it until stop
        args = [
            str(DOCKERD),
            "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "docker.pid"),
            "-H", f"unix://{root / 'docker.sock'}",
            "-H", f"tcp://127.0.0.1:{port}",
            "--bridge=none", "--iptables=false", "--ip-masq=false",
        ]
        with log:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return cls(root, port, process)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str | None:
        """None once the engine answers ping on its TCP address, else why not."""
        import docker

        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"dockerd exited with {self.process.returncode}"
            try:
                client = docker.DockerClient(base_url=self.host, timeout=120)
                client.ping()
            except Exception as e:  # noqa: BLE001 - not up yet
                last = f"{type(e).__name__}: {e}"
                time.sleep(0.25)
                continue
            self.client = client
            return None
        return f"no answer on {self.host} within {timeout:.0f} s ({last})"

    def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        containerd_pid = None
        with contextlib.suppress(OSError, ValueError):
            containerd_pid = int((self.root / "exec/containerd/containerd.pid").read_text())
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        # dockerd stops the containerd it started; one a killed dockerd left behind is ours
        if containerd_pid and _alive(containerd_pid):
            cmdline = Path(f"/proc/{containerd_pid}/cmdline")
            with contextlib.suppress(OSError):
                if str(self.root).encode() in cmdline.read_bytes():
                    os.kill(containerd_pid, signal.SIGTERM)
        for point in _mounts_under(self.root):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def start_engine() -> tuple[Engine | None, str]:
    """A started, answering engine, or None and why not (with the log's tail)."""
    if not DOCKERD.exists():
        return None, f"{DOCKERD} is missing (apt-get install docker.io)"
    if os.geteuid() != 0:
        return None, "a second dockerd needs root"
    why = ""
    for _attempt in range(3):  # the free port may be taken between probe and bind
        engine = Engine.start()
        why = engine.wait_ready()
        if why is None:
            return engine, ""
        tail = engine.log_tail()
        engine.stop()
        why = f"{why}\n--- dockerd log (tail)\n{tail}"
        if "address already in use" not in tail:
            break
    return None, why


@pytest.fixture(scope="module")
def second_engine() -> Iterator[Engine]:
    """A second dockerd of the module's own (empty at start); stopped and removed after."""
    engine, why = start_engine()
    if engine is None:
        unavailable(f"a second Docker engine (tcp://127.0.0.1) could not start: {why}")
    try:
        yield engine
    finally:
        engine.stop()


POOL_SIZE = 3


def start_engines(n: int) -> tuple[list[Engine], str]:
    """``n`` started, answering engines (started in parallel), or [] and why not; the
    ones that did start are stopped when another could not."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n) as pool:
        started = list(pool.map(lambda _: start_engine(), range(n)))
    engines = [e for e, _ in started if e is not None]
    if len(engines) == n:
        return engines, ""
    for engine in engines:
        engine.stop()
    return [], next(why for e, why in started if e is None)


@pytest.fixture(scope="module")
def engine_pool() -> Iterator[list[Engine]]:
    """POOL_SIZE dockerds of the module's own (empty at start); stopped and removed after."""
    engines, why = start_engines(POOL_SIZE)
    if not engines:
        unavailable(f"{POOL_SIZE} Docker engines (tcp://127.0.0.1) could not start: {why}")
    try:
        yield engines
    finally:
        for engine in engines:
            engine.stop()
