"""The contracts between forge and the plugins that extend it: what an executor and a
remote cache backend must offer, as typed Protocols.

forge never checks an object's class: anything with these members works. A plugin may
still subclass the Protocol to say what it implements (the built-ins do), and
``isinstance(obj, forge.Executor)`` tells whether an object has the members. Each member
says who calls it, from which thread, and what it returns, in the style of pytest's
hookspec module.

Registered through hooks: ``forge_register_executors(registry)`` adds an executor factory
(``factory(workspace) -> Executor``); ``forge_remote_caches(workspace, options)`` returns
RemoteCache backends.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from forge.core.actions import ActionResult
    from forge.core.cas import CAS
    from forge.core.execution import RunContext
    from forge.core.oci.image import Image
    from forge.core.platforms import Platform

__all__ = ["Executor", "LazyRemoteCache", "RemoteCache"]


@runtime_checkable
class Executor(Protocol):
    """Runs the actions that need a container runtime (a Dockerfile step).

    One instance per forge process, made by the factory registered with
    ``forge_register_executors`` on first use, and shared by all worker threads: its
    methods must be thread-safe. A run function gets the one chosen for its action with
    ``rc.executor(rc.action.executor)``.
    """

    def build(self, rc: RunContext, *, package_dir: Path, base: Image | None,
              images: dict[str, Image] | None = None) -> Image:
        """Called from a worker thread to build one Dockerfile step.

        :param rc: the action's run context. ``rc.params`` holds ``dockerfile`` and
            ``context`` (paths relative to ``package_dir``), ``context_root``,
            ``build_args``, ``target`` and ``network``; ``rc.platform`` is the platform to
            build for. Nothing else may be read: it is what the key covers.
        :param package_dir: the directory the context paths are relative to.
        :param base: the image passed as the ``BASE_IMAGE`` build argument, or None.
        :param images: more images, by build-argument name (``PRODUCTION_IMAGE``), each
            passed as that argument as ``base`` is. ``rc.secrets`` (id -> path or
            ``env:NAME``) and ``rc.ssh`` (agent ids) are for ``RUN --mount=type=secret``
            and ``type=ssh``; they are not in the key and must never be logged. The
            automatic platform args (``TARGETPLATFORM``, ``TARGETARCH``…) must be set to
            ``rc.platform``.
        :returns: the built image, stored in ``rc.cas``, its config's platform set to
            ``rc.platform``. Raises ``forge.ActionFailed`` when the build fails and
            ``forge.ExecutorError`` when the runtime cannot be reached.
        """
        ...

    def version(self, platform: Platform | None = None) -> str:
        """Called by ``forge doctor`` (main thread) to show the runtime that serves
        ``platform`` (None: the default one).

        :returns: a one-line version, e.g. ``20.10.24 (linux/amd64)``; raises
            ``forge.ExecutorError`` when that runtime does not answer.
        """
        ...

    def host_for(self, platform: Platform | None) -> str:
        """Called for messages and ``forge doctor``: where builds for ``platform`` run.

        :returns: the runtime's address (e.g. ``unix:///var/run/docker.sock``).
        """
        ...

    def load(self, cas: CAS, image: Image, ref: str, platform: Platform | None) -> dict[str, int]:
        """Called by ``forge build --load`` (main thread): make ``image`` (in ``cas``) the
        runtime's image ``ref``, moving only what the runtime lacks.

        :returns: transfer counters, e.g. ``{"cas_to_engine_bytes": 0}`` for an image that
            was built there.
        """
        ...

    def clean(self, select: Callable[[str], bool], *, dry_run: bool = False) -> list[str]:
        """Called by ``forge clean --engine`` and ``forge cache gc`` (main thread): remove
        what forge left in the runtime for the results ``select`` picks.

        :param select: given a result image's config digest, whether to remove what the
            runtime holds for it (``forge clean --engine``: the results in this cache;
            ``forge cache gc``: the ones it just dropped).
        :param dry_run: only say which digests would be removed.
        :returns: the config digests removed (or to be removed).
        """
        ...

    def is_native_remote(self, platform: Platform) -> bool:
        """Called by ``forge doctor``: whether ``platform`` is served by a dedicated
        native runtime (so it needs no emulation on this host).

        :returns: True when the workspace routes ``platform`` to its own builder.
        """
        ...


@runtime_checkable
class RemoteCache(Protocol):
    """A remote action cache backend, shared by the machines that build one workspace.

    The scheduler asks it after a local miss and gives it every result it builds when it
    is ``writable``. ``lookup`` and ``upload`` are called from worker threads at once, so
    they must be thread-safe. An error other than ``forge.RemoteEntryInvalid`` makes the
    scheduler stop using the backend for the rest of the build (one warning; a
    ``required`` remote cache fails the build instead); a broken remote never fails a
    build otherwise. Messages must never carry credentials.
    """

    writable: bool
    """Whether this build may upload to it (read-only for developers, read-write for CI)."""

    def lookup(self, key: str, cas: CAS) -> ActionResult | None:
        """Called from a worker thread after a local cache miss.

        :param key: the action key (64 hex characters).
        :param cas: the local store: every blob of the result must be put there, verified,
            before the result is returned.
        :returns: the result stored under ``key``, or None for a miss. Raises
            ``forge.RemoteEntryInvalid`` when this one entry is corrupt or unverifiable (a
            miss with a warning, the backend stays in use).
        """
        ...

    def upload(self, key: str, result: ActionResult, cas: CAS) -> None:
        """Called from a worker thread after an action was built, when ``writable``.

        :param key: the action key.
        :param result: its result; its blobs (``result.all_blobs()``) and log are in ``cas``.
        :param cas: the local store to read them from.
        :returns: nothing. Raises ``forge.RemoteEntryInvalid`` for a problem with this one
            entry; any other error means the backend failed.
        """
        ...

    def ping(self) -> str:
        """Called by ``forge doctor`` (main thread) to check the backend answers.

        :returns: a one-line state, e.g. ``reachable (read-only)``; raises when it does not.
        """
        ...

    def describe(self) -> str:
        """Called for every message about this backend.

        :returns: where it is, e.g. ``host/repository``, never with credentials.
        """
        ...


@runtime_checkable
class LazyRemoteCache(RemoteCache, Protocol):
    """A remote cache that can hand out a result without its bytes (build without the
    bytes): the scheduler asks ``lookup_record`` for actions whose outputs nothing may
    read (not a requested target) and ``fetch`` when something does. A backend that is
    only a ``RemoteCache`` is asked ``lookup`` (result and every blob) instead.
    """

    def lookup_record(self, key: str) -> ActionResult | None:
        """Called from a worker thread after a local
        miss of an action whose bytes nothing may need: the result only, its blobs left
        remote. A backend without it is asked ``lookup`` instead.

        :returns: the result stored under ``key``, or None; raises like ``lookup``.
        """
        ...

    def fetch(self, key: str, result: ActionResult, cas: CAS) -> int:
        """Called from a worker thread when an action is
        about to read ``result``'s bytes: put every blob of it that ``cas`` lacks there,
        verified.

        :returns: the number of blobs pulled. Raises ``forge.RemoteEntryInvalid`` when the
            backend no longer has them (the scheduler then runs the producer locally).
        """
        ...
