"""OCI 1.1 referrers: artifacts that point at an image (``subject``), in a registry and in
an OCI layout.

An *artifact* here is an OCI image manifest with ``artifactType``, the empty config
(``application/vnd.oci.empty.v1+json``, the two bytes ``{}``), its blobs as layers and a
``subject`` descriptor naming the image it is about (an SBOM, a provenance statement, a
signature). forge writes them as canonical JSON: equal content, equal digest.

Registry. ``push_referrer`` uploads the blobs the repository lacks, then the manifest by
digest. A registry with the referrers API answers that PUT with an ``OCI-Subject``
header and indexes it itself; one without (the CNCF distribution registry 2.8,
Debian's docker-registry) gets the *referrers tag schema* of the distribution spec
1.1: the tag ``sha256-<hex of the subject digest>`` names an OCI index whose
``manifests`` list the referrers (descriptor, ``artifactType``, ``annotations``); forge
reads it, adds the new descriptor if it is not there, and PUTs it back. Two writers
updating the same fallback index at the same moment can lose one entry (the registry
has no conditional PUT; the spec accepts this); pushing again restores it.
``list_referrers`` asks ``GET /v2/<repo>/referrers/<digest>`` and, on 404 (no such API),
reads the fallback tag.

Layout. ``add_to_layout`` writes the artifacts' blobs into an image layout directory and
lists the artifact manifests in its ``index.json`` beside the image (the layout spec's
way, and what ``oras cp --to-oci-layout`` writes): ``layout_referrers`` reads them back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forge.core.canonical import canonical_json
from forge.core.cas import CAS, Descriptor, sha256_digest, split_digest
from forge.core.errors import RegistryError
from forge.core.fsutil import write_atomic
from forge.core.oci import media

EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class Blob:
    """One layer of an artifact: its bytes' descriptor and annotations."""

    descriptor: Descriptor
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.descriptor.media_type,
                               "digest": self.descriptor.digest, "size": self.descriptor.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Artifact:
    """An artifact manifest's bytes and what a referrers index says of it."""

    manifest: bytes
    artifact_type: str
    annotations: Mapping[str, str]
    blobs: tuple[str, ...]  # digests of the config and layers

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    def descriptor(self) -> dict[str, Any]:
        """The entry of a referrers index (and of a layout's index.json) for it."""
        out: dict[str, Any] = {"mediaType": media.OCI_MANIFEST, "digest": self.digest,
                               "size": len(self.manifest), "artifactType": self.artifact_type}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def make_artifact(cas: CAS, artifact_type: str, blobs: Iterable[Blob], subject: Mapping[str, Any],
                  annotations: Mapping[str, str] | None = None) -> Artifact:
    """An artifact manifest over ``blobs`` (already in ``cas``) about ``subject`` (an OCI
    descriptor dict: mediaType, digest, size); the empty config is put in ``cas`` too."""
    config = cas.put_bytes(EMPTY_CONFIG)
    layers = list(blobs)
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config.digest, "size": config.size},
        "layers": [b.to_json() for b in layers],
        "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
    }
    if annotations:
        doc["annotations"] = dict(annotations)
    data = canonical_json(doc)
    cas.put_bytes(data)
    return Artifact(data, artifact_type, dict(annotations or {}),
                    (config.digest, *(b.descriptor.digest for b in layers)))


def fallback_tag(digest: str) -> str:
    """The referrers tag schema's tag for a subject: ``sha256:ab…`` -> ``sha256-ab…``."""
    alg, hexpart = split_digest(digest)
    return f"{alg}-{hexpart}"


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": []}


