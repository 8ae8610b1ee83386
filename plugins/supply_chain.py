"""The supply chain of images: SBOMs, SLSA provenance and signatures, as OCI 1.1 referrers.

Configured in WORKSPACE.toml (all off by default: a build without them is unchanged)::

    [plugins.supply_chain]
    sbom = true                            # SPDX 2.3 + CycloneDX 1.6 of every image target built
    provenance = true                      # an in-toto SLSA v1 statement of every image target built
    signing_key = "env:FORGE_SIGNING_KEY"  # or a PEM file: signs what forge-out and forge push hold
    builder_id = "https://ci.example.com/forge-runner"  # provenance runDetails.builder.id
    validate = true                        # validate each SBOM with its library when written

What it adds, and where:

* **Actions** (``forge_attach_actions``), for every requested image target: the SBOM
  in four steps — ``ImagePackages`` (the image's dpkg state: its layers streamed once,
  starting from the ``ImagePackages`` scan of the image target it is built on, so a
  production image's scan reads only the layers its base lacks), ``SbomPackages`` (that
  state less the digests of the layers it covers), ``SbomDraft`` (both documents of
  those packages, written and validated by their libraries, about a placeholder digest;
  keyed by the packages, so an edit that leaves them as they were does not re-run it)
  and ``Sbom`` (the drafts with the image's digest put in: milliseconds) — and
  ``Provenance`` (every action of the image's graph is a dependency, every source file
  an input). All are ordinary cached actions: a no-op build costs a
  key and a cache hit each, and nothing runs.
* **forge-out** (``forge_target_materialized``): ``sbom.spdx.json``, ``sbom.cdx.json``,
  ``provenance.intoto.json`` beside the layout, and the same documents as referrer
  artifacts in the layout's ``index.json`` (plus a signature artifact when a key is set).
* **forge push** (``forge_target_pushed``): the referrers follow the image to the
  registry (the referrers API, or the ``sha256-<hex>`` tag-schema fallback).
* **Commands**: ``forge query sbom LABEL [--format spdx|cyclonedx]``, ``forge query
  provenance LABEL`` (build what they need, whatever the configuration says) and
  ``forge verify IMAGE-REF --key pub.pem``.

Artifacts (subject = the image manifest; config = the OCI empty descriptor):

=================================================  =========================================
artifactType                                       layer(s)
=================================================  =========================================
``application/spdx+json``                          ``sbom.spdx.json``
``application/vnd.cyclonedx+json``                 ``sbom.cdx.json``
``application/vnd.in-toto+json``                   ``provenance.intoto.json`` (annotated with
                                                   ``in-toto.io/predicate-type``)
``application/vnd.dev.forge.signature.v1``         one DER signature per signed blob
                                                   (``application/vnd.dev.forge.signature.v1+der``):
                                                   the image manifest, each document
=================================================  =========================================

Each signature layer says what it signs: ``dev.forge.signature.payload`` (the digest of
the signed blob) and ``dev.forge.signature.payload-type`` (its media type); the artifact
says who: ``dev.forge.signature.key-id`` and ``dev.forge.signature.algorithm``
(``ecdsa-p256-sha256``). ``openssl dgst -sha256 -verify pub.pem -signature
manifest.json.sig manifest.json`` checks one (see ``forge.supply.signing``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import forge

SIGNATURE_ARTIFACT_TYPE = "application/vnd.dev.forge.signature.v1"
SIGNATURE_MEDIA_TYPE = "application/vnd.dev.forge.signature.v1+der"
PAYLOAD = "dev.forge.signature.payload"
PAYLOAD_TYPE = "dev.forge.signature.payload-type"
KEY_ID = "dev.forge.signature.key-id"
ALGORITHM = "dev.forge.signature.algorithm"
PREDICATE_TYPE_ANNOTATION = "in-toto.io/predicate-type"
TITLE = "org.opencontainers.image.title"

CONFIG: dict[str, type] = {"sbom": bool, "provenance": bool, "signing_key": str, "builder_id": str,
                           "validate": bool}
SBOM, SBOM_DRAFT, SBOM_PACKAGES, PACKAGES, PROVENANCE = (
    "Sbom", "SbomDraft", "SbomPackages", "ImagePackages", "Provenance")
FILES = {"spdx": "sbom.spdx.json", "cyclonedx": "sbom.cdx.json", "provenance": "provenance.intoto.json"}


@dataclass(frozen=True)
class Settings:
    sbom: bool = False
    provenance: bool = False
    signing_key: str = ""
    builder_id: str = ""
    validate: bool = True  # validate each SBOM with its library as it is written


def _table(workspace: Any) -> dict[str, Any]:
    tables = getattr(workspace, "plugin_tables", {}) or {}
    return dict(tables.get("supply_chain") or tables.get("forge.plugins.supply_chain") or {})


def settings(workspace: Any, options: dict[str, Any] | None = None) -> Settings:
    """``[plugins.supply_chain]``, with what a command forces (``options["supply_chain"]``)."""
    table = {**_table(workspace), **((options or {}).get("supply_chain") or {})}
    return Settings(bool(table.get("sbom")), bool(table.get("provenance")),
                    str(table.get("signing_key") or ""), str(table.get("builder_id") or ""),
                    bool(table.get("validate", True)))


@forge.hookimpl
def forge_configure(workspace: Any, config: dict[str, Any]) -> None:
    """Check ``[plugins.supply_chain]``: known keys, right types, a signing key that loads."""
    where = "WORKSPACE.toml [plugins.supply_chain]"
    for key, value in config.items():
        if key not in CONFIG:
            raise forge.ConfigError(f"{where}: unknown key {key!r}{forge.did_you_mean(key, CONFIG)}; "
                                    f"keys: {', '.join(CONFIG)}")
        if not isinstance(value, CONFIG[key]):
            raise forge.ConfigError(f"{where}: {key} must be a {CONFIG[key].__name__}, "
                                    f"not {type(value).__name__}")


def _signing_key(workspace: Any, s: Settings) -> Any:
    if not s.signing_key:
        return None
    return forge.supply.signing.load_signing_key(s.signing_key, Path(workspace.root),
                                                  what="[plugins.supply_chain] signing_key")


# -- actions ---------------------------------------------------------------------------------


def _image_deps(ctx: Any, target: Any) -> list[Any]:
    return [d for d in ctx.dependencies(target) if forge.ImageInfo in d]


def _packages_action(ctx: Any, target: Any) -> forge.Action:
    """The package scan of an image target: the requested one's, and those of the image
    targets it is built on (memoized per build: two images on one base share it)."""
    key = ("supply_chain.packages", target.label)
    if key not in ctx.memo:
        info = target[forge.ImageInfo]
        ctx.memo[key] = ctx.action(
            target, PACKAGES, scan_packages, deps=[info.action, *_base_scans(ctx, target)],
            description="dpkg database of the image")
    return ctx.memo[key]


def _base_scans(ctx: Any, target: Any) -> list[forge.Action]:
    return [_packages_action(ctx, d) for d in _image_deps(ctx, target)]


@forge.hookimpl
def forge_attach_actions(target: Any, ctx: Any) -> list[forge.Action] | None:
    """An image target gets its SBOM and provenance; an index target, those of each of
    its images (as buildx attests each platform of a multi-platform push)."""
    s = settings(ctx.workspace, ctx.options)
    if not (s.sbom or s.provenance):
        return None
    if forge.ImageInfo in target:
        return _image_attachments(ctx, target, s)
    if forge.IndexInfo in target:
        return [a for child in ctx.dependencies(target) if forge.ImageInfo in child
                for a in _image_attachments(ctx, child, s)]
    return None


def _image_attachments(ctx: Any, target: Any, s: Any) -> list[forge.Action]:
    """The Sbom and Provenance actions of one image target (declared once per build:
    an image requested itself and through an index shares them)."""
    key = ("supply_chain.attachments", target.label)
    if key not in ctx.memo:
        ctx.memo[key] = _declare_attachments(ctx, target, s)
    return ctx.memo[key]


def _declare_attachments(ctx: Any, target: Any, s: Any) -> list[forge.Action]:
    info = target[forge.ImageInfo]
    out = []
    if s.sbom:
        # Four actions, so that an edit that changes the image but not its packages (most
        # edits: what the SBOM lists is the dpkg database) re-runs only the scan and the
        # binding, milliseconds apart from the scan: the draft is keyed by the packages
        # (the scan's state less the layer digests it covers), not by the image.
        packages = ctx.action(target, SBOM_PACKAGES, package_contents,
                              deps=[_packages_action(ctx, target)],
                              description="the image's package state, without its layer digests")
        draft = ctx.action(
            target, SBOM_DRAFT, draft_sbom, deps=[packages],
            # the documents' created time is the build's epoch
            timestamps=True, platform=info.platform,
            params={"target": str(target.label), "validate": s.validate,
                    "tool": f"forge-{forge.__version__}"},
            description="SPDX 2.3 + CycloneDX 1.6 of the packages, validated")
        out.append(ctx.action(  # the created time is the draft's
            target, SBOM, bind_sbom, deps=[info.action, draft], platform=info.platform,
            params={"target": str(target.label)},
            description="SPDX 2.3 + CycloneDX 1.6"))
    if s.provenance:
        provenance = forge.supply.provenance
        graph = provenance.graph_of(info.action)
        out.append(ctx.action(
            target, PROVENANCE, write_provenance, deps=graph, inputs=provenance.graph_sources(graph),
            platform=info.platform,
            params={"target": str(target.label), "rule": target.rule_name,
                    "builder_id": s.builder_id or provenance.DEFAULT_BUILDER,
                    "forge_version": forge.__version__, **provenance.graph_params(info.action, graph)},
            description="SLSA v1 provenance"))
    return out


def scan_packages(rc: forge.RunContext) -> forge.ActionResult:
    """``ImagePackages``: the image's package state, from the longest base scan that is a
    prefix of it, plus its own layers."""
    sbom = forge.supply.sbom
    image = forge.dep_image(rc, rc.action.deps[0])
    starts = [sbom.PackageState.from_bytes(rc.cas.read_bytes(rc.dep(d).outputs["state"].digest))
              for d in rc.action.deps[1:]]
    start = sbom.common_prefix_state(image, starts)
    state = sbom.scan(rc.cas, image, start)
    rc.log(f"read {len(image.layers) - len(start.layers) if start else len(image.layers)} of "
           f"{len(image.layers)} layers ({len(start.layers) if start else 0} from the base's scan)")
    # the platform of the image's config, for the documents (a fact of the result, so in
    # the key of the draft that reads it)
    return _state_result(rc, state, {"platform": str(image.platform or "")})


def _state_result(rc: forge.RunContext, state: Any, metadata: dict[str, Any]) -> forge.ActionResult:
    sbom = forge.supply.sbom
    blobs = [forge.Descriptor(d, rc.cas.size(d)) for d in state.blobs()]
    return rc.result({"state": rc.cas.put_bytes(state.to_bytes()).typed(sbom.STATE_MEDIA_TYPE)},
                     blobs=blobs, metadata=metadata)


def package_contents(rc: forge.RunContext) -> forge.ActionResult:
    """``SbomPackages``: the state of the ``ImagePackages`` dependency without the layer
    digests it covers (which only a scan of a derived image needs), so that what depends
    on it depends on the packages and files alone."""
    sbom = forge.supply.sbom
    scanned = rc.dep(rc.action.deps[0])
    state = sbom.PackageState.from_bytes(rc.cas.read_bytes(scanned.outputs["state"].digest))
    return _state_result(rc, sbom.PackageState([], state.entries, state.hashes), dict(scanned.metadata))


def draft_sbom(rc: forge.RunContext) -> forge.ActionResult:
    """``SbomDraft``: the SPDX and CycloneDX documents of a package state (the one
    dependency, ``SbomPackages``), written by their libraries and validated by them,
    about the image target of the params with ``PLACEHOLDER_DIGEST`` for its digest."""
    sbom = forge.supply.sbom
    scanned = rc.dep(rc.action.deps[0])
    state = sbom.PackageState.from_bytes(rc.cas.read_bytes(scanned.outputs["state"].digest))
    packages = sbom.packages(rc.cas, state)
    platform = scanned.metadata["platform"]
    subject = sbom.draft_subject(rc.params["target"], platform, rc.epoch)
    distro = sbom.os_release(rc.cas, state)
    tool, validate = rc.params["tool"], rc.params["validate"]
    outputs = {
        "spdx": rc.cas.put_bytes(sbom.spdx_json(
            subject, packages, distro, state.hashes, tool, validate=validate)).typed(sbom.SPDX_MEDIA_TYPE),
        "cyclonedx": rc.cas.put_bytes(sbom.cyclonedx_json(
            subject, packages, distro, state.hashes, tool, validate=validate)).typed(sbom.CYCLONEDX_MEDIA_TYPE)}
    rc.log(f"{len(packages)} packages, {sum(len(p.md5sums) for p in packages)} files named by status.d"
           + ("" if validate else "; not validated (validate = false)"))
    return rc.result(outputs, metadata={"packages": len(packages), "platform": platform})


def bind_sbom(rc: forge.RunContext) -> forge.ActionResult:
    """``Sbom``: the drafts (second dependency) about the image (first): its digest in
    the fields that derive from it (``forge.supply.sbom.bind``, which reads no epoch)."""
    sbom = forge.supply.sbom
    image, draft = (rc.dep(d) for d in rc.action.deps)
    subject = sbom.ImageSubject(rc.params["target"], image.outputs["manifest"].digest,
                                draft.metadata["platform"])
    outputs = {kind: rc.cas.put_bytes(sbom.bind(kind, rc.cas.read_bytes(d.digest), subject)).typed(d.media_type)
               for kind, d in draft.outputs.items()}
    return rc.result(outputs, metadata=dict(draft.metadata))


def write_provenance(rc: forge.RunContext) -> forge.ActionResult:
    data = forge.supply.provenance.statement(rc)
    return rc.result({"provenance": rc.cas.put_bytes(data).typed(forge.supply.provenance.MEDIA_TYPE)})


# -- artifacts -------------------------------------------------------------------------------


def _subject(cas: Any, digest: str) -> dict[str, Any]:
    data = cas.read_bytes(digest)
    media_type = json.loads(data).get("mediaType") or forge.oci.media.OCI_MANIFEST
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def image_digest(results: dict[Any, Any], mine: dict[str, tuple[Any, Any]]) -> str | None:
    """The manifest digest the attached actions are about (their first dependency's
    ``manifest`` output), None when that result is not among ``results``."""
    action, _ = next(iter(mine.values()))
    image = results.get(action.deps[0])
    top = image.outputs.get("manifest") if image is not None else None
    return top.digest if top is not None else None


def by_image(results: dict[Any, Any]) -> dict[str, dict[str, tuple[Any, Any]]]:
    """This plugin's results grouped by the manifest digest they are about (one group
    for an image target, one per platform image for an index)."""
    groups: dict[Any, dict[str, tuple[Any, Any]]] = {}
    for action, result in attached_all(results):
        groups.setdefault(action.deps[0], {})[action.mnemonic] = (action, result)
    out = {}
    for mine in groups.values():
        digest = image_digest(results, mine)
        if digest is not None:
            out[digest] = mine
    return out


def attached_all(results: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """This plugin's results among ``results``: the ``Sbom`` and ``Provenance`` ones."""
    return [(a, r) for a, r in results.items() if a.mnemonic in (SBOM, PROVENANCE)]


