"""Apply a forge image delta on a device: the Python standard library plus pyzstd, nothing else.

    python -m forge.delta_apply 10.0.0.5:5000/fleet/app@sha256:<new> --base-engine --load --tag app:2
    python delta_apply.py ./app-deltas --base-layout ./app-1 --output ./app-2

This file is the whole device side: copy it next to pyzstd (``pip install pyzstd``) and run
it as a script; it imports nothing from the rest of forge (a test runs it with only its own
directory on ``sys.path``). ``forge apply-delta`` runs the same code.

**The delta artifact** (made by the ``image_delta`` rule, pushed by ``forge delta``; README
"Edge deltas") is an OCI image manifest, ``artifactType``
``application/vnd.forge.image-delta.v1+json``, whose ``subject`` is the target image's
manifest. Its annotations name the old image (``dev.forge.delta.from``: manifest digest,
``dev.forge.delta.from-config``: config digest = an engine's image ID) and the target
(``dev.forge.delta.to``). Its layers are the target manifest and config (so a delta in an
OCI layout is self-contained), then one blob per target layer the old image lacks, each
annotated with the ``diff_id`` it reconstructs (``dev.forge.delta.diff-id``), the target
layer blob (``dev.forge.delta.to``), the old layers it reads, in order
(``dev.forge.delta.sources``: diff_ids, comma-separated) and the tar's size. Codecs, by
media type:

- ``application/vnd.forge.layer-delta.zstd-patch-from.v1``: one zstd frame of the new layer
  tar compressed with the concatenated source tars as a raw prefix (``zstd --patch-from``):
  ``cat src1.tar src2.tar > old; zstd -d --long=31 --patch-from=old delta -o new.tar``;
- ``application/vnd.forge.layer-delta.bsdiff4.v1``: a BSDIFF40 patch from the concatenated
  source tars to the new tar (``bspatch``); needs the ``bsdiff4`` module here.

**What it checks.** Trust starts at the target manifest digest the caller pins (a registry
reference ``host/repo@sha256:…``, or ``--target`` for a layout): the manifest is hashed
against it, the config against the manifest, and every layer this program makes, from a
delta or a plain pull, is hashed against the config's ``diff_id`` before anything is loaded
or written. The delta itself needs no trust: a blob that does not hash to its descriptor,
a reconstruction of other bytes, or an artifact for another target is refused. A layer that
cannot be made from the delta (no base image, a base layer that does not verify, a codec
this device lacks, a delta that fails) is pulled plainly from the registry with a message;
with no registry to pull from (a layout) or ``--no-fallback``, the program stops and the
engine and the output directory are left as they were.

**Resumable transfers.** Every blob is downloaded into ``<work-dir>/partial/<hex>``; a
connection that breaks is resumed with ``Range: bytes=N-`` (a registry that ignores Range
is read from the start again, the bytes already here skipped), with backoff, and a program
killed mid-blob continues from the partial file when run again. The digest is checked over
the whole blob before it is used; a mismatch deletes the partial file.

Exit codes: 0 done, 1 refused or failed (nothing changed), 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

# -- the format --------------------------------------------------------------------------

FORMAT_VERSION = 1
ARTIFACT_TYPE = "application/vnd.forge.image-delta.v1+json"
EMPTY_CONFIG_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
ZSTD_PATCH = "application/vnd.forge.layer-delta.zstd-patch-from.v1"
BSDIFF4 = "application/vnd.forge.layer-delta.bsdiff4.v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
TITLE = "org.opencontainers.image.title"
TARGET_MANIFEST_TITLE = "target-manifest.json"
TARGET_CONFIG_TITLE = "target-config.json"

# manifest annotations
A_FROM = "dev.forge.delta.from"                # the old image's manifest digest
A_FROM_CONFIG = "dev.forge.delta.from-config"  # its config digest (an engine's image ID)
A_TO = "dev.forge.delta.to"                    # the target manifest digest (= subject)
A_FORMAT = "dev.forge.delta.format"
# layer annotations
A_DIFF_ID = "dev.forge.delta.diff-id"          # the diff_id the delta reconstructs
A_LAYER_TO = "dev.forge.delta.to"              # the target layer blob it stands for
A_SOURCES = "dev.forge.delta.sources"          # old layers' diff_ids, in prefix order
A_TAR_SIZE = "dev.forge.delta.size"            # bytes of the reconstructed tar

WINDOW_LOG_MAX = 31  # the largest zstd window a delta may use (2 GiB: prefix + new tar)
CHUNK = 1 << 20
READ_CHUNK = 1 << 16
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
STALLED_TRIES = 4  # consecutive attempts that bring no byte before a download fails
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))


class DeltaError(Exception):
    """Applying failed; nothing was loaded or written."""

    exit_code = 1


class Refused(DeltaError):
    """Content that does not verify (a digest, a diff_id, an artifact for another image)."""


class UsageError(DeltaError):
    exit_code = 2


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def hex_of(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    if alg != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise Refused(f"{digest!r} is not a sha256:<64 hex> digest")
    return hexpart


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# -- parsed documents --------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRef:
    media_type: str
    digest: str
    size: int
    diff_id: str

    @property
    def compression(self) -> str:
        if self.media_type.endswith(("+gzip", ".gzip")):
            return "gzip"
        if self.media_type.endswith(("+zstd", ".zstd")):
            return "zstd"
        return "none"


@dataclass(frozen=True)
class TargetImage:
    """The image to make: its manifest and config bytes, verified against each other."""

    manifest_bytes: bytes
    config_bytes: bytes
    layers: tuple[LayerRef, ...]

    @property
    def digest(self) -> str:
        return sha256_bytes(self.manifest_bytes)

    @property
    def config_digest(self) -> str:
        return sha256_bytes(self.config_bytes)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return tuple(layer.diff_id for layer in self.layers)


def _json_object(data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data)
    except ValueError:
        raise Refused(f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        raise Refused(f"{what} is not a JSON object")
    return obj


def _descriptor(obj: Any, what: str) -> tuple[str, str, int]:
    if not isinstance(obj, dict):
        raise Refused(f"{what} is not a descriptor")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    hex_of(digest if isinstance(digest, str) else "")
    if not isinstance(size, int) or size < 0 or not isinstance(media_type, str):
        raise Refused(f"{what} ({digest}) has no valid size or media type")
    return media_type, digest, size


def config_digest_of(manifest_bytes: bytes) -> tuple[str, int]:
    """(digest, size) of the config an image manifest names."""
    doc = _json_object(manifest_bytes, "image manifest")
    _, digest, size = _descriptor(doc.get("config"), "the manifest's config")
    return digest, size


def parse_target(manifest_bytes: bytes, config_bytes: bytes) -> TargetImage:
    """The target image, with each layer's diff_id from the config (checked against the
    manifest's config descriptor)."""
    doc = _json_object(manifest_bytes, "target manifest")
    media_type = doc.get("mediaType") or OCI_MANIFEST
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise Refused(f"the target is a {media_type}, not an image manifest (name one platform's image)")
    _, config_digest, config_size = _descriptor(doc.get("config"), "the target's config")
    if (sha256_bytes(config_bytes), len(config_bytes)) != (config_digest, config_size):
        raise Refused(f"the target config does not hash to {config_digest}")
    config = _json_object(config_bytes, "target config")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    raw = doc.get("layers") or []
    if not isinstance(raw, list) or len(raw) != len(diff_ids):
        raise Refused("the target manifest and config disagree on the number of layers")
    layers = []
    for i, (desc, diff_id) in enumerate(zip(raw, diff_ids)):  # noqa: B905 - Python 3.9 devices
        mt, digest, size = _descriptor(desc, f"target layer {i}")
        hex_of(diff_id if isinstance(diff_id, str) else "")
        layers.append(LayerRef(mt, digest, size, diff_id))
    return TargetImage(manifest_bytes, config_bytes, tuple(layers))


