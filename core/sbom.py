"""SBOMs of images: the Debian packages an image holds, read from its layers, written as
SPDX 2.3 JSON and CycloneDX 1.6 JSON, each validated by its own library before it is
stored.

What is read (what syft and trivy read from a Debian image):

* ``/var/lib/dpkg/status``: every stanza whose ``Status`` is ``install ok installed``
  (python-debian parses it) — exactly what ``dpkg-query -W`` lists;
* ``/var/lib/dpkg/status.d/<name>`` (distroless-style, one stanza per file) and
  ``status.d/<name>.md5sums``: the files of that package the image holds. ``minimize``
  writes these for the packages whose files it harvested, so the SBOM of a production
  image names the package of each harvested library, file by file, with SHA-1/SHA-256
  (hashed here) and MD5 (from md5sums);
* ``/etc/os-release`` (through ``/usr/lib/os-release``): the distribution, for the purl
  ``distro`` qualifier and an operating-system element.

Nothing else: licenses are NOASSERTION (forge does not read copyright files), and the
files of packages in ``status`` are not listed (their ``info/*.list`` would make a
10,000-file document of every base image).

Reading is a stream over each layer's tar, once, applying OCI whiteouts (``.wh.NAME``,
``.wh..wh..opq``) to the few paths above, so it needs no temporary files. A
``PackageState`` (those paths' contents, as CAS blobs, plus the hashes of the listed
files) records what the layers so far say; ``scan`` can start from the state of a base
image whose layers are a prefix of this one's, so a production image's SBOM reads only
its top layer (the scan of the base is a cached action).

Documents are deterministic: the created time is the build's ``SOURCE_DATE_EPOCH``, the
SPDX namespace and CycloneDX serial number derive from the image digest, and elements
are sorted.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import posixpath
import shlex
import tarfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from forge.core.canonical import canonical_json
from forge.core.cas import CAS
from forge.core.errors import ActionFailed
from forge.core.oci import compression as comp
from forge.core.oci.image import Image, Layer

STATE_FORMAT = "forge.dpkg-state/v1"
SPDX_MEDIA_TYPE = "application/spdx+json"
CYCLONEDX_MEDIA_TYPE = "application/vnd.cyclonedx+json"
STATE_MEDIA_TYPE = "application/vnd.dev.forge.dpkg-state.v1+json"

STATUS = "var/lib/dpkg/status"
STATUS_D = "var/lib/dpkg/status.d/"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_WATCHED = (STATUS, *OS_RELEASE)
# a non-directory at one of these hides every watched path under it
_ANCESTORS = ("var", "var/lib", "var/lib/dpkg", "var/lib/dpkg/status.d", "etc", "usr", "usr/lib")
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
INSTALLED = "install ok installed"


class SbomError(ActionFailed):
    """An image whose package database cannot be read, or a document that does not validate."""


# -- reading the layers ------------------------------------------------------------------


def _norm(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def _watched(path: str) -> bool:
    return path in _WATCHED or (path.startswith(STATUS_D) and "/" not in path[len(STATUS_D):])


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


@dataclass
class PackageState:
    """What the layers read so far say about the watched paths.

    ``entries``: path -> ``{"blob": digest}`` (a file, its bytes in the CAS) or
    ``{"link": target}``; ``hashes``: layer path -> ``{"sha1", "sha256", "size"}`` of the
    regular files that status.d md5sums list; ``layers``: the layer digests covered.
    """

    layers: list[str] = field(default_factory=list)
    entries: dict[str, dict[str, str]] = field(default_factory=dict)
    hashes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return canonical_json({"format": STATE_FORMAT, "layers": self.layers,
                               "entries": self.entries, "hashes": self.hashes})

    @staticmethod
    def from_bytes(data: bytes) -> PackageState:
        doc = json.loads(data)
        if doc.get("format") != STATE_FORMAT:
            raise SbomError(f"package state of format {doc.get('format')!r}, expected {STATE_FORMAT}")
        return PackageState(list(doc["layers"]), dict(doc["entries"]), dict(doc["hashes"]))

    def blobs(self) -> list[str]:
        return sorted({e["blob"] for e in self.entries.values() if "blob" in e})

    def read(self, cas: CAS, path: str) -> bytes | None:
        """The content of a watched path, following symlinks among watched paths."""
        for _ in range(8):
            entry = self.entries.get(path)
            if entry is None:
                return None
            if "blob" in entry:
                return cas.read_bytes(entry["blob"])
            target = entry["link"]
            path = _norm(target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target))
        return None


def _members(cas: CAS, layer: Layer) -> Iterable[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    with cas.open(layer.digest) as raw:
        stream = comp.open_decompressed(raw, layer.compression)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for member in tf:
                    yield member, tf
        except (tarfile.TarError, *comp.DECOMPRESSION_ERRORS) as exc:
            raise SbomError(f"layer {layer.digest} is not a readable tar: {exc}") from None


def _apply_layer(cas: CAS, layer: Layer, state: PackageState,
                 files: dict[str, int], index: int) -> None:
    """Apply one layer to ``state`` (watched paths) and ``files`` (regular file -> the
    index of the layer that holds it): whiteouts hit only lower layers, so this layer's
    own entries are collected first and laid over afterwards."""
    upper: dict[str, dict[str, str] | None] = {}  # watched path -> entry, None = removed
    upper_files: dict[str, int | None] = {}
    hidden: list[str] = []  # prefixes whose lower content goes (whiteouts, opaque dirs, non-dirs)
    contents: dict[str, str] = {}  # member name -> blob, for hard links
    for member, tf in _members(cas, layer):
        path = _norm(member.name)
        base = posixpath.basename(path)
        if base == OPAQUE:
            hidden.append(posixpath.dirname(path) + "/")
            continue
        if base.startswith(WHITEOUT):
            hidden.append(posixpath.join(posixpath.dirname(path), base[len(WHITEOUT):]))
            continue
        if not member.isdir():
            if path in _ANCESTORS:
                hidden.append(path)
            upper_files[path] = index if member.isfile() else None
        if not _watched(path):
            continue
        if member.isfile():
            data = tf.extractfile(member).read()  # type: ignore[union-attr]
            upper[path] = {"blob": cas.put_bytes(data).digest}
            contents[path] = upper[path]["blob"]
        elif member.issym():
            upper[path] = {"link": member.linkname}
        elif member.islnk():
            target = contents.get(_norm(member.linkname)) or (
                state.entries.get(_norm(member.linkname)) or {}).get("blob")
            upper[path] = {"blob": target} if target else None
        else:
            upper[path] = None
    for prefix in hidden:
        opaque = prefix.endswith("/")
        root = prefix.rstrip("/")

        def gone(path: str, root: str = root, opaque: bool = opaque) -> bool:
            return path.startswith(root + "/") if opaque else _under(path, root)

        for table in (state.entries, state.hashes, files):
            for path in [p for p in table if gone(p)]:
                del table[path]
    for path, entry in upper.items():
        if entry is None:
            state.entries.pop(path, None)
        else:
            state.entries[path] = entry
    for path, where in upper_files.items():
        state.hashes.pop(path, None)  # a new entry at a listed path: hashed again if listed
        if where is None:
            files.pop(path, None)
        else:
            files[path] = where
    state.layers.append(layer.digest)


def _hash_files(cas: CAS, layer: Layer, wanted: set[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for member, tf in _members(cas, layer):
        path = _norm(member.name)
        if path not in wanted or not member.isfile():
            continue
        sha1, sha256 = hashlib.sha1(), hashlib.sha256()  # noqa: S324 - SPDX 2.3 requires SHA-1
        fh = tf.extractfile(member)
        while chunk := fh.read(1 << 20):  # type: ignore[union-attr]
            sha1.update(chunk)
            sha256.update(chunk)
        out[path] = {"sha1": sha1.hexdigest(), "sha256": sha256.hexdigest(), "size": member.size}
    return out


def scan(cas: CAS, image: Image, start: PackageState | None = None) -> PackageState:
    """The package state of ``image``: ``start`` (the state of an image whose layers are
    a prefix of this one's) plus the layers after it, or every layer."""
    digests = [layer.digest for layer in image.layers]
    if start is not None and digests[:len(start.layers)] != start.layers:
        raise ValueError("the start state's layers are not a prefix of the image's")
    state = PackageState(list(start.layers), dict(start.entries), dict(start.hashes)) \
        if start is not None else PackageState()
    files: dict[str, int] = {}
    first = len(state.layers)
    for i, layer in enumerate(image.layers[first:], start=first):
        _apply_layer(cas, layer, state, files, i)
    listed = {path for package in packages(cas, state) for path in package.md5sums}
    state.hashes = {p: h for p, h in state.hashes.items() if p in listed}
    todo: dict[int, set[str]] = {}
    for path in listed - set(state.hashes):
        if path in files:
            todo.setdefault(files[path], set()).add(path)
        elif first and start is not None:
            return scan(cas, image)  # listed in a lower layer the start state did not hash
    for i, paths in sorted(todo.items()):
        state.hashes.update(_hash_files(cas, image.layers[i], paths))
    return state


def common_prefix_state(image: Image, states: Iterable[PackageState]) -> PackageState | None:
    """The state among ``states`` covering the longest prefix of ``image``'s layers."""
    digests = [layer.digest for layer in image.layers]
    best = None
    for state in states:
        if digests[:len(state.layers)] == state.layers and (
                best is None or len(state.layers) > len(best.layers)):
            best = state
    return best


# -- packages ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DebPackage:
    """One installed package: its control fields and, from status.d, the files the image
    holds (layer path -> md5)."""

    name: str
    version: str
    architecture: str
    source: str = ""
    maintainer: str = ""
    homepage: str = ""
    origin: str = "status"  # "status" or "status.d"
    md5sums: dict[str, str] = field(default_factory=dict)

    @property
    def ident(self) -> str:
        return f"{self.name}:{self.architecture}"


def _paragraphs(data: bytes) -> list[Any]:
    from debian.deb822 import Deb822

    return list(Deb822.iter_paragraphs(io.BytesIO(data), use_apt_pkg=False))


def _package(stanza: Any, origin: str, md5sums: dict[str, str] | None = None) -> DebPackage:
    source = stanza.get("Source", "")
    return DebPackage(stanza["Package"], stanza.get("Version", ""), stanza.get("Architecture", ""),
                      source.split(" ")[0] if source else "", stanza.get("Maintainer", ""),
                      stanza.get("Homepage", ""), origin, dict(md5sums or {}))


def parse_md5sums(data: bytes) -> dict[str, str]:
    """``<md5>  <path>`` lines (dpkg's md5sums files) -> path (no leading /) -> md5."""
    out: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        md5, _, path = line.partition("  ")
        if len(md5) == 32 and path:
            out[_norm(path)] = md5
    return out


def packages(cas: CAS, state: PackageState) -> list[DebPackage]:
    """The installed packages the state shows, sorted by name and architecture: those of
    ``status`` whose Status is ``install ok installed``, then status.d's."""
    out: dict[str, DebPackage] = {}
    status = state.read(cas, STATUS)
    if status is not None:
        for stanza in _paragraphs(status):
            if "Package" in stanza and stanza.get("Status", "").strip() == INSTALLED:
                package = _package(stanza, "status")
                out[package.ident] = package
    for path in sorted(state.entries):
        if not path.startswith(STATUS_D) or path.endswith(".md5sums"):
            continue
        data = state.read(cas, path)
        if data is None:
            continue
        md5 = state.read(cas, path + ".md5sums")
        for stanza in _paragraphs(data):
            if "Package" not in stanza or stanza.get("Status", INSTALLED).strip() != INSTALLED:
                continue
            package = _package(stanza, "status.d", parse_md5sums(md5) if md5 else None)
            same = out.get(package.ident)
            if same is not None and same.version == package.version:
                # listed twice (a base's status and a harvest's status.d): one package,
                # with the files status.d names
                package = DebPackage(**{**same.__dict__, "md5sums": {**same.md5sums, **package.md5sums}})
            elif same is not None:
                ident = f"{package.ident}={package.version}"  # two versions: keep both
                out[ident] = package
                continue
            out[package.ident] = package
    return [out[k] for k in sorted(out)]


def os_release(cas: CAS, state: PackageState) -> dict[str, str]:
    """``/etc/os-release`` as a dict (shell-quoted values), {} when the image has none."""
    for path in OS_RELEASE:
        data = state.read(cas, path)
        if data is None:
            continue
        out = {}
        for line in data.decode("utf-8", "replace").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.startswith("#"):
                try:
                    words = shlex.split(value)
                except ValueError:
                    continue
                out[key.strip()] = words[0] if words else ""
        return out
    return {}


# -- documents -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSubject:
    """The image an SBOM is about."""

    name: str  # the target label (or a reference)
    digest: str  # manifest digest
    platform: str  # os/arch[/variant]
    epoch: int = 0


def _purl(package: DebPackage, distro: dict[str, str]) -> Any:
    from packageurl import PackageURL

    qualifiers = {"arch": package.architecture}
    if distro.get("ID") and distro.get("VERSION_ID"):
        qualifiers["distro"] = f"{distro['ID']}-{distro['VERSION_ID']}"
    if package.source and package.source != package.name:
        qualifiers["upstream"] = package.source
    namespace = distro.get("ID") or "debian"
    return PackageURL(type="deb", namespace=namespace, name=package.name,
                      version=package.version or None, qualifiers=qualifiers)


def _image_purl(subject: ImageSubject) -> Any:
    from packageurl import PackageURL

    name = subject.name.strip("/").replace(":", "/").split("/")[-1] or "image"
    arch = subject.platform.split("/")[1] if subject.platform.count("/") >= 1 else ""
    return PackageURL(type="oci", name=name.lower(), version=subject.digest,
                      qualifiers={"arch": arch} if arch else None)


def _safe_id(text: str) -> str:
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in ".-" else "-" for c in text)
    return f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _created(epoch: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).replace(tzinfo=None)