def artifacts(cas: Any, digest: str, mine: dict[str, tuple[Any, Any]], key: Any | None) -> list[Any]:
    """The referrer artifacts of the image ``digest``: its SBOM documents, its provenance
    and, with ``key``, one signature artifact over the manifest and each document. Every
    blob is put in ``cas``."""
    refs = forge.supply.referrers
    docs: list[tuple[str, Any]] = []  # (file name, descriptor)
    if SBOM in mine:
        result = mine[SBOM][1]
        docs += [(FILES[kind], result.outputs[kind]) for kind in ("spdx", "cyclonedx")]
    if PROVENANCE in mine:
        docs.append((FILES["provenance"], mine[PROVENANCE][1].outputs["provenance"]))
    subject = _subject(cas, digest)
    predicate = {PREDICATE_TYPE_ANNOTATION: forge.supply.provenance.PREDICATE_TYPE}
    arts = []
    for name, d in docs:
        extra = predicate if name == FILES["provenance"] else {}
        arts.append(refs.make_artifact(cas, d.media_type, [refs.Blob(d, {TITLE: name, **extra})],
                                       subject, extra))
    if key is not None:
        signed = [("manifest.json", forge.Descriptor(digest, subject["size"], subject["mediaType"])), *docs]
        layers = []
        for name, d in signed:
            sig = cas.put_bytes(key.sign(cas.read_bytes(d.digest))).typed(SIGNATURE_MEDIA_TYPE)
            layers.append(refs.Blob(sig, {TITLE: f"{name}.sig", PAYLOAD: d.digest, PAYLOAD_TYPE: d.media_type}))
        arts.append(refs.make_artifact(cas, SIGNATURE_ARTIFACT_TYPE, layers, subject,
                                       {KEY_ID: key.key_id, ALGORITHM: forge.supply.signing.ALGORITHM}))
    return arts


