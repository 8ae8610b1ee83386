"""The ``docker`` executor: runs Dockerfile builds on a Docker engine (docker SDK).

Which engine: ``[executors.docker] hosts = {arm64 = "tcp://arm-builder:2375"}`` routes a
platform to a native builder (as open-balena-builder does with DOCKER_HOST_ARM64);
everything else goes to ``DOCKER_HOST`` or the default socket.

Pools (``[executors.docker.pools] amd64 = ["unix:///var/run/docker.sock",
{url = "tcp://127.0.0.1:2376", capacity = 2}]``): several engines serve one platform, each
running at most ``capacity`` builds at once (default 1). ``build()`` picks the member, so
forge keeps one scheduler (``-j`` bounds the total): the engine that holds the base (it
built or was sent that config digest in this process), else the one that ran this action
id last (``<cache>/engine-hints.json``), else the least loaded with room; it waits while
every member is full. An engine that stops answering is marked down for the rest of the
process (one warning) and the build is run again from scratch on another member (its
base goes there through the incremental put); with none left the action fails naming the
engines. A ``hosts`` entry, or the default engine, is a one-member pool without a
capacity of its own.

Bytes move only where the other side lacks them (plugins/docker_transfer.py): after a
step, only the layers it added leave the engine (replayed from the engine's own layer
store when it is local, streamed from ``docker save`` otherwise); a base enters the
engine as a docker-archive without the layers the engine holds, which for the next step
of a chain is its config alone. The engine's image ID is the sha256 of the config, so
"does the engine have this image?" is one lookup by config digest, and a pruned engine
with a warm cache just gets the missing layers again. ``[executors.docker] transfer =
"save"`` forces the ``docker save`` route (for comparison and for exotic engines).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import forge
from forge.plugins import buildkit
from forge.plugins import docker_transfer as transfer

START_HINT = (
    "start one with `scripts/services.sh` (as root: `dockerd --bridge=none --iptables=false &`), "
    "or point DOCKER_HOST at a running engine"
)
_KEYS = ("hosts", "pools", "transfer", "builder", "cli")
_BUILDERS = ("auto", "buildkit", "classic")
_MEMBER_KEYS = ("url", "capacity", "tls")
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")  # DOCKER_CERT_PATH's names
HINTS_FILE = "engine-hints.json"  # action id -> the engine URL that ran it last
BASE_REPO = "forge-base"  # forge's images, named by config digest
BUILD_REPO = "forge-build"  # the builders' results, tagged with forge's config hex
_TRANSFERS = ("auto", "save")


def _pools(workspace: Any, table: Any, hosts: dict[str, Any]) -> dict[forge.Platform, list[tuple[str, int, str | None]]]:
    """``[executors.docker.pools]``: platform = [url | {url = "...", capacity = N,
    tls = "certs/builder-2"}, ...]; ``tls`` is a DOCKER_CERT_PATH-style directory
    (ca.pem, cert.pem, key.pem; relative to the workspace) for a ``tcp://`` engine that
    verifies its clients."""
    if not isinstance(table, dict):
        raise forge.ConfigError(f"{workspace.where('executors', 'docker', 'pools')}: [executors.docker] "
                                "pools must be a table platform = [engine URLs]")
    named = {}
    for key in hosts:
        with contextlib.suppress(Exception):
            named[forge.parse_platform(key)] = key
    pools: dict[forge.Platform, list[tuple[str, int, str | None]]] = {}
    for key, entries in table.items():
        where = f"{workspace.where('executors', 'docker', 'pools', key)}: [executors.docker.pools] {key}"
        try:
            platform = forge.parse_platform(key)
        except Exception as exc:  # noqa: BLE001 - an unknown platform, said as forge says it
            raise forge.ConfigError(f"{where}: {exc}") from None
        if platform in pools:
            raise forge.ConfigError(f"{where}: {platform} has a pool already")
        if platform in named:
            raise forge.ConfigError(f"{where}: {platform} is in [executors.docker] hosts too "
                                    f"({named[platform]}); name its engine in the pool only")
        if not isinstance(entries, list) or not entries:
            raise forge.ConfigError(f"{where} should be a non-empty list of engine URLs or "
                                    '{url = "...", capacity = N} tables')
        members: list[tuple[str, int, str | None]] = []
        for i, entry in enumerate(entries):
            at = f"{where}[{i}]"
            if isinstance(entry, dict):
                unknown = sorted(set(entry) - set(_MEMBER_KEYS))
                if unknown:
                    raise forge.ConfigError(f"{at}: unknown key '{unknown[0]}'"
                                            f"{forge.did_you_mean(unknown[0], _MEMBER_KEYS)}; "
                                            f"valid keys: {', '.join(_MEMBER_KEYS)}")
                url, capacity, tls = entry.get("url"), entry.get("capacity", 1), entry.get("tls")
            else:
                url, capacity, tls = entry, 1, None
            if not isinstance(url, str) or not url or "\0" in url or "://" not in url:
                raise forge.ConfigError(f"{at}: an engine URL (unix://…, tcp://host:port, ssh://user@host) is needed, "
                                        f"got {url!r}")
            if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
                raise forge.ConfigError(f"{at}: capacity should be a whole number ≥ 1, got {capacity!r}")
            if any(url == u for u, _, _ in members):
                raise forge.ConfigError(f"{at}: {url} is in this pool twice")
            if tls is not None:
                tls = _tls_dir(workspace, tls, url, at)
            members.append((url, capacity, tls))
        pools[platform] = members
    return pools


def _tls_dir(workspace: Any, value: Any, url: str, at: str) -> str:
    """The absolute cert directory of a TLS member, checked: a tcp:// URL, the three files."""
    if not isinstance(value, str) or not value:
        raise forge.ConfigError(f"{at}: tls should be a directory holding {', '.join(TLS_FILES)}")
    if not url.startswith("tcp://"):
        raise forge.ConfigError(f"{at}: tls is for tcp:// engines, not {url}")
    path = Path(os.path.expanduser(value))
    path = path if path.is_absolute() else Path(workspace.root) / path
    missing = [f for f in TLS_FILES if not (path / f).is_file()]
    if missing:
        raise forge.ConfigError(f"{at}: tls = {value!r}: {path} lacks {', '.join(missing)} "
                                "(the DOCKER_CERT_PATH layout: ca.pem, cert.pem, key.pem)")
    return str(path)


