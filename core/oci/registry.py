"""The registry names the tests import from here, from when one module held them all.

The registry code is split by concept; new code imports from where a name lives:

- ``registry_auth``: ``Credentials``; the Docker config, credential helpers and the Basic
  or Bearer login of one host (``HostAuth``), and the secrets they teach the client;
- ``registry_client``: ``RegistryClient``, oras-py with forge's timeouts, retries and
  scope refresh; blob and manifest calls, resumable uploads and downloads;
- ``registry_transfer``: whole images and indexes, by repository (``RegistryClient.push``
  / ``pull``) and by reference (``push_image`` / ``pull_image``);
- ``reference``: image references, URL credentials, ``redact_url`` and ``scrub``;
- ``forge.core.errors``: the exceptions, all under ``RegistryError``.
"""

from __future__ import annotations

from forge.core.errors import (
    ContentMismatch,
    ManifestUnknown,
    RegistryAuthError,
    RegistryHTTPError,
    UnpinnedReference,
)
from forge.core.oci.reference import parse_reference, redact_url, scrub, split_credentials
from forge.core.oci.registry_auth import Credentials
from forge.core.oci.registry_client import RegistryClient
from forge.core.oci.registry_transfer import pull_image, push_image

__all__ = [
    "ContentMismatch",
    "Credentials",
    "ManifestUnknown",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryHTTPError",
    "UnpinnedReference",
    "parse_reference",
    "pull_image",
    "push_image",
    "redact_url",
    "scrub",
    "split_credentials",
]