@forge.hookimpl
def forge_target_materialized(session: Any, label: Any, results: dict[Any, Any], dest: Path) -> None:
    """The documents (and signatures) beside the layout, and the referrers in it: for an
    image target in its directory, for an index one directory per platform image
    (``linux-arm64-v8/sbom.spdx.json``…)."""
    groups = by_image(results)
    if not groups or not (Path(dest) / "index.json").is_file():
        return
    cas = session.cas
    key = _signing_key(session.workspace, settings(session.workspace, session.options))
    top = json.loads((Path(dest) / "index.json").read_text())["manifests"][0]["digest"]
    for digest, mine in sorted(groups.items()):
        if digest != top and digest not in _index_children(cas, top):
            continue  # another target's
        arts = artifacts(cas, digest, mine, key)
        where = Path(dest) if digest == top else Path(dest) / _platform_dir(cas, digest)
        where.mkdir(parents=True, exist_ok=True)
        for _, result in mine.values():
            for kind, d in result.outputs.items():
                if kind in FILES:
                    cas.copy_out(d.digest, where / FILES[kind])
        if key is not None:  # the manifest and the signatures beside the documents, for openssl
            cas.copy_out(digest, where / "manifest.json")
            sigs = json.loads(cas.read_bytes(arts[-1].digest))["layers"]
            for layer in sigs:
                cas.copy_out(layer["digest"], where / layer["annotations"][TITLE])
        forge.supply.referrers.add_to_layout(cas, Path(dest), arts)


