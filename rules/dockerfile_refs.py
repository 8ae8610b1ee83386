"""Image references in a Dockerfile: each must be built by forge, be scratch, or be pinned.

The engine resolves ``FROM x``, ``COPY --from=x`` and (BuildKit) ``RUN --mount=from=x`` by
name: a tag it already holds is used as it stands, and a missing one is pulled from Docker
Hub. So an unpinned name makes a "hermetic" step depend on the engine's history and the
network. What enters the key instead: the Dockerfile text and the build args already are
key inputs, so a reference pinned by digest is in the key by construction, and
``BASE_IMAGE`` enters through the base action's digest. ``check_image_references`` runs at
analysis time and refuses everything else, so nothing unpinned ever reaches the engine.

The file is read with dockerfile-parse (continuations, comments, directives, lowercase
instructions). It substitutes ARGs in FROM as Docker does: only ARGs declared before the
first FROM, with build args overriding declared ones. Where it differs from Docker the
check fails closed: ``${VAR:-default}`` is refused (not substituted), an ARG default that
names another ARG is not expanded (the ``$`` left in it cannot look pinned), and a UTF-8
BOM is stripped first (Docker strips it; the parser would miss the first instruction).
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import shlex
from dataclasses import dataclass

from dockerfile_parse import DockerfileParser
from dockerfile_parse.parser import image_from

import forge

BASE_ARG = "BASE_IMAGE"
_PINNED = re.compile(r"[A-Za-z0-9][\w.:/-]*@sha256:[0-9a-f]{64}", re.ASCII)  # name[:tag]@digest
_VAR = re.compile(r"\$(?:\{(\w+)([^}]*)\}|(\w+))")  # group 2: a ${VAR:-...} modifier


@dataclass(frozen=True)
class DockerfileRefs:
    """What a checked Dockerfile refers to."""

    stages: tuple[str, ...]  # in file order, lowercased as Docker compares them; "" if unnamed
    pinned: tuple[str, ...]  # sorted external references, after ARG substitution
    uses_base: bool  # some FROM is ${BASE_IMAGE}


def check_image_references(
    text: str, display: str, *, build_args: dict[str, str], has_base: bool,
    image_args: frozenset[str] = frozenset(),
) -> DockerfileRefs:
    """Check every image a Dockerfile names; raise ``forge.BuildFileError`` naming file:line."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.removeprefix("\ufeff").encode()),
                              build_args=dict(build_args))
    structure = parser.structure
    first = next((i for i, s in enumerate(structure) if s["instruction"] == "FROM"), None)
    if first is None:
        raise forge.BuildFileError(f"{display}: no FROM instruction")
    meta = parser.context_structure[first - 1].args if first else {}  # the ARGs before FROM
    names = [(image_from(s["value"])[1] or "").lower()
             for s in structure if s["instruction"] == "FROM"]
    substituted = iter(parser.parent_images)  # one per FROM that names an image
    stages: list[str] = []
    pinned: set[str] = set()
    uses_base = False

    for instr in structure:
        kind = instr["instruction"]
        where = f"{display}:{instr['startline'] + 1}"  # the parser counts lines from 0
        said = " ".join(f"{kind} {instr['value']}".split())
        said = said if len(said) <= 100 else said[:99] + "…"
        if kind == "FROM":
            raw = image_from(instr["value"])[0]
            if raw is None:
                raise forge.BuildFileError(f"{where}: {said} names no image")
            value = next(substituted)
            var = _VAR.fullmatch(raw)
            arg = (var[3] or var[1]) if var and not var[2] else None
            if arg in {BASE_ARG, *image_args}:
                if arg not in meta:
                    raise forge.BuildFileError(f"{where}: {said} uses {arg}, which no ARG before "
                                               f"the first FROM declares; add 'ARG {arg}' there")
                if arg == BASE_ARG and not has_base:
                    raise forge.BuildFileError(
                        f"{where}: {said} uses BASE_IMAGE but the target sets no base = ...; "
                        f"set base to the image to build on (an oci_pull or image target)")
                uses_base |= arg == BASE_ARG
            else:
                _check_substitution(raw, meta, where, said)
                if not _accept(value, stages, pinned):
                    after = [f"after ARG substitution: {value}"] if value != raw else []
                    raise forge.BuildFileError(
                        f"{where}: {said} names an image forge does not build or pin"
                        f"{_notes(*after, *_stage_hint(value, stages, names))}; oci_pull it and "
                        f"pass it in as base (FROM ${{BASE_IMAGE}}), or pin it by digest: "
                        f"FROM {value}@sha256:…")
            stages.append(names[len(stages)])
        elif kind in ("COPY", "RUN"):
            above = stages[:-1]  # its own stage's name is, to Docker, an image to pull
            for ref in _from_flags(kind, instr["value"]):
                if "$" in ref:
                    raise forge.BuildFileError(
                        f"{where}: {said}: Docker does not substitute ARGs in --from ({ref}); "
                        f"name the image in a stage, FROM {ref} AS name, and use --from=name")
                flag = "--from=" if kind == "COPY" else "from="
                if re.fullmatch(r"[0-9]+", ref):  # a stage index, never an image
                    if int(ref) >= len(above):
                        raise forge.BuildFileError(
                            f"{where}: {said}: {flag}{ref} is not an earlier stage "
                            f"({len(above)} above this one, numbered from 0)")
                elif not _accept(ref, above, pinned):
                    raise forge.BuildFileError(
                        f"{where}: {said} names an image forge does not build or pin"
                        f"{_notes(ref, *_stage_hint(ref, above, names))}; pin it by digest, "
                        f"{flag}{ref}@sha256:…, or oci_pull it, pass it in as base and copy "
                        f"from its stage: FROM ${{BASE_IMAGE}} AS name, then {flag}name")
    return DockerfileRefs(tuple(stages), tuple(sorted(pinned)), uses_base)


