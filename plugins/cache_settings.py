"""The remote cache's settings: ``[remote_cache]`` in WORKSPACE.toml with the command
line's overrides, read into one ``CacheSettings`` (``settings_for``), and the cache URL
parsed into host, repository, plain HTTP and credentials (``parse_url``).

Pure: no request leaves here. The backend these settings configure is
plugins/oci_cache.py; ``forge cache push`` (plugins/cache_push.py) reads them with the
write switch forced on.

Credentials. The registry login comes from the Docker config (``auths``, ``credHelpers``,
``credsStore``; see ``forge.oci.RegistryClient``). A URL may carry one too,
``[scheme://]user:password@host/repo`` (percent-encode ``@ : /`` in either part), for a
CI job that gets its token as a secret: it is taken out of the URL as soon as the URL is
read (``settings_for``, ``parse_url``), handed to the client as ``Credentials`` and used
instead of the Docker config's for that host; from then on only ``host/repo`` exists as a
string (``describe()``, every warning and error). Where the URL as written must be shown
(a URL that does not parse), it is shown redacted, ``user:***@host/repo``. A user part
without a password is refused, shown as ``***@host/repo`` (it is usually a token pasted
in the wrong place). URL credentials are supported, but WORKSPACE.toml is usually
committed: keep passwords in the Docker config, or pass them from the CI's secret store
with ``--remote-cache``. The backend scrubs every exception it raises
(plugins/oci_cache.py), so a secret the client knows cannot leave that way either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import forge
from forge import ConfigError, RegistryError

if TYPE_CHECKING:
    from forge import Workspace


@dataclass(frozen=True, repr=False)
class CacheSettings:
    """Where the remote cache is and what this build may do with it. ``settings_for``
    takes credentials out of the URL into ``credentials``; the repr redacts both."""

    url: str
    read: bool = True
    write: bool = False
    insecure: bool = False
    credentials: forge.oci.Credentials | None = None
    signing_key: str = ""  # a key spec (PEM path or env:NAME): writers sign their records
    trusted_keys: tuple[str, ...] = ()  # key specs: readers restore only records they signed
    root: str = field(default="", compare=False)  # what relative key paths are relative to

    def __repr__(self) -> str:
        login = f", credentials of user {self.credentials.user!r}" if self.credentials else ""
        signing = f", signing_key={self.signing_key!r}" if self.signing_key else ""
        trusted = f", {len(self.trusted_keys)} trusted key(s)" if self.trusted_keys else ""
        return (f"CacheSettings({forge.oci.redact_url(self.url)!r}, read={self.read}, write={self.write}, "
                f"insecure={self.insecure}{login}{signing}{trusted})")


@dataclass(frozen=True)
class CacheLocation:
    """A parsed remote cache URL: registry host, repository, plain HTTP (None: decide by
    host) and the credentials the URL carried (already out of every string)."""

    host: str
    repo: str
    insecure: bool | None
    credentials: forge.oci.Credentials | None = field(default=None, repr=False)


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
    credentials = parse_url(url).credentials  # checks the URL, showing it redacted if not
    if credentials is not None:
        url = take_credentials(url)[0]
    return CacheSettings(url, bool(read), bool(write), insecure, credentials,
                         signing_key=str(section.get("signing_key") or ""),
                         trusted_keys=tuple(section.get("trusted_keys") or ()),
                         root=str(workspace.root))


def take_credentials(url: str) -> tuple[str, forge.oci.Credentials | None]:
    """``url`` without its ``user:password@`` part, and that part as Credentials."""
    bare, user, password = forge.oci.split_credentials(url)
    if user is None:
        return url, None
    if not user or not password:
        raise ConfigError(
            f"remote cache URL {forge.oci.redact_url(url)!r} has a user part but no user:password; give "
            "both (percent-encoded), or log in with `docker login HOST` and leave the URL bare")
    return bare, forge.oci.Credentials(user, password, "the remote cache URL")


def parse_url(url: str) -> CacheLocation:
    """``[scheme://][user:password@]host/repository`` -> its CacheLocation. Every message
    shows the URL redacted."""
    shown = forge.oci.redact_url(url)
    bare, credentials = take_credentials(url)
    scheme, sep, rest = bare.partition("://")
    if not sep:
        scheme, rest = "", bare
    if scheme not in ("", "oci", "http", "https"):
        raise ConfigError(f"remote cache URL {shown!r}: scheme {scheme!r} is not one of oci://, http://, https://")
    try:
        ref = forge.oci.parse_reference(rest.rstrip("/"))
    except RegistryError as exc:
        raise ConfigError(f"remote cache URL {shown!r}: {exc}") from None
    if ref.tag or ref.digest:
        raise ConfigError(
            f"remote cache URL {shown!r} names a tag or digest; give the repository only "
            f"(e.g. {ref.registry}/{ref.repository}): forge tags it with action keys"
        )
    insecure = {"http": True, "https": False}.get(scheme)
    return CacheLocation(ref.registry, ref.repository, insecure, credentials)


def split_url(url: str) -> tuple[str, str, bool | None]:
    """``[scheme://][user:password@]host/repository`` -> (host, repository, insecure or
    None for auto); see ``parse_url`` for the credentials."""
    loc = parse_url(url)
    return loc.host, loc.repo, loc.insecure
