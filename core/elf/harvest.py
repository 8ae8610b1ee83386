"""The harvest: what a production image needs from a build image's root filesystem.

The engine of the ``minimize`` rule (rules/minimize.py), independent of actions: it
takes a root filesystem (``LayeredRootFS``, ``DirectoryRootFS``), a ``HarvestRequest``
and optionally the production base's root, and returns a ``Harvest`` — the nodes of one
layer and the report that says why each is there. Every ELF file asked for is resolved
with glibc's search rules for its own architecture (``LibraryResolver``); nothing runs.
Tests and benchmarks call it directly; rules reach it through ``forge.elf``.

* ``harvest``: requested paths (with their symlink chains) plus the libraries they need;
* ``fit_to_base`` / ``layer_conflicts``: placing a layer over the production base
  without hiding its symlinks or directories (``/lib -> usr/lib``);
* ``Harvest.report``: the report document; ``why_chain`` reads it back
  (``forge query why``); ``missing_message``: the error for libraries not found.

The report (``report.json`` beside ``layer.tar.gz`` under forge-out; format
``forge.minimize.report/v1``, sorted keys) holds:

* ``platform``, ``ld_library_path``
  (from the image's Env), ``request`` (the attributes), ``layer`` (digest, diff_id, size)
  and ``totals`` (files, symlinks, dirs, bytes, libraries kept / left to the base /
  excluded, missing);
* ``files``: every path of the layer -> ``kind``, ``mode``, ``size`` or ``target``,
  ``from`` (its path in the build image, when fitting to the base moved it), and why:
  ``requested`` (``"<attribute> <pattern>"``) and/or ``needed``, a list of
  ``{opened, needed_by, soname, search_dir, how}`` — the library the loader ``opened``,
  which file needed it by which ``soname`` (DT_NEEDED, or PT_INTERP), the directory it
  was found in and the rule that found it (``rpath``, ``ld_library_path``, ``runpath``,
  ``ld.so.conf``, ``default``, ``interp``, ``direct``); a symlink on the way to a library
  carries the library's reasons;
* ``libraries``: every path the loader opens -> ``realpath``, ``links``, ``reasons`` and
  ``status`` (``kept``, ``provided_by_base``, ``excluded`` with its ``exclude`` pattern);
* ``missing``: ``{file, soname[, error]}`` never found; ``absent``: default patterns the
  image lacks; ``excluded``: paths left out per pattern; ``relocated``: build path ->
  layer path; ``search_dirs``: directories found through ld.so.conf or LD_LIBRARY_PATH
  that the loader does not search by itself (``production`` adds them to
  LD_LIBRARY_PATH); ``notes``: dangling links, links to directories not harvested,
  conflicts with the base that were fitted.
* ``packages``: when the build image has a dpkg database, every package whose files
  were harvested (``name:arch`` -> ``name``, ``version``, ``architecture``, ``files``,
  ``status_d``), and each file's ``package``. With ``dpkg_status`` the layer also gets
  distroless-style ``/var/lib/dpkg/status.d/<name>`` (the package's stanza) and
  ``<name>.md5sums`` (the harvested files) for the packages the production base does not
  have in that version: scanners that read dpkg data (syft, trivy, forge's SBOM) see them.

Not kept from the build image: owners (files are root-owned), xattrs (file
capabilities), hard links (stored as copies); the interpreter of a ``#!`` script is not
followed (list it in ``additional_files``).

Not here: actions, the CAS, writing the layer (the rule does that).
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import stat
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from forge.core.elf.loaderconf import arch_spec, system_dirs
from forge.core.elf.resolver import LibraryResolver
from forge.core.elf.rootfs import DIR, FILE, SYMLINK
from forge.core.errors import ActionFailed, UsageError, did_you_mean

REPORT_FORMAT = "forge.minimize.report/v1"
_GLOB_CHARS = frozenset("*?[")


class MinimizeError(ActionFailed):
    """A minimize request cannot be met: a pattern matches nothing, a library is missing."""


# -- the harvest ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HarvestRequest:
    """What to take from a root filesystem; see the rule's attributes."""

    paths: tuple[str, ...]  # the rule's default is Atom's (rules/minimize.py)
    additional_files: tuple[str, ...] = ()
    additional_lib_locations: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    strict_paths: bool = False
    ld_library_path: str = ""
    ld_preload: str = ""
    dpkg_status: bool = True  # write status.d records for the packages harvested from