def _accept(ref: str, stages: list[str], pinned: set[str]) -> bool:
    """An earlier stage (Docker compares names case-insensitively), scratch, or pinned."""
    if ref == "scratch" or (ref and ref.lower() in stages):
        return True
    if _PINNED.fullmatch(ref):
        pinned.add(ref)
        return True
    return False


def _check_substitution(raw: str, meta: dict[str, str], where: str, said: str) -> None:
    """Every ARG in a FROM must be one the parser substitutes, and must not be empty."""
    for var in _VAR.finditer(raw):
        arg = var[3] or var[1]
        if var[2]:
            raise forge.BuildFileError(
                f"{where}: {said}: forge does not substitute {var[0]} (dockerfile-parse "
                f"reads only $NAME and ${{NAME}}); declare the default with ARG {arg}=...")
        if not meta.get(arg):
            declared = ", ".join(sorted(meta)) or "none"
            raise forge.BuildFileError(
                f"{where}: {said}: ARG {arg} is empty (ARGs before the first FROM: "
                f"{declared}); give it a default there or set it in build_args")


def _stage_hint(ref: str, stages: list[str], names: list[str]) -> list[str]:
    """Why a name is not a stage: not above this line (Docker would pull it), or a near miss."""
    ref, above = ref.lower(), [s for s in stages if s]
    if ref in names:
        return [f"stage {ref!r} is not defined above this stage, and Docker resolves only "
                f"earlier stages, so it would pull an image named {ref!r}"]
    close = difflib.get_close_matches(ref, above, n=1)
    return ([f"stages above: {', '.join(above)}"] if above else []) + (
        [f"did you mean {close[0]!r}?"] if close else [])


def _notes(*notes: str) -> str:
    return f" ({'; '.join(notes)})" if notes else ""


def _from_flags(kind: str, value: str) -> list[str]:
    """What COPY --from= or RUN --mount=...,from= names (only the leading flags count)."""
    lexer = shlex.shlex(value, posix=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    flags = []
    try:
        for token in lexer:
            if not token.startswith("--"):
                break
            flags.append(token)
    except ValueError:  # an unbalanced quote after the flags: the engine will say so
        pass
    refs = []
    for flag in flags:
        name, _, arg = flag.partition("=")
        if kind == "COPY" and name.lower() == "--from" and arg:
            refs.append(arg)
        elif kind == "RUN" and name.lower() == "--mount":  # BuildKit's CSV of key=value
            for field in next(csv.reader([arg]), []):
                key, _, val = field.partition("=")
                if key.strip().lower() == "from" and val:
                    refs.append(val)
    return refs
