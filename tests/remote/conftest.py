"""Fixtures for the remote cache tests: unique cache repositories on the real registries,
throwaway registries a test may kill, a fault-injecting proxy in front of the real
registry, registry listings, Docker config files.

Every test uses its own repository (``forge-cache-test/<uuid>``) so tests never see each
other's results; the shared registries come from ``scripts/services.sh``.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import require_registry, unavailable

REGISTRY_BIN = "/usr/bin/docker-registry"
PLUGIN = '[plugins]\nmodules = ["tests.core.fake_rules", "tests.remote.kill_plugin"]\n'


def workspace_toml(url: str | None = None, write: bool = False, extra: str = "") -> str:
    """A WORKSPACE.toml with the test rules and, when ``url`` is set, a remote cache."""
    text = '[workspace]\nname = "remote"\n' + PLUGIN
    if url:
        text += f'[remote_cache]\nurl = "{url}"\nwrite = {"true" if write else "false"}\n{extra}'
    return text


def unique_repo() -> str:
    return f"forge-cache-test/{uuid.uuid4().hex[:16]}"


@pytest.fixture
def cache_url() -> str:
    """``127.0.0.1:5000/forge-cache-test/<uuid>``: a repository no other test uses."""
    return f"{require_registry()}/{unique_repo()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, auth: tuple[str, str] | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def catalog(host: str, auth: tuple[str, str] | None = None) -> list[str]:
    """Every repository of the registry (``/v2/_catalog``, page by page)."""
    repos: list[str] = []
    while True:
        last = f"&last={repos[-1]}" if repos else ""
        status, body = get_json(f"http://{host}/v2/_catalog?n=1000{last}", auth)
        assert status == 200, body
        page = body.get("repositories") or []
        repos += page
        if len(page) < 1000:
            return sorted(repos)


def tags(host: str, repo: str, auth: tuple[str, str] | None = None) -> list[str] | None:
    """The repository's tags, or None when the registry does not know the repository."""
    status, body = get_json(f"http://{host}/v2/{repo}/tags/list", auth)
    if status == 404:
        return None
    assert status == 200, body
    return sorted(body.get("tags") or [])


def docker_config(directory: Path, host: str, user: str, password: str) -> Path:
    """A Docker config directory whose ``config.json`` logs ``user`` into ``host``."""
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory


@dataclass
class Throwaway:
    """A registry process of our own, on a port of its own, that a test may kill."""

    port: int
    root: Path
    process: subprocess.Popen

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def throwaway_registry(tmp_path: Path):
    """Start ``docker-registry serve`` on a free port with storage under ``tmp_path``."""
    if shutil.which(REGISTRY_BIN) is None:
        unavailable(f"{REGISTRY_BIN} is missing (package docker-registry; scripts/services.sh installs it)")
    port = free_port()
    root = tmp_path / "throwaway-registry"
    root.mkdir()
    conf = root / "config.yml"
    conf.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    log = open(root / "registry.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(conf)], stdout=log, stderr=log,
                               stdin=subprocess.DEVNULL)
    registry = Throwaway(port, root, process)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://{registry.host}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"throwaway registry did not start: {(root / 'registry.log').read_text()}")
            time.sleep(0.05)
        yield registry
    finally:
        registry.stop()
        log.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


# -- a registry proxy that injects faults --------------------------------------------------


@dataclass
class Seen:
    """One request the proxy received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def is_manifest_put(self) -> bool:
        return self.method == "PUT" and "/manifests/" in self.path


# A rule looks at a request and answers it itself — (status, headers, body) — or returns
# None to let it through to the registry. It may sleep first (a registry that hangs).
Rule = Callable[[Seen], "tuple[int, dict[str, str], bytes] | None"]


CUT_HEADER = "X-Forge-Test-Cut"


class FaultProxy:
    """A plain-HTTP proxy in front of a real registry: forwards every request, records it,
    and lets a test answer chosen ones itself (a 500 on the manifest PUT, a 412, a delay)."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.seen: list[Seen] = []
        self.rules: list[Rule] = []
        self.after: list[Callable[[Seen, int], None]] = []  # called once a forward is answered
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length))
                proxy.seen.append(seen)
                for rule in proxy.rules:
                    answer = rule(seen)
                    if answer is not None:
                        self._reply(*answer)
                        return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in seen.headers.items() if k.lower() != "connection"}
                    conn.request(seen.method, seen.path, body=seen.body or None, headers=headers)
                    response = conn.getresponse()
                    body = response.read()
                    out = {k: v for k, v in response.getheaders()
                           if k.lower() not in ("transfer-encoding", "connection", "content-length")}
                    if seen.method == "HEAD":
                        out["Content-Length"] = response.getheader("Content-Length") or "0"
                    self._reply(response.status, out, body, head=seen.method == "HEAD")
                finally:
                    conn.close()
                for hook in proxy.after:
                    hook(seen, response.status)

            def _reply(self, status: int, headers: dict[str, str], body: bytes, head: bool = False) -> None:
                # A rule's X-Forge-Test-Cut: N sends the first N bytes of the body and
                # drops the connection (a link that breaks mid-download).
                cut = headers.pop(CUT_HEADER, None)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body if cut is None else body[:int(cut)])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def manifest_puts(self) -> list[Seen]:
        return [s for s in self.seen if s.is_manifest_put]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry_proxy():
    """A FaultProxy in front of the shared registry on 127.0.0.1:5000."""
    proxy = FaultProxy(require_registry())
    try:
        yield proxy
    finally:
        proxy.close()