@dataclass
class Node:
    """One path of the layer: what it is, where its bytes come from, and why it is there."""

    path: str  # where it goes in the layer
    kind: str  # file, dir or symlink
    mode: int
    size: int = 0
    target: str = ""  # symlink target, verbatim
    source: str = ""  # the path in the build image (differs from path when relocated)
    requested: list[str] = field(default_factory=list)  # "paths /usr/local/bin", ...
    needed: list[dict[str, str]] = field(default_factory=list)  # reasons, see Harvest
    package: str = ""  # the dpkg package that installed it in the build image (name:arch)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "mode": f"{stat.S_IMODE(self.mode):04o}"}
        if self.kind == FILE:
            out["size"] = self.size
        if self.kind == SYMLINK:
            out["target"] = self.target
        if self.source != self.path:
            out["from"] = self.source
        if self.requested:
            out["requested"] = self.requested
        if self.needed:
            out["needed"] = self.needed
        if self.package:
            out["package"] = self.package
        return out


@dataclass
class Harvest:
    """The result of ``harvest``: the layer's nodes and everything the report says.

    ``libraries`` maps each path the loader opens to its real path, the links on the way,
    its reasons (``needed_by`` names ``soname``, found in ``search_dir`` by ``how``) and
    its ``status``: ``kept``, ``provided_by_base`` or ``excluded``.
    """

    nodes: dict[str, Node] = field(default_factory=dict)
    libraries: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: list[dict[str, str]] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    relocated: dict[str, str] = field(default_factory=dict)
    search_dirs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # dpkg packages whose files were harvested: "name:arch" -> version, architecture,
    # files (layer paths), status_d (whether an entry was written for it)
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)
    # distroless-style package records for the layer: layer path -> bytes
    status_d: dict[str, bytes] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        kinds = [n.kind for n in self.nodes.values()]
        statuses = [lib["status"] for lib in self.libraries.values()]
        return {
            "files": kinds.count(FILE), "symlinks": kinds.count(SYMLINK),
            "dirs": kinds.count(DIR),
            "bytes": sum(n.size for n in self.nodes.values() if n.kind == FILE),
            "libraries": statuses.count("kept"),
            "provided_by_base": statuses.count("provided_by_base"),
            "excluded_libraries": statuses.count("excluded"),
            "missing": len(self.missing),
        }

    def report(self, **header: Any) -> dict[str, Any]:
        """The report document (described in this module's docstring)."""
        return {
            "format": REPORT_FORMAT, **header,
            "totals": self.totals(),
            "files": {p: n.to_json() for p, n in sorted(self.nodes.items())},
            "libraries": dict(sorted(self.libraries.items())),
            "missing": self.missing,
            "absent": self.absent,
            "excluded": dict(sorted(self.excluded.items())),
            "relocated": dict(sorted(self.relocated.items())),
            "search_dirs": self.search_dirs,
            "notes": self.notes,
            "packages": dict(sorted(self.packages.items())),
        }


def excluded_by(path: str, patterns: Iterable[str]) -> str | None:
    """The first pattern that matches ``path`` or one of its parent directories."""
    patterns = tuple(patterns)
    if not patterns:
        return None
    probe = path
    while probe not in ("/", ""):
        for pattern in patterns:
            if fnmatch.fnmatchcase(probe, pattern):
                return pattern
        probe = posixpath.dirname(probe)
    return None


def expand_pattern(fs: Any, pattern: str) -> list[str]:
    """Paths of the image matching an absolute path or glob (a dangling link matches)."""
    if _GLOB_CHARS & set(pattern):
        return fs.glob(pattern)
    return [pattern] if fs.lstat(pattern) is not None else []


