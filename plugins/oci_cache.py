"""The remote cache in any OCI registry: one artifact per action result, tagged with its key.

Format (version 1; README "Remote cache format" is the reference for other tools). In the
cache repository ``host/repo``, the result of the action with key ``K`` (64 hex chars of
blake3) is an OCI image manifest tagged ``K``:

- ``artifactType`` and ``config.mediaType`` are ``application/vnd.forge.action-result.v1+json``;
  the config blob is the *record*: canonical JSON (sorted keys, no whitespace) of
  ``{"format": 1, "key": K, "result": ActionResult.to_json()}``;
- ``layers`` are every blob the result needs (``ActionResult.all_blobs()``, sorted) and then
  its log, each with its own sha256 digest, size and media type: an image layer keeps its
  layer type, a manifest or index its own type, a config its config type, other output
  blobs a sniffed type (``application/octet-stream`` when nothing better is known), the
  log ``text/plain``. So an image layer in the cache is the same registry blob as in an
  ordinary push of that image, stored once;
- named outputs carry the annotation ``org.opencontainers.image.title`` (``oras pull``
  writes them under those names), the manifest ``dev.forge.action-key`` and
  ``dev.forge.format``.

The manifest is pushed last, after every blob, so a tag that exists names a complete
result; the same key and result always give the same bytes, and the first writer of a
key wins (a tag that exists is never rewritten). A registry that refuses ``artifactType``
gets the same manifest without it.

Reading pulls the manifest by tag (404: a miss), verifies the record against its digest,
then fetches every blob through ``CAS.writer(expected=…)`` in parallel; the result is
returned (and recorded by the scheduler) only when every blob is in the CAS and verified.
Any failure is an exception: the scheduler warns once and builds locally (or fails the
build under ``--remote-cache-required``). Read-only mode sends no write request at all.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import forge
from forge.core.actions import ActionResult, canonical_json
from forge.core.errors import ConfigError, RegistryError, RemoteCacheError, UsageError
from forge.core.oci import media

if TYPE_CHECKING:
    from forge.core.cas import CAS
    from forge.core.oci.registry import RegistryClient
    from forge.core.session import Session
    from forge.core.workspace import Workspace

FORMAT_VERSION = 1
RESULT_MEDIA_TYPE = "application/vnd.forge.action-result.v1+json"
LOG_MEDIA_TYPE = "text/plain"
OCTET_STREAM = "application/octet-stream"
KEY_ANNOTATION = "dev.forge.action-key"
FORMAT_ANNOTATION = "dev.forge.format"
TITLE_ANNOTATION = "org.opencontainers.image.title"
TRANSFER_THREADS = 4  # blobs of one result moved at once
MAX_REQUESTS = 8  # registry requests in flight per backend (the client's connection pool)
MAX_RECORD = 16 << 20  # a result record larger than this is not one forge wrote
SNIFF_JSON_LIMIT = 4 << 20  # JSON blobs up to this size are read to learn their media type
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


@dataclass
class PushStats:
    """What uploading results sent: new tags, tags already there, blob bytes sent."""

    results: int = 0
    present: int = 0
    blobs: int = 0
    bytes: int = 0

    def add(self, other: PushStats) -> None:
        self.results += other.results
        self.present += other.present
        self.blobs += other.blobs
        self.bytes += other.bytes


@dataclass(frozen=True)
class CacheSettings:
    """Where the remote cache is and what this build may do with it."""

    url: str
    read: bool = True
    write: bool = False
    insecure: bool = False


def settings_for(workspace: Workspace, options: dict[str, Any]) -> CacheSettings | None:
    """``[remote_cache]`` with the command line's overrides; None when there is no cache.

    ``--remote-cache URL`` replaces the configured URL and is read-only unless
    ``--remote-cache-write`` is given too; ``--no-remote-cache`` turns it off. The
    hook's documented option names (``url``, ``read``, ``write``, ``enabled``,
    ``insecure``) are read as well as the CLI's (``remote_cache_url`` …).
    """
    section = workspace.section("remote_cache")
    if options.get("no_remote_cache") or options.get("enabled") is False:
        return None
    flag_url = options.get("remote_cache_url") or options.get("url")
    write_flag = options.get("remote_cache_write", options.get("write"))
    if flag_url:
        url, read, write = flag_url, options.get("read", True), bool(write_flag)
    else:
        url, read = section.get("url", ""), section.get("read", True)
        # An explicit False (forge cache push's own build) beats the configured write.
        write = section.get("write", False) if write_flag is None else bool(write_flag)
    if not url or not (read or write):
        return None
    insecure = bool(options.get("insecure") or section.get("insecure", False))
    return CacheSettings(url, bool(read), bool(write), insecure)


def split_url(url: str) -> tuple[str, str, bool | None]:
    """``[scheme://]host/repository`` -> (host, repository, insecure or None for auto)."""
    from forge.core.oci.registry import parse_reference

    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if scheme not in ("", "oci", "http", "https"):
        raise ConfigError(f"remote cache URL {url!r}: scheme {scheme!r} is not one of oci://, http://, https://")
    try:
        ref = parse_reference(rest.rstrip("/"))
    except RegistryError as exc:
        raise ConfigError(f"remote cache URL {url!r}: {exc}") from None
    if ref.tag or ref.digest:
        raise ConfigError(
            f"remote cache URL {url!r} names a tag or digest; give the repository only "
            f"(e.g. {ref.registry}/{ref.repository}): forge tags it with action keys"
        )
    insecure = {"http": True, "https": False}.get(scheme)
    return ref.registry, ref.repository, insecure


class OciCache:
    """One cache repository in one registry; the scheduler's remote cache backend."""

    def __init__(self, settings: CacheSettings, client: RegistryClient | None = None):
        from forge.core.oci.registry import RegistryClient

        host, self.repo, insecure = split_url(settings.url)
        if insecure is None and settings.insecure:
            insecure = True
        self.settings = settings
        self.readable = settings.read
        self.writable = settings.write
        self.client = client or RegistryClient(host, insecure=insecure)
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)
        self._lock = threading.Lock()
        self._present: set[str] = set()  # blobs known to be in the repository
        self._blob_locks: dict[str, threading.Lock] = {}

    def describe(self) -> str:
        return f"{self.client.host}/{self.repo}"

    def __repr__(self) -> str:
        mode = "read-write" if self.writable else "read-only"
        return f"OciCache({self.describe()!r}, {mode})"

    def ping(self) -> str:
        """Check the registry answers and lets us in (``forge doctor``)."""
        from forge.core.cas import sha256_digest

        with self._request():  # GET /v2/ (reachable? credentials?) then a HEAD in the repository
            self.client.has_blob(self.repo, sha256_digest(b"{}"))
        mode = "read-write" if self.writable else ("read-only" if self.readable else "write-only")
        return f"reachable ({mode})"

    # -- reading ------------------------------------------------------------------------
    def lookup(self, key: str, cas: CAS) -> ActionResult | None:
        """The result stored under ``key`` with all its blobs in ``cas``, or None (a miss)."""
        if not self.readable:
            return None
        check_key(key)
        data = self._manifest(key)
        if data is None:
            return None
        where = f"{self.describe()}:{key}"
        try:
            manifest = json.loads(data)
            config = manifest["config"]
            if config.get("mediaType") != RESULT_MEDIA_TYPE:
                return None  # another format (or version) under this tag: not ours to read
            record_digest, record_size = config["digest"], int(config["size"])
            layers = {d["digest"]: int(d["size"]) for d in manifest.get("layers") or []}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteCacheError(f"{where} is not a forge cache entry: {exc!r}") from None
        if not 0 < record_size <= MAX_RECORD:
            raise RemoteCacheError(f"{where}: record size {record_size} is out of range")
        with self._request():
            record = self.client.read_blob(self.repo, record_digest)  # verified
        result = parse_record(record, key, where)
        needed = result.all_blobs() + ([result.log] if result.log else [])
        for digest in needed:
            if digest not in layers:
                raise RemoteCacheError(f"{where}: blob {digest} of the result is not in the manifest")
            expected = result.sizes.get(digest)
            if expected is not None and expected != layers[digest]:
                raise RemoteCacheError(f"{where}: blob {digest} is {layers[digest]} bytes in the "
                                       f"manifest but {expected} in the record")
        self._transfer(self._pull_blob, cas, [d for d in needed if not cas.has(d)])
        missing = [d for d in needed if not cas.has(d)]
        if missing:  # every pull raised or stored; this is a belt to those braces
            raise RemoteCacheError(f"{where}: blob(s) {', '.join(missing)} did not arrive")
        return result

    def _pull_blob(self, cas: CAS, digest: str) -> int:
        with self._request():
            self.client.pull_blob(cas, self.repo, digest)  # streamed through CAS.writer(expected=)
        with self._lock:
            self._present.add(digest)
        return 0

    # -- writing ------------------------------------------------------------------------
    def upload(self, key: str, result: ActionResult, cas: CAS) -> None:
        """Store ``result`` under ``key`` (the scheduler calls this after a build)."""
        self.push(key, result, cas)

    def push(self, key: str, result: ActionResult, cas: CAS) -> PushStats:
        """Upload the blobs the repository lacks, the record, then the tagged manifest."""
        if not self.writable:
            raise RemoteCacheError(f"remote cache {self.describe()} is read-only; nothing uploaded")
        check_key(key)
        if self._manifest_exists(key):
            return PushStats(present=1)  # first writer wins: the tag is never rewritten
        record = cas.put_bytes(record_bytes(key, result))
        blobs = result.all_blobs() + ([result.log] if result.log else [])
        sent = self._transfer(self._push_blob, cas, [*blobs, record.digest])
        manifest = manifest_bytes(key, result, cas, record.digest, record.size)
        from forge.core.oci.registry import RegistryAuthError

        try:
            with self._request():
                self.client.push_manifest(self.repo, key, manifest, media.OCI_MANIFEST)
        except RegistryAuthError:
            raise
        except RegistryError:
            # A registry from before OCI 1.1 may refuse the artifactType field.
            plain = manifest_bytes(key, result, cas, record.digest, record.size, artifact_type=False)
            with self._request():
                self.client.push_manifest(self.repo, key, plain, media.OCI_MANIFEST)
        return PushStats(results=1, blobs=sum(1 for n in sent if n), bytes=sum(sent))

    def _push_blob(self, cas: CAS, digest: str) -> int:
        """Upload one blob unless the repository has it; the bytes sent (0 if none)."""
        with self._lock:
            if digest in self._present:
                return 0
            lock = self._blob_locks.setdefault(digest, threading.Lock())
        with lock:  # two results sharing a layer upload it once
            if digest in self._present:
                return 0
            with self._request():
                sent = self.client.push_blob(cas, self.repo, digest)
            with self._lock:
                self._present.add(digest)
        return cas.size(digest) if sent else 0

    # -- plumbing -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _request(self) -> Iterator[None]:
        """Bound the requests in flight to the client's connection pool (-j workers each
        moving several blobs would otherwise make urllib3 warn about a full pool)."""
        with self._slots:
            yield

    def _transfer(self, move: Any, cas: CAS, digests: list[str]) -> list[int]:
        if len(digests) <= 1:
            return [move(cas, d) for d in digests]
        with ThreadPoolExecutor(max_workers=min(TRANSFER_THREADS, len(digests)),
                                thread_name_prefix="forge-remote") as pool:
            return list(pool.map(lambda d: move(cas, d), digests))

    # RegistryClient.get_manifest reports "no such tag" as a RegistryError like any other
    # failure; a cache miss must be told apart from a broken registry, so these two ask
    # through the client's request plumbing (auth, retries, timeouts) and read the status.
    def _manifest(self, tag: str) -> bytes | None:
        client = self.client
        what = f"manifest {self.describe()}:{tag}"
        with self._request():
            response = client._request(what, client._api(self.repo, "manifests", tag),
                                       headers={"Accept": media.OCI_MANIFEST})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise client._fail(what, response)
        return response.content

    def _manifest_exists(self, tag: str) -> bool:
        client = self.client
        what = f"manifest {self.describe()}:{tag}"
        with self._request():
            response = client._request(what, client._api(self.repo, "manifests", tag), "HEAD",
                                       headers={"Accept": media.OCI_MANIFEST})
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise client._fail(what, response)
        return True