def _index_children(cas: Any, digest: str) -> list[str]:
    """The manifest digests an index lists ([] for an image manifest)."""
    doc = json.loads(cas.read_bytes(digest))
    return [m["digest"] for m in doc.get("manifests", [])]


def _platform_dir(cas: Any, digest: str) -> str:
    """``linux-arm64-v8``: the directory of one platform image's documents."""
    manifest = json.loads(cas.read_bytes(digest))
    config = json.loads(cas.read_bytes(manifest["config"]["digest"]))
    parts = [config.get("os", "linux"), config.get("architecture", "unknown"), config.get("variant")]
    return "-".join(p for p in parts if p)


@forge.hookimpl
def forge_target_pushed(session: Any, label: Any, results: dict[Any, Any], client: Any,
                        repository: str, digest: str) -> None:
    """The referrers follow the image: the pushed image's, or each platform image's of a
    pushed index (a child manifest is its subject, as buildx's attestations are)."""
    import click

    groups = by_image(results)
    wanted = [digest, *_index_children(session.cas, digest)] if groups else []
    key = _signing_key(session.workspace, settings(session.workspace, session.options)) if wanted else None
    for subject in wanted:
        mine = groups.get(subject)
        if not mine:
            continue
        arts = artifacts(session.cas, subject, mine, key)
        api = [forge.supply.referrers.push_referrer(client, session.cas, repository, a) for a in arts]
        how = "referrers API" if all(api) else f"tag {forge.supply.referrers.fallback_tag(subject)}"
        kinds = ", ".join(a.artifact_type for a in arts)
        signed = f", signed by {key.key_id}" if key is not None else ""
        click.echo(f"pushed {len(arts)} referrers of {subject} ({kinds}{signed}) via the {how}", err=True)


