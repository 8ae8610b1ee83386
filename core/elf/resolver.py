"""``resolve_needed`` without ``ldd``: which libraries glibc's loader would map, found
statically in an image's root filesystem, for any architecture.

For each input file the loader's breadth-first walk is replayed (``_dl_map_object_deps``):
the file itself (loaded as the main program, as ``ld.so --list FILE`` does), its
``PT_INTERP`` (or, for a library, the architecture's default interpreter, which appears
in the result only if something needs its soname), ``LD_PRELOAD`` and
``/etc/ld.so.preload``, then every
object's ``DT_NEEDED`` in order. A name that matches an already-loaded object — the name
it was asked for, the path it was opened as, or its ``DT_SONAME`` — is not searched again,
and a search that lands on an already-loaded file reuses it. A name containing ``/`` is
opened as is (``direct``); any other is searched, per glibc's ``_dl_map_object``:

1. ``rpath``: only if the *requesting* object has no ``DT_RUNPATH``: the ``DT_RPATH`` of
   the requesting object, then of the object that loaded it, and so on up to the
   executable (an object that has a ``DT_RUNPATH`` contributes no ``DT_RPATH``);
2. ``ld_library_path``: ``LD_LIBRARY_PATH`` (``:`` or ``;`` separated);
3. ``runpath``: the requesting object's own ``DT_RUNPATH`` — so it reaches direct
   dependencies only;
4. ``ld.so.conf``: the emulated ld.so.cache (see ``forge.core.elf.loaderconf``);
5. ``default``: the system directories compiled into the image's ld.so.

Steps 4 and 5 are skipped for an object linked with ``-z nodefaultlib``. ``$ORIGIN`` is the
directory of the path an object was opened as (for the executable: of its real path, as
the kernel reports it through ``/proc/self/exe``). A candidate is skipped if it is missing,
a dangling or looping link, not a regular file, or an ELF of another class, machine or ARM
float ABI; a candidate that is not a valid ELF (or has the wrong byte order or OS ABI) makes
glibc fail that load, reported in ``errors`` and ``missing``. Relative paths are taken from
``/`` (the image's working directory is not known here).

Not emulated: glibc-hwcaps and legacy hwcap subdirectories (CPU-dependent; Debian ships no
library only there), secure-mode (setuid) restrictions, ``LD_AUDIT``, dlopen().
"""

from __future__ import annotations

import errno
import posixpath
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from forge.core.elf.elfinfo import ElfInfo, read_elf_info
from forge.core.elf.loaderconf import (
    ArchSpec,
    arch_spec,
    expand_dst,
    normalize_dir,
    read_ld_so_conf,
    split_search_path,
    system_dirs,
)
from forge.core.elf.rootfs import FILE, Resolved, RootFS, RootFSError

__all__ = [
    "ElfInfo",
    "Library",
    "LibraryResolver",
    "Reason",
    "Resolution",
    "env_value",
    "ld_library_path_from_env",
    "resolve_needed",
]

HOWS = ("rpath", "ld_library_path", "runpath", "ld.so.conf", "default", "interp", "direct")
PRELOAD_FILE = "/etc/ld.so.preload"
LD_PRELOAD = "LD_PRELOAD"  # the needed_by of a library the environment preloads
_STOP = object()  # a sentinel: open() failed with ELOOP
_VALID_OSABI = {0, 3}  # ELFOSABI_SYSV, ELFOSABI_GNU (ARM also accepts ELFOSABI_ARM_AEABI)


@dataclass(frozen=True)
class Reason:
    """Why a library is loaded: ``needed_by`` (a path, or ``/etc/ld.so.preload``) names
    ``soname`` in DT_NEEDED (or PT_INTERP), found in ``search_dir`` by ``how``."""

    needed_by: str
    soname: str
    search_dir: str
    how: str


