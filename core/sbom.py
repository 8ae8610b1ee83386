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

Reading is a stream over each layer's tar, once (the files are hashed as they go by; a
small reader of the ustar, GNU and pax headers layers are written with parses it, tarfile
whatever else), applying OCI whiteouts (``.wh.NAME``, ``.wh..wh..opq``) to the few paths above, so it
needs no temporary files. A ``PackageState`` (those paths' contents, as CAS blobs, plus
the hashes of the listed files) records what the layers so far say; ``scan`` can start
from the state of a base image whose layers are a prefix of this one's, so a production
image's SBOM reads only its top layer (the scan of the base is a cached action).

Documents are deterministic: the created time is the build's ``SOURCE_DATE_EPOCH``, the
SPDX namespace and CycloneDX serial number derive from the image digest, and elements
are sorted.

Drafts. Writing and validating the documents of a few hundred packages and files takes
the libraries about a second, and most edits of an image leave its packages as they
were. So the writers run on a package state alone, about ``draft_subject`` — the image's
name, platform and epoch with ``PLACEHOLDER_DIGEST`` for its digest — and ``bind`` puts
the image's digest into the fields that derive from it (``_digest_fields``: the SPDX
namespace and the image package's version, SHA256 checksum and purl; the CycloneDX
serial number and the metadata component's version, purl and SHA-256 hash), checking
that the draft holds the placeholder's values there. The result is byte for byte the
document written for the image directly (tests/supply checks it), and it is as valid as
the draft: what the validators check of those fields — a URI, 64 lowercase hex digits,
a purl, a urn:uuid, a string — holds for one sha256 digest exactly when it holds for
another, and ``bind`` refuses anything else.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import io
import json
import posixpath
import re
import shlex
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, BinaryIO

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


_Entry = tuple[Any, Callable[[], "_Data"]]  # (a TarInfo or _Member, open its data)


def _members(cas: CAS, layer: Layer, *, fast: bool = True) -> Iterator[_Entry]:
    """The members of a layer's tar, in order: ``_fast_members`` or, with ``fast``
    false, tarfile's."""
    with cas.open(layer.digest) as raw, _decompressed(raw, layer) as stream:
        try:
            if fast:
                yield from _fast_members(stream, layer.digest)
                return
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for member in tf:
                    yield member, functools.partial(_extracted, tf, member, layer.digest)
        except (tarfile.TarError, *comp.DECOMPRESSION_ERRORS) as exc:
            raise SbomError(f"layer {layer.digest} is not a readable tar: {exc}") from None


def _extracted(tf: tarfile.TarFile, member: tarfile.TarInfo, layer: str) -> _Data:
    return _Data(tf.extractfile(member), member.size, layer)  # type: ignore[arg-type]


class _Unusual(Exception):
    """A tar feature the fast reader leaves to tarfile."""


@dataclass(slots=True)
class _Member:
    """What ``_apply_layer`` reads of a member, with tarfile's names and meanings."""

    name: str
    type: bytes
    size: int
    linkname: str

    def isfile(self) -> bool:
        return self.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)

    def isdir(self) -> bool:
        return self.type == tarfile.DIRTYPE

    def issym(self) -> bool:
        return self.type == tarfile.SYMTYPE

    def islnk(self) -> bool:
        return self.type == tarfile.LNKTYPE


class _Data:
    """The ``size`` bytes of a member's data, from ``stream`` (the tar stream, or
    tarfile's file object of the member); a short or unreadable one is an SbomError."""

    def __init__(self, stream: BinaryIO, size: int, layer: str):
        self._stream, self.left, self._layer = stream, size, layer

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        try:
            data = self._stream.read(n)
        except (tarfile.TarError, *comp.DECOMPRESSION_ERRORS) as exc:
            raise SbomError(f"layer {self._layer} is not a readable tar: {exc}") from None
        if len(data) < n:
            raise SbomError(f"layer {self._layer} is not a readable tar: unexpected end of data")
        self.left -= n
        return data


_BLOCK = 512
_ZEROS = bytes(_BLOCK)
_BUILTIN = frozenset((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.LNKTYPE,
                      tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE,
                      tarfile.BLKTYPE))
_EXTENSIONS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE)


def _text(field: bytes) -> str:  # tarfile's nts, with its utf-8 and surrogateescape
    end = field.find(0)
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:  # tarfile's nti
    if field[0] in (0o200, 0o377):  # base-256 (GNU), for sizes of 8 GiB and more
        n = int.from_bytes(field[1:], "big")
        return n - 256 ** (len(field) - 1) if field[0] == 0o377 else n
    return int(field.split(b"\0", 1)[0].decode("ascii").strip() or "0", 8)


