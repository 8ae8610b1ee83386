"""check_image_references: every image a Dockerfile names is the base, a stage, scratch or
pinned by digest (unit tests; no engine)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import forge
from forge.rules.dockerfile_refs import DockerfileRefs, check_image_references

D = "a" * 64
PINNED = f"python:3.11@sha256:{D}"
WHERE = "app/Dockerfile"


def check(text, *, build_args=None, has_base=True, image_args=frozenset()):
    return check_image_references(text, WHERE, build_args=build_args or {}, has_base=has_base,
                                  image_args=image_args)


def refused(text, **kw):
    with pytest.raises(forge.BuildFileError) as info:
        check(text, **kw)
    return str(info.value)


# -- accepted ---------------------------------------------------------------------------

@pytest.mark.parametrize("line", ["FROM ${BASE_IMAGE}", "FROM $BASE_IMAGE", "from ${BASE_IMAGE}",
                                  "FROM --platform=$BUILDPLATFORM ${BASE_IMAGE} AS build"])
def test_base_image_forms(line):
    refs = check(f"ARG BASE_IMAGE\n{line}\nRUN true\n")
    assert refs.uses_base and refs.pinned == ()


def test_other_image_args_need_no_base():
    refs = check("ARG BASE_IMAGE\nARG TOOLS\nFROM ${TOOLS} AS tools\nFROM ${BASE_IMAGE}\n"
                 "COPY --from=tools /bin/x /bin/x\n", image_args=frozenset({"TOOLS"}))
    assert refs == DockerfileRefs(stages=("tools", ""), pinned=(), uses_base=True)
    assert check("ARG TOOLS\nFROM $TOOLS\n", has_base=False,
                 image_args=frozenset({"TOOLS"})).uses_base is False


def test_multi_stage_stages_scratch_and_pinned():
    text = f"""\
# syntax=docker/dockerfile:1
ARG BASE_IMAGE
FROM ${{BASE_IMAGE}} AS Build
RUN make \\
    && make install