class _Harvester:
    def __init__(self, fs: Any, request: HarvestRequest) -> None:
        self.fs = fs
        self.request = request
        self.h = Harvest()
        self.inputs: list[str] = []
        self._dir_links: dict[str, str] = {}  # link -> directory it leads to (not walked)
        self._sysdirs: dict[tuple[str, int, str], tuple[str, ...]] = {}

    # -- requested paths -----------------------------------------------------------------
    def take_patterns(self) -> None:
        r = self.request
        for attr_name, patterns, strict in (
            ("paths", r.paths, r.strict_paths),
            ("additional_files", r.additional_files, True),
            ("additional_lib_locations", r.additional_lib_locations, True),
        ):
            for pattern in patterns:
                matches = expand_pattern(self.fs, pattern)
                if not matches:
                    if strict:
                        raise MinimizeError(f"{attr_name}: {pattern!r} matches nothing in the "
                                            f"image{self._hint(pattern)}")
                    self.h.absent.append(pattern)
                    continue
                for match in matches:
                    self.take(match, f"{attr_name} {pattern}")
        for link, directory in self._dir_links.items():
            if directory not in self.h.nodes:
                self.h.notes.append(f"{link} links to the directory {directory}, which is not "
                                    "harvested (add it to additional_files if it is needed)")

    def _hint(self, pattern: str) -> str:
        parent, _, name = pattern.rstrip("/").rpartition("/")
        if _GLOB_CHARS & set(parent):
            return ""
        found = self.fs.resolve(parent or "/")
        if found is None or found.entry_kind != DIR:
            return f" ({parent or '/'} does not exist)" if found is None else ""
        return did_you_mean(name, self.fs.listdir(found.path))

    def _exclude(self, path: str) -> bool:
        pattern = excluded_by(path, self.request.exclude)
        if pattern is not None:
            self.h.excluded[pattern] = self.h.excluded.get(pattern, 0) + 1
            return True
        return False

    def take(self, path: str, why: str) -> None:
        """A requested path: the links on the way to it, then the entry (a directory whole,
        a symlink with what it leads to)."""
        if self._exclude(path):
            return
        found = self.fs.resolve(path, follow=False)
        if found is None:
            return
        for link in found.links:
            self._link(link, why)
        self._add(found.path, why, top=True)

    def _node(self, path: str, why: str | None) -> Node | None:
        """The node at ``path`` (made from the image's entry), or None if it is new and
        excluded. ``why`` is added to its requested list."""
        node = self.h.nodes.get(path)
        if node is None:
            if self._exclude(path):
                return None
            entry = self.fs.lstat(path)
            node = Node(path, entry.kind, entry.mode, entry.size, entry.target, path)
            self.h.nodes[path] = node
        if why is not None and why not in node.requested:
            node.requested.append(why)
        return node

    def _link(self, path: str, why: str | None) -> Node | None:
        if path in self.h.nodes:
            return self._node(path, why)
        entry = self.fs.lstat(path)
        if entry is None or entry.kind != SYMLINK:
            return None
        return self._node(path, why)

    def _add(self, path: str, why: str, top: bool) -> None:
        known = path in self.h.nodes
        node = self._node(path, why)
        if node is None or known:
            return
        if node.kind == DIR:
            for name in self.fs.listdir(path):
                self._add(posixpath.join(path, name), why, top=False)
        elif node.kind == FILE:
            self.inputs.append(path)
        elif node.kind == SYMLINK:
            self._follow(path, why, top)
        else:
            del self.h.nodes[path]
            self.h.notes.append(f"{path}: a device, FIFO or socket; not harvested")

    def _follow(self, path: str, why: str, top: bool) -> None:
        """A symlink that was asked for keeps working: the links it goes through and the
        file it reaches come too; a directory only when the link itself was asked for
        (a link inside a tree to /usr would otherwise drag the whole of /usr in)."""
        found = self.fs.resolve(path)
        if found is None:
            self.h.notes.append(f"{path} -> {self.fs.lstat(path).target}: dangling link, kept as is")
            return
        for link in found.links:
            self._link(link, why)
        if found.entry_kind == FILE:
            self._add(found.path, why, top=False)
        elif found.entry_kind == DIR:
            if top:
                self._add(found.path, why, top=True)
            else:
                self._dir_links[path] = found.path

    # -- libraries ----------------------------------------------------------------------
    def take_libraries(self, base: Any | None) -> None:
        resolver = LibraryResolver(self.fs, self.request.ld_library_path,
                                   ld_preload=self.request.ld_preload)
        resolution = resolver.resolve(sorted(set(self.inputs)))
        errors = {(f, s): m for f, s, m in resolution.errors}
        for file, soname in resolution.missing:
            item = {"file": file, "soname": soname}
            if (file, soname) in errors:
                item["error"] = errors[file, soname]
            self.h.missing.append(item)
        digests: dict[tuple[int, str], str] = {}
        search_dirs: dict[str, None] = {}
        for opened in sorted(resolution.libraries):
            lib = resolution.libraries[opened]
            reasons = [{"needed_by": r.needed_by, "soname": r.soname, "search_dir": r.search_dir,
                        "how": r.how} for r in lib.reasons]
            record: dict[str, Any] = {"realpath": lib.realpath, "links": list(lib.links),
                                      "reasons": reasons}
            self.h.libraries[opened] = record
            pattern = next(filter(None, (excluded_by(k, self.request.exclude)
                                         for k in (opened, *lib.keep))), None)
            if pattern is not None:
                record.update(status="excluded", exclude=pattern)
                continue
            if base is not None and self._provided(base, opened, lib.realpath, digests):
                record["status"] = "provided_by_base"
                continue
            record["status"] = "kept"
            for path in lib.keep:
                node = self._node(path, None)
                if node is None:
                    continue
                for reason in reasons:
                    item = {"opened": opened, **reason}
                    if item not in node.needed:
                        node.needed.append(item)
            for r in lib.reasons:
                if r.how in ("ld.so.conf", "ld_library_path") and \
                        r.search_dir not in self._system_dirs(resolver, lib.realpath):
                    search_dirs[r.search_dir] = None
        self.h.search_dirs = sorted(search_dirs)

    def _system_dirs(self, resolver: Any, realpath: str) -> tuple[str, ...]:
        """The loader's built-in directories for this library's architecture: a library
        found there needs no LD_LIBRARY_PATH in the production image."""
        info = resolver.elf_info(realpath)
        if info is None:
            return ()
        key = (info.machine, info.elfclass, info.arm_float)
        if key not in self._sysdirs:
            spec = arch_spec(*key)
            self._sysdirs[key] = system_dirs(self.fs, spec.interp if spec else None, spec)
        return self._sysdirs[key]

    def _provided(self, base: Any, opened: str, realpath: str,
                  digests: dict[tuple[int, str], str]) -> bool:
        """True if the production base opens the same bytes at ``opened``."""
        found = base.resolve(opened)
        if found is None or found.entry_kind != FILE:
            return False
        ours, theirs = self.fs.lstat(realpath), base.lstat(found.path)
        if ours is None or theirs is None or ours.size != theirs.size:
            return False

        def digest(fs: Any, index: int, path: str) -> str:
            key = (index, path)
            if key not in digests:
                h = hashlib.sha256()
                with fs.open(path) as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
                digests[key] = h.hexdigest()
            return digests[key]

        return digest(self.fs, 0, realpath) == digest(base, 1, found.path)