def _client_for(url: str, tls: str | None, timeout: float) -> Any:
    """A docker-py client of ``url``, verifying the engine and presenting the client
    certificate of ``tls`` (a DOCKER_CERT_PATH directory) when given."""
    import docker

    if url.startswith("ssh://"):
        # the system ssh (its config, known_hosts and agent), as the docker CLI does;
        # the engine's side runs `docker system dial-stdio`
        return docker.DockerClient(base_url=url, timeout=timeout, use_ssh_client=True)
    if not tls:
        return docker.DockerClient(base_url=url, timeout=timeout)
    config = docker.tls.TLSConfig(client_cert=(f"{tls}/cert.pem", f"{tls}/key.pem"),
                                  ca_cert=f"{tls}/ca.pem", verify=True)

    def connect(version: str) -> Any:
        # with a version given docker-py asks nothing before trust_env is off; and off it
        # must be: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace a session's
        # own CA (psf/requests#3829), and the member's CA is the one that verifies it
        client = docker.DockerClient(base_url=url, timeout=timeout, tls=config, version=version)
        client.api.trust_env = False
        return client

    probe = connect(docker.constants.MINIMUM_DOCKER_API_VERSION)
    try:
        version = probe.version(api_version=False)["ApiVersion"]
    finally:
        probe.close()
    return connect(version)


def _settings(workspace: Any) -> tuple[dict[forge.Platform, str], str, dict[forge.Platform, list[tuple[str, int, str | None]]]]:
    table = workspace.section("executors").get("docker", {})
    unknown = set(table) - set(_KEYS)
    if unknown:
        key = sorted(unknown)[0]
        raise forge.ConfigError(f"{workspace.where('executors', 'docker', key)}: [executors.docker] "
                                f"unknown key '{key}'{forge.did_you_mean(key, _KEYS)}; "
                                f"valid keys: {', '.join(_KEYS)}")
    hosts = table.get("hosts", {})
    if not isinstance(hosts, dict):
        raise forge.ConfigError(f"{workspace.where('executors', 'docker', 'hosts')}: [executors.docker] "
                                "hosts must be a table platform = url")
    mode = table.get("transfer", "auto")
    if mode not in _TRANSFERS:
        raise forge.ConfigError(f"{workspace.where('executors', 'docker', 'transfer')}: [executors.docker] "
                                f"transfer = {mode!r}; valid: {', '.join(_TRANSFERS)}")
    pools = _pools(workspace, table.get("pools", {}), hosts)
    return {forge.parse_platform(k): v for k, v in hosts.items()}, mode, pools


def _builder_settings(workspace: Any) -> tuple[str, str | None]:
    """``[executors.docker] builder`` (auto | buildkit | classic) and ``cli`` (the
    docker CLI whose BuildKit client runs builds; default: found on PATH)."""
    table = workspace.section("executors").get("docker", {})
    # FORGE_DOCKER_BUILDER: the default for workspaces that do not choose (a CI matrix
    # runs the suite on both builders with it)
    builder = table.get("builder", os.environ.get("FORGE_DOCKER_BUILDER") or "auto")
    if builder not in _BUILDERS:
        raise forge.ConfigError(f"{workspace.where('executors', 'docker', 'builder')}: [executors.docker] "
                                f"builder = {builder!r}; valid: {', '.join(_BUILDERS)}"
                                f"{forge.did_you_mean(str(builder), _BUILDERS)}")
    cli = table.get("cli")
    if cli is not None and (not isinstance(cli, str) or not cli):
        raise forge.ConfigError(f"{workspace.where('executors', 'docker', 'cli')}: [executors.docker] "
                                "cli should be the path of a docker CLI")
    return builder, cli


