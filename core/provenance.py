"""SLSA v1 provenance of an image, from the action graph that made it.

An in-toto Statement v1 (``_type`` ``https://in-toto.io/Statement/v1``) whose subject is
the image manifest (name: the target label; digest: the manifest's sha256) and whose
predicate is SLSA provenance v1 (``https://slsa.dev/provenance/v1``):

* ``buildDefinition.buildType``: ``BUILD_TYPE`` (forge's action graph, this document);
* ``externalParameters``: what the user asked for — ``target``, ``rule``, ``platform``;
* ``internalParameters``: ``forge`` (version, output format) and ``actions``: every
  action of the graph (id, mnemonic, key, platform, hermetic), sorted by id — the keys
  are recomputed from the declared inputs and the dependencies' results, exactly as
  the scheduler computes them;
* ``resolvedDependencies``: every base image (an action of the graph that reads no
  other action's result and produces an image: ``oci_pull``, ``oci_import``,
  ``debootstrap``…) by label and manifest sha256 (``oci://host/repo@digest`` for one
  pulled from a registry), then every source file of the graph by workspace-relative
  path and sha256 (a symlink source: the sha256 of its target text, which is what the
  key covers). So they change when, and only when, an input changes;
* ``runDetails.builder.id``: the configured builder id; ``byproducts``: the graph's
  non-hermetic actions (network on: ``production(packages=…)``, ``dockerfile(network
  = True)``, ``debootstrap``), named, with the digest of what they made.

No time, host or invocation id is recorded: the statement is a function of the graph,
so it is an ordinary cached action (its key covers every action's static description,
every source's content and every dependency's result) and two machines building the
same graph write the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import blake3

from forge.core.actions import OUTPUT_FORMAT, Action, ActionResult, SourceFile, compute_key
from forge.core.canonical import canonical_json
from forge.core.digests import FileDigests

if TYPE_CHECKING:
    from forge.core.execution import RunContext

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:dev.forge:build-type:action-graph:v1"
MEDIA_TYPE = "application/vnd.in-toto+json"
DEFAULT_BUILDER = "urn:dev.forge:builder:local"


def graph_of(root: Action) -> list[Action]:
    """``root`` and every action it reads, transitively, sorted by id (root first)."""
    seen: dict[int, Action] = {}
    todo = [root]
    while todo:
        action = todo.pop()
        if id(action) in seen:
            continue
        seen[id(action)] = action
        todo.extend(action.deps)
    rest = sorted((a for a in seen.values() if a is not root), key=lambda a: a.id)
    return [root, *rest]


def static_digest(action: Action) -> str:
    """blake3 of what an action's key holds besides its inputs and dependencies: a
    provenance action keys on it, so a changed parameter re-runs the provenance even when
    the result it changed is the same bytes (its key, which the statement lists, did
    change). A digest, never the params themselves: build args may hold secrets."""
    return blake3.blake3(canonical_json({
        "format": OUTPUT_FORMAT, "mnemonic": action.mnemonic, "version": action.version,
        "params": json.loads(action.params_json), "epoch": action.epoch,
        "platform": action.platform.key if action.platform else None,
        "hermetic": action.hermetic,
    })).hexdigest()


def workspace_path(action: Action, src: SourceFile) -> str:
    package = action.label.package
    return f"{package}/{src.relpath}" if package else src.relpath


def graph_sources(actions: Iterable[Action]) -> list[SourceFile]:
    """Every input file of ``actions``, once, named by its workspace-relative path (so a
    provenance action's key tells two packages' ``Dockerfile`` apart)."""
    out: dict[tuple[str, bool], SourceFile] = {}
    for action in actions:
        for src in action.inputs:
            path = workspace_path(action, src)
            out.setdefault((path, src.follow), SourceFile(src.abspath, path, follow=src.follow))
    return [out[k] for k in sorted(out)]


def graph_params(root: Action, actions: list[Action]) -> dict[str, Any]:
    """What a provenance action's params hold about the graph (see ``static_digest``)."""
    return {"actions": [[a.id, static_digest(a)] for a in actions], "root": root.id}


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _source_descriptor(src: SourceFile) -> dict[str, Any]:
    import os

    st = os.stat(src.abspath) if src.follow else os.lstat(src.abspath)
    import stat as _stat

    if _stat.S_ISLNK(st.st_mode):
        target = os.readlink(src.abspath)
        return {"name": src.relpath, "digest": {"sha256": hashlib.sha256(target.encode()).hexdigest()},
                "annotations": {"symlink": target}}
    out: dict[str, Any] = {"name": src.relpath, "digest": {"sha256": _sha256_file(src.abspath)}}
    if st.st_mode & 0o111:
        out["annotations"] = {"executable": True}
    return out