def harvest(fs: Any, request: HarvestRequest, base: Any | None = None) -> Harvest:
    """Harvest ``request`` from the root filesystem ``fs``; ``base`` is the production
    base's (libraries it provides are left out, paths are fitted to its symlinks)."""
    harvester = _Harvester(fs, request)
    harvester.take_patterns()
    harvester.take_libraries(base)
    h = harvester.h
    if base is not None:
        h.notes.extend(f"fitted to the base: {c}" for c in fit_to_base(h, base))
    own_packages(h, fs, base, status_d=request.dpkg_status)
    return h


# -- dpkg: which package each harvested file came from ------------------------------------

DPKG = "/var/lib/dpkg"
INSTALLED = "install ok installed"


@dataclass
class DpkgDatabase:
    """What an image's dpkg database says: installed stanzas by ``name:arch``, the owner
    of each installed path and its md5 (paths made canonical: directories resolved
    through the image's symlinks, so ``/lib/x86_64-linux-gnu/libz.so.1`` of a merged-/usr
    image is found at ``/usr/lib/...``)."""

    stanzas: dict[str, Any] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    md5: dict[str, str] = field(default_factory=dict)


def _canonical(fs: Any, path: str, dirs: dict[str, str]) -> str:
    directory, name = posixpath.split(posixpath.normpath(path))
    if directory not in dirs:
        found = fs.resolve(directory)
        dirs[directory] = found.path if found is not None and found.entry_kind == DIR else directory
    return posixpath.join(dirs[directory], name)