class Member:
    """One engine of a pool: its URL, how many builds it may run at once (None: no
    bound of its own, for ``hosts`` and the default engine) and how many it runs."""

    def __init__(self, url: str, capacity: int | None, tls: str | None = None):
        self.url = url
        self.capacity = capacity
        self.tls = tls  # a DOCKER_CERT_PATH directory, for a tcp:// engine with --tlsverify
        self.running = 0

    def free(self) -> bool:
        return self.capacity is None or self.running < self.capacity


class Pool:
    """The engines that serve one platform. ``acquire`` hands out a member with room,
    preferring the given URLs in order, else the least loaded; it waits while every
    member that is up is full. ``down`` (URL -> why) is shared by every pool of the
    executor: an engine that stopped answering is down for all of them."""

    def __init__(self, platform: forge.Platform | None, members: list[Member], down: dict[str, str],
                 configured: bool = True):
        self.platform = platform
        self.members = members
        self.down = down
        self.configured = configured  # False: the implicit pool of a hosts entry / the default
        self.cond = threading.Condition()

    def up(self) -> list[Member]:
        return [m for m in self.members if m.url not in self.down]

    def acquire(self, prefer: list[str], cancelled: threading.Event | None = None) -> Member:
        with self.cond:
            while True:
                up = self.up()
                if not up:
                    raise forge.ExecutorError(self.none_left())
                free = [m for m in up if m.free()]
                if free:
                    by_url = {m.url: m for m in free}
                    member = next((by_url[u] for u in prefer if u in by_url), None)
                    if member is None:
                        order = {id(m): i for i, m in enumerate(self.members)}
                        member = min(free, key=lambda m: (m.running / m.capacity if m.capacity else 0,
                                                          m.running, order[id(m)]))
                    member.running += 1
                    return member
                if cancelled is not None and cancelled.is_set():
                    raise forge.ActionFailed("cancelled")
                self.cond.wait(timeout=0.5)

    def release(self, member: Member) -> None:
        with self.cond:
            member.running -= 1
            self.cond.notify_all()

    def mark_down(self, member: Member, why: str) -> bool:
        """True the first time the member is marked down."""
        with self.cond:
            first = member.url not in self.down
            self.down.setdefault(member.url, why)
            self.cond.notify_all()
            return first

    def none_left(self) -> str:
        where = f"the {self.platform} pool" if self.platform else "the pool"
        return (f"no engine of {where} is left: "
                + ", ".join(f"{m.url} ({self.down.get(m.url, 'up')})" for m in self.members))


def _answers(url: str, tls: str | None = None, timeout: float = 5.0) -> bool:
    """Whether the engine at ``url`` answers a ping now (a fresh connection)."""
    try:
        client = _client_for(url, tls, timeout)
    except Exception:  # noqa: BLE001
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - refused, reset, timed out: it does not answer
        return False
    finally:
        with contextlib.suppress(Exception):
            client.close()


