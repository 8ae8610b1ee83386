"""The registry client: one host's blob and manifest calls over oras-py, every failure a
RegistryError.

oras-py (``oras.provider.Registry``) does the HTTP: its auth backends (Basic, Bearer
tokens) and requests. forge adds only what it lacks or gets wrong for this use:

- manifests are sent and read as exact bytes (oras re-serializes them, which changes the
  digest) through its ``do_request``; cross-repository mount is one ``do_request`` too;
- its retry decorator sleeps up to 83 s between five tries, also after an auth refusal;
  forge's subclass retries connection errors and 502/503/504 three times within ~2 s, with
  connect/read timeouts, and never retries a 401;
- a Bearer token is re-requested when a 401 asks for a new scope (oras reuses the old);
- the registry is pinged first, so "unreachable" and "wrong credentials" are one clear
  error each, naming the registry and never the password;
- transfers survive broken links: a download resumes with ``Range: bytes=N-`` where it
  stopped (``pull_blob``), an upload resumes its chunked session where the registry can say
  how far it got, else starts a new one (``_upload``); oras' ``put_upload`` and
  ``chunked_upload`` restart nothing.

Plain HTTP is used for loopback hosts (127.0.0.1, localhost, ::1) unless ``insecure`` says
otherwise. Where the credentials come from and how the registry is given them is
core/oci/registry_auth.py; whole images and indexes (``push``, ``pull``) are
core/oci/registry_transfer.py; references are core/oci/reference.py.

Text forge does not write itself (requests' and oras' exception messages, a registry's
error bodies) goes through ``RegistryClient._scrub``, which replaces every secret the
client knows (and its base64 and percent-encoded forms) with ``***`` and the user part of
any URL in it with ``user:***@``.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import oras.auth
import oras.container
import oras.provider
import requests
import requests.adapters
import urllib3.exceptions

from forge.core.cas import CAS, BlobMissing, sha256_digest
from forge.core.errors import (
    ContentMismatch,
    ManifestUnknown,
    RegistryAuthError,
    RegistryError,
    RegistryHTTPError,
)
from forge.core.oci import media
from forge.core.oci.reference import _DOCKER_HUB, _is_loopback
from forge.core.oci.registry_auth import Credentials, HostAuth

if TYPE_CHECKING:
    from forge.core.oci.image import Image, Index
    from forge.core.platforms import Platform

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
RETRIES = 3
MONOLITHIC_LIMIT = 16 << 20  # blobs up to this size go up in one PUT, larger ones chunked
UPLOAD_CHUNK = 16 << 20
PUSH_THREADS = 4
ACCEPT = (media.OCI_MANIFEST, media.OCI_INDEX, media.DOCKER_MANIFEST, media.DOCKER_MANIFEST_LIST)

RESUME_ATTEMPTS = 5  # breaks of one blob download resumed before it fails (at least)
RESUME_PER_BYTES = 256 << 10  # ...and one more resume allowed per this many bytes of the blob
UPLOAD_SESSIONS = 4  # upload sessions one blob upload may start before it fails
# What a broken link looks like to requests mid-body: resumed, not failed.
_RESUMABLE = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError,
              requests.exceptions.Timeout, urllib3.exceptions.ProtocolError,
              urllib3.exceptions.ReadTimeoutError, http.client.HTTPException, ConnectionError, TimeoutError)


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """Every request gets connect/read timeouts (oras passes none: a dead peer hangs)."""

    def send(self, request, timeout=None, **kwargs):  # type: ignore[override]
        return super().send(request, timeout=timeout or (CONNECT_TIMEOUT, READ_TIMEOUT), **kwargs)


_oras_do_request = oras.provider.Registry.do_request.__wrapped__  # without oras' retry decorator


class _OrasRegistry(oras.provider.Registry):
    """oras' Registry with forge's retries, an up-front Basic header and scope refresh."""

    def do_request(self, url, method="GET", data=None, headers=None, json=None, stream=False):
        headers = dict(headers or {})
        if isinstance(self.auth, oras.auth.BasicAuth):
            headers = {**self.auth.get_auth_header(), **headers}
        response = self._send(url, method, data, headers, json, stream)
        auth = self.auth
        if response.status_code == 401 and isinstance(auth, oras.auth.TokenAuth) and auth.token:
            auth.token = None  # the token's scope is for another repository or action
            response = self._send(url, method, data, dict(headers), json, stream)
        return response

    def _send(self, url, method, data, headers, json, stream):
        for attempt in range(RETRIES):
            last = attempt == RETRIES - 1
            try:
                response = _oras_do_request(self, url, method, data, dict(headers), json, stream)
            except (requests.ConnectionError, requests.Timeout):
                if last:
                    raise
            else:
                if response.status_code not in (502, 503, 504) or last:
                    return response
            time.sleep(0.25 * 3**attempt)
        raise AssertionError("unreachable")


class RegistryClient:
    """One registry host: blob and manifest calls, every failure a RegistryError.

    ``credentials`` (e.g. taken out of a remote cache URL) are used instead of the Docker
    config's for this host.
    """

    def __init__(self, host: str, insecure: bool | None = None, docker_config: Path | str | None = None,
                 *, credentials: Credentials | None = None):
        self.host = host
        self.api_host = "registry-1.docker.io" if host in _DOCKER_HUB else host
        self.insecure = _is_loopback(host) if insecure is None else insecure
        self.scheme = "http" if self.insecure else "https"
        self._auth = HostAuth(host, self.api_host, docker_config, credentials)
        self._oras = _OrasRegistry(hostname=self.api_host, insecure=self.insecure)
        adapter = _TimeoutAdapter(pool_maxsize=PUSH_THREADS * 2)
        self._oras.session.mount("http://", adapter)
        self._oras.session.mount("https://", adapter)
        self._ready = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RegistryClient({self.host!r}, insecure={self.insecure})"

    def _reason(self, e: Exception) -> str:
        return self._scrub(_reason(e))

    def _scrub(self, text: str) -> str:
        """Foreign text (an exception of requests or oras, a registry's error body) with
        every secret this client knows removed; see ``scrub``."""
        return self._auth.scrub(text)

    # -- connection ----------------------------------------------------------------------
    def _ensure_ready(self) -> None:
        """Ping ``/v2/`` once: reachable? which auth? credentials accepted?"""
        with self._lock:
            if not self._ready:
                self._connect()
                self._ready = True

    def _connect(self) -> None:
        url = f"{self.scheme}://{self.api_host}/v2/"
        session = self._oras.session
        try:
            response = session.get(url, timeout=(CONNECT_TIMEOUT, 30))
        except requests.exceptions.SSLError as e:
            raise RegistryError(f"TLS with registry {self.host} failed ({self._scrub(str(e))}); a plain-HTTP registry needs insecure=True") from None
        except requests.RequestException as e:
            raise RegistryError(f"cannot reach registry {self.host} at {url}: {self._reason(e)}") from None
        if response.status_code == 200:
            return
        if response.status_code != 401:
            raise RegistryError(f"registry {self.host} answered GET {url} with HTTP {response.status_code}; is it an OCI registry?")
        try:
            backend = self._auth.log_in(session, url, response, self.insecure)
        except requests.RequestException as e:
            raise RegistryError(f"login to registry {self.host} failed: {self._reason(e)}") from None
        if backend is not None:
            self._oras.auth = backend

    def _container(self, repo: str) -> oras.container.Container:
        # Built field by field: oras' name parser would read "team.a/x" as a host.
        container = oras.container.Container("placeholder", registry=self.api_host)
        namespace, _, name = repo.rpartition("/")
        container.namespace, container.repository = namespace or None, name
        return container

    def _request(self, what: str, url: str, method: str = "GET", **kwargs) -> requests.Response:
        self._ensure_ready()
        try:
            response = self._oras.do_request(url, method, **kwargs)
        except requests.RequestException as e:
            raise RegistryError(f"{what}: registry {self.host} failed: {self._reason(e)}") from None
        except ValueError as e:  # oras: "Cannot respond to request for authentication."
            raise RegistryAuthError(f"{what}: registry {self.host} refused access ({self._scrub(str(e))})") from None
        return response

    def _fail(self, what: str, response: requests.Response) -> RegistryHTTPError:
        detail = self._scrub(_registry_errors(response))
        cls = RegistryAuthError if response.status_code in (401, 403) else RegistryHTTPError
        return cls(f"{what}: registry {self.host} answered HTTP {response.status_code}{detail}",
                   response.status_code, _error_codes(response))

    def _api(self, repo: str, kind: str, ref: str) -> str:
        return f"{self.scheme}://{self.api_host}/v2/{repo}/{kind}/{ref}"

    # -- blobs --------------------------------------------------------------------------
    def has_blob(self, repo: str, digest: str) -> bool:
        what = f"HEAD blob {digest} in {repo}"
        response = self._request(what, self._api(repo, "blobs", digest), "HEAD")
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._fail(what, response)

    def push_blob(self, cas: CAS, repo: str, digest: str, *, mount_from: str | None = None) -> bool:
        """Upload a CAS blob unless the repository has it; True if bytes were sent.

        ``mount_from`` names a repository of this registry that may hold the blob: the
        registry then links it instead of receiving it again.
        """
        if self.has_blob(repo, digest):
            return False
        what = f"upload of blob {digest} to {self.host}/{repo}"
        if mount_from:
            url = f"{self.scheme}://{self.api_host}/v2/{repo}/blobs/uploads/?mount={digest}&from={mount_from}"
            if self._request(what, url, "POST").status_code == 201:
                return False
        try:
            size = cas.size(digest)
        except BlobMissing:
            raise RegistryError(f"{what}: the blob is not in the local CAS") from None
        self._upload(cas, repo, digest, size, what)
        return True

    def _upload(self, cas: CAS, repo: str, digest: str, size: int, what: str) -> None:
        """Upload a blob through an upload session: one PUT up to MONOLITHIC_LIMIT, else
        PATCH chunks and a closing PUT.

        A connection that breaks mid-upload (after the client's own quick retries) does not
        fail it: a chunked upload asks the session how far it got (``GET`` on the upload
        URL, ``Range: 0-N``) and goes on from there when the registry can say so; otherwise
        (a monolithic PUT, or a session the registry no longer knows or will not resume —
        distribution 2.8 refuses to resume a session whose last PATCH broke part-way) a new
        session starts. Each break halves the chunk size (down to 1 MiB), so a link that
        breaks often still gets chunks through; up to UPLOAD_SESSIONS sessions are tried."""
        self._ensure_ready()
        chunk = UPLOAD_CHUNK
        sessions = breaks = 0
        location: str | None = None
        offset = 0
        with open(cas.path(digest), "rb") as fh:
            while True:
                try:
                    if location is None:
                        sessions += 1
                        location, offset = self._start_upload(repo, what), 0
                    if size <= MONOLITHIC_LIMIT and offset == 0:
                        fh.seek(0)
                        response = self._oras.do_request(
                            _with_query(location, digest=digest), "PUT", data=fh.read(),
                            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
                    else:
                        while offset < size:
                            fh.seek(offset)
                            data = fh.read(chunk)
                            response = self._oras.do_request(location, "PATCH", data=data, headers={
                                "Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                                "Content-Range": f"{offset}-{offset + len(data) - 1}"})
                            if response.status_code != 202:
                                break
                            location = self._location(response, location)
                            offset = _uploaded(response.headers.get("Range"), offset + len(data))
                        else:
                            response = self._oras.do_request(_with_query(location, digest=digest), "PUT",
                                                             headers={"Content-Length": "0"})
                    if response.status_code == 201:
                        if breaks:
                            self._progress_note(f"{what}: {breaks} broken connection(s) survived "
                                                f"({sessions} upload session(s))")
                        return
                    if response.status_code in (404, 416) or (response.status_code == 400
                                                              and "BLOB_UPLOAD_INVALID" in _error_codes(response)):
                        # the session is gone or out of step: start again
                        if sessions >= UPLOAD_SESSIONS:
                            raise self._fail(what, response)
                        location = None
                        continue
                    raise self._fail(what, response)
                except (requests.ConnectionError, requests.Timeout) as e:
                    breaks += 1
                    if sessions >= UPLOAD_SESSIONS and location is None or breaks > UPLOAD_SESSIONS * 4:
                        raise RegistryError(f"{what} failed after {breaks} broken connection(s): "
                                            f"{self._reason(e)}") from None
                    chunk = max(1 << 20, chunk // 2)
                    time.sleep(min(0.1 * 2 ** breaks, 2.0))
                    resumed = self._upload_status(location) if location and size > MONOLITHIC_LIMIT else None
                    if resumed is None:
                        if sessions >= UPLOAD_SESSIONS:
                            raise RegistryError(f"{what} failed: {self._reason(e)} (no session left to "
                                                "resume or restart)") from None
                        location = None
                    else:
                        location, offset = resumed
                except ValueError as e:  # oras: "Cannot respond to request for authentication."
                    raise RegistryAuthError(f"{what}: registry {self.host} refused access "
                                            f"({self._scrub(str(e))})") from None

    def _progress_note(self, line: str) -> None:
        """Transfer notes (resumes survived) go to forge's logger; never an error."""
        import logging

        logging.getLogger("forge.registry").info(line)

    def _location(self, response: requests.Response, current: str) -> str:
        loc = response.headers.get("Location") or current
        return f"{self.scheme}://{self.api_host}{loc}" if loc.startswith("/") else loc

    def _start_upload(self, repo: str, what: str) -> str:
        url = f"{self.scheme}://{self.api_host}/v2/{repo}/blobs/uploads/"
        response = self._request(what, url, "POST", headers={"Content-Length": "0"})
        if response.status_code != 202 or not response.headers.get("Location"):
            raise self._fail(what, response)
        return self._location(response, url)

    def _upload_status(self, location: str) -> tuple[str, int] | None:
        """(where to go on, bytes the session holds) of an upload session, or None when the
        registry does not know it or cannot say consistently."""
        try:
            response = self._oras.do_request(location, "GET")
        except (requests.RequestException, ValueError):
            return None
        if response.status_code != 204 or not response.headers.get("Range"):
            return None
        return self._location(response, location), _uploaded(response.headers["Range"], 0)

    def pull_blob(self, cas: CAS, repo: str, digest: str, size: int | None = None) -> None:
        """Fetch a blob into the CAS, verified while it streams; a mismatch stores nothing
        and raises ContentMismatch. With ``size``, a longer answer is cut off as one.

        A connection that breaks mid-blob, after bytes arrived, is resumed where it stopped
        (``Range: bytes=N-``, up to RESUME_ATTEMPTS times or once per RESUME_PER_BYTES of
        the blob, backing off while attempts bring little): on a bad link the bytes already here
        are never fetched again. A registry that ignores Range sends the whole blob again
        and the part already written is skipped as it arrives."""
        if cas.has(digest):
            return
        what = f"download of blob {digest} from {self.host}/{repo}"
        self._ensure_ready()
        url = self._api(repo, "blobs", digest)
        try:
            with cas.writer(expected=digest) as out:
                breaks = slow = 0
                limit = max(RESUME_ATTEMPTS, (size or 0) // RESUME_PER_BYTES)
                while True:
                    before = out.size
                    try:
                        self._stream_blob(what, url, out, size)
                        break
                    except _RESUMABLE as e:
                        breaks += 1
                        # An attempt that got nothing is a registry that is down: fail at
                        # once (the scheduler degrades); one that got bytes is resumed, up
                        # to one resume per RESUME_PER_BYTES of the blob. The pause grows
                        # only while attempts bring little (a crawling link), not when a
                        # working link merely breaks often.
                        if out.size == before or breaks > limit:
                            raise RegistryError(f"{what} failed at byte {out.size} "
                                                f"(after {breaks - 1} resumes): {self._reason(e)}") from None
                        slow = slow + 1 if out.size - before < RESUME_PER_BYTES // 4 else 0
                        time.sleep(min(0.02 * 2 ** slow, 2.0))
        except BlobMissing as e:
            raise ContentMismatch(f"{what}: the registry sent other content ({e})") from None
        except requests.RequestException as e:
            raise RegistryError(f"{what} failed: {self._reason(e)}") from None
        except ValueError as e:  # oras: "Cannot respond to request for authentication."
            raise RegistryAuthError(f"{what}: registry {self.host} refused access ({self._scrub(str(e))})") from None

    def _stream_blob(self, what: str, url: str, out, size: int | None) -> None:
        """One GET of the blob from ``out.size`` on, appended to ``out``."""
        offset = out.size
        # identity: the bytes read are the blob's (a content-encoded answer would not be)
        headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
        with self._oras.do_request(url, "GET", headers=headers, stream=True) as response:
            if response.status_code == 206 and offset:
                start = _range_start(response.headers.get("Content-Range", ""))
                if start != offset:
                    raise ContentMismatch(f"{what}: asked for bytes {offset}- and got "
                                          f"{response.headers.get('Content-Range')!r}")
                skip = 0
            elif response.status_code == 200:
                skip = offset  # from the start again: drop what is already written
            else:
                raise self._fail(what, response)
            # raw reads: a read cut short by a broken link returns what did arrive (requests'
            # iter_content would drop it with the error), so a resume re-fetches nothing
            while True:
                chunk = response.raw.read(1 << 20, decode_content=False)
                if not chunk:
                    if size is not None and out.size < size:
                        raise requests.exceptions.ChunkedEncodingError("the connection closed early")
                    break
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                    if not chunk:
                        continue
                out.write(chunk)
                if size is not None and out.size > size:
                    raise ContentMismatch(f"{what}: the registry sent more than the "
                                          f"{size} bytes its descriptor says; nothing stored")

    def read_blob(self, repo: str, digest: str) -> bytes:
        """A small blob (a config) into memory, verified, not stored."""
        what = f"download of blob {digest} from {self.host}/{repo}"
        response = self._request(what, self._api(repo, "blobs", digest))
        if response.status_code != 200:
            raise self._fail(what, response)
        if sha256_digest(response.content) != digest:
            raise ContentMismatch(f"{what}: the registry sent content hashing to {sha256_digest(response.content)}")
        return response.content

    # -- manifests ----------------------------------------------------------------------
    def push_manifest(self, repo: str, ref: str, data: bytes, media_type: str,
                      headers: dict[str, str] | None = None) -> str:
        """PUT manifest bytes as they are under a tag or digest; return their digest.

        ``headers`` adds request headers (``If-None-Match: *`` for a conditional PUT; a
        registry that honours it answers 412, raised as RegistryHTTPError(status=412)).
        """
        digest = sha256_digest(data)
        what = f"push of manifest {digest} to {self.host}/{repo}:{ref}"
        response = self._request(what, self._api(repo, "manifests", ref), "PUT",
                                  data=data, headers={**(headers or {}), "Content-Type": media_type})
        if response.status_code not in (200, 201):
            raise self._fail(what, response)
        served = response.headers.get("Docker-Content-Digest")
        if served and served != digest:
            raise RegistryError(f"{what}: the registry stored it as {served}")
        return digest

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest by tag or digest; a digest is verified."""
        what = f"manifest {self.host}/{repo}{'@' if ref.startswith('sha256:') else ':'}{ref}"
        response = self._request(what, self._api(repo, "manifests", ref), headers={"Accept": ", ".join(ACCEPT)})
        if response.status_code == 404:
            raise ManifestUnknown(f"{what} does not exist{self._scrub(_registry_errors(response))}", 404,
                                  _error_codes(response))
        if response.status_code != 200:
            raise self._fail(what, response)
        data = response.content
        digest = sha256_digest(data)
        if ref.startswith("sha256:") and digest != ref:
            raise ContentMismatch(f"{what}: the registry sent a manifest hashing to {digest}; nothing stored")
        try:
            media_type = json.loads(data).get("mediaType")
        except (ValueError, AttributeError):
            raise RegistryError(f"{what} is not a JSON object") from None
        media_type = media_type or response.headers.get("Content-Type", "").split(";")[0].strip()
        return data, media_type, digest

    def _head_manifest(self, repo: str, ref: str) -> requests.Response | None:
        """HEAD a manifest: the response, or None when there is none."""
        what = f"manifest {self.host}/{repo}{'@' if ref.startswith('sha256:') else ':'}{ref}"
        response = self._request(what, self._api(repo, "manifests", ref), "HEAD", headers={"Accept": ", ".join(ACCEPT)})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(what, response)
        return response

    def has_manifest(self, repo: str, ref: str) -> bool:
        """Whether a tag or digest names a manifest in ``repo``."""
        return self._head_manifest(repo, ref) is not None

    def resolve_tag(self, repo: str, tag: str) -> str:
        """The digest a tag points at now; ManifestUnknown when there is no such tag."""
        response = self._head_manifest(repo, tag)
        if response is None:
            raise ManifestUnknown(f"manifest {self.host}/{repo}:{tag} does not exist")
        return response.headers.get("Docker-Content-Digest") or self.get_manifest(repo, tag)[2]

    # -- whole images (core/oci/registry_transfer.py) ------------------------------------
    def push(self, cas: CAS, value: Image | Index, repo: str, tag: str | None = None,
             *, threads: int = PUSH_THREADS) -> str:
        """Push an image or index from the CAS; return its digest.

        Only blobs the repository lacks are uploaded (``threads`` at once); child manifests
        go up by digest, the top one under ``tag`` (by digest when there is no tag).
        """
        from forge.core.oci.registry_transfer import push_to_repository

        return push_to_repository(self, cas, value, repo, tag, threads=threads)

    def pull(self, cas: CAS, repo: str, digest: str, platform: Platform | str | None = None,
             *, threads: int = PUSH_THREADS) -> Image | Index:
        """Pull the manifest ``digest`` of ``repo`` and everything under it into the CAS.

        For an index, ``platform`` picks one image (returned as an Image); without it every
        image is pulled and the Index returned. Media types are checked and the config
        read before the first layer byte, so content forge cannot use stores nothing.
        """
        from forge.core.oci.registry_transfer import pull_from_repository

        return pull_from_repository(self, cas, repo, digest, platform, threads=threads)


def _reason(e: Exception) -> str:
    """The innermost cause of a requests error, without its URL noise."""
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host"):
        if marker in text:
            return marker.lower()
    return text


def _error_codes(response: requests.Response) -> tuple[str, ...]:
    """The ``errors[].code`` values of a distribution-spec error body (none if it has none)."""
    try:
        errors = response.json().get("errors") or []
        return tuple(str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code"))
    except (ValueError, AttributeError):
        return ()


def _registry_errors(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return ": " + "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) if errors else ""
    except (ValueError, AttributeError):
        return ""


def _with_query(url: str, **params: str) -> str:
    from urllib.parse import urlencode

    return url + ("&" if "?" in url else "?") + urlencode(params)


def _uploaded(range_header: str | None, default: int) -> int:
    """The size of an upload session from its ``Range: 0-N`` answer (N is the last byte)."""
    m = re.match(r"\s*(?:bytes=)?0-(\d+)\s*$", range_header or "")
    if not m:
        return default
    last = int(m.group(1))
    return 0 if last == 0 and default == 0 else last + 1


def _range_start(content_range: str) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)$", content_range.strip())
    return int(m.group(1)) if m else None
