"""context_use: the build-context files a Dockerfile can read, and the .dockerignore
helpers (unit tests; no engine)."""

import time

import pytest

import forge
from forge.rules.dockerfile_context import (
    ContextUse,
    apply_dockerignore,
    context_use,
    read_dockerignore,
)

WHERE = "docker/Dockerfile"
FILES = (
    "Makefile", "README.md", "a b", "c", "main.c", "util.c", "x.txt",
    "src/app.c", "src/app.h", "src/lib/deep.c", "src.c",
    "docs/guide.md", "docs/api/ref.md",
    "config/dev.yaml", "config/prod.yaml",
    "pkg/one/go.mod", "pkg/two/go.mod", "pkg/two/main.go",
    "$HOME", "amd64/bin", "arm64/bin",
)


def use(text, *, build_args=None, files=FILES):
    return context_use(text, WHERE, build_args=build_args or {}, context_files=files)


def read(text, **kw):
    result = use(text, **kw)
    assert not result.whole, result.notes
    assert result.notes == ()
    return set(result.files)


def whole(text, **kw):
    result = use(text, **kw)
    assert result.whole
    assert result.files == tuple(sorted(kw.get("files", FILES)))
    return result.notes


# -- paths ------------------------------------------------------------------------------

def test_single_file():
    assert read("FROM scratch\nCOPY Makefile /src/\n") == {"Makefile"}


def test_directory_selects_everything_under_it():
    assert read("FROM scratch\nCOPY src /src\n") == {"src/app.c", "src/app.h", "src/lib/deep.c"}
    assert read("FROM scratch\nCOPY docs/ /d/\n") == {"docs/guide.md", "docs/api/ref.md"}


def test_glob_does_not_cross_slash():
    assert read("FROM scratch\nCOPY *.c /src/\n") == {"main.c", "util.c", "src.c"}
    assert read("FROM scratch\nCOPY src/*.c /src/\n") == {"src/app.c"}
    assert read("FROM scratch\nCOPY src/*/*.c /src/\n") == {"src/lib/deep.c"}


def test_glob_matching_directories_selects_their_files():
    assert read("FROM scratch\nCOPY pkg/*/go.mod /m/\n") == {"pkg/one/go.mod", "pkg/two/go.mod"}
    assert read("FROM scratch\nCOPY pkg/t* /p/\n") == {"pkg/two/go.mod", "pkg/two/main.go"}
    assert read("FROM scratch\nCOPY s?c* /s/\n") == {"src.c", "src/app.c", "src/app.h",
                                                     "src/lib/deep.c"}


def test_character_class_and_escape():
    assert read("FROM scratch\nCOPY [mu]*.c /s/\n") == {"main.c", "util.c"}
    assert read("FROM scratch\nCOPY [^mu]*.c /s/\n") == {"src.c"}
    assert read("FROM scratch\nCOPY config/[a-e]*.yaml /s/\n") == {"config/dev.yaml"}


def test_double_star_is_read_widely():
    # Go's Match reads ** as *; forge lets it span any number of directories (a superset)
    assert read("FROM scratch\nCOPY --parents src/**/*.c /s/\n") == {"src/app.c",
                                                                     "src/lib/deep.c"}
    assert read("FROM scratch\nCOPY **/go.mod /s/\n") == {"pkg/one/go.mod", "pkg/two/go.mod"}
    assert read("FROM scratch\nCOPY docs/** /s/\n") == {"docs/guide.md", "docs/api/ref.md"}


def test_dot_slash_and_slash_prefixes():
    assert read("FROM scratch\nCOPY ./x.txt /x\n") == {"x.txt"}
    assert read("FROM scratch\nCOPY /x.txt /x\n") == {"x.txt"}
    assert read("FROM scratch\nCOPY ./config/./dev.yaml ../../c /x/\n") == {"config/dev.yaml", "c"}


@pytest.mark.parametrize("src", [".", "./", "/", "*"])
def test_whole_context_without_being_unresolved(src):
    assert read(f"FROM scratch\nCOPY {src} /app\n") == set(FILES)


def test_no_match_selects_nothing():
    assert read("FROM scratch\nCOPY missing *.rs src/nope /x/\n") == set()


def test_json_form_with_spaces():
    assert read('FROM scratch\nCOPY ["a b", "c", "/dst/"]\n') == {"a b", "c"}


def test_flags_before_sources():
    text = ("FROM scratch\nCOPY --chown=1:1 --chmod=0644 --link --exclude=*.h src /s\n"
            "ADD --checksum=sha256:abc --keep-git-dir=true Makefile /m\n"
            "COPY --parents ./pkg/./*/go.mod /m/\n")
    # --exclude is not subtracted (forge keys what the source names, a superset)
    assert read(text) == {"src/app.c", "src/app.h", "src/lib/deep.c", "Makefile",
                          "pkg/one/go.mod", "pkg/two/go.mod"}


