"""Registry logins: where one host's credentials come from, how the registry is given
them, and which secrets they teach the client to scrub.

Credentials are given to the client (``credentials=``, e.g. those of a remote cache URL)
or come from ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``
(``auths.<host>.auth``, ``username``/``password``, or a ``credHelpers``/``credsStore``
helper). ``HostAuth.log_in`` answers a registry's 401 with them through oras' Basic or
Bearer-token backend and checks that they are accepted; the backend it returns is what the
client's requests carry from then on (core/oci/registry_client.py sends them).

No secret is ever printed. A password, an ``auth`` string, an identity token or a
helper's answer never enters a message: a malformed Docker config is reported by file,
registry key and field (``auths["host"].auth is not base64 of user:password``), never
by value, and a credential helper's output and stderr are not echoed. Every secret read
here joins ``HostAuth.secrets`` (with its base64 and percent-encoded forms), which
``RegistryClient._scrub`` removes from text forge does not write itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import oras.auth
import requests

from forge.core.errors import RegistryAuthError, RegistryError
from forge.core.oci.reference import _DOCKER_HUB, redact_url, scrub, secret_forms


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


class HostAuth:
    """The login to one registry host (``api_host`` is where its API answers: Docker Hub's
    differs) and every secret read on the way to it.

    ``credentials`` (e.g. taken out of a remote cache URL) are used instead of the Docker
    config's for this host. ``secrets`` grows with each secret read, given or found.
    """

    def __init__(self, host: str, api_host: str, docker_config: Path | str | None = None,
                 credentials: Credentials | None = None):
        self.host = host
        self.api_host = api_host
        self._docker_config = docker_config
        self._given = credentials
        self.secrets: set[str] = set()  # what scrub removes from foreign text
        if credentials is not None:
            self.secrets.update(secret_forms(credentials.user, credentials.password))

    def scrub(self, text: str) -> str:
        """Foreign text (an exception of requests or oras, a registry's error body) with
        every secret read so far removed; see ``reference.scrub``."""
        return scrub(text, self.secrets)

    def config_path(self) -> Path:
        """The Docker config read: ``docker_config`` (its ``config.json`` when it is a
        directory), else ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``."""
        if self._docker_config is not None:
            path = Path(self._docker_config)
            return path / "config.json" if path.is_dir() else path
        base = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
        return Path(base) / "config.json"

    def credentials(self) -> Credentials | None:
        """The login for this host: the given credentials, else the Docker config's.

        A malformed config is a RegistryError naming the file, the registry key and the
        field, never a value: the file holds secrets, and so may a mistyped field.
        """
        if self._given is not None:
            return self._given
        path = self.config_path()
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
            self.secrets.update(secret_forms(user or "", password))
        if user and password:
            return Credentials(user, password, str(path))
        auth = entry.get("auth")
        token = entry.get("identitytoken")
        if isinstance(token, str) and token:
            self.secrets.add(token)
        if isinstance(auth, str):
            self.secrets.update({auth, auth.rstrip("=")})
        if auth:
            try:
                if not isinstance(auth, str):
                    raise ValueError
                user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
            except (ValueError, binascii.Error):
                raise RegistryError(f"{where}.auth is not base64 of user:password") from None
            if sep and user and password:
                self.secrets.update(secret_forms(user, password))
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
            self.secrets.add(proc.stdout.decode(errors="replace").strip())
            raise RegistryAuthError(f"{binary} answered for {self.host} with something that is not "
                                    '{"Username": …, "Secret": …} JSON') from None
        self.secrets.update(secret_forms(user, secret))
        return Credentials(user, secret, binary)

    def log_in(self, session: requests.Session, url: str, challenge: requests.Response,
               insecure: bool) -> oras.auth.BasicAuth | oras.auth.TokenAuth | None:
        """Answer the 401 ``challenge`` of ``GET url`` (the ``/v2/`` ping) with this host's
        credentials: the oras backend the registry accepted them through, or None for
        anonymous Bearer tokens (public pulls; oras asks for them per request).

        RegistryAuthError when a login is needed and there is none, the scheme is neither
        Basic nor Bearer, or the credentials are refused; a requests error is raised as it
        is, for the caller to report with its own scrubbed reason.
        """
        header = challenge.headers.get("Www-Authenticate", "")
        scheme = header.split(" ", 1)[0].lower()
        creds = self.credentials()
        if creds is None:
            if scheme == "bearer":
                return None  # anonymous tokens (public pulls); oras asks for them per request
            raise RegistryAuthError(
                f"registry {self.host} requires a login and {self.config_path()} has none for it "
                f"(run: docker login {self.host})"
            )
        if scheme not in ("basic", "bearer"):
            raise RegistryAuthError(f"registry {self.host} asks for {scheme or 'unknown'} auth, which forge does not speak")
        if scheme == "basic":
            backend = oras.auth.get_auth_backend("basic", session, insecure)
            backend.set_basic_auth(creds.user, creds.password)
            ok = session.get(url, headers=backend.get_auth_header()).status_code == 200
        else:
            backend = oras.auth.get_auth_backend("token", session, insecure)
            backend.set_basic_auth(creds.user, creds.password)
            headers, changed = backend.authenticate_request(challenge, {})
            ok = changed and session.get(url, headers=headers).status_code == 200
        if not ok:
            raise RegistryAuthError(f"registry {self.host} refused the credentials of user {creds.user!r} from {creds.source}")
        return backend
