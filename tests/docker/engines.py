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
    tls: Path | None = None  # the client's DOCKER_CERT_PATH when the engine verifies clients

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
    def start(cls, tls: Path | None = None) -> Engine:
        """``tls``: a directory from ``make_certs``: the TCP address then takes only
        clients with a certificate of its CA (``--tlsverify``)."""
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
        if tls is not None:
            args += ["--tlsverify", "--tlscacert", str(tls / "ca.pem"),
                     "--tlscert", str(tls / "server-cert.pem"), "--tlskey", str(tls / "server-key.pem")]
        with log:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        return cls(root, port, process, tls=tls / "client" if tls is not None else None)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str | None:
        """None once the engine answers ping on its TCP address, else why not."""
        import docker

        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"dockerd exited with {self.process.returncode}"
            try:
                config = False
                if self.tls is not None:
                    config = docker.tls.TLSConfig(
                        client_cert=(str(self.tls / "cert.pem"), str(self.tls / "key.pem")),
                        ca_cert=str(self.tls / "ca.pem"), verify=True)
                kwargs = {"version": "1.41"} if config else {}  # asks nothing before trust_env
                client = docker.DockerClient(base_url=self.host, timeout=120, tls=config, **kwargs)
                client.api.trust_env = False  # REQUESTS_CA_BUNDLE would replace our CA
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


def make_certs(directory: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl:
    ``directory`` holds ca.pem, server-cert.pem, server-key.pem, and ``client/`` the
    client's DOCKER_CERT_PATH (ca.pem, cert.pem, key.pem)."""
    directory.mkdir(parents=True, exist_ok=True)
    client = directory / "client"
    client.mkdir(exist_ok=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=forge-test-ca",
        "-keyout", "ca-key.pem", "-out", "ca.pem")
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=forge-test-{who}",
            "-keyout", f"{who}-key.pem", "-out", f"{who}.csr")
        ssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-days", "2", "-extfile", f"{who}.ext", "-out", f"{who}-cert.pem")
    shutil.copy(directory / "ca.pem", client / "ca.pem")
    shutil.copy(directory / "client-cert.pem", client / "cert.pem")
    shutil.copy(directory / "client-key.pem", client / "key.pem")
    return directory


def start_engine(tls: Path | None = None) -> tuple[Engine | None, str]:
    """A started, answering engine, or None and why not (with the log's tail)."""
    if not DOCKERD.exists():
        return None, f"{DOCKERD} is missing (apt-get install docker.io)"
    if os.geteuid() != 0:
        return None, "a second dockerd needs root"
    why = ""
    for _attempt in range(3):  # the free port may be taken between probe and bind
        engine = Engine.start(tls)
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


@dataclass
class SshEngine:
    """The default engine reached over ssh:// (an sshd of the test's own on a loopback
    port, key login through an ssh-agent of its own; the engine side runs
    ``docker system dial-stdio``). ``url`` is the member's URL."""

    url: str
    env: dict[str, str]  # SSH_AUTH_SOCK of the agent holding the key
    stop: Any


def start_ssh_engine(directory: Path) -> SshEngine:
    """sshd -D with a config, host key and authorized key in ``directory``; the host key is
    one line of root's known_hosts while it runs (added, then removed exactly)."""
    from tests.services import require_tool, unavailable

    require_tool("ssh-keygen", "openssh-client")
    sshd = Path("/usr/sbin/sshd")
    if not sshd.exists():
        unavailable("needs sshd (apt-get install openssh-server; scripts/services.sh installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)],
                       check=True, capture_output=True)
    (directory / "authorized_keys").write_text((directory / "user.pub").read_text())
    port = free_port()
    (directory / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {directory / 'host'}\n"
        f"PidFile {directory / 'sshd.pid'}\nAuthorizedKeysFile {directory / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\n")
    made_run = not Path("/run/sshd").exists()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    server = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(directory / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=open(directory / "sshd.log", "wb"),  # noqa: SIM115
                              start_new_session=True)
    agent_sock = directory / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_sock)], stdout=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.monotonic() + 10
    while not agent_sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    env = {"SSH_AUTH_SOCK": str(agent_sock)}
    subprocess.run(["ssh-add", "-q", str(directory / "user")], env={**os.environ, **env}, check=True,
                   capture_output=True)
    known = Path("/root/.ssh/known_hosts")
    known.parent.mkdir(mode=0o700, exist_ok=True)
    line = f"[127.0.0.1]:{port} {(directory / 'host.pub').read_text().split()[0]} " \
           f"{(directory / 'host.pub').read_text().split()[1]}\n"
    with known.open("a") as fh:
        fh.write(line)
    while time.monotonic() < deadline + 10:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            break
        time.sleep(0.1)

    def stop() -> None:
        for proc in (server, agent):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        with contextlib.suppress(OSError):
            kept = [x for x in known.read_text().splitlines(keepends=True) if x != line]
            known.write_text("".join(kept))
        if made_run:
            with contextlib.suppress(OSError):
                Path("/run/sshd").rmdir()

    return SshEngine(f"ssh://root@127.0.0.1:{port}", env, stop)
