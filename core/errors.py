"""Every mistake a user can make has its own exception class under ForgeError.

The CLI prints a ForgeError as one message without a traceback (``-v`` shows it) and
exits with the class's ``exit_code``: 2 for usage, BUILD and configuration mistakes,
1 for a build that failed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ForgeError(Exception):
    """Base of every error forge reports to a user."""

    exit_code = 2


class UsageError(ForgeError):
    """A command line that cannot be carried out."""


class ConfigError(ForgeError):
    """WORKSPACE.toml or a plugin table is wrong."""


class LabelError(ForgeError):
    """A label or target pattern does not parse or names nothing."""


class BuildFileError(ForgeError):
    """A BUILD or .star file fails to evaluate, or calls a rule wrongly."""


class AttributeError_(ForgeError):
    """A rule was given an unknown attribute or a value of the wrong type."""


class AnalysisError(ForgeError):
    """A rule could not turn its attributes into actions (includes cycles)."""


class CycleError(AnalysisError):
    """Targets or actions depend on themselves; the message is the chain."""


class PlatformError(ForgeError):
    """An unknown platform, or one the host cannot run and nothing can emulate."""


class ActionFailed(ForgeError):
    """An action ran and failed; the build stops (or goes on with --keep-going)."""

    exit_code = 1


class CacheError(ForgeError):
    """The local cache is unusable (not a corrupt blob: those are evicted silently)."""

    exit_code = 1


class RemoteCacheError(ForgeError):
    """A remote cache failed; forge warns and builds locally unless told otherwise."""

    exit_code = 1


class RemoteEntryInvalid(RemoteCacheError):
    """One remote cache entry is corrupt or unverifiable: a miss (one warning naming the
    key), never a reason to stop using the backend."""


class ExecutorError(ForgeError):
    """An executor (the Docker engine) is missing or does not answer."""

    exit_code = 1


class RegistryError(ForgeError):
    """A registry refused, could not be reached, or served bad content."""

    exit_code = 1


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


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest candidate, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
