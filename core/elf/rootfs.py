"""A read-only view of an image's root filesystem, with every path resolved inside it.

The dynamic loader of an image runs with that image's ``/`` as its root, so a symlink
``/lib -> usr/lib`` or ``libz.so.1 -> /usr/lib/x86_64-linux-gnu/libz.so.1.2.13`` must
resolve against the image, never against the host running forge. ``RootFS`` therefore
does all path resolution itself, the way the kernel does: component by component,
``..`` taken physically (from the directory a symlink led to) and clamped at ``/``,
absolute link targets restarting at the image's root, at most 40 links per lookup
(Linux's ``MAXSYMLINKS``; more is ``ELOOP``).

A backing implements four primitives on *canonical* paths (absolute, no symlink among
their components): ``_kind``, ``_names``, ``_stat`` and ``_open``. Two backings exist:
``DirectoryRootFS`` (an unpacked tree on the host) here, and ``LayeredRootFS`` (OCI layer
tarballs merged in order) in ``forge.core.elf.layered``.

A ``RootFS`` is a snapshot: lookups are cached, so the tree must not change while one is
in use.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from forge.core.errors import ForgeError, did_you_mean

FILE, DIR, SYMLINK, OTHER = "file", "dir", "symlink", "other"
MAXSYMLINKS = 40


class RootFSError(ForgeError):
    """A root filesystem cannot be read, or a path in it does not resolve."""


class NoSuchPathError(RootFSError):
    """A path asked for does not exist in the root filesystem (or is a dangling link)."""


@dataclass(frozen=True)
class Entry:
    """What ``lstat`` says about one path: ``kind`` is file, dir, symlink or other."""

    kind: str
    mode: int = 0
    size: int = 0
    target: str = ""  # symlink target, verbatim


@dataclass(frozen=True)
class Resolved:
    """A path resolved inside the root: the real path, its entry, and the symlinks
    traversed on the way (absolute paths, in the order followed) — what a tool that
    copies the file must also copy for the original path to keep working."""

    path: str
    entry_kind: str
    links: tuple[str, ...]


def split(path: str) -> list[str]:
    """Components of ``path`` without empty and ``.`` parts (``..`` is kept)."""
    return [p for p in path.split("/") if p and p != "."]


def join(directory: str, name: str) -> str:
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


class RootFS:
    """Read-only virtual filesystem; all public paths are absolute paths in the image."""

    def __init__(self) -> None:
        self._resolved: dict[tuple[str, bool], Resolved | int] = {}
        self._targets: dict[str, str] = {}

    # --- primitives a backing implements (paths are canonical) ---------------------
    def _kind(self, directory: str, name: str) -> str | None:
        """Kind of ``directory/name`` without following it, or None if absent."""
        raise NotImplementedError

    def _names(self, directory: str) -> list[str]:
        raise NotImplementedError

    def _stat(self, path: str) -> Entry:
        raise NotImplementedError

    def _open(self, path: str) -> BinaryIO:
        raise NotImplementedError

    def _readlink(self, path: str) -> str:
        target = self._targets.get(path)
        if target is None:
            target = self._targets[path] = self._stat(path).target
        return target

    # --- resolution -----------------------------------------------------------------
    def resolve(self, path: str, *, follow: bool = True) -> Resolved | None:
        """Resolve ``path`` the way the kernel would inside this root.

        Returns None for a missing path, a dangling link, a symlink loop or a
        non-directory used as a directory. With ``follow=False`` a final symlink is not
        followed (``lstat`` semantics); parents are always followed. Relative paths are
        taken from ``/``.
        """
        found = self.lookup(path, follow=follow)
        return None if isinstance(found, int) else found

    def lookup(self, path: str, *, follow: bool = True) -> Resolved | int:
        """Like ``resolve`` but a failure is the errno ``open(2)`` would set: ENOENT,
        ENOTDIR or ELOOP (the loader treats them differently)."""
        key = (path, follow)
        try:
            return self._resolved[key]
        except KeyError:
            pass
        result = self._resolved[key] = self._walk(path, follow)
        return result

    def _walk(self, path: str, follow: bool) -> Resolved | int:
        todo = split(path)
        todo.reverse()  # a stack: the next component is at the end
        cur: list[str] = []
        links: list[str] = []
        kind = DIR
        hops = 0
        while todo:
            name = todo.pop()
            if kind != DIR:
                return errno.ENOTDIR
            if name == "..":
                if cur:
                    cur.pop()
                continue
            directory = "/" + "/".join(cur)
            kind = self._kind(directory, name)
            if kind is None:
                return errno.ENOENT  # including a dangling link's target
            if kind == SYMLINK and (todo or follow):
                hops += 1
                if hops > MAXSYMLINKS:
                    return errno.ELOOP
                here = join(directory, name)
                links.append(here)
                target = self._readlink(here)
                if not target:
                    return errno.ENOENT
                if target.startswith("/"):
                    cur = []
                todo.extend(reversed(split(target)))
                kind = DIR
                continue
            cur.append(name)
        return Resolved("/" + "/".join(cur), kind, tuple(links))

    def realpath(self, path: str) -> str:
        """The real path of ``path`` inside the root; raises NoSuchPathError if it
        does not resolve (missing, dangling or looping)."""
        return self.require(path).path

    def require(self, path: str, follow: bool = True) -> Resolved:
        """``resolve`` or raise NoSuchPathError, with a "did you mean" from the parent."""
        found = self.resolve(path, follow=follow)
        if found is None:
            parent, _, name = path.rstrip("/").rpartition("/")
            hint = ""
            if (where := self.resolve(parent or "/")) and where.entry_kind == DIR:
                hint = did_you_mean(name, self._names(where.path))
            raise NoSuchPathError(f"{self}: no such file or directory: {path}{hint}")
        return found

    # --- public queries --------------------------------------------------------------
    def lstat(self, path: str) -> Entry | None:
        """The entry at ``path`` without following a final symlink, or None."""
        found = self.resolve(path, follow=False)
        if found is None:
            return None
        if found.path == "/":
            return Entry(DIR, stat.S_IFDIR | 0o755)
        return self._stat(found.path)

    def stat(self, path: str) -> Entry | None:
        """The entry ``path`` leads to after following symlinks, or None."""
        found = self.resolve(path)
        return None if found is None else self.lstat(found.path)

    def exists(self, path: str) -> bool:
        return self.resolve(path) is not None

    def is_file(self, path: str) -> bool:
        found = self.resolve(path)
        return found is not None and found.entry_kind == FILE

    def is_dir(self, path: str) -> bool:
        found = self.resolve(path)
        return found is not None and found.entry_kind == DIR

    def listdir(self, path: str) -> list[str]:
        """Sorted names in the directory ``path`` leads to."""
        found = self.require(path)
        if found.entry_kind != DIR:
            raise RootFSError(f"{self}: not a directory: {path}")
        return sorted(self._names(found.path))

    def open(self, path: str) -> BinaryIO:
        """Open the regular file ``path`` leads to, for binary reading."""
        found = self.require(path)
        if found.entry_kind != FILE:
            raise RootFSError(f"{self}: not a regular file: {path} ({found.entry_kind})")
        return self._open(found.path)

    def read_bytes(self, path: str) -> bytes:
        with self.open(path) as fh:
            return fh.read()

    def glob(self, pattern: str) -> list[str]:
        """Paths matching a glob(3) pattern (``*``, ``?``, ``[...]`` per component;
        a leading ``.`` is matched only explicitly), sorted like glob(3) does."""
        results = ["/"]
        parts = split(pattern)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt: list[str] = []
            for base in results:
                if not any(c in part for c in "*?["):
                    candidate = join(base, part)
                    if (self.lstat(candidate) is not None) if last else self.is_dir(candidate):
                        nxt.append(candidate)
                    continue
                if not self.is_dir(base):
                    continue
                for name in self.listdir(base):
                    if name.startswith(".") and not part.startswith("."):
                        continue
                    if fnmatch.fnmatchcase(name, part):
                        candidate = join(base, name)
                        if last or self.is_dir(candidate):
                            nxt.append(candidate)
            results = nxt
        return sorted(results) if parts else []

    def walk_files(self, top: str = "/") -> Iterator[str]:
        """Every regular file under ``top`` (symlinks are not followed), sorted."""

        def walk(directory: str) -> Iterator[str]:
            for name in sorted(self._names(directory)):
                kind = self._kind(directory, name)
                if kind == DIR:
                    yield from walk(join(directory, name))
                elif kind == FILE:
                    yield join(directory, name)

        return walk(self.require(top).path)


class DirectoryRootFS(RootFS):
    """A root filesystem unpacked in a host directory.

    Each directory is listed once (``os.scandir`` gives the entry kinds without a
    ``stat``), so probing a search path for a library that is not there costs a dict
    lookup. The host only ever sees canonical paths, which contain no symlink, so a
    link like ``usr/bin/foo -> /usr/lib/foo`` can never escape to the host's ``/usr``.
    """

    def __init__(self, host_dir: str | os.PathLike[str]) -> None:
        super().__init__()
        self.host_dir = os.path.abspath(host_dir)
        if not os.path.isdir(self.host_dir):
            raise NoSuchPathError(f"root filesystem directory does not exist: {host_dir}")
        self._prefix = "" if self.host_dir == "/" else self.host_dir
        self._listings: dict[str, dict[str, str]] = {}

    def __repr__(self) -> str:
        return f"DirectoryRootFS({self.host_dir!r})"

    __str__ = __repr__

    def _host(self, path: str) -> str:
        return self._prefix + path

    def _listing(self, directory: str) -> dict[str, str]:
        listing = self._listings.get(directory)
        if listing is None:
            listing = {}
            try:
                with os.scandir(self._host(directory)) as it:
                    for e in it:
                        if e.is_symlink():
                            listing[e.name] = SYMLINK
                        elif e.is_dir(follow_symlinks=False):
                            listing[e.name] = DIR
                        elif e.is_file(follow_symlinks=False):
                            listing[e.name] = FILE
                        else:
                            listing[e.name] = OTHER
            except OSError:
                pass  # unreadable: empty, like a directory we may not search
            self._listings[directory] = listing
        return listing

    def _kind(self, directory: str, name: str) -> str | None:
        return self._listing(directory).get(name)

    def _names(self, directory: str) -> list[str]:
        return list(self._listing(directory))

    def _stat(self, path: str) -> Entry:
        st = os.lstat(self._host(path))
        if stat.S_ISLNK(st.st_mode):
            return Entry(SYMLINK, st.st_mode, st.st_size, os.readlink(self._host(path)))
        kind = DIR if stat.S_ISDIR(st.st_mode) else FILE if stat.S_ISREG(st.st_mode) else OTHER
        return Entry(kind, st.st_mode, st.st_size)

    def _open(self, path: str) -> BinaryIO:
        return open(self._host(path), "rb")  # noqa: SIM115 - the caller closes it
