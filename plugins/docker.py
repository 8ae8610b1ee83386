"""The ``docker`` executor: runs Dockerfile builds on a Docker engine (docker SDK).

Which engine: ``[executors.docker] hosts = {arm64 = "tcp://arm-builder:2375"}`` routes a
platform to a native builder (as open-balena-builder does with DOCKER_HOST_ARM64);
everything else goes to ``DOCKER_HOST`` or the default socket.

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
import tarfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import forge
from forge.plugins import docker_transfer as transfer

START_HINT = (
    "start one with `scripts/services.sh` (as root: `dockerd --bridge=none --iptables=false &`), "
    "or point DOCKER_HOST at a running engine"
)
_KEYS = ("hosts", "transfer")
BASE_REPO = "forge-base"  # forge's images, named by config digest
BUILD_REPO = "forge-build"  # the builders' results, tagged with forge's config hex
_TRANSFERS = ("auto", "save")


def _settings(workspace: Any) -> tuple[dict[forge.Platform, str], str]:
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
    return {forge.parse_platform(k): v for k, v in hosts.items()}, mode


class DockerExecutor(forge.Executor):
    """The ``docker`` executor (``forge.Executor``), one per forge process; engine clients
    are created lazily, one per host. ``client()`` and ``hosts`` are Docker-specific."""

    def __init__(self, workspace: Any):
        self.workspace = workspace
        self.hosts, self.transfer = _settings(workspace)
        self._clients: dict[str, Any] = {}
        self._stores: dict[str, transfer.LocalStore | None] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._warned: set[str] = set()  # hosts already said to use the docker-save route

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

    def store(self, platform: forge.Platform | None) -> transfer.LocalStore | None:
        """The engine's layer store when this process can read it (a local engine)."""
        host = self.host_for(platform)
        client = self.client(platform)
        with self._lock:
            if host not in self._stores:
                self._stores[host] = (transfer.LocalStore.probe(client, host)
                                      if self.transfer == "auto" else None)
            return self._stores[host]

    def version(self, platform: forge.Platform | None = None) -> str:
        info = self.client(platform).version()
        return f"{info.get('Version')} ({info.get('Os')}/{info.get('Arch')})"

    # -- images in and out ---------------------------------------------------------------
    def _lock_for(self, image: Any) -> threading.Lock:
        with self._lock:
            return self._load_locks.setdefault(image.config_digest, threading.Lock())

    def put(self, cas: Any, image: Any, ref: str, platform: forge.Platform | None, *,
            count: transfer.Count, tempdir: Path) -> None:
        """Make ``image`` (in ``cas``) the engine image ``ref``, sending only the layers
        the engine lacks (none, for an image built there)."""
        client = self.client(platform)
        with self._lock_for(image):
            transfer.put_image(cas, client, image, ref, store=self.store(platform),
                               count=count, tempdir=tempdir)

    def ensure_loaded(self, rc: forge.RunContext, client: Any, image: Any) -> str:
        """Make ``image`` (from the CAS) present in the engine; return the ref to use."""
        ref = engine_ref(image)
        self.put(rc.cas, image, ref, rc.platform, count=rc.count, tempdir=rc.tempdir())
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
        for platform in platforms.values():
            client = self.client(platform)
            tagged = [(tag, image.id) for image in client.images.list(filters={"reference": f"{BASE_REPO}/*"})
                      for tag in image.tags if tag.startswith(BASE_REPO + "/")]
            tagged += [(tag, "sha256:" + tag.rsplit(":", 1)[1])
                       for image in client.images.list(name=BUILD_REPO)
                       for tag in image.tags if tag.startswith(BUILD_REPO + ":")]
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
        try:
            self.put(cas, image, ref, platform, count=count, tempdir=tempdir)
        finally:
            import shutil

            shutil.rmtree(tempdir, ignore_errors=True)
        return counters

    def export(self, rc: forge.RunContext, client: Any, image_id: str, base: Any) -> Any:
        """Bring an engine image into the CAS, reading only the layers ``base`` lacks."""
        store = self.store(rc.platform)
        if store is None:
            host = self.host_for(rc.platform)
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

    def _put_early(self, rc: forge.RunContext, client: Any, image_id: str) -> tuple[Any, threading.Thread] | None:
        """While the new layers are read: forge's config of the result (it needs the
        engine's config, not the layers) is loaded over the engine's layers, so the next
        step, or --load, finds forge's image already there. Only from a readable engine
        store; None otherwise (the image is then put when something asks for it)."""
        store = self.store(rc.platform)
        if store is None:
            return None
        try:
            config_bytes = store.config_bytes(image_id)
            diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
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
                self.put(rc.cas, early, engine_ref(early), rc.platform, count=rc.count, tempdir=tempdir)
            except Exception as exc:  # noqa: BLE001 - the lazy put later is the fallback
                rc.log(f"loading forge's config early failed ({exc}); it is loaded when needed")

        thread = threading.Thread(target=put, name="forge-docker-put", daemon=True)
        thread.start()
        return early, thread

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
        early = None if p.get("reproducible") else self._put_early(rc, client, image_id)
        try:
            image = self.export(rc, client, image_id, base)
        finally:
            if early is not None:
                early[1].join()
        if p.get("reproducible"):
            image = reproducible(rc, image, base)
        # The engine may label a cross-built image with the host's architecture; the
        # platform we built for is the truth (the "labelled amd64, contains aarch64" bug).
        image = forge.with_config(image, platform=platform, epoch=rc.epoch)
        if early is not None and early[0].config_digest != image.config_digest:
            rc.log(f"forge's early config {early[0].config_digest} is not the result's")
        # That changes the config digest. The engine gets forge's image (its config alone:
        # the layers are there), early when the engine's store is readable, else when
        # something asks for it (the next step of a chain, --load). The builder's own image is the engine's build cache: tagged
        # forge-build:<forge's config hex>, so it is forge's to collect with the result
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


def engine_ref(image: Any) -> str:
    """The engine tag of a CAS image: its config digest, so equal content, equal tag."""
    return f"{BASE_REPO}/{image.config_digest.split(':')[1][:32]}:latest"


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