def test_lowercase_and_continuation_lines():
    assert read("from scratch\ncopy Makefile \\\n  main.c \\\n  /d/\n") == {"Makefile", "main.c"}


# -- what does not read the context -----------------------------------------------------

def test_copy_from_a_stage_or_image_reads_no_context():
    text = ("FROM alpine AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /out\n"
            "COPY --from=busybox:1 /bin/sh /sh\nCOPY --from=0 src /src\nCOPY c /c\n")
    assert read(text) == {"c"}


def test_add_url_reads_no_context():
    text = ("FROM scratch\nADD https://example.com/x.tar.gz /x\nADD http://e.com/y /y\n"
            "ADD git@github.com:o/r.git /r\nADD git://host/r /r2\nADD x.txt /z\n")
    assert read(text) == {"x.txt"}


def test_heredoc_copy_reads_no_context_and_its_body_is_text():
    text = """\
FROM scratch
COPY <<EOF /etc/conf
COPY src /not/an/instruction
EOF
COPY <<-"END" c /d/
	ADD Makefile /nope
	END
RUN <<EOT bash
  COPY docs /neither
  echo hi \\
EOT
COPY x.txt /x
"""
    assert read(text) == {"c", "x.txt"}


def test_run_bind_mounts():
    base = "FROM alpine\n"
    assert read(base + "RUN --mount=type=bind,source=src,target=/s make\n") == {
        "src/app.c", "src/app.h", "src/lib/deep.c"}
    assert read(base + "RUN --mount=type=bind,src=Makefile,target=/m make\n") == {"Makefile"}
    # no source: the whole context; no type: bind is the default
    assert read(base + "RUN --mount=type=bind,target=/ctx make\n") == set(FILES)
    assert read(base + "RUN --mount=target=/ctx make\n") == set(FILES)
    # a mount source is literal, not a pattern
    assert read(base + "RUN --mount=type=bind,source=*.c,target=/c make\n") == set()


def test_run_mounts_that_read_no_context():
    text = """\
FROM alpine AS build
FROM alpine
RUN --mount=type=cache,target=/root/.cache make
RUN --mount=type=secret,id=tok --mount=type=ssh --mount=type=tmpfs,target=/t make
RUN --mount=type=bind,from=build,source=src,target=/o make
RUN --mount=type=cache,from=build,target=/c make
RUN --network=none make all
"""
    assert read(text) == set()


# -- variables --------------------------------------------------------------------------

def test_arg_with_default_is_expanded():
    assert read("FROM scratch\nARG SRC=src/lib\nCOPY ${SRC} $SRC/deep.c /x/\n") == {
        "src/lib/deep.c"}


def test_build_args_override_declared_args_only():
    text = "FROM scratch\nARG SRC=src\nCOPY ${SRC} /x/\n"
    assert read(text, build_args={"SRC": "docs/api"}) == {"docs/api/ref.md"}
    notes = whole("FROM scratch\nCOPY ${UNDECLARED} /x/\n", build_args={"UNDECLARED": "c"})
    assert notes == (f"{WHERE}:2: COPY ${{UNDECLARED}} /x/: $UNDECLARED is neither an ARG nor "
                     f"an ENV of this stage (its value would come from the base image, if "
                     f"anywhere); the whole context is an input",)


def test_global_arg_not_redeclared_is_unresolved():
    text = "ARG SRC=src\nFROM scratch\nCOPY Makefile /m\nCOPY ${SRC} /x\n"
    notes = whole(text)
    assert notes == (f"{WHERE}:4: COPY ${{SRC}} /x: $SRC is an ARG before the first FROM, "
                     f"which a stage sees only if it declares it again (ARG SRC); the whole "
                     f"context is an input",)


def test_global_arg_redeclared_takes_its_value():
    text = "ARG SRC=src\nFROM scratch\nARG SRC\nCOPY ${SRC}/app.h /x\n"
    assert read(text) == {"src/app.h"}
    assert read(text, build_args={"SRC": "nope"}) == set()


def test_arg_without_value_is_unresolved():
    notes = whole("FROM scratch\nARG SRC\nCOPY ${SRC} /x\n")
    assert notes == (f"{WHERE}:3: COPY ${{SRC}} /x: $SRC has no value at this point; "
                     f"the whole context is an input",)


def test_arg_is_visible_only_after_it_is_declared():
    notes = whole("FROM scratch\nCOPY $SRC /x\nARG SRC=c\nCOPY $SRC /y\n")
    assert len(notes) == 1 and notes[0].startswith(f"{WHERE}:2: COPY $SRC /x: $SRC is neither")


