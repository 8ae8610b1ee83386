"""Image references and the credentials a URL may carry, taken apart in one place.

``parse_reference`` splits ``host/repo[:tag][@digest]`` (the host is required: no implied
Docker Hub); ``split_credentials`` takes ``user:password@`` out of a URL the moment it is
read, ``redact_url`` shows one safely and ``scrub`` cleans text forge did not write (a
library's exception) of every secret it knows. Pure: no I/O, so the registry client
(core/oci/registry_client.py), the remote cache and the CLI share one reading of a reference.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from forge.core.cas import split_digest
from forge.core.errors import CacheError, RegistryError

_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Reference:
    """``registry/repository[:tag][@digest]``, split."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


# -- credentials in URLs: taken apart in one place, never shown ----------------------------

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_DIGEST = re.compile(r"(?:sha256|sha384|sha512|blake3):[A-Za-z0-9=_-]*")
_HOSTISH = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]+)?(?=/|$)")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@'\"]*)"
                           r"(?P<password>:[^/\s@'\"]*)?@")
MIN_SCRUBBED = 4  # shorter secrets are not searched for in foreign text (it would be noise)


def _split_userinfo(text: str) -> tuple[str, str | None, str]:
    """``[scheme://][userinfo@]rest`` -> (``scheme://`` or "", userinfo or None, rest).

    The userinfo ends at the last ``@`` that is not a digest's (``…/repo@sha256:…``), so
    an unencoded ``@`` or ``/`` in a password still counts as password. An ``@`` after
    the first ``/`` counts only when what follows looks like a host (``host[:port]/…``,
    or a name with a dot or port), so ``host/repo@latest`` stays an ordinary, if wrong,
    reference.
    """
    m = _SCHEME.match(text)
    prefix = m.group(0) if m else ""
    body = text[len(prefix):]
    tail = ""
    at = body.rfind("@")
    if at >= 0 and "/" in body[:at] and _DIGEST.fullmatch(body[at + 1:]):  # host/repo@sha256:…
        body, tail = body[:at], body[at:]
    at = body.rfind("@")
    if at < 0:
        return prefix, None, body + tail
    before, after = body[:at], body[at + 1:]
    if "/" in before:
        host = _HOSTISH.match(after)
        if host is None or not (after[host.end():].startswith("/") or "." in host.group(0)
                                or ":" in host.group(0) or host.group(0) == "localhost"):
            return prefix, None, body + tail
    return prefix, before, after + tail


def split_credentials(text: str) -> tuple[str, str | None, str | None]:
    """``[scheme://][user[:password]@]host/…`` -> (the text without ``user[:password]@``,
    the user, the password), both percent-decoded; (text, None, None) when it has none."""
    prefix, userinfo, rest = _split_userinfo(text)
    if userinfo is None:
        return text, None, None
    user, sep, password = userinfo.partition(":")
    return prefix + rest, unquote(user), unquote(password) if sep else None


def redact_url(text: str) -> str:
    """The URL or reference as it may be shown: ``user:***@host/…`` (``***@host/…`` when
    there is a user part but no password: that lone part may well be a token)."""
    prefix, userinfo, rest = _split_userinfo(text)
    if userinfo is None:
        return text
    user, sep, _ = userinfo.partition(":")
    return f"{prefix}{user}:***@{rest}" if sep else f"{prefix}***@{rest}"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` (a message forge did not write) with every one of ``secrets`` replaced by
    ``***`` and the user part of every ``scheme://user:password@`` URL in it redacted."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SCRUBBED}, key=len, reverse=True):
        text = text.replace(secret, "***")

    def userinfo(m: re.Match) -> str:
        if m.group("password") is not None:
            return f"{m.group('scheme')}{m.group('user')}:***@"
        return f"{m.group('scheme')}***@"

    return _URL_USERINFO.sub(userinfo, text)


def secret_forms(user: str, password: str) -> tuple[str, ...]:
    """The ways a password can show up in text: as is, percent-encoded, and inside the
    base64 ``user:password`` of a Basic header or a Docker config ``auth``."""
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    return (password, quote(password, safe=""), basic, basic.rstrip("="))


def parse_reference(ref: str) -> Reference:
    """Parse ``host/repo[:tag][@sha256:...]``; the host is required (no implied Docker Hub).

    A reference with a user part (``user:pw@host/repo``) is refused, password redacted:
    registries are logged into through the Docker config, never through a reference.
    """
    _, userinfo, rest = _split_userinfo(ref)
    if userinfo is not None:
        host = rest.split("/", 1)[0]
        raise RegistryError(
            f"{redact_url(ref)!r}: an image reference cannot carry credentials; forge logs in "
            f"with the Docker config (run: docker login {host}) and never needs them in a name"
        )
    name, _, digest = ref.partition("@")
    tag = None
    slash, colon = name.rfind("/"), name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    host, _, repo = name.partition("/")
    if not repo or not ("." in host or ":" in host or host == "localhost"):
        raise RegistryError(
            f"{ref!r} names no registry host; write it in full, e.g. 127.0.0.1:5000/{name} "
            f"or docker.io/library/{name}"
        )
    if digest:
        try:
            split_digest(digest)
        except CacheError:
            raise RegistryError(f"{ref!r}: {digest!r} is not a sha256:<64 hex> digest") from None
    if host in _DOCKER_HUB and "/" not in repo:
        repo = "library/" + repo
    return Reference(host, repo, tag or None, digest or None)


def _is_loopback(host: str) -> bool:
    if host.startswith("["):  # [::1]:5000
        name = host[1 : host.find("]")]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in ("localhost", "::1") or name.startswith("127.")