class DockerExecutor(forge.Executor):
    """The ``docker`` executor (``forge.Executor``), one per forge process; engine clients
    are created lazily, one per host. ``client()`` and ``hosts`` are Docker-specific."""

    def __init__(self, workspace: Any):
        self.workspace = workspace
        self.hosts, self.transfer, pools = _settings(workspace)
        self.builder, self.cli = _builder_settings(workspace)
        self._buildkit: tuple[buildkit.Client | None, list[str]] | None = None
        self._engine_info: dict[str, dict[str, Any]] = {}
        self._down: dict[str, str] = {}  # engine URL -> why it is down (for the process)
        self.pools: dict[forge.Platform | None, Pool] = {
            platform: Pool(platform, [Member(url, capacity, tls) for url, capacity, tls in members], self._down)
            for platform, members in pools.items()}
        # engine URL -> its DOCKER_CERT_PATH directory (TLS pool members)
        self.tls = {url: tls for members in pools.values() for url, _, tls in members if tls}
        self._holders: dict[str, set[str]] = {}  # config digest -> engines that hold it
        self._hints: dict[str, str] | None = None  # action id -> engine that ran it last
        self._hints_lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._stores: dict[str, transfer.LocalStore | None] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._warned: set[str] = set()  # hosts already said to use the docker-save route

    def host_for(self, platform: forge.Platform | None) -> str:
        """The engine for ``platform``: its pool's first member that is up (messages,
        ``--load`` of an image no member is known to hold), its ``hosts`` entry, or
        ``DOCKER_HOST`` / the default socket."""
        if platform is not None and platform in self.pools:
            pool = self.pools[platform]
            return (pool.up() or pool.members)[0].url
        if platform is not None and platform in self.hosts:
            return self.hosts[platform]
        return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")

    def is_native_remote(self, platform: forge.Platform) -> bool:
        return platform in self.hosts or (platform in self.pools and self.pools[platform].configured)

    def pool(self, platform: forge.Platform | None) -> Pool:
        """The engines of ``platform``: its configured pool, else a one-member pool of its
        ``hosts`` entry or the default engine, bounded by ``-j`` alone."""
        with self._lock:
            if platform not in self.pools:
                self.pools[platform] = Pool(platform, [Member(self.host_for(platform), None)],
                                            self._down, configured=False)
            return self.pools[platform]

    def members(self) -> list[tuple[forge.Platform | None, Member]]:
        """Every configured pool member, with its platform (for doctor and clean)."""
        with self._lock:
            return [(platform, m) for platform, pool in self.pools.items() if pool.configured
                    for m in pool.members]

    def client(self, platform: forge.Platform | None, host: str | None = None) -> Any:
        host = host or self.host_for(platform)
        with self._lock:
            if host not in self._clients:
                try:
                    client = _client_for(host, self.tls.get(host), 600)
                    client.ping()
                except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
                    raise forge.ExecutorError(f"no Docker engine answers at {host}: {exc}; {START_HINT}") from None
                self._clients[host] = client
            return self._clients[host]

    def store(self, platform: forge.Platform | None, host: str | None = None) -> transfer.LocalStore | None:
        """The engine's layer store when this process can read it (a local engine)."""
        host = host or self.host_for(platform)
        client = self.client(platform, host)
        with self._lock:
            if host not in self._stores:
                self._stores[host] = (transfer.LocalStore.probe(client, host)
                                      if self.transfer == "auto" else None)
            return self._stores[host]

    def version(self, platform: forge.Platform | None = None, host: str | None = None) -> str:
        info = self.client(platform, host).version()
        return f"{info.get('Version')} ({info.get('Os')}/{info.get('Arch')})"

    def engine_info(self, host: str) -> dict[str, Any]:
        """The engine's ``version`` answer (Version, Os, Arch, ApiVersion), asked once."""
        with self._lock:
            info = self._engine_info.get(host)
        if info is None:
            info = self.client(None, host).version()
            with self._lock:
                self._engine_info[host] = info
        return info

    def buildkit_client(self) -> tuple[buildkit.Client | None, list[str]]:
        """The CLI that runs BuildKit builds here (found once), and what was tried."""
        with self._lock:
            if self._buildkit is None:
                self._buildkit = buildkit.find_client(self.cli)
            return self._buildkit

    def builder_for(self, rc: forge.RunContext, host: str) -> str:
        """``buildkit`` or ``classic`` for a build on ``host``: the setting, and with
        ``auto`` BuildKit wherever the engine has it (API 1.39+) and a client is found."""
        if self.builder == "classic":
            return "classic"
        client, tried = self.buildkit_client()
        api = str(self.engine_info(host).get("ApiVersion", "0"))
        has = tuple(int(x) for x in re.findall(r"\d+", api)[:2]) >= (1, 39)
        if client is not None and has:
            return "buildkit"
        why = ("no BuildKit client: " + "; ".join(tried)) if client is None else \
            f"the engine at {host} (API {api}) has no BuildKit"
        if self.builder == "buildkit":
            raise forge.ExecutorError(f"[executors.docker] builder = \"buildkit\", but {why}; "
                                      "install the docker-buildx plugin or a docker.io CLI older "
                                      "than 23.0, or set [executors.docker] cli")
        with self._lock:
            first = "builder" not in self._warned
            self._warned.add("builder")
        if first:
            rc.warn(f"building with the classic builder ({why}): BuildKit syntax (RUN --mount, "
                    "COPY --chmod, heredocs) will be refused")
        return "classic"

    # -- images in and out ---------------------------------------------------------------
    def _lock_for(self, image: Any, host: str) -> threading.Lock:
        with self._lock:
            return self._load_locks.setdefault(f"{host} {image.config_digest}", threading.Lock())

    def _holds(self, host: str, config_digest: str) -> None:
        with self._lock:
            self._holders.setdefault(config_digest, set()).add(host)

    def holders(self, config_digest: str) -> list[str]:
        """The engines this process built or sent ``config_digest`` to."""
        with self._lock:
            return sorted(self._holders.get(config_digest, ()))

    def put(self, cas: Any, image: Any, ref: str, platform: forge.Platform | None, *,
            count: transfer.Count, tempdir: Path, host: str | None = None) -> None:
        """Make ``image`` (in ``cas``) the engine image ``ref``, sending only the layers
        the engine lacks (none, for an image built there)."""
        host = host or self.host_for(platform)
        client = self.client(platform, host)
        with self._lock_for(image, host):
            transfer.put_image(cas, client, image, ref, store=self.store(platform, host),
                               count=count, tempdir=tempdir)
        self._holds(host, image.config_digest)

    def ensure_loaded(self, rc: forge.RunContext, client: Any, image: Any, host: str | None = None) -> str:
        """Make ``image`` (from the CAS) present in the engine; return the ref to use."""
        ref = engine_ref(image)
        self.put(rc.cas, image, ref, rc.platform, count=rc.count, tempdir=rc.tempdir(), host=host)
        return ref

    def clean(self, select: Callable[[str], bool], *, dry_run: bool = False) -> list[str]:
        """Remove the images forge tagged in every engine it uses whose forge config
        digest ``select`` picks: ``forge-base/<digest>`` (forge's images, whose ID is that
        digest) and ``forge-build:<digest hex>`` (the builder's own result of that step,
        the engine's build cache). Returns the digests removed (to be removed, with
        ``dry_run``). An image a container uses stays."""
        import docker

        picked = []
        platforms: dict[str, forge.Platform | None] = {self.host_for(None): None}
        for platform in self.hosts:
            platforms.setdefault(self.host_for(platform), platform)
        pooled = {m.url for _, m in self.members()}
        for platform, member in self.members():
            platforms.setdefault(member.url, platform)
        for host, platform in platforms.items():
            try:
                client = self.client(platform, host)
            except forge.ExecutorError:
                if host in pooled:  # a pool member that is down keeps its images
                    continue
                raise
            # The low-level list (one call, no per-image inspect): an image another process
            # removes meanwhile on a shared engine is not an ImageNotFound here.
            rows = client.api.images(filters={"reference": [f"{BASE_REPO}/*", BUILD_REPO]})
            tagged = [(tag, row["Id"]) for row in rows for tag in row.get("RepoTags") or ()
                      if tag.startswith(BASE_REPO + "/")]
            tagged += [(tag, "sha256:" + tag.rsplit(":", 1)[1]) for row in rows
                       for tag in row.get("RepoTags") or () if tag.startswith(BUILD_REPO + ":")]
            for tag, digest in tagged:
                if not select(digest):
                    continue
                picked.append(digest)
                if not dry_run:
                    with contextlib.suppress(docker.errors.APIError):
                        client.api.remove_image(tag)
        return sorted(set(picked))

    def load(self, cas: Any, image: Any, ref: str, platform: forge.Platform | None) -> dict[str, int]:
        """``--load``: tag ``image`` as ``ref`` in the engine that serves ``platform``;
        returns the bytes and layers sent (nothing for an image built there)."""
        counters: dict[str, int] = {}

        def count(name: str, n: int) -> None:
            counters[name] = counters.get(name, 0) + n

        tempdir = cas.tempdir()
        up = {m.url for m in self.pools[platform].up()} if platform in self.pools else set()
        host = next((h for h in self.holders(image.config_digest) if h in up), None)
        try:
            self.put(cas, image, ref, platform, count=count, tempdir=tempdir, host=host)
        finally:
            import shutil

            shutil.rmtree(tempdir, ignore_errors=True)
        return counters

    def export(self, rc: forge.RunContext, client: Any, image_id: str, base: Any,
               host: str | None = None) -> Any:
        """Bring an engine image into the CAS, reading only the layers ``base`` lacks."""
        host = host or self.host_for(rc.platform)
        store = self.store(rc.platform, host)
        if store is None:
            message = (f"{host}: reading results with docker save (the engine's layer store is "
                       "not readable here, so each step's whole image crosses the connection; "
                       "only its new layers are kept)")
            with self._lock:
                first = host not in self._warned and self.transfer == "auto"
                self._warned.add(host)
            rc.warn(message) if first else rc.log(message)
        known = {layer.diff_id: layer for layer in base.layers} if base is not None else {}
        return transfer.export_image(rc.cas, client, image_id, known=known, store=store,
                                     count=rc.count, log=rc.log)

    def _put_early(self, rc: forge.RunContext, client: Any, image_id: str,
                   host: str | None = None) -> tuple[Any, threading.Thread] | None:
        """While the new layers are read: forge's config of the result (it needs the
        engine's config, not the layers) is loaded over the engine's layers, so the next
        step, or --load, finds forge's image already there. Only from a readable engine
        store; None otherwise (the image is then put when something asks for it)."""
        store = self.store(rc.platform, host)
        if store is None:
            return None
        try:
            config_bytes = store.config_bytes(image_id)
            diff_ids = json.loads(config_bytes)["rootfs"].get("diff_ids") or []
        except (transfer.EngineStoreError, ValueError, KeyError, TypeError):
            return None
        # with_config rewrites the config alone: stand-in layers give its exact bytes
        stand_ins = [forge.Layer(d, d, 0) for d in diff_ids]
        early = forge.with_config(forge.oci.assemble_image(config_bytes, stand_ins),
                                  platform=rc.platform, epoch=rc.epoch)
        rc.cas.put_bytes(early.config_bytes)
        tempdir = rc.tempdir()

        def put() -> None:
            try:
                self.put(rc.cas, early, engine_ref(early), rc.platform, count=rc.count, tempdir=tempdir,
                         host=host)
            except Exception as exc:  # noqa: BLE001 - the lazy put later is the fallback
                rc.log(f"loading forge's config early failed ({exc}); it is loaded when needed")

        thread = threading.Thread(target=put, name="forge-docker-put", daemon=True)
        thread.start()
        return early, thread