def test_env_expansion_and_precedence_over_arg():
    text = """\
FROM scratch
ARG DIR=docs
ENV DIR=config SUB="api"
ENV FILE dev.yaml
COPY $DIR/$FILE /x/
COPY docs/${SUB} /y/
"""
    assert read(text) == {"config/dev.yaml", "docs/api/ref.md"}


def test_env_values_see_the_env_before_their_line():
    assert read("FROM scratch\nENV A=src\nENV A=docs B=$A\nCOPY $B/app.c $A/guide.md /x/\n") == {
        "src/app.c", "docs/guide.md"}


def test_env_is_inherited_by_from_stage_but_args_are_not():
    text = """\
FROM alpine AS base
ENV SRC=src
ARG ONLY_HERE=c
FROM base AS build
COPY $SRC/app.h /x
FROM alpine
COPY $SRC /y
"""
    result = use(text)
    assert result.whole and len(result.notes) == 1
    assert result.notes[0].startswith(f"{WHERE}:7: COPY $SRC /y: $SRC is neither")
    assert read("FROM alpine AS base\nENV SRC=src\nFROM base\nCOPY $SRC/app.h /x\n") == {
        "src/app.h"}
    whole("FROM alpine AS base\nARG A=c\nFROM base\nCOPY $A /x\n")


@pytest.mark.parametrize("src, expected", [
    ("${NOPE:-Makefile}", {"Makefile"}),  # declared, no value: the default
    ("${NOPE-Makefile}", {"Makefile"}),
    ("${EMPTY:-Makefile}", {"Makefile"}),  # empty counts as absent with ':'
    ("x${EMPTY-Makefile}.txt", {"x.txt"}),  # but not without it
    ("${SET:-Makefile}", {"c"}),
    ("${SET:+main.c}", {"main.c"}),
    ("${NOPE:+main.c}Makefile", {"Makefile"}),
    ("${SET+main.c}", {"main.c"}),
    ("${SET:-$UNKNOWN}", {"c"}),  # an unused alternative needs no value
    ("'$HOME'", {"$HOME"}),
    ('"$SET"', {"c"}),
])
def test_substitution_forms(src, expected):
    text = f"FROM scratch\nARG NOPE\nARG EMPTY=\nARG SET=c\nCOPY {src} /x/\n"
    assert read(text) == expected


def test_default_expansion_with_an_unknown_variable_is_unresolved():
    whole("FROM scratch\nARG SET=c\nCOPY ${UNKNOWN:-c} /x/\n")
    whole("FROM scratch\nARG NOPE\nCOPY ${NOPE:-$UNKNOWN} /x/\n")


def test_escaped_dollar_is_literal():
    assert read("FROM scratch\nCOPY \\$HOME /h\n") == {"$HOME"}
    assert read('FROM scratch\nCOPY "\\$HOME" /h\n') == {"$HOME"}


def test_escape_directive_backtick():
    text = "# escape=`\nFROM scratch\nCOPY `$HOME Makefile `\n  /h/\n"
    assert read(text) == {"$HOME", "Makefile"}


def test_platform_args_need_build_args():
    text = "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}/bin /bin\n"
    assert read(text, build_args={"TARGETARCH": "arm64"}) == {"arm64/bin"}
    notes = whole(text)
    assert notes == (f"{WHERE}:3: COPY ${{TARGETARCH}}/bin /bin: $TARGETARCH is set by the "
                     f"engine; pass it in build_args to fix it; the whole context is an input",)
    whole("FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH:-amd64}/bin /bin\n")


def test_unsupported_substitution_and_bad_quotes_are_unresolved():
    notes = whole("FROM scratch\nARG S=src.c\nCOPY ${S%.c} /x\nCOPY \"a b\" /y\n")
    assert notes == (
        f"{WHERE}:3: COPY ${{S%.c}} /x: forge does not evaluate ${{S%…}}; the whole context "
        f"is an input",
        f'{WHERE}:4: COPY "a b" /y: it has an unterminated " quote; the whole context is an input')


def test_unresolved_mount_source():
    notes = whole("FROM alpine\nRUN --mount=type=bind,source=$D,target=/d make\n")
    assert notes[0].startswith(f"{WHERE}:2: RUN --mount=type=bind,source=$D,target=/d make: $D ")


def test_multi_stage_union():
    text = """\
# syntax=docker/dockerfile:1
FROM alpine AS build
COPY src /src
RUN --mount=type=bind,source=Makefile,target=/m make
FROM alpine AS docs
ARG TOPIC=api
COPY docs/${TOPIC} /d
FROM scratch
COPY --from=build /out /out
COPY x.txt /
ONBUILD COPY c /c
"""
    assert read(text) == {"src/app.c", "src/app.h", "src/lib/deep.c", "Makefile",
                          "docs/api/ref.md", "x.txt", "c"}


