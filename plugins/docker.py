"""The ``docker`` executor: runs Dockerfile builds on a Docker engine (docker SDK).

Which engine: ``[executors.docker] hosts = {arm64 = "tcp://arm-builder:2375"}`` routes a
platform to a native builder (as open-balena-builder does with DOCKER_HOST_ARM64);
everything else goes to ``DOCKER_HOST`` or the default socket.

Images travel between the CAS and the engine as docker-archives, because the engine
Debian packages (20.10) loads those and not OCI layouts. The engine's image ID is the
sha256 of the config, so "does the engine have this base?" is one lookup by config
digest, and a pruned engine with a warm cache just gets the base loaded again.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

import forge

START_HINT = (
    "start one with `scripts/services.sh` (as root: `dockerd --bridge=none --iptables=false &`), "
    "or point DOCKER_HOST at a running engine"
)


def _hosts(workspace: Any) -> dict[forge.Platform, str]:
    table = workspace.section("executors").get("docker", {})
    unknown = set(table) - {"hosts"}
    if unknown:
        key = sorted(unknown)[0]
        raise forge.ConfigError(f"{workspace.where('executors', 'docker', key)}: [executors.docker] "
                                f"unknown key '{key}'; valid keys: hosts")
    hosts = table.get("hosts", {})
    if not isinstance(hosts, dict):
        raise forge.ConfigError(f"{workspace.where('executors', 'docker', 'hosts')}: [executors.docker] "
                                "hosts must be a table platform = url")
    return {forge.parse_platform(k): v for k, v in hosts.items()}


class DockerExecutor(forge.Executor):
    """The ``docker`` executor (``forge.Executor``), one per forge process; engine clients
    are created lazily, one per host. ``client()`` and ``hosts`` are Docker-specific."""

    def __init__(self, workspace: Any):
        self.workspace = workspace
        self.hosts = _hosts(workspace)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}

    def host_for(self, platform: forge.Platform | None) -> str:
        if platform is not None and platform in self.hosts:
            return self.hosts[platform]
        return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")

    def is_native_remote(self, platform: forge.Platform) -> bool:
        return platform in self.hosts

    def client(self, platform: forge.Platform | None) -> Any:
        import docker

        host = self.host_for(platform)
        with self._lock:
            if host not in self._clients:
                try:
                    client = docker.DockerClient(base_url=host, timeout=600)
                    client.ping()
                except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
                    raise forge.ExecutorError(f"no Docker engine answers at {host}: {exc}; {START_HINT}") from None
                self._clients[host] = client
            return self._clients[host]

    def version(self, platform: forge.Platform | None = None) -> str:
        info = self.client(platform).version()
        return f"{info.get('Version')} ({info.get('Os')}/{info.get('Arch')})"

    # -- images in and out ---------------------------------------------------------------
    def ensure_loaded(self, rc: forge.RunContext, client: Any, image: Any) -> str:
        """Make ``image`` (from the CAS) present in the engine; return the ref to use."""
        import docker

        ref = engine_ref(image)
        lock = self._load_locks.setdefault(image.config_digest, threading.Lock())
        with lock:
            for name in (ref, image.config_digest):  # tagged by a previous step, or loaded
                try:
                    client.images.get(name)
                    if name != ref:
                        client.api.tag(name, ref)
                    return ref
                except docker.errors.ImageNotFound:
                    pass
            archive = rc.tempdir() / "base.tar"
            forge.oci.write_docker_archive(rc.cas, image, archive, repo_tags=[ref])
            rc.log(f"loading base image {image.digest[:19]} into the engine")
            with open(archive, "rb") as fh:
                client.api.load_image(fh)
            return ref

    def export(self, rc: forge.RunContext, client: Any, image_id: str, base: Any) -> Any:
        """Bring an engine image back into the CAS, compressing only layers it lacks."""
        archive = rc.tempdir() / "result.tar"
        with open(archive, "wb") as fh:
            for chunk in client.api.get_image(image_id, chunk_size=1 << 20):
                fh.write(chunk)
        known = {layer.diff_id: layer for layer in base.layers} if base is not None else {}
        return forge.oci.import_docker_archive(rc.cas, archive, known_layers=known)

    # -- builds --------------------------------------------------------------------------
    def build(self, rc: forge.RunContext, *, package_dir: Path, base: Any) -> Any:
        p = rc.params
        platform = rc.platform
        client = self.client(platform)
        args = dict(p["build_args"])
        if base is not None:
            args["BASE_IMAGE"] = self.ensure_loaded(rc, client, base)
        root = p.get("context_root", "")
        context = build_context(package_dir, root, [p["dockerfile"], *p["context"]],
                                follow={p["dockerfile"]})
        rel_dockerfile = p["dockerfile"][len(root) + 1:] if root else p["dockerfile"]
        rc.log(f"docker build -f {rel_dockerfile} ({len(p['context'])} context files) on "
               f"{self.host_for(platform)} for {platform}")
        stream = client.api.build(
            fileobj=context, custom_context=True, dockerfile=rel_dockerfile, buildargs=args,
            target=p["target"], platform=str(platform) if platform else None,
            network_mode="host" if p["network"] else "none", rm=True, forcerm=True,
            decode=True, pull=False,
        )
        image_id = None
        step = ""
        tail: deque[str] = deque(maxlen=15)
        for chunk in stream:
            if rc.cancelled.is_set():
                raise forge.ActionFailed("cancelled")
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if line.strip():
                        rc.log(line)
                        tail.append(line)
                        if line.startswith("Step "):
                            step = line
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                rc.log(f"ERROR: {detail}")
                last = "\n    ".join(list(tail)[-8:])
                raise forge.ActionFailed(f"{rel_dockerfile}: failed at {step or 'an unknown step'}\n"
                                   f"    {detail}\n  last output:\n    {last}")
        if image_id is None:
            raise forge.ActionFailed(f"{rel_dockerfile}: the engine reported no image ID")
        image = self.export(rc, client, image_id, base)
        # The engine may label a cross-built image with the host's architecture; the
        # platform we built for is the truth (the "labelled amd64, contains aarch64" bug).
        image = forge.with_config(image, platform=platform, epoch=rc.epoch)
        # That changes the config digest, so name the engine's image after ours: the next
        # step of a chain then finds its base in the engine instead of loading it again.
        client.api.tag(image_id, engine_ref(image))
        return image


def engine_ref(image: Any) -> str:
    """The engine tag of a CAS image: its config digest, so equal content, equal tag."""
    return f"forge-base/{image.config_digest.split(':')[1][:32]}:latest"


def build_context(package_dir: Path, root: str, relpaths: list[str],
                  follow: set[str] = frozenset()) -> io.BytesIO:
    """A deterministic tar of exactly the declared files, paths relative to ``root``;
    those in ``follow`` (the Dockerfile) are read through a symlink, the rest stay links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for rel in sorted(dict.fromkeys(relpaths)):
            path = package_dir / rel
            name = rel[len(root) + 1:] if root and rel.startswith(root + "/") else rel
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
def forge_doctor_checks(session: Any) -> list[Any]:
    """The engine of every configured host answers, and which Docker it is."""
    try:
        executor = session.executor("docker")
    except Exception as exc:  # noqa: BLE001
        return [forge.DoctorCheck("docker executor", False, str(exc))]
    checks = []
    hosts = {None: executor.host_for(None), **dict(executor.hosts.items())}
    for platform, url in hosts.items():
        name = f"engine {url}" + (f" ({platform})" if platform else "")
        try:
            checks.append(forge.DoctorCheck(name, True, f"Docker {executor.version(platform)}"))
        except Exception as exc:  # noqa: BLE001
            checks.append(forge.DoctorCheck(name, False, str(exc)))
    return checks