def read_dpkg(fs: Any, *, files: bool = True) -> DpkgDatabase | None:
    """The dpkg database of a root filesystem (``/var/lib/dpkg/status`` parsed with
    python-debian, ``info/<pkg>.list`` and ``.md5sums``), None when it has none."""
    from debian.deb822 import Deb822

    if not fs.is_file(f"{DPKG}/status"):
        return None
    db = DpkgDatabase()
    with fs.open(f"{DPKG}/status") as fh:
        for stanza in Deb822.iter_paragraphs(fh, use_apt_pkg=False):
            if "Package" in stanza and stanza.get("Status", "").strip() == INSTALLED:
                db.stanzas[f"{stanza['Package']}:{stanza.get('Architecture', '')}"] = stanza
    if not files or not fs.is_dir(f"{DPKG}/info"):
        return db
    by_stem = {}
    for ident in db.stanzas:
        by_stem[ident] = ident
        by_stem.setdefault(ident.split(":", 1)[0], ident)  # list files of Multi-Arch: no packages lack :arch
    dirs: dict[str, str] = {}
    names = fs.listdir(f"{DPKG}/info")
    for entry in sorted(names):
        stem, ext = posixpath.splitext(entry)
        ident = by_stem.get(stem)
        if ident is None or ext not in (".list", ".md5sums"):
            continue
        with fs.open(f"{DPKG}/info/{entry}") as fh:
            text = fh.read().decode("utf-8", "replace")
        for line in text.splitlines():
            if ext == ".list":
                if not line.startswith("/") or line == "/.":
                    continue
                path = _canonical(fs, line, dirs)
                found = fs.resolve(path)
                if found is None or found.entry_kind != DIR:  # directories belong to many
                    db.owners.setdefault(path, ident)
            else:
                md5, _, path = line.partition("  ")
                if len(md5) == 32 and path:
                    db.md5[_canonical(fs, "/" + path, dirs)] = md5
    return db


def own_packages(h: Harvest, fs: Any, base: Any | None, *, status_d: bool) -> None:
    """Name the package of every harvested file (``Node.package``, ``Harvest.packages``)
    and, with ``status_d``, write distroless-style records for them
    (``/var/lib/dpkg/status.d/<name>`` with the package's stanza, ``<name>.md5sums`` with
    the harvested files), so scanners that read dpkg data see what the layer holds. A
    package the base has installed in the same version gets no record (its own status
    already names it)."""
    db = read_dpkg(fs)
    if db is None:
        return
    dirs: dict[str, str] = {}
    for node in h.nodes.values():
        if node.kind == DIR:
            continue
        owner = db.owners.get(_canonical(fs, node.source, dirs))
        if owner is None:
            continue
        node.package = owner
        stanza = db.stanzas[owner]
        entry = h.packages.setdefault(owner, {
            "name": stanza["Package"], "version": stanza.get("Version", ""),
            "architecture": stanza.get("Architecture", ""), "files": [], "status_d": False})
        entry["files"].append(node.path)
    if not h.packages:
        return
    base_db = read_dpkg(base, files=False) if base is not None else None
    names = [e["name"] for e in h.packages.values()]
    for ident, entry in sorted(h.packages.items()):
        entry["files"].sort()
        theirs = base_db.stanzas.get(ident) if base_db is not None else None
        if not status_d or (theirs is not None and theirs.get("Version") == entry["version"]):
            continue
        name = entry["name"] if names.count(entry["name"]) == 1 else ident.replace(":", "_")
        record = f"{DPKG.lstrip('/')}/status.d/{name}"
        h.status_d["/" + record] = db.stanzas[ident].dump().encode()
        sums = []
        for node in sorted((n for n in h.nodes.values() if n.package == ident and n.kind == FILE),
                           key=lambda n: n.path):
            md5 = db.md5.get(_canonical(fs, node.source, dirs)) or _md5(fs, node.source)
            sums.append(f"{md5}  {node.path.lstrip('/')}\n")
        if sums:
            h.status_d[f"/{record}.md5sums"] = "".join(sums).encode()
        entry["status_d"] = True