def _image_digest(result: ActionResult) -> str | None:
    top = result.outputs.get("manifest") or result.outputs.get("index")
    return top.digest if top is not None else None


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def action_keys(actions: list[Action], results: Mapping[Action, ActionResult]) -> dict[Action, str]:
    """The key of each action, computed as the scheduler does (``compute_key``) from its
    inputs (read now) and its dependencies' results."""
    digests = FileDigests(None)
    return {a: compute_key(a, digests, results).key for a in actions}


def statement(rc: RunContext) -> bytes:
    """The provenance statement of a provenance action: its first dependency is the image
    action, the others the rest of its graph; params ``target``, ``rule``, ``builder_id``,
    ``forge_version``. Canonical JSON, pretty-printed (stable bytes)."""
    p = rc.params
    actions = list(rc.action.deps)
    root = actions[0]
    results = {a: rc.dep(a) for a in actions}
    keys = action_keys(actions, results)
    subject = _image_digest(results[root])
    if subject is None:
        raise ValueError(f"{root} made no image (outputs: {', '.join(results[root].outputs)})")
    bases, byproducts = [], []
    for action in actions:
        result = results[action]
        digest = _image_digest(result)
        if not action.deps and digest is not None:
            params = action.params
            entry: dict[str, Any] = {"name": str(action.label), "digest": {"sha256": _hex(digest)},
                                     "annotations": {"forge.mnemonic": action.mnemonic,
                                                     "forge.hermetic": action.hermetic}}
            if params.get("registry") and params.get("repository"):
                entry["uri"] = f"oci://{params['registry']}/{params['repository']}@{digest}"
            bases.append(entry)
        if not action.hermetic:
            by: dict[str, Any] = {"name": action.id, "annotations": {
                "forge.mnemonic": action.mnemonic, "forge.key": keys[action],
                "forge.description": action.description}}
            by["digest"] = {"sha256": _hex(digest)} if digest else {"blake3": result.digest}
            byproducts.append(by)
    sources = [_source_descriptor(src) for src in rc.action.inputs]
    platform = str(root.platform) if root.platform else (results[root].metadata.get("platform") or "")
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": p["target"], "digest": {"sha256": _hex(subject)}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"target": p["target"], "rule": p["rule"], "platform": platform},
                "internalParameters": {
                    "forge": {"version": p["forge_version"], "outputFormat": OUTPUT_FORMAT},
                    "actions": [{"id": a.id, "mnemonic": a.mnemonic, "key": keys[a],
                                 "platform": str(a.platform) if a.platform else None,
                                 "hermetic": a.hermetic} for a in sorted(actions, key=lambda a: a.id)],
                },
                "resolvedDependencies": sorted(bases, key=lambda e: e["name"]) + sources,
            },
            "runDetails": {
                "builder": {"id": p["builder_id"], "version": {"forge": p["forge_version"]}},
                "byproducts": sorted(byproducts, key=lambda e: e["name"]),
            },
        },
    }
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def check_statement(data: bytes, manifest_digest: str) -> dict[str, Any]:
    """Parse a provenance statement and check it is SLSA v1 about ``manifest_digest``;
    ValueError says what is wrong."""
    doc = json.loads(data)
    if doc.get("_type") != STATEMENT_TYPE:
        raise ValueError(f"_type is {doc.get('_type')!r}, not {STATEMENT_TYPE}")
    if doc.get("predicateType") != PREDICATE_TYPE:
        raise ValueError(f"predicateType is {doc.get('predicateType')!r}, not {PREDICATE_TYPE}")
    digests = [(s.get("digest") or {}).get("sha256") for s in doc.get("subject") or []]
    if _hex(manifest_digest) not in digests:
        raise ValueError(f"its subject is {digests}, not the manifest {manifest_digest}")
    build = (doc.get("predicate") or {}).get("buildDefinition") or {}
    if not build.get("buildType") or not isinstance(build.get("resolvedDependencies"), list):
        raise ValueError("predicate.buildDefinition lacks buildType or resolvedDependencies")
    return doc