# -- engine hints (an action id -> the engine that ran it last) ----------------------
    def _hints_path(self) -> Path | None:
        try:
            return Path(self.workspace.checked_cache_dir()) / HINTS_FILE
        except Exception:  # noqa: BLE001 - no cache dir: no hints, nothing else changes
            return None

    @staticmethod
    def _read_hints(path: Path | None) -> dict[str, str]:
        if path is None:
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}

    def hint(self, action_id: str) -> str | None:
        with self._hints_lock:
            if self._hints is None:
                self._hints = self._read_hints(self._hints_path())
            return self._hints.get(action_id)

    def _remember(self, action_id: str, host: str) -> None:
        """Record where ``action_id`` ran, merged with what other processes wrote, and
        written atomically (a temp file renamed over the old one)."""
        path = self._hints_path()
        with self._hints_lock:
            self._hints = {**(self._hints or {}), action_id: host}
            if path is None:
                return
            merged = {**self._read_hints(path), action_id: host}
            with contextlib.suppress(OSError):  # a hint that cannot be kept fails nothing
                forge.write_atomic(path, json.dumps(merged, sort_keys=True, indent=0).encode())

    # -- builds --------------------------------------------------------------------------
    def build(self, rc: forge.RunContext, *, package_dir: Path, base: Any,
              images: dict[str, Any] | None = None) -> Any:
        """Run the step on a member of the platform's pool (base holder, then the hinted
        engine, then the least loaded); an engine that stops answering is marked down
        and the step is built again from scratch on another member."""
        pool = self.pool(rc.platform)
        prefer = self.holders(base.config_digest) if base is not None else []
        hinted = self.hint(rc.action.id)
        if hinted:
            prefer.append(hinted)
        while True:
            member = pool.acquire(prefer, rc.cancelled)
            try:
                rc.log(f"engine: {member.url}")
                rc.note("engine", member.url)
                rc.note("engine_started", f"{time.time():.4f}")  # the wall clock it got the engine
                image = self._build_on(rc, member.url, package_dir=package_dir, base=base,
                                       images=images or {})
            except Exception as exc:
                if not pool.configured or rc.cancelled.is_set() or _answers(member.url, member.tls):
                    raise  # a failing step on a live engine, or the only engine there is
                why = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                first = pool.mark_down(member, why)
                left = [m.url for m in pool.up()]
                message = (f"engine {member.url} stopped answering ({why}); it is not used for the rest "
                           "of this build" + (f"; running the step again on {', '.join(left)}" if left else ""))
                rc.warn(message) if first else rc.log(message)
                if not left:
                    raise forge.ExecutorError(pool.none_left()) from None
                continue
            finally:
                rc.note("engine_finished", f"{time.time():.4f}")  # …and gave it back
                pool.release(member)
            self._holds(member.url, image.config_digest)
            self._remember(rc.action.id, member.url)
            return image

    def _classic(self, rc: forge.RunContext, client: Any, context: io.BytesIO, rel_dockerfile: str,
                 args: dict[str, str], network: str) -> str:
        """One build on the engine's classic builder (docker-py's build API); the image ID."""
        p, platform = rc.params, rc.platform
        stream = client.api.build(
            fileobj=context, custom_context=True, dockerfile=rel_dockerfile, buildargs=args,
            target=p["target"], platform=str(platform) if platform else None,
            network_mode=network, rm=True, forcerm=True,
            decode=True, pull=False,
        )
        image_id = None
        step = ""
        tail: deque[str] = deque(maxlen=200)  # the current step's output, for the excerpt
        for chunk in _engine_chunks(stream, rel_dockerfile):
            if rc.cancelled.is_set():
                raise forge.ActionFailed("cancelled")
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        rc.log(line)
                        if line.startswith("Step "):
                            step = line
                            tail.clear()  # an earlier step's output is not this failure's
                        else:
                            tail.append(line)
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                rc.log(f"ERROR: {detail}")
                last = "\n    ".join(failure_excerpt(list(tail)))
                raise forge.ActionFailed(f"{rel_dockerfile}: failed at {step or 'an unknown step'}\n"
                                   f"    {detail}\n  last output:\n    {last}")
        if image_id is None:
            raise forge.ActionFailed(f"{rel_dockerfile}: the engine reported no image ID")
        return image_id

    def _build_on(self, rc: forge.RunContext, host: str, *, package_dir: Path, base: Any,
                  images: dict[str, Any]) -> Any:
        p = rc.params
        platform = rc.platform
        client = self.client(platform, host)
        builder = self.builder_for(rc, host)
        info = self.engine_info(host)
        root = p.get("context_root", "")
        rel_dockerfile = tar_name(p["dockerfile"], root)
        text = (package_dir / p["dockerfile"]).read_text(errors="replace")
        problems = buildkit.frontend_problems(text, _display(rc), builder=builder,
                                              engine_version=str(info.get("Version", "")))
        if problems:
            raise forge.ActionFailed("\n".join(problems))
        args = dict(p["build_args"])
        if base is not None:
            args["BASE_IMAGE"] = self.ensure_loaded(rc, client, base, host)
        for name, image in sorted(images.items()):
            args[name] = self.ensure_loaded(rc, client, image, host)
        context = build_context(package_dir, root, [p["dockerfile"], *p["context"]],
                                follow={p["dockerfile"]})
        rc.log(f"docker build -f {rel_dockerfile} ({len(p['context'])} context files) on "
               f"{host} for {platform} ({builder})")
        rc.note("builder", builder)
        network = "host" if p["network"] else "none"
        if builder == "buildkit":
            bk, _ = self.buildkit_client()
            assert bk is not None
            image_id = buildkit.run_build(
                bk, host=host, tls=self.tls.get(host), context=context, dockerfile=rel_dockerfile, build_args=args,
                target=p["target"], platform=str(forge.buildx_spelling(platform)) if platform else None,
                network=network, syntax=buildkit.syntax_directive(text), display=_display(rc),
                secrets=rc.secrets, ssh=rc.ssh, iidfile=rc.tempdir() / "iid", log=rc.log,
                cancelled=rc.cancelled)
        else:
            # BuildKit sets the platform args itself; the classic builder gets them as
            # build args (a Dockerfile reads them only where it declares ARG TARGETARCH…)
            engine = forge.parse_platform(f"{info.get('Os', 'linux')}/{info.get('Arch', 'amd64')}")
            args = {**forge.automatic_args(platform or engine, engine), **args}
            image_id = self._classic(rc, client, context, rel_dockerfile, args, network)
        early = None if p.get("reproducible") else self._put_early(rc, client, image_id, host)
        try:
            image = self.export(rc, client, image_id, base, host)
        finally:
            if early is not None:
                early[1].join()
        if p.get("reproducible"):
            image = reproducible(rc, image, base)
        # The engine may label a cross-built image with the host's architecture; the
        # platform we built for is the truth (the "labelled amd64, contains aarch64" bug).
        # The early put already made that config from the engine's: reuse it.
        if early is not None:
            image = forge.oci.assemble_image(early[0].config_bytes, image.layers)
        else:
            image = forge.with_config(image, platform=platform, epoch=rc.epoch)
        # That changes the config digest. The engine gets forge's image (its config alone:
        # the layers are there), early when the engine's store is readable, else when
        # something asks for it (the next step of a chain, --load). The builder's own image
        # is the engine's build cache: tagged forge-build:<forge's config hex>, so it is forge's to collect with the result
        # (`forge clean --engine`, `forge cache gc`), not an anonymous leftover.
        client.api.tag(image_id, BUILD_REPO, tag=image.config_digest.split(":")[1])
        rc.log(f"engine→CAS {forge.human_size(rc.counters.get('engine_to_cas_bytes', 0))} "
               f"({rc.counters.get('engine_to_cas_layers', 0)} layers), CAS→engine "
               f"{forge.human_size(rc.counters.get('cas_to_engine_bytes', 0))}")
        return image


