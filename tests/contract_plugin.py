"""A third-party plugin written against ``import forge`` alone (issue 12): executors that
run nothing, and a remote cache that is a directory.

Loaded by ``[plugins] modules = ["tests.contract_plugin"]``; tests/test_plugin_contracts.py
drives it. Nothing here imports ``forge.core``: if this module needs a name ``forge`` does
not export, the public surface is missing it.

- Executors ``fixed`` and ``fixed-other`` (``FixedExecutor``): ``build`` returns the base
  (or scratch) plus one tiny layer holding ``/etc/forge-executor`` = the executor's name,
  so the output digest says which one ran. Every call of every member is appended to
  ``CALLS``; nothing is started.
- ``DirectoryCache``: results as ``results/<key>.json`` and blobs as
  ``blobs/sha256/<hex>`` under a directory, written temp file + rename, result last, so a
  record that exists names blobs that do. The directory is ``dir`` in
  ``[plugins.contract_plugin]`` (relative to the workspace root) or ``$FORGE_DIR_CACHE``;
  ``write = false`` makes it read-only.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import forge

EXECUTORS = ("fixed", "fixed-other")
ENV_DIR = "FORGE_DIR_CACHE"
CONFIG_KEYS = ("dir", "write")
MARKER = "etc/forge-executor"  # the file the fake's layer holds

CALLS: list[dict[str, Any]] = []  # every executor call in this process, in order
_calls_lock = threading.Lock()
_config: dict[Path, dict[str, Any]] = {}  # workspace root -> its [plugins.contract_plugin]


def record(**call: Any) -> None:
    with _calls_lock:
        CALLS.append(call)


class FixedExecutor:
    """A ``forge.Executor`` that runs nothing: a fixed image per base and executor name.

    Structural: it does not subclass ``forge.Executor``, it has the members."""

    def __init__(self, name: str, workspace: forge.Workspace):
        self.name = name
        self.workspace = workspace

    def build(self, rc: forge.RunContext, *, package_dir: Path, base: forge.Image | None) -> forge.Image:
        record(executor=self.name, call="build", label=str(rc.action.label),
               platform=str(rc.platform), dockerfile=rc.params["dockerfile"],
               base=base.digest if base is not None else None,
               dockerfile_read=(package_dir / rc.params["dockerfile"]).is_file())
        layer = forge.write_layer(
            rc.cas, [forge.LayerEntry.file(MARKER, f"{self.name}\n".encode())], epoch=rc.epoch)
        image = forge.append_layers(base or forge.EMPTY_IMAGE, layer,
                                    history=f"{self.name} executor", epoch=rc.epoch)
        image = forge.with_config(image, platform=rc.platform, epoch=rc.epoch)
        return forge.store_image(rc.cas, image)

    def version(self, platform: forge.Platform | None = None) -> str:
        return f"{self.name} 1.0 (runs nothing)"

    def host_for(self, platform: forge.Platform | None) -> str:
        return f"{self.name}://in-process"

    def load(self, cas: forge.CAS, image: forge.Image, ref: str,
             platform: forge.Platform | None) -> dict[str, int]:
        record(executor=self.name, call="load", ref=ref, image=image.digest,
               platform=str(platform) if platform else None, present=cas.has(image.digest))
        return {"cas_to_engine_bytes": 0}

    def clean(self, select: Callable[[str], bool], *, dry_run: bool = False) -> list[str]:
        record(executor=self.name, call="clean", dry_run=dry_run)
        return []

    def is_native_remote(self, platform: forge.Platform) -> bool:
        return True  # no emulation needed: nothing runs


class DirectoryCache:
    """A ``forge.RemoteCache`` in a directory (shared by the workspaces that name it)."""

    def __init__(self, root: Path, writable: bool = True):
        self.root = root
        self.writable = writable

    def describe(self) -> str:
        return f"dir:{self.root}"

    def ping(self) -> str:
        if not self.root.is_dir():
            raise forge.RemoteCacheError(f"remote cache {self.describe()}: no such directory")
        return f"reachable ({'read-write' if self.writable else 'read-only'})"

    def _record(self, key: str) -> Path:
        return self.root / "results" / f"{key}.json"

    def _blob(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        return self.root / "blobs" / algorithm / hexpart

    def lookup(self, key: str, cas: forge.CAS) -> forge.ActionResult | None:
        where = f"{self.describe()}:{key}"
        try:
            data = json.loads(self._record(key).read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise forge.RemoteEntryInvalid(f"{where}: record is not JSON: {exc}") from None
        try:
            if data.get("key") != key:
                raise ValueError(f"it is the record of key {data.get('key')!r}")
            result = forge.ActionResult.from_json(data["result"])
        except (forge.CacheError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise forge.RemoteEntryInvalid(f"{where}: bad record: {exc}") from None
        for digest in self._digests(result):
            if cas.has(digest):
                continue
            try:
                with open(self._blob(digest), "rb") as fh, cas.writer(expected=digest) as out:
                    shutil.copyfileobj(fh, out)
            except FileNotFoundError:
                raise forge.RemoteEntryInvalid(f"{where}: blob {digest} is missing") from None
            except forge.CacheError as exc:  # the bytes do not hash to their name
                raise forge.RemoteEntryInvalid(f"{where}: {exc}") from None
        return result

    def upload(self, key: str, result: forge.ActionResult, cas: forge.CAS) -> None:
        if not self.writable:
            raise forge.RemoteCacheError(f"remote cache {self.describe()} is read-only")
        for digest in self._digests(result):
            dest = self._blob(digest)
            if not dest.exists():
                with cas.open(digest) as fh:
                    _write_atomic(dest, lambda out, fh=fh: shutil.copyfileobj(fh, out))
        body = forge.canonical_json({"key": key, "result": result.to_json()})
        _write_atomic(self._record(key), lambda out: out.write(body))  # last: names a whole entry

    @staticmethod
    def _digests(result: forge.ActionResult) -> list[str]:
        return [*result.all_blobs(), *([result.log] if result.log else [])]


def _write_atomic(dest: Path, write: Callable[[Any], Any]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise


# -- hooks ------------------------------------------------------------------------------


@forge.hookimpl
def forge_register_executors(registry: Any) -> None:
    for name in EXECUTORS:
        registry.add(name, functools.partial(FixedExecutor, name))


@forge.hookimpl
def forge_configure(workspace: forge.Workspace, config: dict[str, Any]) -> None:
    for key, value in config.items():
        if key not in CONFIG_KEYS:
            raise forge.ConfigError(f"{workspace.where('plugins', 'contract_plugin', key)}: "
                                    f"[plugins.contract_plugin] unknown key '{key}'"
                                    f"{forge.did_you_mean(key, CONFIG_KEYS)}; valid keys: "
                                    f"{', '.join(CONFIG_KEYS)}")
        if not isinstance(value, str if key == "dir" else bool):
            raise forge.ConfigError(f"{workspace.where('plugins', 'contract_plugin', key)}: "
                                    f"[plugins.contract_plugin] {key} has the wrong type")
    _config[workspace.root] = dict(config)


@forge.hookimpl(tryfirst=True)
def forge_prepare_platform(platform: forge.Platform, executor: str, workspace: Any) -> str | None:
    """Our executors run nothing, so any platform is ready (and QEMU is not asked)."""
    return f"{executor} runs nothing" if executor in EXECUTORS else None


@forge.hookimpl
def forge_remote_caches(workspace: forge.Workspace, options: dict[str, Any]) -> list[Any] | None:
    if options.get("no_remote_cache"):
        return None
    config = _config.get(workspace.root, {})
    where = config.get("dir") or os.environ.get(ENV_DIR)
    if not where:
        return None
    return [DirectoryCache(workspace.root / where, bool(config.get("write", True)))]