def _pax(data: bytes) -> dict[str, str]:
    """The records of a pax extended header: ``<length> <key>=<value>\\n`` each."""
    out, pos = {}, 0
    while pos < len(data) and data[pos] != 0:
        space = data.index(b" ", pos)
        end = pos + int(data[pos:space])
        key, sep, value = data[space + 1:end - 1].partition(b"=")
        if not sep or not value or data[end - 1:end] != b"\n":
            raise ValueError("a pax record tarfile reads otherwise")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return out


def _fast_members(stream: BinaryIO, layer: str = "") -> Iterator[_Entry]:
    """The members of a tar stream as tarfile reads them, for what image layers are made
    of — ustar, GNU long names and links, pax records (tarfile applies path, linkpath and
    size of them, as here) — at a tenth of tarfile's cost per member. Anything else
    (sparse files, global pax headers, other member types, a short header, a checksum
    tarfile may read as signed) raises _Unusual, for tarfile to read the layer."""
    longname = longlink = None
    pax: dict[str, str] = {}
    while True:
        header = stream.read(_BLOCK)
        if not header or header == _ZEROS:
            return
        try:
            if len(header) < _BLOCK or _number(header[148:156]) != sum(header) - sum(header[148:156]) + 256:
                raise ValueError("a short header or a checksum to leave to tarfile")
            kind, size = header[156:157], _number(header[124:136])
            if kind in _EXTENSIONS:
                data = _Data(stream, size + -size % _BLOCK, layer).read()[:size]
                if kind == tarfile.XHDTYPE:
                    pax.update(_pax(data))
                elif kind == tarfile.GNUTYPE_LONGNAME:
                    longname = _text(data)
                else:
                    longlink = _text(data)
                continue
            if kind not in _BUILTIN or any(k.startswith("GNU.sparse.") for k in pax) \
                    or (longname is not None and "path" in pax) or (longlink is not None and "linkpath" in pax):
                raise ValueError(f"member type {kind!r}, pax keys {sorted(pax)}")
            name, prefix = _text(header[0:100]), _text(header[345:500])
            if kind == tarfile.AREGTYPE and name.endswith("/"):
                kind = tarfile.DIRTYPE  # a V7 directory
            if kind == tarfile.DIRTYPE:
                name = name.rstrip("/")
            if prefix:
                name = prefix + "/" + name
            if longname is not None:
                name = longname.removesuffix("/") if kind == tarfile.DIRTYPE else longname
            member = _Member(name, kind, size, _text(header[157:257]) if longlink is None else longlink)
            if "path" in pax:
                member.name = pax["path"].rstrip("/")
            if "linkpath" in pax:
                member.linkname = pax["linkpath"]
            if "size" in pax:
                member.size = int(pax["size"])
        except ValueError as exc:
            raise _Unusual(str(exc)) from None
        longname = longlink = None
        pax = {}
        data = _Data(stream, member.size if member.isfile() else 0, layer)  # only files have data
        yield member, lambda data=data: data
        while data.left:  # what the reader left of it
            data.read(1 << 20)
        stream.read(-member.size % _BLOCK if member.isfile() else 0)


def _decompressed(raw: BinaryIO, layer: Layer) -> BinaryIO:
    if layer.compression == comp.GZIP:
        # ISA-L inflates in a thread of its own (it releases the GIL) while this one
        # parses the tar and hashes: a third off a minimize layer's scan
        from isal import igzip_threaded

        return igzip_threaded.open(raw, "rb", threads=1)
    return comp.open_decompressed(raw, layer.compression)


def _hash(fh: Any) -> tuple[str, str]:
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()  # noqa: S324 - SPDX 2.3 requires SHA-1
    while chunk := fh.read(1 << 20):
        sha1.update(chunk)
        sha256.update(chunk)
    return sha1.hexdigest(), sha256.hexdigest()


def _apply_layer(cas: CAS, layer: Layer, state: PackageState,
                 files: dict[str, dict[str, Any]]) -> None:
    """Apply one layer to ``state`` (watched paths) and ``files`` (regular file -> its
    hashes): whiteouts hit only lower layers, so this layer's own entries are collected
    first and laid over afterwards.

    Every regular file is hashed as it streams by, although only those that status.d
    md5sums list are kept: the md5sums come last in a minimize layer (``var/`` sorts
    after ``usr/``), and hashing the few unlisted files there costs less than
    decompressing the layer a second time for the listed ones."""
    try:
        upper, upper_files, hidden = _read_layer(cas, layer, state, fast=True)
    except _Unusual:
        upper, upper_files, hidden = _read_layer(cas, layer, state, fast=False)
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
    for path, hashes in upper_files.items():
        state.hashes.pop(path, None)  # a new entry at a listed path: the start's hash is stale
        if hashes is None:
            files.pop(path, None)
        else:
            files[path] = hashes
    state.layers.append(layer.digest)