def reproducible(rc: forge.RunContext, image: Any, base: Any) -> Any:
    """``reproducible = True``: the step's new layers with mtimes clamped to the epoch,
    the engine's timestamps gone from the new history entries, and the engine's own
    fields (``container``, ``container_config``: the build container's ID and host name;
    ``config.Image``: the builder's intermediate image; ``docker_version``) dropped, as BuildKit's rewrite-timestamp does. Two engines that
    run the same deterministic step then give one digest; the new layers no longer match
    the engine's, so the next step loads them (only them) back."""
    import datetime

    known = {layer.diff_id for layer in base.layers} if base is not None else set()
    layers = [layer if layer.diff_id in known else forge.oci.clamp_mtimes(rc.cas, layer, rc.epoch)
              for layer in image.layers]
    config = image.config
    for field in ("container", "container_config", "docker_version"):
        config.pop(field, None)
    # config.Image names the builder's last intermediate image: the engine's own ID
    (config.get("config") or {}).pop("Image", None)
    created = datetime.datetime.fromtimestamp(rc.epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    inherited = len(base.config.get("history") or []) if base is not None else 0
    history = list(config.get("history") or [])
    for entry in history[inherited:]:
        entry["created"] = created
    config["history"] = history
    config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
    config_bytes = forge.canonical_json(config)
    rc.cas.put_bytes(config_bytes)
    rewritten = forge.oci.assemble_image(config_bytes, layers)
    forge.store_image(rc.cas, rewritten)
    return rewritten


# Lines that say why a step failed: shown with what follows them, however long the
# output after them (pip's PEP 668 block, apt's "E: ..."); libgpg-error0 is no error.
_DECISIVE = re.compile(r"\b(error|errors|fatal)\b|externally-managed|^E: ", re.IGNORECASE)
_NOISE = re.compile(r"^\s*(---> |Removing intermediate container )")  # the builder's own lines
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def failure_excerpt(lines: list[str], last: int = 8, most: int = 30) -> list[str]:
    """The output lines a failed step shows: from the line before the first decisive one
    to the end (at most ``most`` lines: its head, "...", the last ``last``), or the last
    ``last`` lines when none is decisive."""
    lines = [line for line in lines if not _NOISE.match(line)]
    first = next((i for i, line in enumerate(lines) if _DECISIVE.search(_ANSI.sub("", line))), None)
    if first is None:
        return lines[-last:]
    shown = lines[max(0, first - 1):]
    if len(shown) > most:
        shown = [*shown[:most - last - 1], "...", *shown[-last:]]
    return shown


def _engine_chunks(stream: Any, rel_dockerfile: str) -> Any:
    """The build's output chunks; an engine that refuses the build (a Dockerfile it cannot
    parse) as its own message, not docker-py's request URL (which also carries the
    build args' values)."""
    import docker

    try:
        yield from stream
    except docker.errors.APIError as exc:
        reason = exc.explanation or f"the engine answered {exc.status_code}"
        raise forge.ActionFailed(f"{rel_dockerfile}: {reason}") from None


def engine_ref(image: Any) -> str:
    """The engine tag of a CAS image: its config digest, so equal content, equal tag."""
    return f"{BASE_REPO}/{image.config_digest.split(':')[1][:32]}:latest"


def _display(rc: forge.RunContext) -> str:
    """The Dockerfile as the user names it: from the workspace root."""
    rel, package = rc.params["dockerfile"], rc.action.label.package
    source = next((f for f in rc.action.inputs if f.relpath == rel), None)
    root = source.abspath[: len(source.abspath) - len(rel)].rstrip("/") if source else ""
    return f"{package}/{rel}" if package and root.endswith("/" + package) else rel


def tar_name(rel: str, root: str) -> str:
    """A context file's path in the context (relative to its root when under it)."""
    return rel[len(root) + 1:] if root and rel.startswith(root + "/") else rel


def build_context(package_dir: Path, root: str, relpaths: list[str],
                  follow: set[str] = frozenset()) -> io.BytesIO:
    """A deterministic tar of exactly the declared files, paths relative to ``root``;
    those in ``follow`` (the Dockerfile) are read through a symlink, the rest stay links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for rel in sorted(dict.fromkeys(relpaths)):
            path = package_dir / rel
            name = tar_name(rel, root)
            source = os.path.realpath(path) if rel in follow else str(path)
            info = tf.gettarinfo(source, arcname=name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                info.mode = 0o755 if info.mode & 0o111 else 0o644
                with open(source, "rb") as fh:
                    tf.addfile(info, fh)
            else:
                tf.addfile(info)
    buf.seek(0)
    return buf


@forge.hookimpl
def forge_register_executors(registry: Any) -> None:
    registry.add("docker", DockerExecutor)


@forge.hookimpl(tryfirst=True)
def forge_prepare_platform(platform: forge.Platform, executor: str, workspace: Any) -> str | None:
    """A platform whose pool members all report that architecture needs no emulation
    here (a pool of native arm64 builders); anything else is for the next plugin (QEMU)."""
    if executor != "docker" or platform.architecture == forge.host_platform().architecture:
        return None
    try:
        members = _settings(workspace)[2].get(platform)
    except forge.ConfigError:
        return None
    if not members:
        return None
    for url, _, tls in members:
        try:
            client = _client_for(url, tls, 10)
            info = client.version()
            client.close()
        except Exception:  # noqa: BLE001 - a member that does not answer: no promise
            return None
        if info.get("Arch") != platform.architecture:
            return None
    return f"native {platform} engines ({', '.join(u for u, _, _ in members)})"


@forge.hookimpl(tryfirst=True)
def forge_doctor_checks(session: Any) -> list[Any]:
    """The engine of every configured host answers, and which Docker it is."""
    try:
        executor = session.executor("docker")
    except Exception as exc:  # noqa: BLE001
        return [forge.DoctorCheck("docker executor", False, str(exc))]
    client, tried = executor.buildkit_client()
    checks = [forge.DoctorCheck(
        "BuildKit client", client is not None or executor.builder == "classic",
        (f"{client.describe()}; builder = {executor.builder}" if client else
         "none: " + "; ".join(tried) + "; Dockerfile steps use the classic builder (no RUN --mount, "
         "COPY --chmod, heredocs); install docker-buildx or a docker.io CLI older than 23.0"),
        needed=executor.builder == "buildkit")]
    hosts = {None: executor.host_for(None), **dict(executor.hosts.items())}
    for platform, url in hosts.items():
        name = f"engine {url}" + (f" ({platform})" if platform else "")
        try:
            checks.append(forge.DoctorCheck(name, True, f"Docker {executor.version(platform)}"))
        except Exception as exc:  # noqa: BLE001
            checks.append(forge.DoctorCheck(name, False, str(exc)))
    # Every pool member: URL, platform, capacity, version, health. One member down is a
    # warning while another of its platform answers; a pool with none up is a failure.
    rows = []
    for platform, member in executor.members():
        try:
            rows.append((platform, member, f"Docker {executor.version(platform, member.url)}", True))
        except Exception as exc:  # noqa: BLE001
            rows.append((platform, member, str(exc).split("; start one")[0], False))
    for platform, member, detail, ok in rows:
        alive = any(r[3] for r in rows if r[0] == platform)
        checks.append(forge.DoctorCheck(
            f"engine {member.url} (pool {platform}, capacity {member.capacity})", ok,
            f"{detail}; {'up' if ok else 'down'}", needed=not alive))
    return checks