def spdx_json(subject: ImageSubject, pkgs: Sequence[DebPackage], distro: dict[str, str],
              hashes: dict[str, dict[str, Any]], tool: str, *, validate: bool = True) -> bytes:
    """The SPDX 2.3 JSON document: the image DESCRIBED, CONTAINS each package (and the
    operating system), each status.d package CONTAINS its files. Validated with
    spdx-tools; SbomError lists what does not validate."""
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        Checksum,
        ChecksumAlgorithm,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        File,
        Package,
        PackagePurpose,
        Relationship,
        RelationshipType,
        SpdxNoAssertion,
    )
    from spdx_tools.spdx.spdx_element_utils import calculate_package_verification_code
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    hexdigest = subject.digest.split(":", 1)[1]
    creation = CreationInfo(
        spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=f"{subject.name} ({subject.platform})",
        document_namespace=f"urn:dev.forge:spdx:{subject.digest}",
        creators=[Actor(ActorType.TOOL, tool)], created=_created(subject.epoch))
    noassert = SpdxNoAssertion()
    image = Package(
        spdx_id="SPDXRef-Image", name=subject.name, download_location=noassert,
        version=subject.digest, files_analyzed=False, primary_package_purpose=PackagePurpose.CONTAINER,
        checksums=[Checksum(ChecksumAlgorithm.SHA256, hexdigest)],
        external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl",
                                                _image_purl(subject).to_string())],
        license_concluded=noassert, license_declared=noassert, copyright_text=noassert,
        comment=f"platform {subject.platform}")
    doc_packages = [image]
    files: list[Any] = []
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, "SPDXRef-Image")]
    if distro.get("ID"):
        os_id = "SPDXRef-OperatingSystem"
        doc_packages.append(Package(
            spdx_id=os_id, name=distro["ID"], download_location=noassert,
            version=distro.get("VERSION_ID") or None, files_analyzed=False,
            primary_package_purpose=PackagePurpose.OPERATING_SYSTEM,
            license_concluded=noassert, license_declared=noassert, copyright_text=noassert,
            description=distro.get("PRETTY_NAME") or None))
        relationships.append(Relationship("SPDXRef-Image", RelationshipType.CONTAINS, os_id))
    for package in pkgs:
        spdx_id = "SPDXRef-Package-deb-" + _safe_id(package.ident)
        name, email = parseaddr(package.maintainer)
        supplier = Actor(ActorType.PERSON, name or package.maintainer, email or None) \
            if package.maintainer else noassert
        own_files = []
        for path in sorted(package.md5sums):
            h = hashes.get(path)
            if h is None:
                continue  # listed but not a regular file of the image
            own_files.append(File(
                name="./" + path, spdx_id="SPDXRef-File-" + _safe_id(path),
                checksums=[Checksum(ChecksumAlgorithm.SHA1, h["sha1"]),
                           Checksum(ChecksumAlgorithm.SHA256, h["sha256"]),
                           Checksum(ChecksumAlgorithm.MD5, package.md5sums[path])],
                license_concluded=noassert, copyright_text=noassert))
        verification = calculate_package_verification_code(own_files) if own_files else None
        doc_packages.append(Package(
            spdx_id=spdx_id, name=package.name, download_location=noassert,
            version=package.version or None, supplier=supplier,
            files_analyzed=bool(own_files), verification_code=verification,
            homepage=package.homepage or None,
            source_info=f"built from source package {package.source}" if package.source else None,
            license_concluded=noassert, license_declared=noassert, copyright_text=noassert,
            primary_package_purpose=PackagePurpose.LIBRARY,
            comment=f"from /var/lib/dpkg/{package.origin}",
            external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl",
                                                    _purl(package, distro).to_string())]))
        relationships.append(Relationship("SPDXRef-Image", RelationshipType.CONTAINS, spdx_id))
        for f in own_files:
            files.append(f)
            relationships.append(Relationship(spdx_id, RelationshipType.CONTAINS, f.spdx_id))
    document = Document(creation, packages=doc_packages, files=files, relationships=relationships)
    with _linear_spdx_id_lookup(document):
        problems = validate_full_spdx_document(document) if validate else []
    if problems:
        raise SbomError("the SPDX document does not validate:\n  " +
                        "\n  ".join(p.validation_message for p in problems[:20]))
    out = io.StringIO()
    write_document_to_stream(document, out, validate=False)
    return _sorted_json(out.getvalue())