# -- verify ----------------------------------------------------------------------------------


class VerificationFailed(forge.ForgeError):
    """An image whose signature, SBOM or provenance does not check out."""

    exit_code = 1


def verify_image(ref: str, public_key: Any, *, sbom: bool = True, provenance: bool = True,
                 client: Any = None) -> list[str]:
    """Check the image ``ref`` against ``public_key``: a signature by it over the exact
    manifest bytes; every SBOM (SPDX, CycloneDX) and provenance referrer about this
    manifest, signed by it, naming this manifest; at least one of each that is asked for.
    Returns the lines that passed; VerificationFailed lists every failure."""
    refs = forge.supply.referrers
    r = forge.oci.parse_reference(ref)
    client = client or forge.oci.RegistryClient(r.registry)
    repo = r.repository
    manifest, _, digest = client.get_manifest(repo, r.digest or r.tag or "latest")
    ok: list[str] = []
    problems: list[str] = []
    entries = refs.list_referrers(client, repo, digest)
    signatures: dict[str, bytes] = {}  # payload digest -> signature by the key
    signers = set()
    for entry in entries:
        if entry.get("artifactType") != SIGNATURE_ARTIFACT_TYPE:
            continue
        signer = (entry.get("annotations") or {}).get(KEY_ID)
        try:
            data, _, _ = client.get_manifest(repo, entry["digest"])
            doc = json.loads(data)
            signer = (doc.get("annotations") or {}).get(KEY_ID, signer)
            signers.add(signer)
            if signer != public_key.key_id:
                continue
            if (doc.get("subject") or {}).get("digest") != digest:
                problems.append(f"signature artifact {entry['digest']} is about "
                                f"{(doc.get('subject') or {}).get('digest')}, not {digest}")
                continue
            for layer in doc.get("layers") or []:
                payload = (layer.get("annotations") or {}).get(PAYLOAD)
                if payload:
                    signatures[payload] = client.read_blob(repo, layer["digest"])
        except forge.RegistryError as exc:
            problems.append(f"signature artifact {entry['digest']}: {exc}")
    sig = signatures.get(digest)
    if sig is None:
        problems.append(f"no signature of manifest {digest} by key {public_key.describe()} "
                        f"(signatures by: {', '.join(sorted(s for s in signers if s)) or 'none'})")
    elif not public_key.verify(manifest, sig):
        problems.append(f"the signature of manifest {digest} by key {public_key.key_id} does not "
                        "match the manifest's bytes")
    else:
        ok.append(f"signature: manifest {digest} signed by {public_key.key_id}")
    wanted = {forge.supply.sbom.SPDX_MEDIA_TYPE: ("SBOM (SPDX)", sbom),
              forge.supply.sbom.CYCLONEDX_MEDIA_TYPE: ("SBOM (CycloneDX)", sbom),
              forge.supply.provenance.MEDIA_TYPE: ("provenance", provenance)}
    found = dict.fromkeys(wanted, 0)
    for entry in entries:
        kind = entry.get("artifactType")
        if kind not in wanted:
            continue
        what = wanted[kind][0]
        try:
            data, _, _ = client.get_manifest(repo, entry["digest"])
            doc = json.loads(data)
            if (doc.get("subject") or {}).get("digest") != digest:
                raise ValueError(f"its subject is {(doc.get('subject') or {}).get('digest')}")
            layer = (doc.get("layers") or [{}])[0]
            body = client.read_blob(repo, layer["digest"])  # verified against its digest
            sig = signatures.get(layer["digest"])
            if sig is None:
                raise ValueError(f"document {layer['digest']} has no signature by {public_key.key_id}")
            if not public_key.verify(body, sig):
                raise ValueError(f"the signature of document {layer['digest']} does not match it")
            _check_names_image(kind, body, digest)
        except (forge.RegistryError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{what} {entry['digest']}: {exc}")
            continue
        found[kind] += 1
        ok.append(f"{what}: {layer['digest']} signed, about {digest}")
    for kind, (what, required) in wanted.items():
        if required and not found[kind] and not any(p.startswith(what) for p in problems):
            problems.append(f"no {what} referrer of {digest}")
    if problems:
        raise VerificationFailed(f"{ref} ({digest}) does not verify:\n  " + "\n  ".join(problems))
    return ok


def _check_names_image(kind: str, body: bytes, digest: str) -> None:
    """The document itself must name the manifest (a signed SBOM of another image, moved
    over, is refused)."""
    hexdigest = digest.split(":", 1)[1]
    doc = json.loads(body)
    if kind == forge.supply.provenance.MEDIA_TYPE:
        forge.supply.provenance.check_statement(body, digest)
    elif kind == forge.supply.sbom.SPDX_MEDIA_TYPE:
        sums = [c.get("checksumValue") for p in doc.get("packages") or [] if p.get("SPDXID") == "SPDXRef-Image"
                for c in p.get("checksums") or []]
        if hexdigest not in sums:
            raise ValueError(f"the SPDX document describes {sums}, not {digest}")
    else:
        comp = (doc.get("metadata") or {}).get("component") or {}
        if comp.get("version") != digest:
            raise ValueError(f"the CycloneDX document describes {comp.get('version')}, not {digest}")


# -- commands ------------------------------------------------------------------------------


def _built_document(cwd: str, label: str, platform: str | None, mnemonic: str) -> tuple[Any, Any]:
    """Build ``label`` with its SBOM or provenance (whatever the configuration says) and
    return (session, that action's result)."""
    kind = "sbom" if mnemonic == SBOM else "provenance"
    options: dict[str, Any] = {"supply_chain": {kind: True}}
    if platform:
        options["platform"] = platform
    session = forge.Session(Path(cwd), reporter=forge.PlainReporter(), options=options)
    summaries, outcomes = session.build([label])
    forge.raise_for_failures(outcomes)
    if len(summaries) != 1:
        raise forge.UsageError(f"{label} matched {len(summaries)} targets; name one image target")
    found = [o.result for a, o in outcomes.items()
             if a.label == summaries[0].label and a.mnemonic == mnemonic and o.result is not None]
    if not found:
        raise forge.UsageError(f"{summaries[0].label} is not an image target; `forge query {kind}` "
                               "reads the image of one (an index: ask for one of its images)")
    return session, found[0]


@forge.hookimpl
def forge_cli_commands() -> dict[str, Any]:
    """``forge query sbom``, ``forge query provenance``, ``forge verify``."""
    import click

    def cwd_of(ctx: Any) -> str:
        return (ctx.find_root().obj or {}).get("cwd") or os.getcwd()

    @click.command("sbom")
    @click.argument("label")
    @click.option("--format", "fmt", type=click.Choice(["spdx", "cyclonedx"]), default="spdx",
                  show_default=True)
    @click.option("--platform", help="Default platform, as for build.")
    @click.pass_context
    def query_sbom(ctx, label, fmt, platform) -> None:
        """Print the SBOM of the image target LABEL (SPDX 2.3 or CycloneDX 1.6 JSON),
        building what it needs."""
        session, result = _built_document(cwd_of(ctx), label, platform, SBOM)
        click.echo(session.cas.read_bytes(result.outputs[fmt].digest).decode(), nl=False)

    @click.command("provenance")
    @click.argument("label")
    @click.option("--platform", help="Default platform, as for build.")
    @click.pass_context
    def query_provenance(ctx, label, platform) -> None:
        """Print the SLSA v1 provenance (in-toto statement) of the image target LABEL."""
        session, result = _built_document(cwd_of(ctx), label, platform, PROVENANCE)
        click.echo(session.cas.read_bytes(result.outputs["provenance"].digest).decode(), nl=False)

    @click.command("verify")
    @click.argument("ref")
    @click.option("--key", "key", required=True, help="Public key (PEM file, or env:NAME).")
    @click.option("--no-sbom", is_flag=True, help="Do not require an SBOM.")
    @click.option("--no-provenance", is_flag=True, help="Do not require provenance.")
    @click.pass_context
    def verify(ctx, ref, key, no_sbom, no_provenance) -> None:
        """Check IMAGE-REF (host/repo:tag or @sha256:…) in its registry: the manifest's
        signature by KEY, and its SBOM and provenance referrers (signed by KEY, about
        this manifest). Exit 1 when anything does not verify."""
        public = forge.supply.signing.load_public_key(key, Path(cwd_of(ctx)), what="--key")
        for line in verify_image(ref, public, sbom=not no_sbom, provenance=not no_provenance):
            click.echo(f"ok  {line}")
        click.echo(f"verified {ref}")

    return {"query sbom": query_sbom, "query provenance": query_provenance, "verify": verify}