from build as test
FROM scratch
COPY --from=BUILD /out /out
COPY --from=0 /out /again
COPY --from=test /report /report
COPY --from=busybox@sha256:{"b" * 64} /bin/busybox /bin/busybox
FROM {PINNED} AS runtime
COPY --from=2 / /
"""
    refs = check(text)
    assert refs.stages == ("build", "test", "", "runtime")
    assert refs.pinned == (f"busybox@sha256:{'b' * 64}", PINNED)
    assert refs.uses_base


@pytest.mark.parametrize("ref", [f"python@sha256:{D}", PINNED, f"ghcr.io/org/img@sha256:{D}",
                                 f"localhost:5000/a/b_c:v1.2_x@sha256:{D}"])
def test_pinned_forms(ref):
    assert check(f"FROM {ref}\n", has_base=False).pinned == (ref,)


def test_pinned_duplicates_listed_once():
    assert check(f"FROM {PINNED}\nFROM {PINNED}\nCOPY --from={PINNED} / /\n").pinned == (PINNED,)


def test_run_mount_from_stage_or_pinned():
    text = (f"FROM scratch AS files\nFROM {PINNED}\n"
            f"RUN --mount=type=bind,from=files,target=/f --mount=type=cache,target=/c true\n"
            f'RUN --mount="type=bind,FROM={PINNED},target=/p" true\n')
    assert check(text).stages == ("files", "")


# -- ARG substitution -------------------------------------------------------------------

def test_arg_default_pinned():
    assert check(f"ARG IMG={PINNED}\nFROM ${{IMG}}\n").pinned == (PINNED,)


def test_arg_default_unpinned_refused_override_to_pinned_accepted():
    text = "ARG IMG=python:3.11\nFROM $IMG AS app\n"
    assert refused(text) == (
        f"{WHERE}:2: FROM $IMG AS app names an image forge does not build or pin (after ARG "
        f"substitution: python:3.11); oci_pull it and pass it in as base (FROM ${{BASE_IMAGE}}), "
        f"or pin it by digest: FROM python:3.11@sha256:…")
    refs = check(text, build_args={"IMG": PINNED})
    assert refs.pinned == (PINNED,) and refs.stages == ("app",)


def test_override_to_unpinned_refused():
    assert "after ARG substitution: alpine:3" in refused(
        f"ARG IMG={PINNED}\nFROM $IMG\n", build_args={"IMG": "alpine:3"})


def test_tag_built_from_args_still_needs_digest():
    text = f"ARG V=3.11\nARG D={D}\nFROM python:${{V}}@sha256:${{D}}\n"
    assert check(text).pinned == (PINNED,)
    assert "after ARG substitution: python:3.12" in refused("ARG V=3.11\nFROM python:$V\n",
                                                            build_args={"V": "3.12"})


def test_undeclared_build_arg_is_not_substituted():
    """Docker substitutes only ARGs declared before the first FROM; so does the check."""
    msg = refused("FROM ${IMG}\n", build_args={"IMG": PINNED})
    assert msg.startswith(f"{WHERE}:1: FROM ${{IMG}}: ARG IMG is empty (ARGs before the first "
                          f"FROM: none); give it a default there or set it in build_args")


def test_arg_declared_inside_a_stage_is_not_seen_by_from():
    msg = refused(f"ARG A=1\nFROM scratch\nARG IMG={PINNED}\nFROM $IMG\n")
    assert msg.startswith(f"{WHERE}:4: FROM $IMG: ARG IMG is empty (ARGs before the first FROM: A)")


def test_arg_without_value_refused():
    msg = refused("ARG IMG\nFROM ${IMG}\n")
    assert msg.startswith(f"{WHERE}:2: FROM ${{IMG}}: ARG IMG is empty")


def test_default_modifier_refused():
    assert refused(f"ARG IMG\nFROM ${{IMG:-{PINNED}}}\n") == (
        f"{WHERE}:2: FROM ${{IMG:-{PINNED}}}: forge does not substitute ${{IMG:-{PINNED}}} "
        f"(dockerfile-parse reads only $NAME and ${{NAME}}); declare the default with ARG IMG=...")


def test_arg_default_naming_another_arg_fails_closed():
    """dockerfile-parse does not expand ARG defaults; the leftover $ never looks pinned."""
    assert "after ARG substitution: ${I}" in refused(f"ARG I={PINNED}\nARG J=${{I}}\nFROM $J\n")


# -- refused ----------------------------------------------------------------------------

def test_unpinned_from_message_names_file_line_and_fix():
    assert refused("# the app\n\nARG BASE_IMAGE\nFROM python:3.11\n") == (
        f"{WHERE}:4: FROM python:3.11 names an image forge does not build or pin; oci_pull it "
        f"and pass it in as base (FROM ${{BASE_IMAGE}}), or pin it by digest: "
        f"FROM python:3.11@sha256:…")


@pytest.mark.parametrize("image", ["python", "python:3.11", "SCRATCH", "0",
                                   f"python@sha256:{D[:-1]}", f"python@sha256:{D.upper()}",
                                   f"python@sha512:{D}"])
def test_unpinned_forms_refused(image):
    assert refused(f"FROM {image}\n").startswith(f"{WHERE}:1: FROM {image} names an image")


def test_line_numbers_count_continuations_and_comments():
    text = ("FROM scratch AS a\nRUN echo \\\n# inner comment\n  one \\\n  two\n\n"
            "from --platform=linux/arm64 alpine:3 as b\n")
    assert refused(text).startswith(f"{WHERE}:7: FROM --platform=linux/arm64 alpine:3 as b names")


def test_line_of_a_continued_from_is_its_first_line():
    msg = refused("FROM scratch\nFROM \\\n  alpine:3\n")
    assert msg.startswith(f"{WHERE}:2: FROM alpine:3 names")


def test_base_image_without_base():
    assert refused("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n", has_base=False) == (
        f"{WHERE}:2: FROM ${{BASE_IMAGE}} uses BASE_IMAGE but the target sets no base = ...; "
        f"set base to the image to build on (an oci_pull or image target)")


def test_base_image_needs_its_arg():
    assert refused("FROM ${BASE_IMAGE}\n") == (
        f"{WHERE}:1: FROM ${{BASE_IMAGE}} uses BASE_IMAGE, which no ARG before the first FROM "
        f"declares; add 'ARG BASE_IMAGE' there")


def test_copy_from_image_refused():
    msg = refused("FROM scratch AS build\nFROM scratch\nCOPY --from=alpine:3 /etc/os-release /os\n")
    assert msg == (
        f"{WHERE}:3: COPY --from=alpine:3 /etc/os-release /os names an image forge does not "
        f"build or pin (alpine:3; stages above: build); pin it by digest, "
        f"--from=alpine:3@sha256:…, or oci_pull it, pass it in as base and copy from its stage: "
        f"FROM ${{BASE_IMAGE}} AS name, then --from=name")


def test_copy_from_misspelt_stage():
    assert "(bulid; stages above: build; did you mean 'build'?)" in refused(
        "FROM scratch AS build\nFROM scratch\nCOPY --from=bulid /a /a\n")


def test_copy_from_a_later_stage_is_an_image_to_docker():
    msg = refused("FROM scratch\nCOPY --from=later /a /a\nFROM scratch AS later\n")
    assert msg.startswith(f"{WHERE}:2: COPY --from=later /a /a names an image")
    assert "stage 'later' is not defined above this stage" in msg


def test_copy_from_its_own_stage_refused():
    """Docker would pull an image named 'a' (and refuses --from=1 as the current stage)."""
    assert "not defined above this stage" in refused("FROM scratch AS a\nCOPY --from=a /x /x\n")
    msg = refused("FROM scratch\nFROM scratch\nCOPY --from=1 / /\n")
    assert "--from=1 is not an earlier stage (1 above this one" in msg


def test_copy_from_index_out_of_range():
    assert refused("FROM scratch\nFROM scratch\nFROM scratch\nCOPY --from=2 /a /a\n") == (
        f"{WHERE}:4: COPY --from=2 /a /a: --from=2 is not an earlier stage "
        f"(2 above this one, numbered from 0)")


def test_copy_from_variable_refused():
    assert refused(f"ARG IMG={PINNED}\nFROM scratch\nCOPY --from=${{IMG}} / /\n") == (
        f"{WHERE}:3: COPY --from=${{IMG}} / /: Docker does not substitute ARGs in --from "
        f"(${{IMG}}); name the image in a stage, FROM ${{IMG}} AS name, and use --from=name")


def test_copy_from_quoted_and_lowercase_instruction():
    assert refused('FROM scratch\ncopy --chown=1:1 --from="alpine:3" /a /a\n').startswith(
        f"{WHERE}:2: COPY --chown=1:1 --from=\"alpine:3\" /a /a names an image")


def test_copy_paths_are_not_flags():
    text = "FROM scratch\nCOPY ./--from=alpine:3 /it's/here\n"
    assert check(text, has_base=False).stages == ("",)


def test_run_mount_from_image_refused():
    msg = refused("FROM scratch\nRUN --mount=type=bind,from=alpine:3,target=/a true\n")
    assert msg.startswith(f"{WHERE}:2: RUN --mount=type=bind,from=alpine:3,target=/a true names")
    assert "from=alpine:3@sha256:…" in msg


def test_utf8_bom_does_not_hide_the_first_from():
    """Docker strips a BOM; dockerfile-parse alone would read the instruction '\\ufeffFROM'."""
    assert refused("\ufeffFROM python:3.11\n").startswith(f"{WHERE}:1: FROM python:3.11 names")


def test_escape_directive():
    assert refused("# escape=`\nFROM scratch\nFROM `\n  alpine:3\n").startswith(
        f"{WHERE}:3: FROM alpine:3 names")


def test_no_from_and_empty_from():
    assert refused("# nothing\n") == f"{WHERE}: no FROM instruction"
    assert refused("FROM\nFROM scratch\n") == f"{WHERE}:1: FROM names no image"


def test_onbuild_is_not_this_build():
    assert check("FROM scratch\nONBUILD COPY --from=alpine:3 / /\n").stages == ("",)


# -- properties -------------------------------------------------------------------------

names = st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}", fullmatch=True)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True)


@given(name=names, tag=tags, digest=st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
def test_tags_are_refused_and_digests_accepted(name, tag, digest):
    if name != "scratch":
        with pytest.raises(forge.BuildFileError, match=r"^app/Dockerfile:2: "):
            check(f"FROM scratch\nFROM {name}:{tag}\n")
    ref = f"{name}:{tag}@sha256:{digest}"
    assert check("ARG IMG\nFROM $IMG\n", build_args={"IMG": ref}).pinned == (ref,)


def test_build_refuses_an_unpinned_from_before_running_anything(forge_workspace):
    """Regression (issue 11, bug 5): `FROM image:tag` never entered the key and the engine
    went to Docker Hub for it; now it is a BUILD-level error naming file:line and the fix."""
    ws = forge_workspace({
        "app/BUILD": 'dockerfile(name = "img", srcs = ["a.txt"])\n'
                     'dockerfile(name = "staged", dockerfile = "Dockerfile.stages", target = "nope")\n',
        "app/Dockerfile": "# comment\nFROM busybox:latest\nCOPY a.txt /\n",
        "app/Dockerfile.stages": "FROM scratch AS one\nFROM scratch AS two\n",
        "app/a.txt": "a\n",
    })
    out = ws.run("build", "//app:img", "--json").assert_failure(2)
    assert "app/Dockerfile:2: FROM busybox:latest names an image forge does not build or pin" in out.stderr
    assert "@sha256:" in out.stderr and out.actions() == []
    out = ws.run("build", "//app:staged").assert_failure(2)
    assert "target = 'nope' is not a stage of app/Dockerfile.stages (stages: one, two)" in out.stderr