@contextlib.contextmanager
def _linear_spdx_id_lookup(document: Any) -> Iterator[None]:
    """spdx-tools 0.8.5 lists every element id of the document again for each id a
    relationship names (quadratic: seconds for a thousand files); while validating this
    document, that list is made once. The checks themselves are the library's."""
    from spdx_tools.spdx.validation import spdx_id_validators as ids

    original = getattr(ids, "get_list_of_all_spdx_ids", None)
    if original is None:  # another spdx-tools: validate as it does
        yield
        return
    memo: list[str] = []

    def once(doc: Any) -> list[str]:
        if doc is not document:
            return original(doc)
        if not memo:
            memo.extend(original(doc))
        return memo

    ids.get_list_of_all_spdx_ids = once
    try:
        yield
    finally:
        ids.get_list_of_all_spdx_ids = original


def _sorted_json(text: str) -> bytes:
    """Pretty JSON with sorted keys (stable bytes, readable in forge-out)."""
    return json.dumps(json.loads(text), indent=1, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def cyclonedx_json(subject: ImageSubject, pkgs: Sequence[DebPackage], distro: dict[str, str],
                   hashes: dict[str, dict[str, Any]], tool: str, *, validate: bool = True) -> bytes:
    """The CycloneDX 1.6 JSON document: the image as metadata.component, each package a
    library component (status.d packages with their files as sub-components). Validated
    against the 1.6 schema; SbomError says what does not."""
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.contact import OrganizationalEntity
    from cyclonedx.output.json import JsonV1Dot6
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    image = Component(name=subject.name, type=ComponentType.CONTAINER, version=subject.digest,
                      bom_ref="image", purl=_image_purl(subject),
                      hashes=[HashType(alg=HashAlgorithm.SHA_256, content=subject.digest.split(":", 1)[1])],
                      properties=[Property(name="forge:platform", value=subject.platform)])
    components = []
    if distro.get("ID"):
        components.append(Component(name=distro["ID"], version=distro.get("VERSION_ID") or None,
                                    type=ComponentType.OPERATING_SYSTEM, bom_ref="os",
                                    description=distro.get("PRETTY_NAME") or None))
    for package in pkgs:
        purl = _purl(package, distro)
        children = []
        for path in sorted(package.md5sums):
            h = hashes.get(path)
            if h is None:
                continue
            children.append(Component(
                name="/" + path, type=ComponentType.FILE, bom_ref=f"file:{package.ident}:/{path}",
                hashes=[HashType(alg=HashAlgorithm.SHA_1, content=h["sha1"]),
                        HashType(alg=HashAlgorithm.SHA_256, content=h["sha256"]),
                        HashType(alg=HashAlgorithm.MD5, content=package.md5sums[path])]))
        name, _ = parseaddr(package.maintainer)
        components.append(Component(
            name=package.name, version=package.version or None, type=ComponentType.LIBRARY,
            bom_ref=purl.to_string(), purl=purl,
            supplier=OrganizationalEntity(name=name or package.maintainer) if package.maintainer else None,
            properties=[Property(name="forge:dpkg:database", value=f"/var/lib/dpkg/{package.origin}"),
                        *([Property(name="forge:dpkg:source", value=package.source)] if package.source else [])],
            components=children or None))
    bom = Bom(components=components,
              serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"urn:dev.forge:cyclonedx:{subject.digest}"),
              metadata=BomMetaData(component=image, timestamp=_dt.datetime.fromtimestamp(subject.epoch, _dt.UTC),
                                   properties=[Property(name="forge:tool", value=tool)]))
    bom.register_dependency(image, components)
    text = JsonV1Dot6(bom).output_as_string()
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) if validate else None
    if error is not None:
        raise SbomError(f"the CycloneDX document does not validate: {error}")
    return _sorted_json(text)