def push_referrer(client: Any, cas: CAS, repo: str, artifact: Artifact) -> bool:
    """Push ``artifact`` (its blobs in ``cas``) to ``repo`` as a referrer of its subject.
    Returns True when the registry indexed it itself (the referrers API), False when the
    fallback tag was updated."""
    for digest in artifact.blobs:
        client.push_blob(cas, repo, digest)
    digest = artifact.digest
    what = f"push of referrer {digest} to {client.host}/{repo}"
    response = client._request(what, client._api(repo, "manifests", digest), "PUT",
                               data=artifact.manifest, headers={"Content-Type": media.OCI_MANIFEST})
    if response.status_code not in (200, 201):
        raise client._fail(what, response)
    if response.headers.get("OCI-Subject"):
        return True
    subject = json.loads(artifact.manifest)["subject"]["digest"]
    tag = fallback_tag(subject)
    index = _fallback_index(client, repo, tag) or _empty_index()
    entries = index.setdefault("manifests", [])
    if not any(e.get("digest") == digest for e in entries):
        entries.append(artifact.descriptor())
        data = canonical_json(index)
        client.push_manifest(repo, tag, data, media.OCI_INDEX)
    return False


def _fallback_index(client: Any, repo: str, tag: str) -> dict[str, Any] | None:
    from forge.core.errors import ManifestUnknown

    try:
        data, media_type, _ = client.get_manifest(repo, tag)
    except ManifestUnknown:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or media_type not in media.INDEX_TYPES:
        raise RegistryError(f"{client.host}/{repo}:{tag} is not an OCI index, so it cannot be the "
                            "referrers fallback index; delete or move that tag")
    return doc


def list_referrers(client: Any, repo: str, digest: str,
                   artifact_type: str | None = None) -> list[dict[str, Any]]:
    """The referrer descriptors of ``digest`` in ``repo``: from the referrers API, else
    (404: the registry has none) from the fallback tag; ``artifact_type`` filters."""
    what = f"referrers of {client.host}/{repo}@{digest}"
    response = client._request(what, client._api(repo, "referrers", digest),
                               headers={"Accept": media.OCI_INDEX})
    entries: list[dict[str, Any]]
    if response.status_code == 200 and "json" in response.headers.get("Content-Type", "json"):
        try:
            entries = list(json.loads(response.content).get("manifests") or [])
        except (ValueError, AttributeError):
            raise RegistryError(f"{what}: the registry answered with something that is not an "
                                "OCI index") from None
    elif response.status_code in (404, 405, 400):
        index = _fallback_index(client, repo, fallback_tag(digest))
        entries = list((index or {}).get("manifests") or [])
    else:
        raise client._fail(what, response)
    if artifact_type is not None:
        entries = [e for e in entries if e.get("artifactType") == artifact_type]
    return entries


# -- OCI layouts ---------------------------------------------------------------------------


def add_to_layout(cas: CAS, dest: Path, artifacts: Iterable[Artifact]) -> None:
    """Copy ``artifacts`` (manifests and blobs, from ``cas``) into the layout at ``dest``
    and list them in its ``index.json`` after the image entries (replacing earlier
    referrer entries, so the layout holds exactly this build's)."""
    dest = Path(dest)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    artifacts = list(artifacts)
    for artifact in artifacts:
        for digest in (*artifact.blobs, artifact.digest):
            cas.copy_out(digest, blobs / split_digest(digest)[1])
    index_path = dest / "index.json"
    index = json.loads(index_path.read_bytes())
    kept = [e for e in index.get("manifests") or [] if "artifactType" not in e]
    index["manifests"] = kept + [a.descriptor() for a in artifacts]
    write_atomic(index_path, canonical_json(index))


def layout_referrers(dest: Path, digest: str) -> list[tuple[dict[str, Any], bytes]]:
    """(descriptor, manifest bytes) of every artifact in the layout whose subject is
    ``digest``; each manifest is checked against its digest."""
    dest = Path(dest)
    out = []
    for entry in json.loads((dest / "index.json").read_bytes()).get("manifests") or []:
        if "artifactType" not in entry:
            continue
        data = (dest / "blobs" / "sha256" / split_digest(entry["digest"])[1]).read_bytes()
        if sha256_digest(data) != entry["digest"]:
            raise RegistryError(f"{dest}: referrer {entry['digest']} is corrupt")
        if (json.loads(data).get("subject") or {}).get("digest") == digest:
            out.append((entry, data))
    return out