@dataclass
class Library:
    """A path the loader opens, the symlinks it traverses, and the file it reaches."""

    path: str
    realpath: str
    links: tuple[str, ...]
    reasons: list[Reason] = field(default_factory=list)
    _seen: set[Reason] = field(default_factory=set, repr=False, compare=False)

    @property
    def keep(self) -> tuple[str, ...]:
        """Every path that must exist for ``path`` to open this file: links, real file."""
        return (*self.links, self.realpath)


@dataclass
class Resolution:
    """The result of ``LibraryResolver.resolve``.

    ``libraries`` maps each opened path to its ``Library``; ``closure`` maps each input to
    the paths its load opens, in load order (ldd prints the same, except for a second path
    to an already-loaded file, which glibc opens and then drops for the first); ``missing``
    lists ``(file, soname)`` never found, ``file`` being the object whose DT_NEEDED (or
    PT_INTERP) names it; ``errors`` lists ``(file, soname, message)`` for loads glibc would
    abort (they are in ``missing`` too).
    """

    libraries: dict[str, Library] = field(default_factory=dict)
    missing: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str, str]] = field(default_factory=list)
    closure: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def realpaths(self) -> set[str]:
        return {lib.realpath for lib in self.libraries.values()}

    def keep_paths(self) -> set[str]:
        """Every path (symlinks and real files) the loads need, for copying or keeping."""
        return {p for lib in self.libraries.values() for p in lib.keep}

    def _add(self, path: str, resolved: Resolved, reason: Reason) -> None:
        lib = self.libraries.get(path)
        if lib is None:
            lib = self.libraries[path] = Library(path, resolved.path, resolved.links)
        if reason not in lib._seen:
            lib._seen.add(reason)
            lib.reasons.append(reason)


@dataclass(frozen=True)
class _Found:
    path: str
    resolved: Resolved
    search_dir: str
    how: str


@dataclass(frozen=True)
class _Failed:
    message: str  # '' for "not found"


class _Obj:
    """One loaded object of the walk (glibc's ``struct link_map``, what we need of it)."""

    __slots__ = ("found", "info", "origin", "rpath_chain", "runpath", "search")

    def __init__(self, found: _Found, info: ElfInfo, origin: str) -> None:
        self.found = found
        self.info = info
        self.origin = origin
        self.rpath_chain: tuple[tuple[str, ...], ...] = ()  # own DT_RPATH, then loaders'
        self.runpath: tuple[str, ...] = ()
        self.search: tuple[tuple[str, tuple[str, ...]], ...] | None = None


@dataclass(frozen=True)
class _Arch:
    """The loader a walk runs under: who may be loaded and where the defaults are."""

    elfclass: int
    little_endian: bool
    machine: str
    arm_float: str
    interp: str
    lib: str
    platform: str
    defaults: tuple[str, ...]


def env_value(env: Iterable[str] | None, name: str) -> str:
    """The value of ``name`` in an image config's ``Env`` (``NAME=value`` strings, the
    last assignment winning as in ``docker run``), or ``''``."""
    value = ""
    for item in env or ():
        key, sep, rest = item.partition("=")
        if sep and key == name:
            value = rest
    return value


def ld_library_path_from_env(env: Iterable[str] | None) -> str:
    """``LD_LIBRARY_PATH`` from an image config's ``Env``, or ``''``."""
    return env_value(env, "LD_LIBRARY_PATH")


def resolve_needed(rootfs: RootFS, paths: str | Iterable[str],
                   ld_library_path: str | Sequence[str] = ()) -> Resolution:
    """Resolve ``paths`` in ``rootfs`` once (see ``LibraryResolver`` to reuse caches)."""
    return LibraryResolver(rootfs, ld_library_path).resolve(paths)


