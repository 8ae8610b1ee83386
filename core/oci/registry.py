"""Push images to and pull them from OCI registries, verified, over oras-py.

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

Credentials are given to the client (``credentials=``, e.g. those of a remote cache URL)
or come from ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``
(``auths.<host>.auth``, ``username``/``password``, or a ``credHelpers``/``credsStore``
helper). Plain HTTP is used for loopback hosts (127.0.0.1, localhost, ::1) unless
``insecure`` says otherwise.

No secret is ever printed. A password, an ``auth`` string, an identity token or a
helper's answer never enters a message: a malformed Docker config is reported by file,
registry key and field (``auths["host"].auth is not base64 of user:password``), never
by value, and a credential helper's output and stderr are not echoed. Text forge does not
write itself (requests' and oras' exception messages, a registry's error bodies) goes
through ``RegistryClient._scrub``, which replaces every secret the client knows (and its
base64 and percent-encoded forms) with ``***`` and the user part of any URL in it with
``user:***@``. An image reference (``forge push``, ``oci_pull``) cannot carry credentials
(``user:pw@host/repo`` is refused with the password redacted); ``redact_url`` and
``split_credentials`` are the one place a ``[scheme://][user[:password]@]host/…`` string
is taken apart.

Everything pulled is verified before it gets a name in the CAS (``CAS.writer(expected=)``);
a manifest is stored after its config and layers, so a manifest in the CAS means the
whole image is there. A pull that fails stores no manifest, no config, no bad blob.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import oras.auth
import oras.container
import oras.provider
import requests
import requests.adapters
import urllib3.exceptions

from forge.core.cas import CAS, BlobMissing, sha256_digest
from forge.core.errors import RegistryError
from forge.core.oci import media
from forge.core.oci.image import Image, Index, load
from forge.core.oci.media import ImageFormatError
from forge.core.platforms import Platform, from_oci, parse_platform

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
RETRIES = 3
MONOLITHIC_LIMIT = 16 << 20  # blobs up to this size go up in one PUT, larger ones chunked
UPLOAD_CHUNK = 16 << 20
PUSH_THREADS = 4
ACCEPT = (media.OCI_MANIFEST, media.OCI_INDEX, media.DOCKER_MANIFEST, media.DOCKER_MANIFEST_LIST)


class RegistryHTTPError(RegistryError):
    """A registry answered with an HTTP error: ``status`` and the distribution spec's error
    ``codes`` (``MANIFEST_INVALID``, ``BLOB_UNKNOWN`` …) say which, so a caller can tell a
    refusal of one request from a broken registry. ``status`` is 0 when no answer came."""

    def __init__(self, message: str, status: int = 0, codes: tuple[str, ...] = ()):
        super().__init__(message)
        self.status = status
        self.codes = codes


class RegistryAuthError(RegistryHTTPError):
    """A registry wants credentials forge does not have, or refused the ones it has."""


class ManifestUnknown(RegistryHTTPError):
    """The repository has no manifest under that tag or digest (a typo, or a cache miss)."""


class ContentMismatch(RegistryError):
    """The registry served content that does not hash to the digest it was asked for (or
    is longer than its descriptor says); nothing of it was stored."""


class UnpinnedReference(RegistryError):
    """A pull named a tag but no digest; the message gives the digest to pin."""


# References and URL credentials live in core/oci/reference.py (re-exported here).
from forge.core.oci.reference import (  # noqa: E402,F401
    _DOCKER_HUB,
    MIN_SCRUBBED,
    Reference,
    _is_loopback,
    _split_userinfo,
    parse_reference,
    redact_url,
    scrub,
    secret_forms,
    split_credentials,
)


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


@dataclass(frozen=True)
class Credentials:
    """A registry login. The password never shows in a repr or a message."""

    user: str
    password: str = field(repr=False)
    source: str = "the caller"  # where they came from, for messages ("the remote cache URL")


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


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
        self._docker_config = docker_config
        self._given = credentials
        self._secrets: set[str] = set()  # what _scrub removes from foreign text
        if credentials is not None:
            self._secrets.update(secret_forms(credentials.user, credentials.password))
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
        return scrub(text, self._secrets)

    # -- connection and credentials ----------------------------------------------------
    def _config_path(self) -> Path:
        if self._docker_config is not None:
            path = Path(self._docker_config)
            return path / "config.json" if path.is_dir() else path
        base = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
        return Path(base) / "config.json"

    def _credentials(self) -> Credentials | None:
        """The login for this host: the given credentials, else the Docker config's.

        A malformed config is a RegistryError naming the file, the registry key and the
        field, never a value: the file holds secrets, and so may a mistyped field.
        """
        if self._given is not None:
            return self._given
        path = self._config_path()
        try:
            config = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RegistryError(f"cannot read the Docker config {path}: {e.strerror or type(e).__name__}") from None
        except (ValueError, RecursionError) as e:
            where = f" (line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
            raise RegistryError(f"the Docker config {path} is not JSON{where}") from None
        if not isinstance(config, dict):
            raise RegistryError(f"the Docker config {path} is {_json_type(config)}, expected an object")
        names = {self.host, self.api_host}
        if self.host in _DOCKER_HUB:
            names.add("https://index.docker.io/v1/")
        auths = config.get("auths")
        if auths is None:
            auths = {}
        if not isinstance(auths, dict):
            raise RegistryError(f"{path}: \"auths\" is {_json_type(auths)}, expected an object of "
                                "registry -> credentials")
        for key, entry in auths.items():
            bare = key.split("://", 1)[-1].split("/", 1)[0]
            if key in names or bare in names:
                creds = self._entry_credentials(path, key, entry)
                if creds is not None:
                    return creds
        helpers = config.get("credHelpers")
        if helpers is not None and not isinstance(helpers, dict):
            raise RegistryError(f"{path}: \"credHelpers\" is {_json_type(helpers)}, expected an object "
                                "of registry -> helper name")
        helper = (helpers or {}).get(self.host)
        where = f'credHelpers["{redact_url(self.host)}"]'
        if helper is None:
            helper, where = config.get("credsStore"), "credsStore"
        if helper is None or helper == "":
            return None
        if not isinstance(helper, str) or not _HELPER_NAME.fullmatch(helper):
            raise RegistryError(f"{path}: {where} is not a credential helper name "
                                "(docker-credential-<name> is run)")
        return self._helper_credentials(helper, path)

    def _entry_credentials(self, path: Path, key: str, entry: object) -> Credentials | None:
        """The credentials of one ``auths`` entry; None when it has none (a helper has them)."""
        where = f'{path}: auths["{redact_url(key)}"]'
        if not isinstance(entry, dict):
            raise RegistryError(f"{where} is {_json_type(entry)}, expected an object such as "
                                f'{{"auth": "<base64 of user:password>"}} (run: docker login {self.host})')
        user, password = entry.get("username"), entry.get("password")
        for name, value in (("username", user), ("password", password)):
            if value is not None and not isinstance(value, str):
                raise RegistryError(f"{where}.{name} is {_json_type(value)}, expected a string")
        if password:
            self._secrets.update(secret_forms(user or "", password))
        if user and password:
            return Credentials(user, password, str(path))
        auth = entry.get("auth")
        token = entry.get("identitytoken")
        if isinstance(token, str) and token:
            self._secrets.add(token)
        if isinstance(auth, str):
            self._secrets.update({auth, auth.rstrip("=")})
        if auth:
            try:
                if not isinstance(auth, str):
                    raise ValueError
                user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
            except (ValueError, binascii.Error):
                raise RegistryError(f"{where}.auth is not base64 of user:password") from None
            if sep and user and password:
                self._secrets.update(secret_forms(user, password))
                return Credentials(user, password, str(path))
            if not (sep and user and token):
                raise RegistryError(f"{where}.auth is not base64 of user:password")
        if token:
            raise RegistryAuthError(
                f"{where} holds an identity token (OAuth refresh token), which forge cannot use; "
                f"log in with a password or access token instead (docker login -u USER {self.host})")
        return None

    def _helper_credentials(self, helper: str, path: Path) -> Credentials | None:
        """Ask ``docker-credential-<helper> get``; its output and stderr are never shown."""
        binary = f"docker-credential-{helper}"
        try:
            proc = subprocess.run([binary, "get"], input=self.host.encode(), capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            raise RegistryAuthError(f"{path} names credential helper {binary}, which cannot be run") from None
        if proc.returncode != 0:
            return None  # the helper has nothing for this host
        try:
            payload = json.loads(proc.stdout)
            user, secret = payload["Username"], payload["Secret"]
            if not (isinstance(user, str) and isinstance(secret, str) and secret):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            self._secrets.add(proc.stdout.decode(errors="replace").strip())
            raise RegistryAuthError(f"{binary} answered for {self.host} with something that is not "
                                    '{"Username": …, "Secret": …} JSON') from None
        self._secrets.update(secret_forms(user, secret))
        return Credentials(user, secret, binary)

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
        challenge = response.headers.get("Www-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        creds = self._credentials()
        if creds is None:
            if scheme == "bearer":
                return  # anonymous tokens (public pulls); oras asks for them per request
            raise RegistryAuthError(
                f"registry {self.host} requires a login and {self._config_path()} has none for it "
                f"(run: docker login {self.host})"
            )
        if scheme not in ("basic", "bearer"):
            raise RegistryAuthError(f"registry {self.host} asks for {scheme or 'unknown'} auth, which forge does not speak")
        try:
            if scheme == "basic":
                backend = oras.auth.get_auth_backend("basic", session, self.insecure)
                backend.set_basic_auth(creds.user, creds.password)
                ok = session.get(url, headers=backend.get_auth_header()).status_code == 200
            else:
                backend = oras.auth.get_auth_backend("token", session, self.insecure)
                backend.set_basic_auth(creds.user, creds.password)
                headers, changed = backend.authenticate_request(response, {})
                ok = changed and session.get(url, headers=headers).status_code == 200
        except requests.RequestException as e:
            raise RegistryError(f"login to registry {self.host} failed: {self._reason(e)}") from None
        if not ok:
            raise RegistryAuthError(f"registry {self.host} refused the credentials of user {creds.user!r} from {creds.source}")
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

    # -- whole images -------------------------------------------------------------------
    def push(self, cas: CAS, value: Image | Index, repo: str, tag: str | None = None,
             *, threads: int = PUSH_THREADS) -> str:
        """Push an image or index from the CAS; return its digest.

        Only blobs the repository lacks are uploaded (``threads`` at once); child manifests
        go up by digest, the top one under ``tag`` (by digest when there is no tag).
        """
        images = value.images if isinstance(value, Index) else (value,)
        blobs = list(dict.fromkeys(d for image in images for d, _ in image.blobs()))
        missing = [d for d in blobs if not cas.has(d)]
        if missing:
            raise RegistryError(f"push to {self.host}/{repo}: blob(s) not in the local CAS: {', '.join(missing)}")
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(lambda d: self.push_blob(cas, repo, d), blobs))
        if isinstance(value, Index):
            for image in images:
                self.push_manifest(repo, image.digest, image.manifest_bytes, image.media_type)
        return self.push_manifest(repo, tag or value.digest, value.manifest_bytes, value.media_type)

    def pull(self, cas: CAS, repo: str, digest: str, platform: Platform | str | None = None,
             *, threads: int = PUSH_THREADS) -> Image | Index:
        """Pull the manifest ``digest`` of ``repo`` and everything under it into the CAS.

        For an index, ``platform`` picks one image (returned as an Image); without it every
        image is pulled and the Index returned. Media types are checked and the config
        read before the first layer byte, so content forge cannot use stores nothing.
        """
        want = parse_platform(platform) if isinstance(platform, str) else platform
        where = f"{self.host}/{repo}@{digest}"
        try:
            data, media_type, _ = self.get_manifest(repo, digest)
            if media.manifest_kind(media_type) == "image":
                image = self._pull_manifest(cas, repo, data, threads)
                if want is not None and image.platform != want:
                    raise RegistryError(f"{where} is for {image.platform}, not {want}")
                return image
            entries = json.loads(data).get("manifests") or []
            if want is not None:
                child, _, _ = self.get_manifest(repo, _entry_for(entries, want, where))
                return self._pull_manifest(cas, repo, child, threads)
            for entry in entries:
                child, child_type, _ = self.get_manifest(repo, entry.get("digest", ""))
                if media.manifest_kind(child_type) != "image":
                    raise media.UnsupportedMediaType(f"index entry {entry.get('digest')} is a nested index")
                self._pull_manifest(cas, repo, child, threads)
            cas.put_bytes(data)
            return load(cas, digest)
        except ImageFormatError as e:
            raise RegistryError(f"pull of {where}: {e}") from None

    def _pull_manifest(self, cas: CAS, repo: str, data: bytes, threads: int) -> Image:
        """Check an image manifest and its config in memory, then fetch layers, then store."""
        doc = json.loads(data)
        config_desc = doc.get("config") or {}
        media.check_config_type(config_desc.get("mediaType", ""))
        for layer in doc.get("layers") or []:
            media.layer_compression(layer.get("mediaType", ""))
        config_bytes = self.read_blob(repo, config_desc.get("digest", ""))
        image = Image(data, config_bytes)  # every format check before the first layer byte
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(lambda layer: self.pull_blob(cas, repo, layer.digest), image.layers))
        cas.put_bytes(config_bytes)
        cas.put_bytes(data)
        return image


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


# -- whole images, by reference -----------------------------------------------------------


def push_image(cas: CAS, value: Image | Index, ref: str, *, client: RegistryClient | None = None) -> str:
    """Push to ``host/repo[:tag]`` (see ``RegistryClient.push``); return the digest."""
    r = parse_reference(ref)
    if r.digest and r.digest != value.digest:
        raise RegistryError(f"push to {ref}: the image is {value.digest}, not {r.digest}")
    return (client or RegistryClient(r.registry)).push(cas, value, r.repository, r.tag)


def pull_image(
    cas: CAS,
    ref: str,
    digest: str | None = None,
    platform: Platform | str | None = None,
    *,
    client: RegistryClient | None = None,
) -> Image | Index:
    """Pull ``host/repo`` at ``digest`` (or the reference's ``@digest``) into the CAS.

    A tag alone is refused with UnpinnedReference, whose message gives the digest to pin.
    See ``RegistryClient.pull`` for ``platform``.
    """
    r = parse_reference(ref)
    client = client or RegistryClient(r.registry)
    if digest and r.digest and digest != r.digest:
        raise RegistryError(f"pull of {ref}: the reference says {r.digest} but {digest} was asked for")
    digest = digest or r.digest
    if digest is None:
        tag = r.tag or "latest"
        now = client.resolve_tag(r.repository, tag)
        raise UnpinnedReference(
            f"{r.registry}/{r.repository}:{tag} is a tag, and forge pulls by digest only; "
            f"pin what it names now: {r.registry}/{r.repository}@{now}"
        )
    return client.pull(cas, r.repository, digest, platform)


def _entry_for(entries: Iterable[dict], want: Platform, what: str) -> str:
    have = []
    for entry in entries:
        p = entry.get("platform") or {}
        platform = from_oci(p.get("architecture", ""), p.get("os", ""), p.get("variant", ""))
        if platform == want:
            return entry.get("digest", "")
        have.append(str(platform))
    raise RegistryError(f"{what} has no image for {want}; it has: {', '.join(have) or 'none'}")


RESUME_ATTEMPTS = 5  # breaks of one blob download resumed before it fails (at least)
RESUME_PER_BYTES = 256 << 10  # ...and one more resume allowed per this many bytes of the blob
UPLOAD_SESSIONS = 4  # upload sessions one blob upload may start before it fails
# What a broken link looks like to requests mid-body: resumed, not failed.
_RESUMABLE = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError,
              requests.exceptions.Timeout, urllib3.exceptions.ProtocolError,
              urllib3.exceptions.ReadTimeoutError, http.client.HTTPException, ConnectionError, TimeoutError)


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