def test_paths_are_returned_as_given_and_sorted():
    result = use("FROM scratch\nCOPY z.txt y.txt /d/\n", files=["z.txt", "y.txt", "x"])
    assert result == ContextUse(files=("y.txt", "z.txt"), whole=False, notes=())


@pytest.mark.parametrize("text", ["FROM scratch\nCOPY /only\n", "FROM scratch\nADD\tx\n",
                                  'FROM scratch\nCOPY ["one"]\n'])
def test_copy_without_destination_is_an_error(text):
    with pytest.raises(forge.BuildFileError, match=rf"^{WHERE}:2: (COPY|ADD) .*needs at least"):
        use(text)


def test_bom_and_unknown_instructions():
    assert read("\ufeffFROM scratch\nFROBNICATE all\nCOPY c /c\n") == {"c"}


def test_fifty_thousand_files():
    files = [f"dir{d:03}/sub{s:02}/file{f:02}.{'c' if f % 2 else 'h'}"
             for d in range(100) for s in range(25) for f in range(20)]
    files += [f"top{i:02}.c" for i in range(20)]
    assert len(files) == 50_020
    lines = ["FROM scratch"] + [f"COPY dir{d:03}/sub0* /d{d}/" for d in range(0, 100, 10)] + [
        "COPY *.c /top/", "COPY dir050 /50/", "COPY dir0[0-1]?/*/file0[13].c /g/",
        "COPY missing /m/", "COPY dir099/sub24/file19.c /one/", "COPY ./dir042/ /42/",
        "RUN --mount=type=bind,source=dir077,target=/s make", "COPY dir*/sub1?/*.h /h/",
        "COPY --from=x dir001 /nope/", "ADD top00.c /t/"]
    assert len(lines) == 21
    start = time.perf_counter()
    result = use("\n".join(lines) + "\n", files=files)
    elapsed = time.perf_counter() - start
    print(f"context_use over {len(files)} files, {len(lines) - 1} instructions: "
          f"{elapsed * 1000:.1f} ms, {len(result.files)} files read")
    chosen = set(result.files)
    assert not result.whole
    expected = {f for f in files
                if (f.startswith("dir") and int(f[3:6]) % 10 == 0 and f[7:11] == "sub0")
                or f.startswith(("top", "dir050/", "dir042/", "dir077/"))
                or (f[:5] in ("dir00", "dir01") and f.endswith(("file01.c", "file03.c")))
                or f == "dir099/sub24/file19.c"
                or (f[7:11] == "sub1" and f.endswith(".h"))}
    assert chosen == expected


# -- .dockerignore ----------------------------------------------------------------------

def test_read_dockerignore(tmp_path):
    assert read_dockerignore(tmp_path) == []
    (tmp_path / ".dockerignore").write_text(
        "\ufeff# a comment\n\n  **/*.o  \n!keep.o\n  # an indented # is a pattern\n"
        "/build/\n! spaced/./x/../y\r\nnode_modules\n")
    assert read_dockerignore(tmp_path) == [
        "**/*.o", "!keep.o", "# an indented # is a pattern", "build", "!spaced/y",
        "node_modules"]


def test_apply_dockerignore():
    files = ["a.o", "keep.o", "src/x.o", "src/deep/y.o", "src/x.c", "build/out", "build/keep",
             "Dockerfile", ".dockerignore", "Node_modules/n", "node_modules/m/i.js"]
    patterns = ["**/*.o", "!keep.o", "build", "!build/keep", "node_modules", "Dockerfile"]
    assert apply_dockerignore(files, patterns, keep=["Dockerfile"]) == [
        "keep.o", "src/x.c", "build/keep", "Dockerfile", ".dockerignore", "Node_modules/n"]
    assert apply_dockerignore(files, ["*", "!src"]) == [
        "src/x.o", "src/deep/y.o", "src/x.c"]  # .dockerignore too, when a pattern says so
    assert apply_dockerignore(files, []) == files


def test_dockerignore_then_context_use(tmp_path):
    (tmp_path / ".dockerignore").write_text("# build output\n**/*.o\n!src/keep.o\n")
    files = ["src/a.c", "src/a.o", "src/keep.o", "src/lib/b.o", "Dockerfile"]
    context = apply_dockerignore(files, read_dockerignore(tmp_path), keep=["Dockerfile"])
    assert context == ["src/a.c", "src/keep.o", "Dockerfile"]
    assert read("FROM scratch\nCOPY src /src\n", files=context) == {"src/a.c", "src/keep.o"}