@dataclass(frozen=True)
class LayerDelta:
    """One delta blob of an artifact: what it reconstructs and from which old layers."""

    media_type: str
    digest: str
    size: int
    diff_id: str
    target_digest: str
    sources: tuple[str, ...]
    tar_size: int


@dataclass(frozen=True)
class DeltaManifest:
    """A parsed delta artifact manifest."""

    manifest_bytes: bytes
    target: str
    from_manifest: str
    from_config: str
    target_manifest: tuple[str, int]
    target_config: tuple[str, int]
    layers: tuple[LayerDelta, ...]
    empty_config: tuple[str, int] = field(default=(sha256_bytes(EMPTY_JSON), len(EMPTY_JSON)))

    @property
    def digest(self) -> str:
        return sha256_bytes(self.manifest_bytes)

    def for_diff_id(self, diff_id: str) -> LayerDelta | None:
        found = [d for d in self.layers if d.diff_id == diff_id]
        return min(found, key=lambda d: d.size) if found else None

    def blobs(self) -> list[tuple[str, str, int]]:
        """(media type, digest, size) of every blob the artifact names, config first."""
        return [(EMPTY_CONFIG_TYPE, *self.empty_config), (OCI_MANIFEST, *self.target_manifest),
                (OCI_CONFIG, *self.target_config),
                *((d.media_type, d.digest, d.size) for d in self.layers)]


def parse_delta_manifest(data: bytes) -> DeltaManifest:
    """Parse and check the shape of a delta artifact manifest; Refused if it is not one."""
    doc = _json_object(data, "delta manifest")
    config_type, config_digest, config_size = _descriptor(doc.get("config"), "delta config")
    if doc.get("artifactType", ARTIFACT_TYPE) != ARTIFACT_TYPE or config_type not in (EMPTY_CONFIG_TYPE, ARTIFACT_TYPE):
        raise Refused(f"manifest {sha256_bytes(data)} is not a forge image delta "
                      f"(artifactType {doc.get('artifactType')!r})")
    notes = doc.get("annotations") or {}
    if str(notes.get(A_FORMAT, FORMAT_VERSION)) != str(FORMAT_VERSION):
        raise Refused(f"delta {sha256_bytes(data)} is format {notes.get(A_FORMAT)}; this applier reads {FORMAT_VERSION}")
    subject = doc.get("subject")
    _, target, _ = _descriptor(subject, "delta subject")
    if notes.get(A_TO, target) != target:
        raise Refused(f"delta {sha256_bytes(data)}: subject {target} but {A_TO} {notes.get(A_TO)}")
    from_manifest, from_config = notes.get(A_FROM, ""), notes.get(A_FROM_CONFIG, "")
    hex_of(from_manifest)
    hex_of(from_config)
    target_manifest = target_config = None
    layers = []
    for i, desc in enumerate(doc.get("layers") or []):
        mt, digest, size = _descriptor(desc, f"delta layer {i}")
        ann = desc.get("annotations") or {}
        if mt in (OCI_MANIFEST, DOCKER_MANIFEST) and ann.get(TITLE) == TARGET_MANIFEST_TITLE:
            target_manifest = (digest, size)
            continue
        if mt == OCI_CONFIG and ann.get(TITLE) == TARGET_CONFIG_TITLE:
            target_config = (digest, size)
            continue
        try:
            sources = tuple(s for s in (ann.get(A_SOURCES) or "").split(",") if s)
            for s in sources:
                hex_of(s)
            diff_id = ann[A_DIFF_ID]
            hex_of(diff_id)
            tar_size = int(ann.get(A_TAR_SIZE, "-1"))
            layers.append(LayerDelta(mt, digest, size, diff_id, ann.get(A_LAYER_TO, ""), sources, tar_size))
        except (KeyError, ValueError):
            raise Refused(f"delta layer {i} ({digest}) lacks {A_DIFF_ID} or has a bad {A_TAR_SIZE}") from None
    if target_manifest is None or target_manifest[0] != target:
        raise Refused(f"delta {sha256_bytes(data)} does not carry its target manifest {target}")
    if target_config is None:
        raise Refused(f"delta {sha256_bytes(data)} does not carry its target config")
    return DeltaManifest(data, target, from_manifest, from_config, target_manifest, target_config,
                         tuple(layers), (config_digest, config_size))


# -- decoding ----------------------------------------------------------------------------

Decoder = Callable[[bytes, Path, BinaryIO], None]
# (layer tar, compression of the target's blob, a directory for the output) -> the
# compressed file, or None when it cannot make that compression
Recompressor = Callable[[Path, str, Path], "Path | None"]


