"""``forge.supply``: the supply chain of images — SBOMs, provenance, signatures and OCI
1.1 referrers — for plugins and rules (the built-in ``supply_chain`` plugin uses it)::

    state = forge.supply.sbom.scan(rc.cas, image)                 # dpkg data from the layers
    spdx = forge.supply.sbom.spdx_json(subject, forge.supply.sbom.packages(rc.cas, state), ...)
    key = forge.supply.signing.load_signing_key("env:FORGE_SIGNING_KEY")
    forge.supply.referrers.push_referrer(client, cas, repo, artifact)

Namespaces (each a module, loaded on first use):

- ``sbom``: package state from layers, SPDX 2.3 / CycloneDX 1.6 documents (validated),
  drafts about a placeholder digest and ``bind`` to put the image's in;
- ``provenance``: the SLSA v1 statement of an image from its action graph;
- ``signing``: ECDSA P-256 keys, DER signatures that ``openssl dgst -sha256 -verify``
  checks;
- ``referrers``: artifact manifests with ``subject``, pushed with the referrers API or
  the tag-schema fallback, listed, and kept in OCI layouts;
- ``AttachContext``: what ``forge_attach_actions`` implementations get.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forge._lazy import lazy_getattr

_LAZY: dict[str, tuple[str, str | None]] = {
    "sbom": ("forge.core.sbom", None),
    "provenance": ("forge.core.provenance", None),
    "signing": ("forge.core.signing", None),
    "referrers": ("forge.core.referrers", None),
    "AttachContext": ("forge.core.attach", "AttachContext"),
}

__all__ = list(_LAZY)

__getattr__ = lazy_getattr(globals(), "forge.supply", _LAZY)

if TYPE_CHECKING:  # for type checkers and IDEs
    from forge.core import provenance, referrers, sbom, signing  # noqa: F401
    from forge.core.attach import AttachContext  # noqa: F401