def _read_layer(cas: CAS, layer: Layer, state: PackageState, *, fast: bool) -> tuple[
        dict[str, dict[str, str] | None], dict[str, dict[str, Any] | None], list[str]]:
    """What one layer holds: its watched entries, its files' hashes, what it hides."""
    upper: dict[str, dict[str, str] | None] = {}  # watched path -> entry, None = removed
    upper_files: dict[str, dict[str, Any] | None] = {}  # None = not a regular file
    hidden: list[str] = []  # prefixes whose lower content goes (whiteouts, opaque dirs, non-dirs)
    contents: dict[str, str] = {}  # member name -> blob, for hard links
    for member, data in _members(cas, layer, fast=fast):
        path = _norm(member.name)
        base = posixpath.basename(path)
        if base == OPAQUE:
            hidden.append(posixpath.dirname(path) + "/")
            continue
        if base.startswith(WHITEOUT):
            hidden.append(posixpath.join(posixpath.dirname(path), base[len(WHITEOUT):]))
            continue
        watched = _watched(path)
        if not member.isdir():
            if path in _ANCESTORS:
                hidden.append(path)
            upper_files[path] = None
            if member.isfile():
                fh = data()
                if watched:
                    content = fh.read()
                    fh = io.BytesIO(content)
                    upper[path] = {"blob": cas.put_bytes(content).digest}
                    contents[path] = upper[path]["blob"]
                sha1, sha256 = _hash(fh)
                upper_files[path] = {"sha1": sha1, "sha256": sha256, "size": member.size}
        if not watched or member.isfile():
            continue
        if member.issym():
            upper[path] = {"link": member.linkname}
        elif member.islnk():
            target = contents.get(_norm(member.linkname)) or (
                state.entries.get(_norm(member.linkname)) or {}).get("blob")
            upper[path] = {"blob": target} if target else None
        else:
            upper[path] = None
    return upper, upper_files, hidden


def scan(cas: CAS, image: Image, start: PackageState | None = None) -> PackageState:
    """The package state of ``image``: ``start`` (the state of an image whose layers are
    a prefix of this one's) plus the layers after it, or every layer. Each layer is read
    once."""
    digests = [layer.digest for layer in image.layers]
    if start is not None and digests[:len(start.layers)] != start.layers:
        raise ValueError("the start state's layers are not a prefix of the image's")
    state = PackageState(list(start.layers), dict(start.entries), dict(start.hashes)) \
        if start is not None else PackageState()
    files: dict[str, dict[str, Any]] = {}  # the regular files of the layers read here
    for layer in image.layers[len(state.layers):]:
        _apply_layer(cas, layer, state, files)
    listed = _listed(cas, state)
    hashes = {p: h for p, h in state.hashes.items() if p in listed}
    for path in listed - set(hashes):
        if path in files:
            hashes[path] = files[path]
        elif start is not None and start.layers:
            return scan(cas, image)  # listed, and maybe in a lower layer the start did not hash
    state.hashes = hashes
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


def _status_d(cas: CAS, state: PackageState) -> Iterator[tuple[Any, bytes | None]]:
    """(stanza, its md5sums file) of each installed package status.d holds."""
    for path in sorted(state.entries):
        if not path.startswith(STATUS_D) or path.endswith(".md5sums"):
            continue
        data = state.read(cas, path)
        if data is None:
            continue
        md5 = state.read(cas, path + ".md5sums")
        for stanza in _paragraphs(data):
            if "Package" in stanza and stanza.get("Status", INSTALLED).strip() == INSTALLED:
                yield stanza, md5


def _listed(cas: CAS, state: PackageState) -> set[str]:
    """The paths the md5sums of installed status.d packages list: the files of
    ``packages``, without parsing ``status`` (whose packages list none)."""
    return {path for _, md5 in _status_d(cas, state) if md5 for path in parse_md5sums(md5)}


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
    for stanza, md5 in _status_d(cas, state):
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


def _spdx_namespace(digest: str) -> str:
    return f"urn:dev.forge:spdx:{digest}"


def _cyclonedx_serial(digest: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"urn:dev.forge:cyclonedx:{digest}")


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
        document_namespace=_spdx_namespace(subject.digest),
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

    with _PATCHING:  # one document at a time: two threads would restore each other's patch
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