class LibraryResolver:
    """Resolves DT_NEEDED statically inside ``rootfs``.

    ``ld_library_path`` is the image's ``LD_LIBRARY_PATH`` (a string, split on ``:`` and
    ``;``, or a list of directories); ``ld_preload`` its ``LD_PRELOAD`` (split on spaces
    and ``:``), loaded before ``/etc/ld.so.preload`` (unless ``preload=False``);
    ``platform`` overrides ``$PLATFORM``; ``ld_so_conf``
    is the conf file emulating ld.so.cache (``None`` for an image without one). Parsed ELF
    headers and search results are cached, so one resolver over many files is fast; the
    root filesystem must not change meanwhile.
    """

    def __init__(self, rootfs: RootFS, ld_library_path: str | Sequence[str] = (), *,
                 ld_preload: str | Sequence[str] = (), platform: str | None = None,
                 ld_so_conf: str | None = "/etc/ld.so.conf", preload: bool = True) -> None:
        self.rootfs = rootfs
        if isinstance(ld_library_path, str):
            ld_library_path = split_search_path(ld_library_path, ":;")
        self.ld_library_path = tuple(ld_library_path)
        if isinstance(ld_preload, str):
            ld_preload = ld_preload.replace(":", " ").split()
        self.platform = platform
        self.conf_dirs = read_ld_so_conf(rootfs, ld_so_conf) if ld_so_conf else ()
        self.preload = tuple((LD_PRELOAD, name) for name in ld_preload)
        if preload:
            self.preload += tuple((PRELOAD_FILE, name) for name in self._read_preload())
        self._infos: dict[str, ElfInfo | None] = {}
        self._arches: dict[tuple, _Arch] = {}
        self._searches: dict[tuple, _Found | _Failed] = {}

    def _read_preload(self) -> tuple[str, ...]:
        try:
            text = self.rootfs.read_bytes(PRELOAD_FILE).decode("utf-8", "surrogateescape")
        except RootFSError:
            return ()
        return tuple(text.replace(":", " ").split())

    def elf_info(self, realpath: str) -> ElfInfo | None:
        """The ElfInfo of a regular file (by real path), cached; None if not ELF."""
        try:
            return self._infos[realpath]
        except KeyError:
            pass
        try:
            with self.rootfs.open(realpath) as fh:
                info = read_elf_info(fh)
        except (RootFSError, OSError):
            info = None
        self._infos[realpath] = info
        return info

    def _arch(self, info: ElfInfo) -> _Arch:
        key = (info.elfclass, info.little_endian, info.machine, info.arm_float, info.interp)
        arch = self._arches.get(key)
        if arch is None:
            spec: ArchSpec | None = arch_spec(info.machine, info.elfclass, info.arm_float)
            interp = info.interp or (spec.interp if spec else "")
            defaults = system_dirs(self.rootfs, interp, spec)
            arm_float = info.arm_float or ("hard" if info.machine == "EM_ARM" else "")
            platform = self.platform or (spec.platform if spec else "")
            arch = self._arches[key] = _Arch(info.elfclass, info.little_endian, info.machine,
                                             arm_float, interp, defaults[0].lstrip("/"),
                                             platform, defaults)
        return arch

    # --- the walk -----------------------------------------------------------------------
    def resolve(self, paths: str | Iterable[str]) -> Resolution:
        """Resolve every input (a path in the root filesystem; symlinks are followed).

        Raises ``NoSuchPathError`` for an input that does not exist. A non-ELF or static
        file loads nothing.
        """
        result = Resolution()
        for path in [paths] if isinstance(paths, str) else paths:
            self._walk(path, result)
        return result

    def _walk(self, path: str, result: Resolution) -> None:
        resolved = self.rootfs.require(path)
        info = self.elf_info(resolved.path) if resolved.entry_kind == FILE else None
        result.closure[path] = ()
        if info is None or not (info.dynamic or info.interp):
            return
        walk = _Walk(self, result, path, resolved, info)
        walk.run()
        result.closure[path] = tuple(dict.fromkeys(walk.order))

    # --- search -------------------------------------------------------------------------
    def _expand_dir(self, directory: str, obj: _Obj, arch: _Arch) -> str | None:
        expanded = expand_dst(directory, origin=obj.origin, lib=arch.lib,
                              platform=arch.platform)
        return None if expanded is None else normalize_dir(expanded)

    def _dirs(self, value: str | None, obj: _Obj, arch: _Arch) -> tuple[str, ...]:
        if value is None:
            return ()
        dirs = (self._expand_dir(d, obj, arch) for d in split_search_path(value))
        return tuple(dict.fromkeys(d for d in dirs if d is not None))

    def _rpath(self, obj: _Obj, arch: _Arch) -> tuple[tuple[str, ...], ...]:
        # glibc drops DT_RPATH of an object that has DT_RUNPATH (get-dynamic-info.h)
        if obj.info.runpath is not None or obj.info.rpath is None:
            return ()
        return (self._dirs(obj.info.rpath, obj, arch),)

    def _runpath(self, obj: _Obj, arch: _Arch) -> tuple[str, ...]:
        return self._dirs(obj.info.runpath, obj, arch)

    def _search_list(self, loader: _Obj, arch: _Arch, llp: tuple[str, ...]):
        """The path lists searched for ``loader``'s needs, in order, as (how, dirs)."""
        if loader.search is None:
            groups: list[tuple[str, tuple[str, ...]]] = []
            if loader.info.runpath is None:
                groups += (("rpath", dirs) for dirs in loader.rpath_chain)
            groups.append(("ld_library_path", llp))
            groups.append(("runpath", loader.runpath))
            if not loader.info.nodeflib:
                groups.append(("ld.so.conf", self.conf_dirs))
                groups.append(("default", arch.defaults))
            loader.search = tuple((how, dirs) for how, dirs in groups if dirs)
        return loader.search

    def _find(self, name: str, loader: _Obj, arch: _Arch,
              llp: tuple[str, ...]) -> _Found | _Failed:
        if "/" in name:
            path = expand_dst(name, origin=loader.origin, lib=arch.lib, platform=arch.platform)
            if path is None:
                return _Failed("cannot expand $ORIGIN")
            outcome = self._candidate(path, arch)
            if isinstance(outcome, Resolved):
                return _Found(path, outcome, posixpath.dirname(path), "direct")
            return _Failed(outcome if isinstance(outcome, str) else "")  # ENOENT or ELOOP
        search = self._search_list(loader, arch, llp)
        key = (arch, name, search)
        outcome = self._searches.get(key)
        if outcome is None:
            outcome = self._searches[key] = self._search(name, search, arch)
        return outcome

    def _search(self, name: str, search, arch: _Arch) -> _Found | _Failed:
        """glibc's ``open_path`` over each list. The ld.so.conf list stands for the
        cache, which ldconfig filled only with loadable libraries: anything else there
        is passed over."""
        for how, dirs in search:
            for directory in dirs:
                path = f"{directory}/{name}" if directory != "/" else f"/{name}"
                outcome = self._candidate(path, arch)
                if isinstance(outcome, Resolved):
                    return _Found(path, outcome, directory, how)
                if outcome is None or how == "ld.so.conf":
                    continue
                if outcome is _STOP:
                    break  # open() failed other than ENOENT: the rest of this list is skipped
                return _Failed(f"{path}: {outcome}")
        return _Failed("")

    def _candidate(self, path: str, arch: _Arch) -> Resolved | str | object | None:
        """The resolved file if the loader would take ``path``; None to go on searching;
        ``_STOP`` to give up this search list; a message if glibc fails the load."""
        resolved = self.rootfs.lookup(path)
        if isinstance(resolved, int):
            return _STOP if resolved == errno.ELOOP else None  # ENOENT, ENOTDIR: go on
        if resolved.entry_kind != FILE:
            return "cannot read file data"  # open() works on a directory, read() fails
        info = self.elf_info(resolved.path)
        if info is None:
            return "invalid ELF header"
        if info.elfclass != arch.elfclass:
            return None  # "not a fatal error" in glibc's open_verify
        if info.little_endian != arch.little_endian:
            return "ELF file data encoding does not match"
        if info.osabi not in _VALID_OSABI and not (info.machine == "EM_ARM" and info.osabi == 64):
            return "ELF file OS ABI invalid"
        if info.machine != arch.machine:
            return None
        if arch.arm_float and info.arm_float and info.arm_float != arch.arm_float:
            return None  # VALID_FLOAT_ABI: hard-float ld.so skips soft-float EABI5 objects
        return resolved

