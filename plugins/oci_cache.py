"""The remote cache in any OCI registry: one artifact per action result, tagged with its key.

Format (version 2; README "Remote cache format" is the reference for other tools). In the
cache repository ``host/repo``, the result of the action with key ``K`` (64 hex chars of
blake3) is an OCI image manifest tagged ``K``:

- ``artifactType`` and ``config.mediaType`` are ``application/vnd.forge.action-result.v2+json``
  (the version is in the type, so a reader of another version sees a foreign artifact: a
  miss, never a misread record); the config blob is the *record*: canonical JSON (sorted
  keys, no whitespace) of ``{"format": 2, "key": K, "result": ActionResult.to_json()}``;
- ``layers`` are the result's blob descriptors (``ActionResult.blobs``: unique, sorted by
  digest, outputs included) with the media types the rule gave them, then the log as
  ``text/plain``. Nothing is sniffed: an image layer keeps its layer type, a manifest or
  index its own type, an image config its config type, a report ``application/json``. So
  an image layer in the cache is the same registry blob as in an ordinary push of that
  image, stored once;
- named outputs carry ``org.opencontainers.image.title`` (``oras pull`` writes them under
  those names), the manifest ``dev.forge.action-key`` and ``dev.forge.format``.

Writing: blobs first (those the repository lacks), the record, then the manifest, so a tag
that exists names a complete result. The first writer of a key wins: the tag is HEADed,
then PUT with ``If-None-Match: *`` (a registry that honours it answers 412 when another
writer got there first; the CNCF distribution registry 2.8 ignores the header), then read
back. Equal results give equal bytes, so a race between them is harmless; a race between
different results (a non-reproducible action) leaves one complete result under the tag and
the writer whose manifest was replaced raises ``KeyConflict``. A tag that holds a valid
result is never rewritten; one that holds an invalid forge entry (malformed, record of
another key, a blob missing) is replaced. The push without ``artifactType`` happens only
when the registry refuses the manifest as invalid (400 ``MANIFEST_INVALID``/``UNSUPPORTED``);
a 5xx, a timeout or a refusal of access is raised.

Reading pulls the manifest by tag (404: a miss; a manifest of another tool or version: a
miss), verifies the record against its digest, checks every blob descriptor of the record
is a layer of the manifest, then fetches the blobs through ``CAS.writer(expected=…)``; the
result is returned (and recorded by the scheduler) only when every blob is in the CAS and
verified. Failures are scoped: what is wrong with this one entry (malformed manifest or
record, another key's record, a blob that does not verify or that the registry says it does
not have) raises ``RemoteEntryInvalid`` — a miss with a warning, the backend stays in use;
anything else (connection refused, timeouts after the client's retries, 5xx, 401/403) is a
RegistryError/RemoteCacheError, and the scheduler stops using the backend for the build.
Read-only mode sends no write request at all.

Signed records. A writer with ``[remote_cache] signing_key`` adds two manifest annotations,
``dev.forge.record.signer`` (its key id, ``sha256:`` of the DER public key) and
``dev.forge.record.signature`` (base64 of the DER ECDSA P-256 signature over the record
blob's exact bytes; ``forge.supply.signing``). A reader with ``trusted_keys`` checks them
after reading the record (``_check_signature``): unsigned, signed by an untrusted key, or
not matching the record is ``RemoteEntryInvalid`` — one miss with a warning that names the
signer and the trusted keys. The record names every blob by digest, so its signature
covers the whole result.

Secrets. Credentials a cache URL carried left it when the settings were read
(plugins/cache_settings.py, "Credentials"), so ``describe()`` and every message name only
``host/repo``. Every exception leaving the backend (``ping``, ``lookup``, ``entry``,
``push``) goes through the client's scrubber, so text of requests or oras cannot carry a
secret out.

What is elsewhere: the settings (``[remote_cache]``, flags, URLs) in
plugins/cache_settings.py, the wire format's bytes in plugins/cache_format.py, and
``forge cache push`` in plugins/cache_push.py.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import forge
from forge import (
    ActionResult,
    CacheError,
    Descriptor,
    RemoteCacheError,
    RemoteEntryInvalid,
)
from forge.plugins.cache_format import (
    KEY_ANNOTATION,
    LOG_MEDIA_TYPE,
    RESULT_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    SIGNER_ANNOTATION,
    check_key,
    manifest_bytes,
    parse_record,
    record_bytes,
)
from forge.plugins.cache_settings import CacheSettings, parse_url, settings_for

if TYPE_CHECKING:
    from forge import CAS, Workspace

TRANSFER_THREADS = 4  # blobs of one result moved at once
MAX_REQUESTS = 8  # registry requests in flight per backend (the client's connection pool)
MAX_RECORD = 16 << 20  # a result record larger than this is not one forge wrote
# Error codes with which a registry refuses a manifest it cannot parse or validate: the
# answer of a pre-OCI-1.1 registry to ``artifactType``, and the only one that earns the
# push without it.
FIELD_REFUSAL_CODES = frozenset({"MANIFEST_INVALID", "UNSUPPORTED"})


class KeyConflict(RemoteEntryInvalid):
    """Another writer stored a different result under the same key while this one wrote
    it (a registry without conditional PUTs lets the later write win): the key's action is
    not reproducible. The tag names one complete result either way."""


@dataclass
class PushStats:
    """What uploading results did: new tags, tags already there (``conflicts`` of them
    holding a different, valid result, kept), invalid entries replaced, blob bytes sent."""

    results: int = 0
    present: int = 0
    conflicts: int = 0
    repaired: int = 0
    blobs: int = 0
    bytes: int = 0

    def add(self, other: PushStats) -> None:
        self.results += other.results
        self.present += other.present
        self.conflicts += other.conflicts
        self.repaired += other.repaired
        self.blobs += other.blobs
        self.bytes += other.bytes


@dataclass(frozen=True)
class Entry:
    """A cache entry whose manifest and record were read and checked (blobs not yet)."""

    result: ActionResult
    blobs: tuple[tuple[str, int], ...]  # (digest, size) of every blob to fetch, log last


def _scrubbing(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a backend method so that no exception leaves it carrying a secret (see
    ``scrub_exception``)."""

    @functools.wraps(method)
    def scrubbed(self: OciCache, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            clean = scrub_exception(exc, self._scrub)
            if clean is exc:
                raise
            raise clean from None

    return scrubbed


def scrub_exception(exc: BaseException, scrub: Callable[[str], str]) -> BaseException:
    """``exc`` with every secret ``scrub`` knows taken out of its message (its args are
    rewritten in place), or a RemoteCacheError with the scrubbed message when the type
    builds its message some other way. A chain of causes that carries a secret is cut."""
    chain, link = [], exc.__cause__ or exc.__context__
    while link is not None and len(chain) < 20:
        chain.append(link)
        link = link.__cause__ or link.__context__
    if any(scrub(str(e)) != str(e) for e in chain):
        exc.__cause__, exc.__suppress_context__ = None, True
    text = str(exc)
    clean = scrub(text)
    if clean == text:
        return exc
    if type(exc).__str__ is BaseException.__str__:
        exc.args = tuple(scrub(a) if isinstance(a, str) else a for a in exc.args)
        if scrub(str(exc)) == str(exc):
            return exc
    return RemoteCacheError(clean)


class OciCache(forge.RemoteCache):
    """One cache repository in one registry; the scheduler's remote cache backend
    (``forge.RemoteCache``)."""

    def __init__(self, settings: CacheSettings, client: forge.oci.RegistryClient | None = None):
        loc = parse_url(settings.url)
        self.repo = loc.repo
        insecure = loc.insecure
        if insecure is None and settings.insecure:
            insecure = True
        self.settings = settings
        self.readable = settings.read
        self.writable = settings.write
        credentials = settings.credentials or loc.credentials
        self.client = client or forge.oci.RegistryClient(loc.host, insecure=insecure, credentials=credentials)
        root = settings.root or None
        signing = forge.supply.signing
        self.signer = (signing.load_signing_key(settings.signing_key, root, what="[remote_cache] signing_key")
                       if settings.signing_key else None)
        self.trusted = {k.key_id: k for k in (
            signing.load_public_key(spec, root, what="[remote_cache] trusted_keys entry")
            for spec in settings.trusted_keys)}
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)
        self._lock = threading.Lock()
        self._present: set[str] = set()  # blobs known to be in the repository
        self._entries: dict[str, Entry] = {}  # records read by lookup_record, for fetch
        self._blob_locks: dict[str, threading.Lock] = {}

    def describe(self) -> str:
        """``host/repo``: never credentials (they left the URL when it was parsed)."""
        return f"{self.client.host}/{self.repo}"

    def _scrub(self, text: str) -> str:
        client_scrub = getattr(self.client, "_scrub", None)
        return client_scrub(text) if client_scrub else forge.oci.scrub(text)

    def __repr__(self) -> str:
        mode = "read-write" if self.writable else "read-only"
        return f"OciCache({self.describe()!r}, {mode})"

    @_scrubbing
    def ping(self) -> str:
        """Check the registry answers and lets us in (``forge doctor``)."""
        with self._request():  # GET /v2/ (reachable? credentials?) then a HEAD in the repository
            self.client.has_blob(self.repo, forge.oci.sha256_digest(b"{}"))
        mode = "read-write" if self.writable else ("read-only" if self.readable else "write-only")
        return f"reachable ({mode})"

    # -- reading ------------------------------------------------------------------------
    @_scrubbing
    def lookup(self, key: str, cas: CAS) -> ActionResult | None:
        """The result stored under ``key`` with all its blobs in ``cas``, or None (a miss).

        RemoteEntryInvalid when this entry is corrupt or unverifiable; any other error means
        the registry failed. Blobs verified into ``cas`` before a failure stay (the CAS only
        holds verified content); the result is returned only when all of them are there.
        """
        result = self.lookup_record(key)
        if result is not None:
            self.fetch(key, result, cas)
        return result

    @_scrubbing
    def lookup_record(self, key: str) -> ActionResult | None:
        """The result stored under ``key``, its blobs left in the registry (the record and
        manifest are read and checked: two small requests)."""
        if not self.readable:
            return None
        check_key(key)
        entry = self.entry(key)
        if entry is None:
            return None
        with self._lock:
            self._entries[key] = entry
        return entry.result

    @_scrubbing
    def fetch(self, key: str, result: ActionResult, cas: CAS) -> int:
        """Pull the blobs of ``result`` (stored under ``key``) that ``cas`` lacks, several
        at once; returns how many were pulled. RemoteEntryInvalid when the registry no
        longer has one (evicted, deleted): the entry is lost and its producer must run."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry.result != result:
            entry = self.entry(key)
            if entry is None or entry.result.digest != result.digest:
                raise RemoteEntryInvalid(f"{self._where(key)}: the entry is gone or changed")
        where = self._where(key)
        todo = [(d, n) for d, n in entry.blobs if not cas.has(d)]
        self._transfer(lambda blob: self._pull_blob(cas, blob[0], blob[1], where), todo)
        missing = [d for d, _ in entry.blobs if not cas.has(d)]
        if missing:  # every pull raised or stored; this is a belt to those braces
            raise RemoteEntryInvalid(f"{where}: blob(s) {', '.join(missing)} did not arrive")
        return len(todo)

    @_scrubbing
    def entry(self, key: str) -> Entry | None:
        """Read and check the manifest and record under ``key``: None when there is no tag
        or it holds another tool's (or forge version's) artifact, RemoteEntryInvalid when it
        is a forge entry that does not hold together."""
        where = self._where(key)
        got = self._manifest(key)
        if got is None:
            return None
        data, served = got
        if served and served != forge.oci.sha256_digest(data):
            raise RemoteEntryInvalid(f"{where}: the registry served a manifest hashing to "
                                     f"{forge.oci.sha256_digest(data)} under the digest {served}")
        try:
            manifest = json.loads(data)
            config_type = manifest["config"]["mediaType"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteEntryInvalid(f"{where}: the manifest is not an OCI image manifest "
                                     f"({type(exc).__name__}: {exc})") from None
        if config_type != RESULT_MEDIA_TYPE:
            return None  # another tool's artifact or another format version: not ours to read
        try:
            record = Descriptor.from_json(manifest["config"])
            layers = {}
            for desc in manifest.get("layers") or []:
                layer = Descriptor.from_json(desc)
                layers[layer.digest] = layer
            annotated = (manifest.get("annotations") or {}).get(KEY_ANNOTATION)
        except (CacheError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteEntryInvalid(f"{where}: malformed forge cache manifest "
                                     f"({type(exc).__name__}: {exc})") from None
        if annotated not in (None, key):
            raise RemoteEntryInvalid(f"{where}: the manifest is annotated with key {annotated!r}")
        if not 0 < record.size <= MAX_RECORD:
            raise RemoteEntryInvalid(f"{where}: record size {record.size} is out of range")
        data = self._read_record(record.digest, where)
        if self.trusted:
            self._check_signature(manifest.get("annotations") or {}, data, where)
        result = parse_record(data, key, where)
        blobs = []
        for d in result.blobs:
            layer = layers.get(d.digest)
            if layer is None:
                raise RemoteEntryInvalid(f"{where}: blob {d.digest} of the result is not a layer "
                                         "of the manifest")
            if (layer.size, layer.media_type) != (d.size, d.media_type):
                raise RemoteEntryInvalid(
                    f"{where}: blob {d.digest} is {layer.size} bytes of {layer.media_type} in the "
                    f"manifest but {d.size} bytes of {d.media_type} in the record")
            blobs.append((d.digest, d.size))
        if result.log and result.log not in layers:
            raise RemoteEntryInvalid(f"{where}: the log {result.log} is not a layer of the manifest")
        if result.log and result.log not in result.sizes:
            blobs.append((result.log, layers[result.log].size))
        return Entry(result, tuple(blobs))

    def _check_signature(self, annotations: dict[str, Any], record: bytes, where: str) -> None:
        """A reader with trusted keys takes only a record signed by one of them: anything
        else is this one entry's fault (a miss with a warning naming key and signer)."""
        trusted = ", ".join(k.describe() for k in self.trusted.values())
        signer = annotations.get(SIGNER_ANNOTATION)
        signature = annotations.get(SIGNATURE_ANNOTATION)
        if not signer or not signature:
            raise RemoteEntryInvalid(f"{where}: the entry is unsigned, and this cache trusts only "
                                     f"records signed by {trusted}")
        key = self.trusted.get(signer)
        if key is None:
            raise RemoteEntryInvalid(f"{where}: the entry is signed by key {signer}, which is not "
                                     f"trusted (trusted_keys: {trusted})")
        try:
            raw = base64.b64decode(signature, validate=True)
        except (ValueError, TypeError):
            raw = b""
        if not key.verify(record, raw):
            raise RemoteEntryInvalid(f"{where}: the signature by key {key.describe()} does not match "
                                     "the entry's record (it was changed after it was signed)")

    @contextlib.contextmanager
    def _entry_blob(self, what: str, where: str) -> Iterator[None]:
        """One request for a blob an entry lists: a blob that does not verify, or that the
        registry does not have, makes the entry invalid (one miss); anything else is the
        registry's failure."""
        try:
            with self._request():
                yield
        except forge.oci.ContentMismatch as exc:
            raise RemoteEntryInvalid(f"{where}: {what} does not verify: {exc}") from None
        except forge.oci.RegistryHTTPError as exc:
            if exc.status == 404:
                raise RemoteEntryInvalid(f"{where}: {what} is listed in the manifest but the "
                                         f"registry does not have it ({exc})") from None
            raise

    def _read_record(self, digest: str, where: str) -> bytes:
        with self._entry_blob(f"the record {digest}", where):
            return self.client.read_blob(self.repo, digest)  # verified

    def _pull_blob(self, cas: CAS, digest: str, size: int, where: str) -> int:
        with self._entry_blob(f"blob {digest}", where):  # streamed through CAS.writer(expected=)
            self.client.pull_blob(cas, self.repo, digest, size)
        with self._lock:
            self._present.add(digest)
        return 0

    # -- writing ------------------------------------------------------------------------
    def upload(self, key: str, result: ActionResult, cas: CAS) -> None:
        """Store ``result`` under ``key`` (the scheduler calls this after a build)."""
        self.push(key, result, cas)

    @_scrubbing
    def push(self, key: str, result: ActionResult, cas: CAS) -> PushStats:
        """Upload the blobs the repository lacks, the record, then the tagged manifest.

        A tag with this very result gets back any blob the registry lost; a tag with a
        different valid result is kept (first writer wins, counted in ``conflicts``); a tag
        with an invalid forge entry is replaced (``repaired``). KeyConflict when a
        concurrent writer replaced this manifest between our PUT and the read-back.
        """
        if not self.writable:
            raise RemoteCacheError(f"remote cache {self.describe()} is read-only; nothing uploaded")
        check_key(key)
        where = self._where(key)
        data = record_bytes(key, result)
        record = cas.put_bytes(data).typed(RESULT_MEDIA_TYPE)
        log = Descriptor(result.log, cas.size(result.log), LOG_MEDIA_TYPE) if result.log else None
        signed = (self.signer.key_id, self.signer.sign(data)) if self.signer is not None else None
        manifest = manifest_bytes(key, result, record, log, signature=signed)
        plain = manifest_bytes(key, result, record, log, artifact_type=False, signature=signed)
        ours = {forge.oci.sha256_digest(manifest), forge.oci.sha256_digest(plain)}
        existing = self._tag_digest(key)
        replacing = None
        if existing is not None and existing not in ours:
            if self._fault(key) is None:
                return PushStats(present=1, conflicts=1)  # a valid result is never rewritten
            replacing = existing
        digests = [*result.all_blobs(), *([log.digest] if log else []), record.digest]
        sent = self._transfer(lambda d: self._push_blob(cas, d), list(dict.fromkeys(digests)))
        stats = PushStats(blobs=sum(1 for n in sent if n), bytes=sum(sent))
        if existing in ours:
            stats.present = 1
            return stats
        if not self._put_manifest(key, manifest, plain, replacing):  # 412: someone was first
            now = self._tag_digest(key)
            if now is None:
                raise RemoteCacheError(f"{where}: the registry refused the conditional manifest "
                                       "PUT (412) but has no manifest under the tag")
            stats.present, stats.conflicts = 1, int(now not in ours)
            return stats
        now = self._tag_digest(key)
        if now is not None and now not in ours:
            raise KeyConflict(
                f"{where}: another writer stored a different result under this key at the same "
                f"time (the tag names {now}, this build's manifest is {forge.oci.sha256_digest(manifest)}); "
                "the registry does not honour conditional PUTs, so the later write won and the "
                "action is not reproducible")
        stats.results, stats.repaired = 1, int(replacing is not None)
        return stats

    def _put_manifest(self, key: str, manifest: bytes, plain: bytes, replacing: str | None) -> bool:
        """PUT the manifest under ``key``, conditional on what we saw there; False on 412."""
        condition = {"If-Match": f'"{replacing}"'} if replacing else {"If-None-Match": "*"}
        for data in (manifest, plain):
            try:
                with self._request():
                    self.client.push_manifest(self.repo, key, data, forge.oci.media.OCI_MANIFEST, condition)
                return True
            except forge.oci.RegistryHTTPError as exc:
                if exc.status == 412:
                    return False
                if data is plain or not refuses_field(exc):
                    raise  # a 5xx, a timeout, auth, a missing blob: never a reason to drop a field
        raise AssertionError("unreachable")

    def _fault(self, key: str) -> str | None:
        """What is wrong with the forge entry under ``key``, or None when it is a valid
        result whose blobs the registry has (or is not a forge entry of this format)."""
        try:
            entry = self.entry(key)
        except RemoteEntryInvalid as exc:
            return str(exc)
        for digest, _ in entry.blobs if entry else ():
            with self._request():
                if not self.client.has_blob(self.repo, digest):
                    return f"{self._where(key)}: blob {digest} is missing from the registry"
        return None

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
    def _where(self, key: str) -> str:
        return f"{self.describe()}:{key}"

    @contextlib.contextmanager
    def _request(self) -> Iterator[None]:
        """Bound the requests in flight to the client's connection pool (-j workers each
        moving several blobs would otherwise make urllib3 warn about a full pool)."""
        with self._slots:
            yield

    def _transfer(self, move: Callable[[Any], int], items: Sequence[Any]) -> list[int]:
        """``move`` each item, TRANSFER_THREADS at once. The first failure keeps the rest
        from starting; a registry failure is raised before an entry's fault (it is the one
        that decides whether the backend stays in use)."""
        if len(items) <= 1:
            return [move(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(TRANSFER_THREADS, len(items)),
                                thread_name_prefix="forge-remote") as pool:
            futures = [pool.submit(move, item) for item in items]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
        errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
        if errors:
            raise next((e for e in errors if not isinstance(e, RemoteEntryInvalid)), errors[0])
        return [f.result() for f in futures]

    # RegistryClient.get_manifest reports "no such tag" as a RegistryError and re-reads the
    # body its own way; a cache miss must be told apart from a broken registry and a
    # malformed entry, so these two ask through the client's request plumbing (auth,
    # retries, timeouts) and read the status themselves.
    def _manifest(self, tag: str) -> tuple[bytes, str] | None:
        """(bytes, the digest the registry says they have) of the manifest, None on 404."""
        client = self.client
        what = f"manifest {self.describe()}:{tag}"
        with self._request():
            response = client._request(what, client._api(self.repo, "manifests", tag),
                                       headers={"Accept": forge.oci.media.OCI_MANIFEST})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise client._fail(what, response)
        return response.content, response.headers.get("Docker-Content-Digest", "")

    def _tag_digest(self, tag: str) -> str | None:
        """The digest of the manifest the tag names now, None when there is none."""
        client = self.client
        what = f"manifest {self.describe()}:{tag}"
        with self._request():
            response = client._request(what, client._api(self.repo, "manifests", tag), "HEAD",
                                       headers={"Accept": forge.oci.media.OCI_MANIFEST})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise client._fail(what, response)
        served = response.headers.get("Docker-Content-Digest")
        if served:
            return served
        got = self._manifest(tag)
        return forge.oci.sha256_digest(got[0]) if got else None


# -- the registry dialogue ---------------------------------------------------------


def refuses_field(exc: Any) -> bool:
    """Whether a failed manifest PUT is a registry refusing the manifest's content (400
    with MANIFEST_INVALID/UNSUPPORTED, or no error code at all): the only answer for which
    the push is repeated without ``artifactType``."""
    codes = set(getattr(exc, "codes", ()))
    return getattr(exc, "status", 0) == 400 and codes <= FIELD_REFUSAL_CODES


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