def _md5(fs: Any, path: str) -> str:
    digest = hashlib.md5()  # noqa: S324 - dpkg's md5sums format
    with fs.open(path) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- fitting the layer to the production base ---------------------------------------------


def _placed_dir(base: Any, directory: str, moved: dict[str, str]) -> str:
    """Where ``directory`` of the build image ends up over ``base``: through the
    directories already moved, then through the base's own symlinks (the deepest
    ancestor the base has as a directory, real path, plus the rest)."""
    for prefix in sorted(moved, key=len, reverse=True):
        if directory == prefix or directory.startswith(prefix + "/"):
            directory = moved[prefix] + directory[len(prefix):]
            break
    parts = [p for p in directory.split("/") if p]
    for cut in range(len(parts), -1, -1):
        ancestor = "/" + "/".join(parts[:cut])
        found = base.resolve(ancestor)
        if found is not None and found.entry_kind == DIR:
            rest = parts[cut:]
            return posixpath.join(found.path, *rest) if rest else found.path
    return directory


def fit_to_base(h: Harvest, base: Any) -> list[str]:
    """Place the nodes over ``base`` so that no entry replaces a base symlink by a
    directory, or a base directory by a symlink (both hide what the base has there: a
    layer's ``lib/`` over a merged-/usr base's ``/lib -> usr/lib`` would cut every
    program off its libc). Returns the conflicts met, as messages.

    A directory where the base has a symlink to a directory goes through that symlink
    (its content lands in the link's target); a symlink where the base has a directory
    is dropped, and each library opened through it gets a link at its opened path in
    the base's directory, to the real file.
    """
    moved: dict[str, str] = {}
    dropped: dict[str, Node] = {}
    placed: dict[str, Node] = {}
    conflicts: list[str] = []
    for path in sorted(h.nodes):
        node = h.nodes[path]
        final = posixpath.join(_placed_dir(base, posixpath.dirname(path), moved),
                               posixpath.basename(path))
        theirs = base.lstat(final)
        if node.kind == DIR and theirs is not None and theirs.kind == SYMLINK:
            found = base.resolve(final)
            if found is not None and found.entry_kind == DIR:
                moved[path] = found.path
                conflicts.append(f"{path}: a directory in the layer, a symlink to "
                                 f"{found.path} in the base")
                continue
        if node.kind == SYMLINK and theirs is not None and theirs.kind == DIR:
            dropped[path] = node
            conflicts.append(f"{path}: a symlink ({node.target}) in the layer, a directory "
                             "in the base")
            continue
        if final in placed:  # two build paths fold onto one base path: the first stays
            continue
        node.path = final
        placed[final] = node
    where = {n.source: n.path for n in placed.values()}

    def through_dropped(path: str) -> bool:
        return any(path == d or path.startswith(d + "/") for d in dropped)

    for opened, lib in sorted(h.libraries.items()):
        if lib["status"] != "kept" or not dropped:
            continue
        if not (through_dropped(opened) or any(map(through_dropped, lib["links"]))):
            continue
        real = where.get(lib["realpath"], lib["realpath"])
        final = posixpath.join(_placed_dir(base, posixpath.dirname(opened), moved),
                               posixpath.basename(opened))
        if final in placed or final == real:
            continue
        placed[final] = Node(final, SYMLINK, stat.S_IFLNK | 0o777, target=real, source=opened,
                             needed=[{"opened": opened, **r} for r in lib["reasons"]])
    h.nodes = placed
    h.relocated = {n.source: n.path for n in placed.values() if n.source != n.path}
    return conflicts


def layer_conflicts(base: Any, layer_fs: Any) -> list[str]:
    """What a layer (as a root filesystem) would hide of ``base``: see ``fit_to_base``."""
    h = Harvest()

    def walk(directory: str) -> None:
        for name in layer_fs.listdir(directory):
            path = posixpath.join(directory, name)
            entry = layer_fs.lstat(path)
            h.nodes[path] = Node(path, entry.kind, entry.mode, entry.size, entry.target, path)
            if entry.kind == DIR:
                walk(path)

    walk("/")
    return fit_to_base(h, base)


# -- messages and the report read back ---------------------------------------------------