class _Walk:
    """The load of one input: glibc's list of loaded objects and its BFS queue."""

    def __init__(self, resolver: LibraryResolver, result: Resolution, path: str,
                 resolved: Resolved, info: ElfInfo) -> None:
        self.resolver = resolver
        self.result = result
        self.arch = arch = resolver._arch(info)
        self.main = main = _Obj(_Found(path, resolved, "", "main"), info,
                                posixpath.dirname(resolved.path))
        main.rpath_chain = resolver._rpath(main, arch)
        main.runpath = resolver._runpath(main, arch)
        llp = (resolver._expand_dir(d, main, arch) for d in resolver.ld_library_path)
        self.llp = tuple(d for d in llp if d is not None)
        self.by_name: dict[str, _Obj] = {}
        self.by_real: dict[str, _Obj] = {}
        self.order: list[str] = []
        self.queue: deque[_Obj] = deque()

    def register(self, obj: _Obj, *names: str) -> None:
        for name in (*names, obj.info.soname):
            if name:
                self.by_name.setdefault(name, obj)
        self.by_real.setdefault(obj.found.resolved.path, obj)

    def record(self, found: _Found, needed_by: str, name: str) -> None:
        self.result._add(found.path, found.resolved,
                         Reason(needed_by, name, found.search_dir, found.how))
        self.order.append(found.path)

    def run(self) -> None:
        main = self.main
        self.register(main, main.found.path)
        self.load_interp()
        self.queue.append(main)
        for source, name in self.resolver.preload:
            self.need(source, name, main)
        while self.queue:
            obj = self.queue.popleft()
            for name in obj.info.needed:
                self.need(obj.found.path, name, obj)

    def load_interp(self) -> None:
        """Map the interpreter as the kernel does: PT_INTERP, or for a library the
        architecture's default one (recorded only when some DT_NEEDED names it)."""
        own = self.main.info.interp
        interp = own or self.arch.interp
        if not interp:
            return
        resolved = self.resolver.rootfs.resolve(interp)
        info = (self.resolver.elf_info(resolved.path)
                if resolved is not None and resolved.entry_kind == FILE else None)
        if info is None:
            if own:
                self.result.missing.append((self.main.found.path, interp))
            return
        found = _Found(interp, resolved, posixpath.dirname(interp), "interp")
        self.register(_Obj(found, info, found.search_dir), interp, posixpath.basename(interp))
        if own:
            self.record(found, self.main.found.path, interp)

    def need(self, needed_by: str, name: str, loader: _Obj) -> None:
        known = self.by_name.get(name)
        if known is not None:
            if known is not self.main:
                self.record(known.found, needed_by, name)
            return
        outcome = self.resolver._find(name, loader, self.arch, self.llp)
        if isinstance(outcome, _Failed):
            if (needed_by, name) not in self.result.missing:
                self.result.missing.append((needed_by, name))
            if outcome.message:
                self.result.errors.append((needed_by, name, outcome.message))
            return
        known = self.by_real.get(outcome.resolved.path)
        if known is not None:  # the same file under another path: glibc reuses the object
            self.by_name.setdefault(name, known)
            if known is not self.main:
                self.record(outcome, needed_by, name)
            return
        self.record(outcome, needed_by, name)
        info = self.resolver.elf_info(outcome.resolved.path)
        assert info is not None
        obj = _Obj(outcome, info, posixpath.dirname(outcome.path))
        obj.rpath_chain = self.resolver._rpath(obj, self.arch) + loader.rpath_chain
        obj.runpath = self.resolver._runpath(obj, self.arch)
        self.register(obj, name, outcome.path)
        self.queue.append(obj)