# -- the format -------------------------------------------------------------------------


def check_key(key: str) -> None:
    if not _TAG.fullmatch(key):
        raise RemoteCacheError(f"action key {key!r} is not a valid OCI tag")


def record_bytes(key: str, result: ActionResult) -> bytes:
    """The config blob: what other tools read to learn the result."""
    return canonical_json({"format": FORMAT_VERSION, "key": key, "result": result.to_json()})


def parse_record(data: bytes, key: str, where: str) -> ActionResult:
    try:
        record = json.loads(data)
        if record.get("format") != FORMAT_VERSION:
            raise ValueError(f"format {record.get('format')!r}, expected {FORMAT_VERSION}")
        if record.get("key") != key:
            raise ValueError(f"it is the record of key {record.get('key')!r}")
        return ActionResult.from_json(record["result"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RemoteCacheError(f"{where}: bad result record: {exc}") from None


def manifest_bytes(key: str, result: ActionResult, cas: CAS, record_digest: str, record_size: int,
                   *, artifact_type: bool = True) -> bytes:
    """The tagged manifest: same key + result -> same bytes, on any machine."""
    types = media_types(result, cas)
    titles: dict[str, str] = {}
    for name, digest in sorted(result.outputs.items()):
        titles.setdefault(digest, name)
    layers = []
    for digest in result.all_blobs():
        desc: dict[str, Any] = {"mediaType": types[digest], "digest": digest, "size": cas.size(digest)}
        if digest in titles:
            desc["annotations"] = {TITLE_ANNOTATION: titles[digest]}
        layers.append(desc)
    if result.log and result.log not in types:
        layers.append({"mediaType": LOG_MEDIA_TYPE, "digest": result.log, "size": cas.size(result.log),
                       "annotations": {TITLE_ANNOTATION: "log"}})
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": {"mediaType": RESULT_MEDIA_TYPE, "digest": record_digest, "size": record_size},
        "layers": layers,
        "annotations": {KEY_ANNOTATION: key, FORMAT_ANNOTATION: str(FORMAT_VERSION)},
    }
    if artifact_type:
        doc["artifactType"] = RESULT_MEDIA_TYPE
    return canonical_json(doc)


def media_types(result: ActionResult, cas: CAS) -> dict[str, str]:
    """Each blob's media type: what a manifest or index of the result says it is, else
    what its own bytes say (a manifest's ``mediaType``, gzip/zstd/tar magic)."""
    own: dict[str, str] = {}
    declared: dict[str, str] = {}
    for digest in result.all_blobs():
        head = _head(cas, digest)
        kind = _sniff(head)
        if kind == "json" and cas.size(digest) <= SNIFF_JSON_LIMIT:
            try:
                doc = json.loads(cas.read_bytes(digest))
            except ValueError:
                doc = None
            mtype = doc.get("mediaType") if isinstance(doc, dict) else None
            if doc is None:
                own[digest] = OCTET_STREAM  # starts like JSON, is not
            elif mtype in media.MANIFEST_TYPES:
                own[digest] = mtype
                for desc in [doc.get("config") or {}, *(doc.get("layers") or [])]:
                    if isinstance(desc, dict) and desc.get("digest") and desc.get("mediaType"):
                        declared[desc["digest"]] = desc["mediaType"]
            elif mtype in media.INDEX_TYPES:
                own[digest] = mtype
                for desc in doc.get("manifests") or []:
                    if isinstance(desc, dict) and desc.get("digest") and desc.get("mediaType"):
                        declared[desc["digest"]] = desc["mediaType"]
            else:
                own[digest] = "application/json"
        else:
            own[digest] = {"gzip": media.OCI_LAYER_GZIP, "zstd": media.OCI_LAYER_ZSTD,
                           "tar": media.OCI_LAYER}.get(kind, OCTET_STREAM)
    return {d: declared.get(d) or own[d] for d in result.all_blobs()}


def _head(cas: CAS, digest: str) -> bytes:
    with cas.open(digest) as fh:
        return fh.read(512)


def _sniff(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head[257:262] == b"ustar":
        return "tar"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "bytes"


# -- forge cache push ---------------------------------------------------------------------


@dataclass
class PushSummary:
    remote: str
    actions: int = 0
    built: int = 0
    stats: PushStats = field(default_factory=PushStats)


def push_results(session: Session, patterns: list[str]) -> PushSummary:
    """Build ``patterns`` (cache hits where possible), then upload every action result of
    their graph to the remote cache, writable whatever the configuration says."""
    from forge.core.execution import raise_for_failures

    settings = settings_for(session.workspace, {**session.options, "remote_cache_write": True})
    if settings is None:
        raise UsageError("no remote cache to push to: set [remote_cache] url in WORKSPACE.toml "
                         "or pass --remote-cache HOST/REPOSITORY")
    backend = OciCache(settings)
    options = session.options
    # The build itself only reads the remote; the uploads below count what they send.
    session.options = {**options, "remote_cache_write": False}
    try:
        _, outcomes = session.build(patterns)
    finally:
        session.options = options
    raise_for_failures(outcomes)
    summary = PushSummary(backend.describe())
    results = {o.key: o.result for o in outcomes.values() if o.key and o.result is not None}
    summary.actions = len(results)
    summary.built = sum(1 for o in outcomes.values() if o.status == "built")
    with ThreadPoolExecutor(max_workers=TRANSFER_THREADS, thread_name_prefix="forge-push") as pool:
        for stats in pool.map(lambda kv: backend.push(kv[0], kv[1], session.cas), sorted(results.items())):
            summary.stats.add(stats)
    return summary


# -- the hook -----------------------------------------------------------------------------


@forge.hookimpl
def forge_remote_caches(workspace: Workspace, options: dict[str, Any]) -> list[Any] | None:
    settings = settings_for(workspace, options)
    if settings is None:
        return None
    if workspace.section("remote_cache").get("required") and "remote_cache_required" not in options:
        # The scheduler reads this switch from the session options; WORKSPACE.toml's
        # `required = true` feeds the same one.
        options["remote_cache_required"] = True
    return [OciCache(settings)]
