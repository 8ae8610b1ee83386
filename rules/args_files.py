"""Atom's args files, read at analysis: the minimize step's ``minimize-<platform>-args``,
and the check that every ``-args`` file in a chain folder belongs to a Dockerfile.

What Atom does (elementary-robotics/atom, ``docker/build.sh`` and
``docker/utilities/01-Dockerfile-minimize``): build.sh reads ``<folder>/minimize-<platform>-args``
line by line and passes each line as ``--build-arg``; the minimize Dockerfile declares
three of them and splits each on commas (``echo ${X} | tr , '\\n'``):

- ``ADDITIONAL_LIB_LOCATIONS``: globs (``ls ${location}``) whose files' needed libraries are
  harvested, e.g. ``/usr/lib/xorg/modules/*.so*``;
- ``ADDITIONAL_FILES``: more paths (globs, directories) put in the tarball, e.g. ``/usr/bin/platforms``;
- ``PRODUCTION_PACKAGES``: Debian packages the production Dockerfile ``apt-get install``s.

Read here with the chain's args-file rules (``KEY=VALUE``; ``#`` comments, blank lines and
one pair of surrounding quotes allowed), stricter where Atom fails late or silently: an
unknown key (Docker only warns "build-args were not consumed"), a key set twice (the last
won), a relative path, a package name apt-get would refuse or the shell would split. Items
are stripped and empty ones dropped (Atom's ``ls`` of an empty item listed its working
directory). Errors say ``file:line`` and never echo a malformed line: args files may hold
secrets.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import forge

# dpkg's package name rules, plus the =version and :arch apt-get accepts; anything else
# (spaces, quotes, $) would be shell in the RUN line that installs them.
DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?$")

# The keys of a minimize args file -> the MinimizeArgs field each fills.
MINIMIZE_KEYS = {
    "ADDITIONAL_LIB_LOCATIONS": "lib_locations",
    "ADDITIONAL_FILES": "files",
    "PRODUCTION_PACKAGES": "packages",
}
# Build args Atom's build.sh set itself; here they are attributes.
_SET_BY_ATTRIBUTES = {
    "BASE_IMAGE": "the minimize's `image` attribute",
    "PRODUCTION_IMAGE": "the minimize's `production_base` and the production's `base`",
}

_ARG_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
# One alias of each architecture, for "did you mean" on a misspelt platform in a file name.
_ARCHITECTURES = ("amd64", "arm64", "armv7", "armv6", "386", "riscv64", "ppc64le", "s390x")


@dataclass(frozen=True)
class MinimizeArgs:
    """A parsed ``minimize-<platform>-args`` file: each list in file order, and the line
    each key was set on (for messages)."""

    display: str
    lib_locations: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    lines: dict[str, int] = field(default_factory=dict)


def read_args_lines(path: Path, display: str) -> Iterator[tuple[int, str, str]]:
    """``(line number, key, value)`` of an args file (a chain step's and minimize's):
    ``KEY=VALUE`` per line, ``#`` comments and blank lines skipped, one pair of surrounding
    quotes removed; a broken line is an error naming file:line, never echoing it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise forge.BuildFileError(f"{display}: not UTF-8 text (byte {e.start})") from None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ARG_LINE.match(line)
        if not m:
            # The line itself is never echoed: args files hold tokens and passwords.
            what = "no '='" if "=" not in line else "the part before '=' is not a variable name"
            raise forge.BuildFileError(f"{display}:{number}: expected KEY=VALUE ({what}; the line "
                                       "is not shown, it may hold a secret)")
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        yield number, m.group(1), value


def image_path_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not an absolute path or glob in an image, or None."""
    if not pattern.startswith("/"):
        return "is not absolute"
    if ".." in pattern.split("/"):
        return "goes up with '..'"
    return None


def split_list(value: str) -> list[str]:
    """Atom's comma list: split on commas, items stripped, empty items dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def read_minimize_args(path: Path, display: str) -> MinimizeArgs:
    """Parse a minimize args file; ``display`` (the package-relative path, as the user
    knows it) names it in errors."""
    values: dict[str, tuple[str, ...]] = {}
    lines: dict[str, int] = {}
    for number, key, value in read_args_lines(path, display):
        where = f"{display}:{number}"
        if key not in MINIMIZE_KEYS:
            hint = (f"; {key} is {_SET_BY_ATTRIBUTES[key]}" if key in _SET_BY_ATTRIBUTES else
                    f"; a minimize args file sets {', '.join(MINIMIZE_KEYS)}")
            raise forge.BuildFileError(f"{where}: unknown key {key!r}"
                                       f"{forge.did_you_mean(key.upper(), MINIMIZE_KEYS)}{hint}")
        if key in lines:
            raise forge.BuildFileError(
                f"{where}: {key} is set again (first on line {lines[key]}); Atom's build "
                "kept only the last one: put every item in one comma-separated list")
        items = split_list(value)
        for item in items:
            if key == "PRODUCTION_PACKAGES":
                if not DEBIAN_PACKAGE.match(item):
                    split = "; separate packages with commas" if any(c.isspace() for c in item) else ""
                    raise forge.BuildFileError(
                        f"{where}: PRODUCTION_PACKAGES: {item!r} is not a Debian package name "
                        f"(name, name=version or name:arch){split}")
            elif problem := image_path_problem(item):
                raise forge.BuildFileError(
                    f"{where}: {key}: {item!r} {problem}; write an absolute path or glob in "
                    "the image, like '/usr/local/lib/*.so'")
        values[MINIMIZE_KEYS[key]] = tuple(dict.fromkeys(items))
        lines[key] = number
    return MinimizeArgs(display, **values, lines=lines)