_PATCHING = threading.Lock()


@functools.cache
def _cyclonedx_validator() -> Any:
    """The library's strict 1.6 JSON validator, its schema loaded once per process."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6)


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
              serial_number=_cyclonedx_serial(subject.digest),
              metadata=BomMetaData(component=image, timestamp=_dt.datetime.fromtimestamp(subject.epoch, _dt.UTC),
                                   properties=[Property(name="forge:tool", value=tool)]))
    bom.register_dependency(image, components)
    text = JsonV1Dot6(bom).output_as_string()
    error = _cyclonedx_validator().validate_str(text) if validate else None
    if error is not None:
        raise SbomError(f"the CycloneDX document does not validate: {error}")
    return _sorted_json(text)


# -- drafts --------------------------------------------------------------------------------

PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def draft_subject(name: str, platform: str, epoch: int = 0) -> ImageSubject:
    """The subject a draft is written for: the image's name, platform and epoch, and
    ``PLACEHOLDER_DIGEST`` for the digest it does not have yet."""
    return ImageSubject(name, PLACEHOLDER_DIGEST, platform, epoch)


def _digest_fields(kind: str, subject: ImageSubject) -> tuple[dict[str, Any], dict[str, Any]]:
    """Everything of a ``kind`` ("spdx", "cyclonedx") document that derives from the image
    digest, as the writers above write it: (top-level keys, keys of the image's own
    element). Nothing else differs between two documents of one package state."""
    hexdigest = subject.digest.split(":", 1)[1]
    purl = _image_purl(subject).to_string()
    if kind == "spdx":
        return ({"documentNamespace": _spdx_namespace(subject.digest)},
                {"versionInfo": subject.digest,
                 "checksums": [{"algorithm": "SHA256", "checksumValue": hexdigest}],
                 "externalRefs": [{"referenceCategory": "PACKAGE_MANAGER", "referenceLocator": purl,
                                   "referenceType": "purl"}]})
    return ({"serialNumber": _cyclonedx_serial(subject.digest).urn},
            {"version": subject.digest, "purl": purl,
             "hashes": [{"alg": "SHA-256", "content": hexdigest}]})


def _leaves(value: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, string) of every string in a JSON value, with the object key it is under."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v, key)
    elif isinstance(value, str):
        yield key, value


def _digest_strings(subject: ImageSubject) -> list[str]:
    """The strings of an image's digest the documents hold: its hex and the serial's UUID."""
    return [subject.digest.split(":", 1)[1], str(_cyclonedx_serial(subject.digest))]


def bind(kind: str, draft: bytes, subject: ImageSubject) -> bytes:
    """The ``kind`` document about ``subject`` from its ``draft`` (``spdx_json`` or
    ``cyclonedx_json`` of the same packages about ``draft_subject(subject.name,
    subject.platform, epoch)``, whatever the epoch): the same bytes as writing it for
    ``subject`` with that epoch directly, without the libraries. SbomError when the draft is not such a draft or the
    digest is not a sha256 digest.

    The placeholder's strings (``_digest_strings``) are replaced in the draft's text
    once it is checked that replacing them in the fields ``_digest_fields`` names gives
    the subject's values, that the draft holds each of those fields' strings under its
    key, and that the placeholder's strings occur nowhere else: milliseconds, where
    parsing and writing the JSON again would take tens."""
    if not _DIGEST.fullmatch(subject.digest):
        raise SbomError(f"{subject.name}: image digest {subject.digest!r} is not sha256:<64 hex>")
    placeholder = draft_subject(subject.name, subject.platform)
    pairs = list(zip(_digest_strings(placeholder), _digest_strings(subject), strict=True))

    def replaced(text: str) -> str:
        for old, new in pairs:
            text = text.replace(old, new)
        return text

    text = draft.decode()
    held = 0  # how often the placeholder's strings occur in the image's fields
    for old, new in zip(_digest_fields(kind, placeholder), _digest_fields(kind, subject), strict=True):
        if json.loads(replaced(json.dumps(old))) != new:
            raise SbomError(f"the {kind} fields of {subject.name} do not bind")  # a writer change
        for key, value in _leaves(old):
            written = f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}"
            if written not in text:
                raise SbomError(f"the {kind} draft of {subject.name} lacks {written}: it is not a "
                                f"draft of this image ({subject.platform})")
            held += sum(value.count(s) for s, _ in pairs)
    if sum(text.count(s) for s, _ in pairs) != held:
        raise SbomError(f"the {kind} draft of {subject.name} holds its placeholder digest outside "
                        "the image's own fields")
    return replaced(text).encode()
