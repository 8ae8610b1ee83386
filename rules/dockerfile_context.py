"""Which build-context files a Dockerfile can read, so a step's key holds only those.

BuildKit keys a ``COPY`` on the checksum of exactly what it copies; forge does the same
one level up: a Dockerfile step's action key includes only the context files its
instructions can read, so an edit elsewhere in a repository-wide context leaves it cached.
``context_use`` reads the Dockerfile statically (no engine, no session) and returns that
subset; ``read_dockerignore`` and ``apply_dockerignore`` give the caller the context
itself, filtered as Docker filters it.

What reads the context: ``COPY`` and ``ADD`` without ``--from`` (except heredoc sources
and ``ADD`` URLs), and ``RUN --mount=type=bind`` without ``from=`` (its ``source``, by
default the whole context). Sources are expanded with the stage's ARG and ENV values as
Docker expands them, then matched as BuildKit matches them: Go ``filepath.Match`` per path
segment, and a directory selects every file under it. Every stage counts, and so do
``ONBUILD`` copies (a later stage or build may trigger them).

Where forge cannot know, it keys the whole context and says why in ``notes``: a variable
with no value forge can see (Docker would substitute ""; its value might as well come
from a base image's ENV or from the engine, as TARGETARCH does), a substitution forge
does not evaluate (``${X#pat}``), an unterminated quote or a malformed pattern. Two
choices are deliberately wider than Docker: ``COPY --exclude`` is not subtracted, and a
``**`` in a source matches any number of directories. Symlinks are the caller's concern:
``context_files`` are taken as given, and a symlink to a directory is not followed.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from docker.utils.build import Pattern, PatternMatcher, normalize_slashes
from docker.utils.fnmatch import fnmatchcase
from dockerfile_parse import DockerfileParser
from dockerfile_parse.parser import image_from

import forge

# Set by the engine, not the Dockerfile: known only when the caller passes them.
PLATFORM_ARGS = frozenset({"TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
                           "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"})
_URL_PREFIXES = ("http://", "https://", "git@", "git://")  # ADD fetches these itself
_NAME = re.compile(r"[A-Za-z0-9_]+", re.ASCII)
_HEREDOC = re.compile(r"<<(-?)\s*([^<]*)")  # BuildKit's ParseHeredoc, applied to one word
# dockerfile-parse's own directive patterns, so its line continuation and our escape agree
_ESCAPE_DIRECTIVE = re.compile(r"^\s*#\s*escape\s*=\s*(\\|`)\s*$", re.I)
_SYNTAX_DIRECTIVE = re.compile(r"^\s*#\s*syntax\s*=\s*(.*)\s*$", re.I)
_WILDCARD = re.compile(r"\\.|[*?\[]", re.S)  # BuildKit's containsWildcards: \x is no wildcard


@dataclass(frozen=True)
class ContextUse:
    """The context files a Dockerfile can read."""

    files: tuple[str, ...]  # the subset of context_files that can be read, sorted
    whole: bool  # some source could not be resolved statically: files are all context files
    notes: tuple[str, ...]  # one per reason for whole: "Dockerfile:LINE: INSTRUCTION: why"


# -- .dockerignore ----------------------------------------------------------------------

def read_dockerignore(context_dir: Path) -> list[str]:
    """The patterns of ``context_dir/.dockerignore`` ([] if there is none), read as the
    docker CLI reads them (moby's ``ignorefile.ReadAll``): a UTF-8 BOM is dropped, a line
    starting with ``#`` is a comment (an indented ``#`` is not), surrounding whitespace is
    trimmed, blank lines are skipped, and each pattern is cleaned (``filepath.Clean``,
    leading ``/`` removed, ``!`` kept in front)."""
    try:
        text = (context_dir / ".dockerignore").read_bytes().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        return []
    patterns = []
    for line in text.removeprefix("\ufeff").split("\n"):  # Go's ScanLines: \n, then \r dropped
        line = line.removesuffix("\r")
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        invert = line.startswith("!")
        if invert:
            line = line[1:].strip()
        if line:
            line = _clean(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
        patterns.append("!" + line if invert else line)
    return patterns


class _Pattern(Pattern):
    """docker-py's pattern, matched case-sensitively as Docker on Linux matches
    (docker-py's ``fnmatch`` lowercases both sides)."""

    def match(self, filepath):
        return fnmatchcase(normalize_slashes(filepath), self.cleaned_pattern)


class _Matcher(PatternMatcher):
    """docker-py's ``PatternMatcher`` without the ``!.dockerignore`` it appends: BuildKit
    excludes .dockerignore when a pattern says so, like any other file."""

    def __init__(self, patterns: list[str]):  # the parent's, minus the append
        self.patterns = [p for p in map(_Pattern, patterns) if p.dirs]


def apply_dockerignore(files: Iterable[str], patterns: list[str],
                       keep: Iterable[str] = ()) -> list[str]:
    """The ``files`` (relative posix paths) that ``patterns`` do not exclude, in their
    order, with Docker's semantics: a pattern also excludes everything under a directory
    it matches, ``**`` spans directories, the last matching pattern wins and ``!`` makes
    an exception. ``keep`` (the Dockerfile) is never excluded."""
    if not patterns:
        return list(files)
    matcher, keep = _Matcher(patterns), set(keep)
    return [f for f in files if f in keep or not matcher.matches(f)]


# -- context_use -------------------------------------------------------------------------

def context_use(text: str, display: str, *, build_args: dict[str, str],
                context_files: Sequence[str]) -> ContextUse:
    """Which of ``context_files`` (already filtered by .dockerignore) the Dockerfile
    ``text`` can read, given ``build_args``. ``display`` names the file in notes and
    errors. Raises ``forge.BuildFileError`` only for an instruction it cannot read at all
    (a COPY without a destination)."""
    text = text.removeprefix("\ufeff")  # Docker strips it; the parser would miss line 1
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8", "surrogateescape")))
    lines = parser.lines
    walk = _Walk(display, build_args, _escape_token(lines), _Context(context_files))
    body_end = -1  # the last line of the heredoc bodies seen so far
    for instr in parser.structure:
        if instr["startline"] <= body_end:
            continue  # dockerfile-parse reads heredoc bodies as instructions; they are text
        if instr["instruction"] in ("RUN", "COPY", "ADD"):
            body_end = _heredoc_end(instr, lines)
        walk.step(instr)
    return walk.result()


class _Unresolved(Exception):
    """A source whose value forge cannot know; the message says why."""


@dataclass(frozen=True)
class _Unknown:
    """A variable whose value forge cannot see (an engine ARG, an ENV built on one)."""

    why: str


_Value = str | None | _Unknown  # None: declared with no value (unset, to Docker)


class _Walk:
    """The state of one pass over a Dockerfile: stages, their ARG and ENV, what is read."""

    def __init__(self, display: str, build_args: dict[str, str], esc: str, ctx: _Context):
        self.display, self.build_args, self.esc, self.ctx = display, build_args, esc, ctx
        self.global_args: dict[str, _Value] = {}  # ARGs before the first FROM
        self.stage_envs: dict[str, dict[str, _Value]] = {}  # stage name (lowercase) -> ENV
        self.in_stage = False
        self.env: dict[str, _Value] = {}  # the current stage's ENV (inherited by FROM stage)
        self.args: dict[str, _Value] = {}  # the ARGs the current stage declares
        self.notes: list[str] = []

    def result(self) -> ContextUse:
        whole = bool(self.notes)
        files = self.ctx.files if whole or self.ctx.everything else sorted(self.ctx.chosen)
        return ContextUse(tuple(files), whole, tuple(dict.fromkeys(self.notes)))

    # -- instructions

    def step(self, instr: dict) -> None:
        kind, value = instr["instruction"], instr["value"]
        if kind == "ONBUILD":  # its trigger reads the context of whatever build uses it
            kind, value = (value.split(None, 1) + ["", ""])[:2]
            kind = kind.upper()
        where = f"{self.display}:{instr['startline'] + 1}"  # the parser counts from 0
        said = " ".join(f"{kind} {value}".split())
        said = said if len(said) <= 100 else said[:99] + "…"
        if kind == "FROM":
            self.start_stage(value)
        elif kind == "ARG":
            self.declare_args(value)
        elif kind == "ENV" and self.in_stage:
            self.set_env(value)
        elif kind in ("COPY", "ADD"):
            self.copy(kind, value, where, said)
        elif kind == "RUN":
            self.run(value, where, said)

    def start_stage(self, value: str) -> None:
        raw, name = image_from(value)
        try:
            image = self.expand(raw or "")  # ARGs before the first FROM, as Docker does
        except _Unresolved:
            image = raw or ""
        self.in_stage = True
        # FROM an earlier stage inherits its ENV (not its ARGs); an image's ENV is unknown
        self.env = dict(self.stage_envs.get(image.lower(), {}))
        self.args = {}
        if name:
            self.stage_envs[name.lower()] = self.env  # the dict fills in as the stage goes

    def declare_args(self, value: str) -> None:
        target = self.args if self.in_stage else self.global_args
        for word in _words(value, self.esc):
            name, eq, default = word.partition("=")
            if name in PLATFORM_ARGS:
                target[name] = self.build_args[name] if name in self.build_args else _Unknown(
                    f"${name} is set by the engine; pass it in build_args to fix it")
            elif name in self.build_args:  # a build arg overrides only a declared ARG
                target[name] = self.build_args[name]
            elif eq:
                target[name] = self.expand_value(default)
            else:  # ARG NAME in a stage takes the global ARG's value, if there is one
                target[name] = self.global_args.get(name) if self.in_stage else None

    def set_env(self, value: str) -> None:
        words = _words(value, self.esc)
        if not words:
            return
        if "=" not in words[0]:  # the legacy ENV NAME VALUE...
            name, rest = (re.split(r"\s+", value.strip(), maxsplit=1) + [""])[:2]
            pairs = [(name, rest)]
        else:
            pairs = [w.partition("=")[::2] for w in words if "=" in w]
        # every value sees the ENV from before this line (ENV a=1 b=$a gives b the old a)
        values = [(name, self.expand_value(raw)) for name, raw in pairs]
        self.env.update(values)

    def copy(self, kind: str, value: str, where: str, said: str) -> None:
        flags, rest = _builder_flags(value)
        if any(f.lower().startswith("--from=") and len(f) > 7 for f in flags):
            return  # reads a stage or an image, not the context
        rest = rest.strip()
        args = _json_list(rest)
        form_json = args is not None
        if args is None:  # BuildKit splits on whitespace; quotes are the expander's
            args = rest.split()
        if len(args) < 2:
            raise forge.BuildFileError(
                f"{where}: {said}: {kind} needs at least one source and a destination "
                f"(got {len(args)} argument{'s' * (len(args) != 1)})")
        for src in args[:-1]:
            if not form_json and src.startswith("<<"):
                continue  # a heredoc: text in the Dockerfile, no file
            if kind == "ADD" and src.lower().startswith(_URL_PREFIXES):
                continue
            try:
                path = self.expand(src)
            except _Unresolved as e:
                self.notes.append(f"{where}: {said}: {e}; the whole context is an input")
                continue
            if kind == "ADD" and path.lower().startswith(_URL_PREFIXES):
                continue
            self.read(path, glob=True, where=where, said=said)

    def run(self, value: str, where: str, said: str) -> None:
        flags, _ = _builder_flags(value)
        for flag in flags:
            name, _, spec = flag.partition("=")
            if name.lower() != "--mount":
                continue
            opts: dict[str, str] = {}
            for field in next(csv.reader([spec]), []):  # BuildKit's CSV of key=value
                key, _, val = field.partition("=")
                opts[key.strip().lower()] = val
            try:
                kind = self.expand(opts.get("type", "bind")).lower()  # bind is the default
                if kind != "bind" or opts.get("from"):
                    continue  # cache, secret, ssh, tmpfs, or a stage's files
                source = self.expand(opts.get("source", opts.get("src", "")))
            except _Unresolved as e:
                self.notes.append(f"{where}: {said}: {e}; the whole context is an input")
                continue
            self.read(source, glob=False, where=where, said=said)  # a mount source is literal

    # -- values

    def get(self, name: str) -> _Value:
        """A variable as the current line sees it: ENV wins over ARG, as in Docker."""
        if self.in_stage:
            if name in self.env:
                return self.env[name]
            if name in self.args:
                return self.args[name]
            if name in self.global_args:
                return _Unknown(f"${name} is an ARG before the first FROM, which a stage "
                                f"sees only if it declares it again (ARG {name})")
            if name in PLATFORM_ARGS:
                return _Unknown(f"${name} is not declared in this stage (declare it with "
                                f"ARG {name} and pass it in build_args)")
            return _Unknown(f"${name} is neither an ARG nor an ENV of this stage (its "
                            f"value would come from the base image, if anywhere)")
        if name in self.global_args:
            return self.global_args[name]
        if name in PLATFORM_ARGS:
            return _Unknown(f"${name} is set by the engine; pass it in build_args to fix it")
        return _Unknown(f"${name} is not declared")

    def expand(self, word: str) -> str:
        return _Expander(self.get, self.esc).word(word)

    def expand_value(self, word: str) -> _Value:
        """An ARG default or ENV value; one that cannot be expanded is itself unknown."""
        try:
            return self.expand(word)
        except _Unresolved as e:
            return _Unknown(str(e))

    def read(self, path: str, *, glob: bool, where: str, said: str) -> None:
        try:
            self.ctx.select(path, glob=glob)
        except _Unresolved as e:
            self.notes.append(f"{where}: {said}: {e}; the whole context is an input")


class _Expander:
    """BuildKit's shell-word processing (``shell.Lex.ProcessWord``): quotes, the escape
    token, ``$X``, ``${X}``, ``${X:-w}``, ``${X-w}``, ``${X:+w}``, ``${X+w}``, ``${X:?w}``
    and ``${X?w}``. Where Docker would substitute "" for a variable without a value,
    this raises ``_Unresolved``."""

    def __init__(self, get: Callable[[str], _Value], esc: str):
        self.get, self.esc = get, esc

    def word(self, s: str) -> str:
        errors: list[str] = []
        out, _ = self._process(s, 0, "", errors)
        if errors:
            raise _Unresolved(errors[0])
        return out

    def _process(self, s: str, i: int, stop: str, errors: list[str]) -> tuple[str, int]:
        out, n, esc = [], len(s), self.esc
        quoted = False  # inside "...": only ", $ and the escape are special
        while i < n:
            c = s[i]
            if quoted:
                if c == '"':
                    quoted, i = False, i + 1
                    continue
                if c == esc and i + 1 < n and s[i + 1] in ('"', "$", esc):
                    out.append(s[i + 1])  # only these can be escaped in "..."
                    i += 2
                    continue
            else:
                if stop and c == stop:
                    break
                if c == "'":  # everything literal up to the next '
                    j = s.find("'", i + 1)
                    if j < 0:
                        errors.append("it has an unterminated ' quote")
                        return "".join(out), n
                    out.append(s[i + 1:j])
                    i = j + 1
                    continue
                if c == '"':
                    quoted, i = True, i + 1
                    continue
                if c == esc:  # the next character is literal; a trailing escape is dropped
                    out.append(s[i + 1:i + 2])
                    i += 2
                    continue
            if c == "$":
                text, i = self._dollar(s, i, errors)
                out.append(text)
            else:
                out.append(c)
                i += 1
        if quoted:
            errors.append('it has an unterminated " quote')
            return "".join(out), n
        return "".join(out), i

    def _dollar(self, s: str, i: int, errors: list[str]) -> tuple[str, int]:
        n, i = len(s), i + 1
        if i < n and s[i] == "{":
            m = _NAME.match(s, i + 1)
            end = s.find("}", i)
            if not m:
                errors.append(f"forge does not evaluate {s[i - 1:end + 1] if end > 0 else s}")
                return "", n if end < 0 else end + 1
            name, k = m[0], m.end()
            if k < n and s[k] == "}":
                return self._bare(name, errors), k + 1
            colon = k < n and s[k] == ":"
            k += colon
            op = s[k] if k < n else ""
            if op not in ("-", "+", "?"):
                errors.append(f"forge does not evaluate ${{{name}{':' * colon}{op}…}}")
                return "", n if end < 0 else end + 1
            alt_errors: list[str] = []  # an alternative's errors count only if it is used
            alt, k = self._process(s, k + 1, "}", alt_errors)
            if k >= n:
                errors.append(f"${{{name} has no closing }}")
                return "", n
            value = self.get(name)
            if isinstance(value, _Unknown):
                errors.append(value.why)
                return "", k + 1
            present = bool(value) if colon else value is not None
            if op == "?":
                if not present:
                    errors.append(f"${name} has no value, so the engine stops there")
                return value or "", k + 1
            if present == (op == "+"):  # '-' uses the word when absent, '+' when present
                errors.extend(alt_errors)
                return alt, k + 1
            return (value or "") if op == "-" else "", k + 1
        m = _NAME.match(s, i)
        if not m:
            return "$", i  # a $ before anything else is literal
        return self._bare(m[0], errors), m.end()

    def _bare(self, name: str, errors: list[str]) -> str:
        value = self.get(name)
        if isinstance(value, _Unknown):
            errors.append(value.why)
        elif value is None:
            errors.append(f"${name} has no value at this point")
        return value if isinstance(value, str) else ""


# -- matching sources against the context -----------------------------------------------

class _Context:
    """The context files, sorted, so a directory is a contiguous range (bisect)."""

    def __init__(self, files: Sequence[str]):
        self.files = list(dict.fromkeys(sorted(files)))  # fast when already sorted
        self.chosen: set[str] = set()
        self.everything = False

    def under(self, directory: str, lo: int = 0, hi: int | None = None) -> tuple[int, int]:
        """The range of files under ``directory``: those in [dir/, dir0), "0" being "/"+1."""
        hi = len(self.files) if hi is None else hi
        lo = bisect.bisect_left(self.files, directory + "/", lo, hi)
        return lo, bisect.bisect_left(self.files, directory + "0", lo, hi)

    def select(self, source: str, *, glob: bool) -> None:
        """Add what ``source`` (an expanded COPY source or mount source) names."""
        path = _clean("/" + source)[1:]  # relative to the context root; .. stops there
        if not path:  # ".", "/", "./": the whole context
            self.everything = True
        elif glob and _has_wildcards(path):
            self.select_pattern(path)
        else:  # a file, a directory, or both
            i = bisect.bisect_left(self.files, path)
            if i < len(self.files) and self.files[i] == path:
                self.chosen.add(path)
            lo, hi = self.under(path, i)
            self.chosen.update(self.files[lo:hi])

    def select_pattern(self, pattern: str) -> None:
        segments = pattern.split("/")
        prefix: list[str] = []  # the leading segments without wildcards narrow the range
        while not _has_wildcards(segments[len(prefix)]):
            prefix.append(_unescape(segments[len(prefix)]))
        rest = segments[len(prefix):]
        base = "/".join(prefix)
        lo, hi = self.under(base) if prefix else (0, len(self.files))
        pos = len(base) + 1 if prefix else 0  # where the first segment with a wildcard starts
        try:
            regexes = [_segment_regex(s) for s in rest]
        except ValueError:
            raise _Unresolved(f"{pattern!r} is not a valid pattern") from None
        if any("**" in s for s in rest):
            # wider than Go's Match, which reads ** as *: any depth, none included
            last = len(rest) - 1
            full = "".join("(?:.*/)?" if seg == "**" and n < last else rx + "/" * (n < last)
                           for n, (seg, rx) in enumerate(zip(rest, regexes, strict=True)))
            match = re.compile(full + r"(?:/|\Z)", re.S).match
            self.chosen.update(f for f in self.files[lo:hi] if match(f, pos))
        else:
            # above the last segment, a child's name must match whole; the last segment
            # matches the path or the directory it lies in
            regexes[-1] += r"(?:/|\Z)"
            self._match_level(lo, hi, pos, [re.compile(r, re.S) for r in regexes])

    def _match_level(self, lo: int, hi: int, pos: int, segments: list[re.Pattern]) -> None:
        """Match ``segments`` against ``files[lo:hi]``, which share their first ``pos``
        characters (a directory and its /). The last segment is one regex per path; above
        it each child directory is tried once and, failing, skipped whole by bisect."""
        files, segment = self.files, segments[0]
        if len(segments) == 1:
            match = segment.match
            self.chosen.update(f for f in files[lo:hi] if match(f, pos))
            return
        i = lo
        while i < hi:
            path = files[i]
            slash = path.find("/", pos)
            if slash < 0:  # a file here, but the pattern goes deeper
                i += 1
                continue
            a, i = self.under(path[:slash], i, hi)
            if segment.fullmatch(path, pos, slash):
                self._match_level(a, i, slash + 1, segments[1:])


def _has_wildcards(segment: str) -> bool:
    return any(m[0] in "*?[" for m in _WILDCARD.finditer(segment))


def _unescape(segment: str) -> str:
    return re.sub(r"\\(.)", r"\1", segment, flags=re.S)


def _segment_regex(segment: str) -> str:
    """Go's ``filepath.Match`` for one segment: * and ? stop at /, [^a-z] classes, \\x.
    Raises ValueError for a pattern Go calls malformed."""
    out, i, n = [], 0, len(segment)
    while i < n:
        c = segment[i]
        if c == "*":
            if segment.startswith("**", i):
                out.append(".*")  # conservative: ** crosses directories
                while i < n and segment[i] == "*":
                    i += 1
                continue
            out.append("[^/\n]*")
        elif c == "?":
            out.append("[^/\n]")
        elif c == "\\":
            if i + 1 >= n:
                raise ValueError(segment)
            i += 1
            out.append(re.escape(segment[i]))
        elif c == "[":
            i += 1
            negated = i < n and segment[i] == "^"
            i += negated
            ranges: list[str] = []
            first = True
            while True:
                if i < n and segment[i] == "]" and not first:
                    break
                lo, i = _class_char(segment, i)
                hi = lo
                if i < n and segment[i] == "-":
                    hi, i = _class_char(segment, i + 1)
                if lo <= hi:
                    ranges.append(re.escape(lo) + ("-" + re.escape(hi) if hi != lo else ""))
                first = False
            if negated:
                out.append("[^/\n" + "".join(ranges) + "]")
            else:
                out.append("[" + "".join(ranges) + "]" if ranges else "(?!)")
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _class_char(segment: str, i: int) -> tuple[str, int]:
    """Go's getEsc: one character of a class; - ] or the end here is a malformed pattern."""
    if i >= len(segment) or segment[i] in "-]":
        raise ValueError(segment)
    if segment[i] == "\\":
        i += 1
        if i >= len(segment):
            raise ValueError(segment)
    return segment[i], i + 1


def _clean(path: str) -> str:
    """Go's ``path.Clean``: no empty or . segments, .. resolved (at the root it stays)."""
    rooted = path.startswith("/")
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(seg)
    joined = "/".join(out)
    return "/" + joined if rooted else joined or "."


# -- reading instructions ---------------------------------------------------------------

def _escape_token(lines: list[str]) -> str:
    """The ``# escape=`` directive, found as dockerfile-parse finds it."""
    for line in lines:
        if m := _ESCAPE_DIRECTIVE.match(line):
            return m[1]
        if not _SYNTAX_DIRECTIVE.match(line):
            break
    return "\\"


def _heredoc_end(instr: dict, lines: list[str]) -> int:
    """The last line of the heredoc bodies after ``instr`` (its own last line if none).

    BuildKit finds heredocs in RUN, COPY and ADD by word (quotes kept, so ``"<<EOF"`` is
    none); each body runs to a line that is exactly its name (``<<-``: leading tabs off)."""
    end = instr["endline"]
    for word in _words(instr["value"], "\\"):
        m = _HEREDOC.fullmatch(word)
        name = m and m[2].replace('"', "").replace("'", "")
        if not name:
            continue
        end += 1
        while end < len(lines):
            line = lines[end].rstrip("\n").removesuffix("\r")
            if (line.lstrip("\t") if m[1] else line) == name:
                break
            end += 1
    return end


def _words(rest: str, esc: str) -> list[str]:
    """BuildKit's parseWords: whitespace-separated words, quotes and escapes kept."""
    words, word, quote, i, n = [], [], "", 0, len(rest)
    while i < n:
        c = rest[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == esc and quote != "'" and i + 1 < n:
                word.append(c)
                i += 1
                c = rest[i]
            word.append(c)
        elif c.isspace():
            if word:
                words.append("".join(word))
            word = []
        else:
            if c in "'\"":
                quote = c
            elif c == esc:
                if i + 1 == n:
                    break
                word.append(c)
                i += 1
                c = rest[i]
            word.append(c)
        i += 1
    if word:
        words.append("".join(word))
    return words


def _builder_flags(value: str) -> tuple[list[str], str]:
    """BuildKit's extractBuilderFlags: the leading ``--flag=value`` words (quotes removed,
    ``\\x`` unescaped) and the rest of the line; ``--`` alone ends the flags."""
    flags, i, n = [], 0, len(value)
    while True:
        while i < n and value[i].isspace():
            i += 1
        if not value.startswith("--", i):
            return flags, value[i:]
        word, quote = [], ""
        while i < n and (quote or not value[i].isspace()):
            c = value[i]
            if quote and c == quote:
                quote = ""
            elif not quote and c in "'\"":
                quote = c
            elif c == "\\":
                i += 1
                word.append(value[i:i + 1])
            else:
                word.append(c)
            i += 1
        if "".join(word) == "--":
            return flags, value[i:]
        flags.append("".join(word))


def _json_list(rest: str) -> list[str] | None:
    """The JSON form ``["a b", "/dst/"]``, or None for the whitespace form."""
    if not rest.startswith("["):
        return None
    try:
        parsed = json.loads(rest)
    except ValueError:
        return None
    if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
        return parsed
    return None