def platform_spellings(platform: forge.Platform) -> tuple[str, ...]:
    """How an args file may spell ``platform``, in the order they are looked for (as
    ``args_file_for`` in forge.rules.dockerfile): amd64; aarch64, arm64; armv7, arm, armhf,
    armv7l …"""
    return tuple(dict.fromkeys((platform.short, platform.architecture, platform.debian_arch,
                                platform.uname_machine)))


def find_minimize_args(directory: Path, platform: forge.Platform) -> str | None:
    """The name of the ``minimize-<platform>-args`` file in ``directory``, or None."""
    for spelling in platform_spellings(platform):
        candidate = f"minimize-{spelling}-args"
        if (directory / candidate).is_file():
            return candidate
    return None


def _spelled_platform(text: str) -> forge.Platform | None:
    """The platform ``text`` names when an args file spells it so, else None."""
    if "/" in text:
        return None
    try:
        platform = forge.parse_platform(text)
    except forge.PlatformError:
        return None
    return platform if text in platform_spellings(platform) else None


def orphan_args_files(directory: Path, descriptors: Iterable[str],
                      display: str | None = None) -> list[str]:
    """Warnings for the ``*-args`` files of a chain folder that no step reads: a step of
    descriptor ``d`` reads ``d-<platform>-args`` (a spelling ``platform_spellings``
    gives). Each warning names the file and the nearest descriptor. ``minimize-*-args``
    files are the minimize rule's (``args``), never orphans. ``display`` is the folder as
    the user writes it (default: its name)."""
    descriptors = sorted(set(descriptors), key=lambda d: (-len(d), d))  # longest first
    folder = (display if display is not None else directory.name).strip("/")
    prefix = f"{folder}/" if folder else ""
    out = []
    for path in sorted(directory.iterdir()):
        name = path.name
        if not name.endswith("-args") or not path.is_file() or name.startswith("minimize-"):
            continue
        stem = name[: -len("-args")]
        owners = [d for d in descriptors if stem.startswith(f"{d}-")]
        if any(_spelled_platform(stem[len(d) + 1:]) for d in owners):
            continue
        file = f"{prefix}{name}"
        if stem in descriptors:
            out.append(f"{file} is never read: it names no platform; Dockerfile-{stem} reads "
                       f"{stem}-<platform>-args, e.g. {stem}-amd64-args")
            continue
        if owners:  # the descriptor is right; the platform is misspelt
            d = owners[0]
            spelling = stem[len(d) + 1:]
            try:
                known = ", ".join(platform_spellings(forge.parse_platform(spelling)))
                why = f"{spelling!r} is not how an args file spells that platform (spell it {known})"
            except forge.PlatformError:
                every = {s for a in _ARCHITECTURES for s in platform_spellings(forge.parse_platform(a))}
                why = f"{spelling!r} is not a platform{forge.did_you_mean(spelling, sorted(every))}"
            out.append(f"{file} is never read: {why}; Dockerfile-{d} reads {d}-<platform>-args")
            continue
        head, _, tail = stem.rpartition("-")
        descriptor, spelling = (head, tail) if head and _spelled_platform(tail) else (stem, "<platform>")
        atom = ""
        if descriptor == "production":  # not a misspelt step: nothing is near it
            close = []
            atom = (" (Atom's build.sh passed it to the production Dockerfile; here the "
                    "production rule's `packages` and the minimize args file's "
                    "PRODUCTION_PACKAGES do that)")
        else:
            close = difflib.get_close_matches(descriptor, descriptors, n=1, cutoff=0.6)
        if close:
            nearest = (f"nearest descriptor: {close[0]!r} (Dockerfile-{close[0]}), whose args "
                       f"file is {close[0]}-{spelling}-args")
        else:
            nearest = f"descriptors: {', '.join(sorted(descriptors)) or 'none'}"
        out.append(f"{file} is never read: no Dockerfile-{descriptor} in {folder or '.'}/"
                   f"{atom}; {nearest}")
    return out