def missing_message(image: str, missing: list[dict[str, str]]) -> str:
    """The error for ``Harvest.missing``: each file -> soname not found in ``image``, and
    the ways out."""
    lines = [f"{m['file']} -> {m['soname']}" + (f" ({m['error']})" if "error" in m else "")
             for m in missing]
    return (f"{len(missing)} needed librar{'y is' if len(missing) == 1 else 'ies are'} not in "
            f"{image} (file -> soname):\n    " + "\n    ".join(lines) +
            "\n  add them to the build image, leave their users out with `exclude`, or set "
            "missing = \"warn\" if the production image gets them another way (packages)")


def _reason_text(reason: dict[str, str]) -> str:
    how = {"default": "a system directory", "ld.so.conf": "ld.so.conf",
           "ld_library_path": "LD_LIBRARY_PATH", "rpath": "DT_RPATH", "runpath": "DT_RUNPATH",
           "interp": "PT_INTERP", "direct": "a path in DT_NEEDED"}.get(reason["how"], reason["how"])
    return f"{reason['soname']} in {reason['search_dir']} (via {how})"


def why_chain(report: dict[str, Any], path: str) -> list[str]:
    """The lines of ``forge query why``: ``path`` <- the file that needed it <- ... <- the
    pattern that requested the first file. The shortest chain is printed; other files that
    need the same path are listed after it."""
    files, libraries = report["files"], report["libraries"]
    by_source = {f.get("from", p): p for p, f in files.items()}
    key = path if path in files else by_source.get(path)
    lines: list[str] = []
    if key is None:
        lib = libraries.get(path) or next(
            (lib for lib in libraries.values() if lib["realpath"] == path), None)
        if lib is None or lib["status"] == "kept":
            hint = did_you_mean(path, list(files) + list(libraries))
            raise UsageError(f"{path} is not in the layer{hint}; it holds {len(files)} paths "
                             "(see report.json)")
        state = ("the production base already has it (same content)"
                 if lib["status"] == "provided_by_base" else
                 f"left out by exclude {lib.get('exclude')!r}")
        lines.append(f"{path}: not in the layer: {state}")
        reasons = [{"opened": path, **r} for r in lib["reasons"]]
    else:
        entry = files[key]
        shown = key if key == path else f"{key} (from {path})"
        lines.append(f"{shown}: {entry['kind']}" +
                     (f", {entry['size']} bytes" if "size" in entry else "") +
                     (f" -> {entry['target']}" if "target" in entry else ""))
        if entry.get("requested"):
            lines.extend(f"  <- requested by {r}" for r in entry["requested"])
            return lines
        reasons = entry.get("needed", [])

    def needers(node: str) -> list[dict[str, str]]:
        lib = libraries.get(node)
        return [{"opened": node, **r} for r in lib["reasons"]] if lib else []

    def requested(node: str) -> list[str]:
        entry = files.get(node) or files.get(by_source.get(node, ""), {})
        return entry.get("requested", [])

    # breadth first from every reason: the first needer that was requested ends the chain
    queue: deque[tuple[str, list[dict[str, str]]]] = deque(
        (r["needed_by"], [r]) for r in reasons)
    seen: set[str] = set()
    chain: list[dict[str, str]] | None = None
    end: list[str] = []
    while queue:
        node, steps = queue.popleft()
        if node in seen:
            continue
        seen.add(node)
        if requested(node):
            chain, end = steps, requested(node)
            break
        for r in needers(node):
            queue.append((r["needed_by"], [*steps, r]))
    if chain is None:  # preloaded (LD_PRELOAD, /etc/ld.so.preload) or a broken report
        chain = reasons[:1]
    for i, step in enumerate(chain):
        # the first step names the path the loader opened when it is not the file asked about
        opened = (f", opened as {step['opened']}"
                  if i == 0 and step["opened"] not in (key, path) else "")
        lines.append(f"  <- needed by {step['needed_by']}: {_reason_text(step)}{opened}")
    lines.extend(f"  <- requested by {r}" for r in end)
    others = sorted({r["needed_by"] for r in reasons} - {chain[0]["needed_by"]}) if chain else []
    if others:
        lines.append(f"  also needed by: {', '.join(others)}")
    return lines