def decode_zstd_patch(prefix: bytes, delta: Path, out: BinaryIO) -> None:
    """Decompress a zstd patch-from delta with ``prefix`` (the source tars) as raw prefix."""
    import pyzstd  # the one dependency beyond the standard library

    option = {pyzstd.DParameter.windowLogMax: WINDOW_LOG_MAX}
    zdict = pyzstd.ZstdDict(prefix, is_raw=True).as_prefix if prefix else None
    decompressor = pyzstd.ZstdDecompressor(zstd_dict=zdict, option=option)
    with open(delta, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            if decompressor.eof:
                raise Refused("the delta has bytes after its zstd frame")
            out.write(decompressor.decompress(chunk, CHUNK * 4))
            while not decompressor.needs_input and not decompressor.eof:
                out.write(decompressor.decompress(b"", CHUNK * 4))
    if not decompressor.eof:
        raise Refused("the delta's zstd frame is truncated")
    if decompressor.unused_data:
        raise Refused("the delta has bytes after its zstd frame")


def decode_bsdiff4(prefix: bytes, delta: Path, out: BinaryIO) -> None:
    """Apply a BSDIFF40 patch to ``prefix`` (needs the bsdiff4 module)."""
    import bsdiff4

    out.write(bsdiff4.patch(prefix, delta.read_bytes()))


DECODERS: dict[str, tuple[Decoder, str]] = {
    ZSTD_PATCH: (decode_zstd_patch, "pyzstd"),
    BSDIFF4: (decode_bsdiff4, "bsdiff4"),
}


def decoder_for(media_type: str, extra: dict[str, Decoder] | None = None) -> tuple[Decoder | None, str]:
    """(decoder, '') or (None, why not): a codec this applier lacks, or its missing module."""
    if extra and media_type in extra:
        return extra[media_type], ""
    entry = DECODERS.get(media_type)
    if entry is None:
        return None, f"codec {media_type} is unknown here"
    decoder, module = entry
    try:
        __import__(module)
    except ImportError:
        return None, f"codec {media_type} needs the Python module {module}, which is not installed"
    return decoder, ""


def decompressed(fh: BinaryIO, compression: str) -> BinaryIO:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import pyzstd

        return pyzstd.ZstdFile(fh, "rb")  # type: ignore[return-value]
    return fh


class HashingWriter:
    """A file being written, hashed (sha256) and counted as it goes."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def write_tar_of(blob: Path, compression: str, dest: Path, diff_id: str, what: str) -> Path:
    """Decompress a layer blob into ``dest``, checking the tar against ``diff_id``."""
    with open(blob, "rb") as src, open(dest, "wb") as fh:
        out = HashingWriter(fh)
        try:
            shutil.copyfileobj(decompressed(src, compression), out, CHUNK)  # type: ignore[arg-type]
        except (OSError, EOFError, ValueError) as e:
            raise Refused(f"{what} does not decompress as {compression}: {e}") from None
    if out.digest != diff_id:
        dest.unlink()
        raise Refused(f"{what} decompresses to {out.digest}, not diff_id {diff_id}")
    return dest


# -- the registry (stdlib HTTP) ----------------------------------------------------------


def _is_loopback(host: str) -> bool:
    name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    return name in ("localhost", "::1") or name.startswith("127.")


def parse_ref(ref: str) -> tuple[str, str, str]:
    """``host/repo@sha256:…`` -> (host, repo, digest); a release must be pinned."""
    name, sep, digest = ref.partition("@")
    host, _, repo = name.partition("/")
    if not sep or not repo or not ("." in host or ":" in host or host == "localhost"):
        raise UsageError(f"{ref!r}: name the target as host/repository@sha256:<digest>")
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]  # a tag beside the digest says nothing more
    hex_of(digest)
    return host, repo, digest


class Registry:
    """One registry host over plain ``urllib``: manifests, blobs (resumable), referrers.

    Logins: none, Basic, or Bearer tokens, with credentials from the Docker config
    (``auths.<host>.auth`` or ``username``/``password``; credential helpers are not run).
    """

    def __init__(self, host: str, *, insecure: bool | None = None, log: Callable[[str], None] = print):
        self.host = host
        self.scheme = "http" if (_is_loopback(host) if insecure is None else insecure) else "https"
        self._auth: str | None = None
        self._log = log
        self.received = 0  # body bytes read from the network, re-sent ones included
        # redirects (to blob stores) are followed; the login is an unredirected header
        self._opener = urllib.request.build_opener()

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    def _credentials(self) -> tuple[str, str] | None:
        base = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
        try:
            config = json.loads(Path(base, "config.json").read_bytes())
        except (OSError, ValueError):
            return None
        for key, entry in (config.get("auths") or {}).items():
            if key.split("://", 1)[-1].split("/", 1)[0] != self.host or not isinstance(entry, dict):
                continue
            if entry.get("username") and entry.get("password"):
                return entry["username"], entry["password"]
            try:
                user, sep, password = base64.b64decode(entry.get("auth") or "").decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            if sep:
                return user, password
        return None

    def _login(self, challenge: str) -> None:
        scheme, _, params = challenge.partition(" ")
        creds = self._credentials()
        if scheme.lower() == "basic":
            if creds is None:
                raise DeltaError(f"registry {self.host} wants a login; none in the Docker config")
            self._auth = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            return
        if scheme.lower() != "bearer":
            raise DeltaError(f"registry {self.host} asks for {scheme} auth, which this applier does not speak")
        fields = {}
        for part in params.split(","):
            k, _, v = part.strip().partition("=")
            fields[k] = v.strip('"')
        query = urllib.parse.urlencode({k: v for k, v in fields.items() if k in ("service", "scope")})
        req = urllib.request.Request(f"{fields.get('realm', '')}?{query}")
        if creds:
            req.add_header("Authorization", "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=CONNECT_TIMEOUT) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError) as e:
            raise DeltaError(f"registry {self.host}: getting a token failed: {e}") from None
        self._auth = "Bearer " + (body.get("token") or body.get("access_token") or "")

    def open(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> Any:
        """The response (status 2xx), following one login; HTTPError for other answers."""
        for attempt in range(2):
            req = urllib.request.Request(self.url(path), method=method, headers=dict(headers or {}))
            if self._auth:
                req.add_unredirected_header("Authorization", self._auth)
            try:
                return self._opener.open(req, timeout=READ_TIMEOUT)
            except urllib.error.HTTPError as e:
                challenge = e.headers.get("Www-Authenticate", "")
                if e.code == 401 and challenge and attempt == 0:
                    e.close()
                    self._login(challenge)
                    continue
                raise
        raise AssertionError("unreachable")

    def manifest(self, repo: str, ref: str) -> bytes:
        """A manifest by digest (verified) or tag."""
        what = f"manifest {self.host}/{repo}@{ref}"
        try:
            with self.open(f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}) as resp:
                data = resp.read()
        except urllib.error.HTTPError as e:
            raise DeltaError(f"{what}: the registry answered HTTP {e.code}") from None
        except OSError as e:
            raise DeltaError(f"{what}: {e}") from None
        self.received += len(data)
        if ref.startswith("sha256:") and sha256_bytes(data) != ref:
            raise Refused(f"{what}: the registry sent a manifest hashing to {sha256_bytes(data)}")
        return data

    def referrers(self, repo: str, digest: str) -> list[dict]:
        """Descriptors of the artifacts whose subject is ``digest``: the referrers API, or
        (a registry without it, like distribution 2.8) the ``sha256-<hex>`` tag index."""
        for path in (f"/v2/{repo}/referrers/{digest}", f"/v2/{repo}/manifests/sha256-{hex_of(digest)}"):
            try:
                with self.open(path, headers={"Accept": OCI_INDEX}) as resp:
                    data = resp.read()
            except urllib.error.HTTPError as e:
                if e.code in (404, 400, 405):
                    continue
                raise DeltaError(f"referrers of {self.host}/{repo}@{digest}: HTTP {e.code}") from None
            except OSError as e:
                raise DeltaError(f"referrers of {self.host}/{repo}@{digest}: {e}") from None
            self.received += len(data)
            doc = json.loads(data)
            entries = doc.get("manifests") or [] if isinstance(doc, dict) else []
            if entries:
                return [e for e in entries if isinstance(e, dict)]
        return []

    def fetch_blob(self, repo: str, digest: str, size: int, dest: Path, partial_dir: Path) -> Path:
        """Download a blob into ``dest``, verified, resuming broken transfers (and a partial
        file an earlier run left in ``partial_dir``)."""
        if dest.exists() and dest.stat().st_size == size:
            return dest
        partial_dir.mkdir(parents=True, exist_ok=True)
        part = partial_dir / hex_of(digest)
        what = f"blob {digest} from {self.host}/{repo}"
        h = hashlib.sha256()
        have = 0
        if part.exists():
            if part.stat().st_size > size:
                part.unlink()
            else:
                with open(part, "rb") as fh:
                    for chunk in iter(lambda: fh.read(CHUNK), b""):
                        h.update(chunk)
                        have += len(chunk)
                if have:
                    self._log(f"  resuming {what} at byte {have} (an earlier run stopped there)")
        stalled = breaks = 0
        with open(part, "ab") as out:
            while have < size:
                before = have
                try:
                    headers = {"Range": f"bytes={have}-"} if have else {}
                    with self.open(f"/v2/{repo}/blobs/{digest}", headers=headers) as resp:
                        skip = 0
                        if resp.status == 206:
                            start = _range_start(resp.headers.get("Content-Range", ""))
                            if start != have:
                                raise Refused(f"{what}: asked for bytes {have}- and got "
                                              f"{resp.headers.get('Content-Range')!r}")
                        else:
                            skip = have  # the registry ignored Range: from the start again
                        while True:
                            chunk = resp.read(READ_CHUNK)
                            if not chunk:
                                break
                            self.received += len(chunk)
                            if skip:
                                cut = min(skip, len(chunk))
                                chunk, skip = chunk[cut:], skip - cut
                                if not chunk:
                                    continue
                            if have + len(chunk) > size:
                                part.unlink()
                                raise Refused(f"{what}: the registry sent more than {size} bytes")
                            out.write(chunk)
                            h.update(chunk)
                            have += len(chunk)
                except urllib.error.HTTPError as e:
                    if e.code in (401, 403, 404):
                        raise DeltaError(f"{what}: the registry answered HTTP {e.code}") from None
                    err: str = f"HTTP {e.code}"
                except (OSError, http.client.HTTPException) as e:
                    err = str(e) or type(e).__name__
                else:
                    err = "the connection closed early"
                out.flush()
                if have >= size:
                    break
                breaks += 1
                stalled = 0 if have > before else stalled + 1
                if stalled >= STALLED_TRIES:
                    raise DeltaError(f"{what}: stopped at byte {have} of {size} ({err}); run again "
                                     "to continue from there")
                time.sleep(min(0.05 * 2 ** stalled, 5.0) * (0.5 + random.random()))
        if "sha256:" + h.hexdigest() != digest:
            part.unlink()
            raise Refused(f"{what}: the bytes received hash to sha256:{h.hexdigest()}; discarded")
        if breaks:
            self._log(f"  {what}: {breaks} broken connection(s) resumed")
        os.replace(part, dest)
        return dest


def _range_start(content_range: str) -> int | None:
    parts = content_range.strip().split(" ", 1)
    if len(parts) != 2 or parts[0] != "bytes":
        return None
    first = parts[1].split("-", 1)[0]
    return int(first) if first.isdigit() else None


# -- the engine (Docker API over its unix socket, stdlib) --------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Engine:
    """A Docker engine: inspect, save and load images (``DOCKER_HOST`` or the default socket)."""

    def __init__(self, host: str | None = None):
        self.host = host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def _connection(self, timeout: float = 600.0) -> http.client.HTTPConnection:
        if self.host.startswith("unix://"):
            return _UnixConnection(self.host[len("unix://"):], timeout)
        if self.host.startswith("tcp://"):
            hostport = self.host[len("tcp://"):].rstrip("/")
            return http.client.HTTPConnection(hostport, timeout=timeout)
        raise UsageError(f"DOCKER_HOST {self.host!r}: only unix:// and tcp:// engines are supported")

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            return conn, conn.getresponse()
        except OSError as e:
            conn.close()
            raise DeltaError(f"the Docker engine at {self.host} does not answer: {e}") from None

    def inspect(self, ref: str) -> dict | None:
        conn, resp = self.request("GET", f"/images/{urllib.parse.quote(ref, safe='')}/json")
        try:
            data = resp.read()
        finally:
            conn.close()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise DeltaError(f"engine: inspecting {ref}: HTTP {resp.status}: {data[:200]!r}")
        return json.loads(data)

    def save(self, image_id: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn, resp = self.request("GET", f"/images/{urllib.parse.quote(image_id, safe='')}/get")
        if resp.status != 200:
            body = resp.read()[:200]
            conn.close()
            raise DeltaError(f"engine: saving {image_id}: HTTP {resp.status}: {body!r}")
        return conn, resp

    def load(self, archive: Path) -> str:
        with open(archive, "rb") as fh:
            conn, resp = self.request("POST", "/images/load?quiet=1", body=fh, headers={
                "Content-Type": "application/x-tar", "Content-Length": str(archive.stat().st_size)})
            try:
                text = resp.read().decode(errors="replace")
            finally:
                conn.close()
        if resp.status != 200:
            raise DeltaError(f"engine: docker load failed: HTTP {resp.status}: {text[:300]}")
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("error") or event.get("errorDetail"):
                raise DeltaError(f"engine: docker load failed: {event.get('error') or event['errorDetail']}")
        return text


# -- bases: where the old image's layers come from ---------------------------------------


class Base:
    """The old image on this device: its config digest, diff_ids, and layer tars on demand."""

    description = "no base"
    config_digest = ""
    manifest_digest = ""
    diff_ids: tuple[str, ...] = ()

    def prepare(self, needed: set[str], work: Path) -> dict[str, Path]:
        """Tars of the layers in ``needed`` (diff_ids), each verified; a layer that cannot
        be had or does not verify is left out (a message says why)."""
        return {}

    def layer_blob(self, layer: LayerRef) -> Path | None:
        """The layer's compressed blob when the base has that very blob (layouts)."""
        return None


class EngineBase(Base):
    """An image in the local Docker engine; its layers come out through ``docker save``."""

    def __init__(self, engine: Engine, info: dict, log: Callable[[str], None]):
        self.engine = engine
        self.config_digest = info["Id"]
        self.diff_ids = tuple((info.get("RootFS") or {}).get("Layers") or ())
        self.description = f"engine image {info['Id'][:19]}"
        self._log = log

    def prepare(self, needed: set[str], work: Path) -> dict[str, Path]:
        want = needed & set(self.diff_ids)
        if not want:
            return {}
        out: dict[str, Path] = {}
        conn, resp = self.engine.save(self.config_digest)
        try:
            with tarfile.open(fileobj=resp, mode="r|") as tf:
                for member in tf:
                    if not member.isfile() or not (member.name.endswith("/layer.tar")
                                                   or member.name.startswith("blobs/sha256/")):
                        continue
                    src = tf.extractfile(member)
                    if src is None:
                        continue
                    tmp = work / f"save-{len(out)}-{random.getrandbits(32):08x}.tar"
                    with open(tmp, "wb") as fh:
                        w = HashingWriter(fh)
                        shutil.copyfileobj(src, w, CHUNK)  # type: ignore[arg-type]
                    if w.digest in want and w.digest not in out:
                        out[w.digest] = tmp.rename(work / f"base-{hex_of(w.digest)}.tar")
                    else:
                        tmp.unlink()
        except (OSError, tarfile.TarError) as e:
            raise DeltaError(f"engine: reading the base image {self.config_digest} failed: {e}") from None
        finally:
            conn.close()
        for diff_id in sorted(want - set(out)):
            self._log(f"  base layer {diff_id[:19]} did not come out of the engine as that diff_id")
        return out


class LayoutBase(Base):
    """An image in an OCI layout directory (the one named by the delta, else the only one)."""

    def __init__(self, root: Path, manifest_digest: str, log: Callable[[str], None]):
        self.root = root
        self._log = log
        data = self._blob_bytes(manifest_digest)
        config_digest, _ = config_digest_of(data)
        config = _json_object(self._blob_bytes(config_digest), f"{root}: config {config_digest}")
        doc = _json_object(data, f"{root}: manifest {manifest_digest}")
        self.manifest_digest = manifest_digest
        self.config_digest = config_digest
        self.diff_ids = tuple((config.get("rootfs") or {}).get("diff_ids") or ())
        self.layers = tuple(LayerRef(*_descriptor(d, "base layer"), diff_id)
                            for d, diff_id in zip(doc.get("layers") or [], self.diff_ids))  # noqa: B905 - Python 3.9 devices
        self.description = f"layout {root} ({manifest_digest[:19]})"

    @staticmethod
    def manifests(root: Path) -> list[str]:
        try:
            index = json.loads((root / "index.json").read_bytes())
        except (OSError, ValueError):
            raise UsageError(f"{root} is not an OCI layout (no readable index.json)") from None
        return [e.get("digest", "") for e in index.get("manifests") or []
                if e.get("mediaType", OCI_MANIFEST) in (OCI_MANIFEST, DOCKER_MANIFEST)]

    def _path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / hex_of(digest)

    def has(self, digest: str) -> bool:
        return self._path(digest).is_file()

    def _blob_bytes(self, digest: str) -> bytes:
        try:
            data = self._path(digest).read_bytes()
        except OSError:
            raise DeltaError(f"{self.root}: blob {digest} is missing") from None
        if sha256_bytes(data) != digest:
            raise Refused(f"{self.root}: blob {digest} is corrupt")
        return data

    def layer_blob(self, layer: LayerRef) -> Path | None:
        for mine in self.layers:
            if mine.digest == layer.digest and mine.diff_id == layer.diff_id and self.has(mine.digest):
                return self._path(mine.digest)
        return None

    def prepare(self, needed: set[str], work: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for layer in self.layers:
            if layer.diff_id not in needed or layer.diff_id in out:
                continue
            try:
                path = self._path(layer.digest)
                if sha256_file(path) != layer.digest:
                    raise Refused(f"blob {layer.digest} is corrupt")
                out[layer.diff_id] = write_tar_of(path, layer.compression,
                                                  work / f"base-{hex_of(layer.diff_id)}.tar",
                                                  layer.diff_id, f"base layer {layer.digest[:19]}")
            except (OSError, DeltaError) as e:
                self._log(f"  base layer {layer.diff_id[:19]} unusable: {e}")
        return out


# -- where the delta and the target come from --------------------------------------------


class DeltaSource:
    """A registry repository or an OCI layout holding the target manifest and deltas."""

    can_pull = False
    description = ""

    def target_digest(self, pinned: str | None) -> str:
        raise NotImplementedError

    def manifest(self, digest: str) -> bytes:
        raise NotImplementedError

    def candidates(self, target: str) -> list[dict]:
        """Descriptors (with annotations) of delta artifacts for ``target``."""
        raise NotImplementedError

    def blob(self, media_type: str, digest: str, size: int, dest: Path) -> Path:
        raise NotImplementedError


class RegistrySource(DeltaSource):
    can_pull = True

    def __init__(self, ref: str, work: Path, insecure: bool | None, log: Callable[[str], None]):
        self.host, self.repo, self.digest = parse_ref(ref)
        self.registry = Registry(self.host, insecure=insecure, log=log)
        self.partial = work / "partial"
        self.description = f"{self.host}/{self.repo}"

    def target_digest(self, pinned: str | None) -> str:
        if pinned and pinned != self.digest:
            raise UsageError(f"--target {pinned} but the reference names {self.digest}")
        return self.digest

    def manifest(self, digest: str) -> bytes:
        return self.registry.manifest(self.repo, digest)

    def candidates(self, target: str) -> list[dict]:
        return [e for e in self.registry.referrers(self.repo, target)
                if e.get("artifactType") == ARTIFACT_TYPE]

    def blob(self, media_type: str, digest: str, size: int, dest: Path) -> Path:
        return self.registry.fetch_blob(self.repo, digest, size, dest, self.partial)


class LayoutSource(DeltaSource):
    """An OCI layout of delta artifacts (``forge delta -o DIR``, or forge-out/ of an
    image_delta target). It has no layers to pull: every layer must come from the delta."""

    def __init__(self, root: Path):
        self.root = root
        self.description = str(root)
        try:
            index = json.loads((root / "index.json").read_bytes())
        except (OSError, ValueError):
            raise UsageError(f"{root} is neither host/repo@sha256:… nor an OCI layout") from None
        self.entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]

    def _deltas(self) -> list[dict]:
        return [e for e in self.entries if e.get("artifactType") == ARTIFACT_TYPE]

    def target_digest(self, pinned: str | None) -> str:
        targets = sorted({(e.get("annotations") or {}).get(A_TO, "") for e in self._deltas()})
        if pinned:
            if pinned not in targets:
                raise UsageError(f"{self.root} holds no delta to {pinned}; it has deltas to: "
                                 f"{', '.join(targets) or 'none'}")
            return pinned
        if len(targets) != 1:
            raise UsageError(f"{self.root} holds deltas to {len(targets)} images; pick one with "
                             f"--target ({', '.join(targets) or 'none'})")
        return targets[0]

    def _path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / hex_of(digest)

    def manifest(self, digest: str) -> bytes:
        try:
            data = self._path(digest).read_bytes()
        except OSError:
            raise DeltaError(f"{self.root}: manifest {digest} is missing") from None
        if sha256_bytes(data) != digest:
            raise Refused(f"{self.root}: manifest {digest} is corrupt (hashes to {sha256_bytes(data)})")
        return data

    def candidates(self, target: str) -> list[dict]:
        return [e for e in self._deltas() if (e.get("annotations") or {}).get(A_TO) == target]

    def blob(self, media_type: str, digest: str, size: int, dest: Path) -> Path:
        path = self._path(digest)
        if not path.is_file():
            raise DeltaError(f"{self.root}: blob {digest} is missing")
        shutil.copyfile(path, dest)
        if dest.stat().st_size != size or sha256_file(dest) != digest:
            dest.unlink()
            raise Refused(f"{self.root}: blob {digest} does not hash to its name (tampered or corrupt)")
        return dest


# -- applying ----------------------------------------------------------------------------


@dataclass
class LayerPlan:
    index: int
    layer: LayerRef
    method: str  # "base", "delta", "pull"
    delta: LayerDelta | None = None
    why: str = ""
    tar: Path | None = None    # the uncompressed tar, when made here
    blob: Path | None = None   # the compressed blob, when pulled or kept from a layout


@dataclass
class Report:
    target: str
    config_digest: str
    delta: str | None
    layers: list[LayerPlan]
    downloaded: int = 0
    full_size: int = 0
    output: str = ""

    def lines(self) -> list[str]:
        out = []
        for p in self.layers:
            extra = f" ({_human(p.delta.size)} delta)" if p.method == "delta" and p.delta else ""
            extra = f" ({_human(p.layer.size)})" if p.method == "pull" else extra
            why = f": {p.why}" if p.why else ""
            out.append(f"  layer {p.index} {p.layer.diff_id[:19]}: {p.method}{extra}{why}")
        return out


def _base_matches(entry: dict, base: Base) -> bool:
    notes = entry.get("annotations") or {}
    return bool(base.config_digest) and (notes.get(A_FROM_CONFIG) == base.config_digest
                                         or (bool(base.manifest_digest) and notes.get(A_FROM) == base.manifest_digest))


def apply_delta(source: str, *, base_engine: str | bool | None = None, base_layout: str | None = None,
                load: bool = False, tag: str | None = None, output: str | None = None,
                target: str | None = None, fallback: bool = True, insecure: bool | None = None,
                work_dir: str | None = None, docker_host: str | None = None,
                decoders: dict[str, Decoder] | None = None,
                recompress: Recompressor | None = None,
                log: Callable[[str], None] = print) -> Report:
    """Make the target image from a delta and an old image, verified, and load it into the
    engine (``load``) or write it as an OCI layout (``output``). See the module docstring."""
    if not load and not output:
        raise UsageError("say where the new image goes: --load (the engine) or --output DIR")
    if base_engine and base_layout:
        raise UsageError("one base: --base-engine or --base-layout")
    work_root = Path(work_dir or os.environ.get("FORGE_DELTA_WORK")
                     or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "forge-delta")
    work_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=work_root))
    try:
        return _apply(source, base_engine, base_layout, load, tag, output, target, fallback,
                      insecure, work_root, work, docker_host, decoders or {}, log, recompress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _apply(source, base_engine, base_layout, load, tag, output, pinned, fallback, insecure,
           work_root: Path, work: Path, docker_host, decoders, log, recompress=None) -> Report:
    is_ref = "@sha256:" in source and not Path(source).exists()
    src: DeltaSource = RegistrySource(source, work_root, insecure, log) if is_ref else LayoutSource(Path(source))
    target_digest = src.target_digest(pinned)
    candidates = src.candidates(target_digest)
    engine = Engine(docker_host) if (base_engine or load) else None

    # the target: manifest (pinned) and config (named by it)
    manifest_bytes = src.manifest(target_digest)
    config_digest, config_size = config_digest_of(manifest_bytes)
    config_path = src.blob(OCI_CONFIG, config_digest, config_size, work / "config.json")
    target = parse_target(manifest_bytes, config_path.read_bytes())
    log(f"target {target_digest} (image ID {target.config_digest[:19]}, {len(target.layers)} layers) "
        f"from {src.description}")

    # the base
    base: Base = Base()
    if base_layout:
        root = Path(base_layout)
        names = LayoutBase.manifests(root)
        wanted = [(e.get("annotations") or {}).get(A_FROM) for e in candidates]
        pick = next((d for d in wanted if d in names), names[0] if len(names) == 1 else None)
        if pick is None:
            log(f"base: {root} holds none of the images the deltas start from")
        else:
            try:
                base = LayoutBase(root, pick, log)
            except DeltaError as e:
                log(f"base: {root} is unusable: {e}")
    elif base_engine:
        assert engine is not None
        refs = [base_engine] if isinstance(base_engine, str) else [
            (e.get("annotations") or {}).get(A_FROM_CONFIG, "") for e in candidates]
        for ref in refs:
            info = engine.inspect(ref) if ref else None
            if info is not None:
                base = EngineBase(engine, info, log)
                break
        else:
            what = base_engine if isinstance(base_engine, str) else "any image a delta starts from"
            log(f"base: the engine does not have {what}")
    log(f"base: {base.description}")

    # the delta that starts from the base (the smallest, when there are several)
    delta: DeltaManifest | None = None
    usable = sorted((e for e in candidates if _base_matches(e, base)), key=lambda e: e.get("size", 0))
    for entry in usable:
        try:
            d = parse_delta_manifest(src.manifest(entry.get("digest", "")))
        except DeltaError as e:
            log(f"delta {entry.get('digest')}: unusable: {e}")
            continue
        if d.target != target_digest:
            log(f"delta {d.digest}: refused: it is for {d.target}, not {target_digest}")
            continue
        delta = d
        break
    if delta is None:
        log(f"no delta from {base.description} to {target_digest[:19]}"
            + (f" ({len(candidates)} delta(s) start from other images)" if candidates else ""))

    # the plan: each target layer from the base, a delta, or a plain pull
    plans: list[LayerPlan] = []
    for i, layer in enumerate(target.layers):
        if layer.diff_id in base.diff_ids:
            plans.append(LayerPlan(i, layer, "base"))
            continue
        why = ""
        entry = delta.for_diff_id(layer.diff_id) if delta else None
        if entry is not None:
            decoder, why = decoder_for(entry.media_type, decoders)
            missing = [s for s in entry.sources if s not in base.diff_ids]
            if decoder is not None and not missing:
                plans.append(LayerPlan(i, layer, "delta", entry))
                continue
            why = why or f"the base lacks source layer {missing[0][:19]}"
        elif delta is not None:
            why = "the delta has no entry for it (a delta would not have been smaller)"
        else:
            why = "no delta from this base"
        plans.append(LayerPlan(i, layer, "pull", why=why))
    _require_pulls(plans, src, fallback)
    pulls = [p for p in plans if p.method == "pull"]
    if pulls:
        log(f"falling back to a plain pull of {len(pulls)} layer(s), "
            f"{_human(sum(p.layer.size for p in pulls))}:")
        for p in pulls:
            log(f"  layer {p.index} {p.layer.diff_id[:19]}: {p.why}")

    # base tars: the deltas' sources, and base layers an output needs as tars
    chain_ok = _chain_prefix(target.diff_ids, base.diff_ids) if (load and isinstance(base, EngineBase)) else 0
    needed = {s for p in plans if p.method == "delta" and p.delta for s in p.delta.sources}
    for p in plans:
        if p.method == "base" and not (load and p.index < chain_ok) and base.layer_blob(p.layer) is None:
            needed.add(p.layer.diff_id)
    tars = base.prepare(needed, work) if needed else {}
    for p in plans:
        if p.method == "base" and p.layer.diff_id in needed and p.layer.diff_id not in tars:
            raise DeltaError(f"layer {p.index} {p.layer.diff_id[:19]} is in the base but could not be read from it")

    # make each layer, verified
    for p in plans:
        if p.method == "delta":
            assert p.delta is not None
            try:
                p.tar = _reconstruct(p, src, tars, work, decoders)
                continue
            except DeltaError as e:
                if not (fallback and src.can_pull):
                    raise Refused(f"layer {p.index} {p.layer.diff_id[:19]}: {e}; nothing was changed") from None
                log(f"  layer {p.index}: the delta is refused ({e}); pulling the layer instead")
                p.method, p.why = "pull", f"delta refused: {e}"
        if p.method == "pull":
            blob = src.blob(p.layer.media_type, p.layer.digest, p.layer.size, work / f"pull-{hex_of(p.layer.digest)}")
            _check_blob_diff_id(blob, p.layer, work)
            p.blob = blob
        elif p.method == "base":
            p.tar = tars.get(p.layer.diff_id)
            p.blob = base.layer_blob(p.layer)

    downloaded = getattr(src, "registry", None)
    report = Report(target_digest, target.config_digest, delta.digest if delta else None, plans,
                    downloaded.received if downloaded else 0, sum(layer.size for layer in target.layers))
    if load:
        assert engine is not None
        report.output = _load(engine, target, plans, chain_ok, tag, work, log)
    if output:
        report.output = _write_layout(Path(output), target, plans, log, recompress)
    return report


def _require_pulls(plans: list[LayerPlan], src: DeltaSource, fallback: bool) -> None:
    pulls = [p for p in plans if p.method == "pull"]
    if pulls and not (fallback and src.can_pull):
        first = pulls[0]
        where = "a layout holds no layers to pull" if not src.can_pull else "--no-fallback"
        raise Refused(f"layer {first.index} {first.layer.diff_id[:19]} cannot be made ({first.why}) and "
                      f"{where}; nothing was changed")


def _chain_prefix(target: Iterable[str], base: Iterable[str]) -> int:
    """How many bottom layers the target shares with the base in place (same chain IDs)."""
    n = 0
    for a, b in zip(target, base):  # noqa: B905 - Python 3.9 devices
        if a != b:
            break
        n += 1
    return n


def _reconstruct(p: LayerPlan, src: DeltaSource, tars: dict[str, Path], work: Path,
                 decoders: dict[str, Decoder]) -> Path:
    d = p.delta
    assert d is not None
    blob = src.blob(d.media_type, d.digest, d.size, work / f"delta-{hex_of(d.digest)}")
    decoder, why = decoder_for(d.media_type, decoders)
    if decoder is None:
        raise DeltaError(why)
    prefix = b"".join(tars[s].read_bytes() for s in d.sources)
    dest = work / f"layer-{hex_of(p.layer.diff_id)}.tar"
    with open(dest, "wb") as fh:
        out = HashingWriter(fh)
        try:
            decoder(prefix, blob, out)  # type: ignore[arg-type]
        except Refused:
            raise
        except Exception as e:  # noqa: BLE001 - any codec failure is a refused delta
            raise Refused(f"the delta does not decode: {type(e).__name__}: {e}") from None
    if out.digest != p.layer.diff_id:
        dest.unlink()
        raise Refused(f"the delta reconstructs {out.digest}, not diff_id {p.layer.diff_id}")
    return dest


def _check_blob_diff_id(blob: Path, layer: LayerRef, work: Path) -> None:
    h = hashlib.sha256()
    try:
        with open(blob, "rb") as fh:
            stream = decompressed(fh, layer.compression)
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                h.update(chunk)
    except (OSError, EOFError, ValueError) as e:
        raise Refused(f"layer {layer.digest} does not decompress: {e}") from None
    if "sha256:" + h.hexdigest() != layer.diff_id:
        raise Refused(f"layer {layer.digest} decompresses to sha256:{h.hexdigest()}, not {layer.diff_id}")


def _load(engine: Engine, target: TargetImage, plans: list[LayerPlan], chain_ok: int,
          tag: str | None, work: Path, log: Callable[[str], None]) -> str:
    """One ``docker load`` of a docker-archive with the config and every layer the engine
    lacks in place; its image ID is the target's config digest."""
    archive = work / "load.tar"
    config_name = hex_of(target.config_digest) + ".json"
    names = [f"{hex_of(p.layer.diff_id)}/layer.tar" for p in plans]
    manifest = [{"Config": config_name, "RepoTags": [tag] if tag else None, "Layers": names}]
    sent = 0
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in (("manifest.json", canonical(manifest)), (config_name, target.config_bytes)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        written = set()
        for p, name in zip(plans, names):  # noqa: B905 - Python 3.9 devices
            if p.index < chain_ok or name in written:
                continue
            path = p.tar or p.blob
            if path is None:
                raise DeltaError(f"layer {p.index} has no content to load")
            written.add(name)
            sent += path.stat().st_size
            tf.add(str(path), arcname=name)
    engine.load(archive)
    info = engine.inspect(target.config_digest)
    if info is None or info["Id"] != target.config_digest:
        raise DeltaError(f"the engine did not load image {target.config_digest}")
    log(f"loaded {target.config_digest} into the engine{f' as {tag}' if tag else ''} "
        f"({_human(sent)} of layers sent)")
    return target.config_digest


def _write_layout(dest: Path, target: TargetImage, plans: list[LayerPlan], log: Callable[[str], None],
                  recompress: Recompressor | None = None) -> str:
    """The new image as an OCI layout: blobs first, index.json last (atomically). A layer
    made here is compressed again with ``recompress`` (the builder's compressor: forge's,
    from ``forge apply-delta``) and kept when that gives the target's very blob, so the
    manifest is the target's own; otherwise (a device with the standard library alone, or
    another compressor build) it is stored uncompressed and the manifest differs exactly
    there, its config, image ID and every diff_id being the target's."""
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    descriptors = []
    changed = False
    for p in plans:
        if p.blob is None and p.tar is not None and recompress is not None:
            made = recompress(p.tar, p.layer.compression, blobs)
            if made is not None and sha256_file(made) == p.layer.digest:
                p.blob = made
            elif made is not None:
                log(f"  layer {p.index}: compressed again it is not the target's blob (another "
                    "compressor build); stored uncompressed")
                made.unlink()
        if p.blob is not None:
            _place(p.blob, blobs / hex_of(p.layer.digest))
            descriptors.append(None)
        else:
            assert p.tar is not None
            _place(p.tar, blobs / hex_of(p.layer.diff_id))
            descriptors.append({"mediaType": OCI_LAYER, "digest": p.layer.diff_id, "size": p.tar.stat().st_size})
            changed = True
    manifest = target.manifest_bytes
    if changed:
        doc = json.loads(manifest)
        doc["mediaType"] = OCI_MANIFEST
        doc["layers"] = [new or old for new, old in zip(descriptors, doc["layers"])]  # noqa: B905 - Python 3.9 devices
        manifest = canonical(doc)
    _write_blob(blobs / hex_of(target.config_digest), target.config_bytes)
    digest = sha256_bytes(manifest)
    _write_blob(blobs / hex_of(digest), manifest)
    _write_blob(dest / "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}), replace=True)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}
    _write_blob(dest / "index.json", canonical(index), replace=True)
    log(f"wrote {dest} (manifest {digest}, image ID {target.config_digest[:19]})")
    return digest


def _place(src: Path, dest: Path) -> None:
    if dest.exists() and dest.stat().st_size == src.stat().st_size:
        return
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _write_blob(dest: Path, data: bytes, replace: bool = False) -> None:
    if dest.exists() and not replace:
        return
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


# -- the command line --------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="forge-apply-delta",
        description="Make a new image from a forge image delta and the old image on this device, "
                    "verified against the target's diff_ids; pull plainly what no delta covers.")
    p.add_argument("source", help="host/repo@sha256:<target manifest> (deltas found as its referrers), "
                                  "or an OCI layout of deltas (forge delta -o DIR)")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--base-engine", nargs="?", const=True, default=None, metavar="IMAGE",
                      help="the old image is in the Docker engine (default: the image a delta starts from)")
    base.add_argument("--base-layout", metavar="DIR", help="the old image is in this OCI layout")
    p.add_argument("--load", action="store_true", help="load the new image into the Docker engine")
    p.add_argument("--tag", help="tag for --load (e.g. app:2)")
    p.add_argument("--output", metavar="DIR", help="write the new image as an OCI layout here")
    p.add_argument("--target", help="with a layout: the target manifest digest (pins it)")
    p.add_argument("--no-fallback", action="store_true",
                   help="never pull a layer in full: refuse when the delta cannot make it")
    p.add_argument("--insecure", action="store_true", default=None, help="plain HTTP to the registry")
    p.add_argument("--work-dir", help="where partial downloads and temp files live "
                                      "(default $FORGE_DELTA_WORK or ~/.cache/forge-delta)")
    return p


def main(argv: list[str] | None = None, decoders: dict[str, Decoder] | None = None,
         recompress: Recompressor | None = None) -> int:
    """The command line; ``decoders`` adds codecs by media type and ``recompress`` the
    compressor of the layers' builder (``forge apply-delta`` passes its plugins' codecs
    and forge's own compressor)."""
    args = parser().parse_args(argv)
    started = time.monotonic()
    try:
        report = apply_delta(args.source, base_engine=args.base_engine, base_layout=args.base_layout,
                             load=args.load, tag=args.tag, output=args.output, target=args.target,
                             fallback=not args.no_fallback, insecure=args.insecure,
                             work_dir=args.work_dir, decoders=decoders, recompress=recompress)
    except DeltaError as e:
        print(f"forge-apply-delta: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("forge-apply-delta: interrupted; nothing was changed (partial downloads are kept)", file=sys.stderr)
        return 130
    for line in report.lines():
        print(line)
    print(f"done in {time.monotonic() - started:.1f} s: {_human(report.downloaded)} downloaded "
          f"for {_human(report.full_size)} of compressed layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
