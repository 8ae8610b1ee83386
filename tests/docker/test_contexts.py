"""Repository-wide contexts keyed per step, several named images, per-step settings:
Atom's docker/ layout on the real engine."""

import pytest

from tests.docker.test_dockerfile import busybox_ws, run_image

pytestmark = pytest.mark.integration

# The Atom layout: the BUILD file in docker/, the context the repository root, each step
# ADDing its own part of the tree.
ATOM_LIKE = {
    # Atom's own root .dockerignore: everything out, then the source trees back in
    ".dockerignore": ("# ignore everything\n**\n\n# except\n!/languages/**\n!/lua-scripts/**\n"
                      "!/third-party/**\n**/*.o\n"),
    "languages/c/atom.c": "int atom(void) { return 1; }\n",
    "languages/c/atom.o": "object\n",
    "third-party/lib/VERSION": "lib-v1\n",
    "lua-scripts/script.lua": "return 1\n",
    "build-output/big.bin": "ignored\n",
    "docker/stock/10-Dockerfile-base": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo base > /base\n",
    "docker/stock/20-Dockerfile-c": ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG SRC=languages/c\n"
                                     "ADD ./${SRC} /atom/c\nRUN ls /atom/c > /c-files\n"),
    "docker/stock/30-Dockerfile-lib": ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                                       "COPY third-party/lib /atom/lib\n"
                                       "RUN cat /atom/lib/VERSION > /lib-version\n"),
    "docker/stock/40-Dockerfile-lua": ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
                                       "COPY lua-scripts/*.lua /atom/lua/\n"),
    "docker/stock/lib-amd64-args": "# nothing\n",
    "docker/stock/libs-amd64-args": "TYPO=1\n",
}
STEPS = [f"//docker:stock#DockerBuild.{i}" for i in range(4)]


def atom_ws(forge_workspace, extra_build=""):
    files = {**ATOM_LIKE, "docker/BUILD": (
        'dockerfile_chain(name = "stock", dir = "stock", base = "//app:busybox-amd64", context = "//",\n'
        '    steps = {"10-Dockerfile-base": {"network": True}})\n' + extra_build)}
    return busybox_ws(forge_workspace, files)


def test_repo_wide_context_keys_each_step_on_what_it_reads(forge_workspace, docker_client):
    ws = atom_ws(forge_workspace)
    first = ws.run("build", "//docker:stock", "--json").assert_success()
    assert [a for a in first.executed() if a.startswith("//docker")] == STEPS
    # the args file that matches no Dockerfile is named, with the nearest descriptor
    said = first.stdout + first.stderr
    assert "stock/libs-amd64-args" in said and "'lib'" in said
    # per-step network: step 10 is non-hermetic, the others are not
    aquery = ws.run("aquery", "//docker:stock", "--json").assert_success().stdout
    assert '"network": true' in aquery and '"network": false' in aquery

    # a file only step 30 copies: steps 30 and 40 re-run, and the image shows the edit
    (ws.root / "third-party/lib/VERSION").write_text("lib-v2\n")
    out = ws.run("build", "//docker:stock", "--json", "--load", "--tag", "forge-test/atom-ctx:1").assert_success()
    assert out.executed() == STEPS[2:]
    assert run_image(docker_client, "forge-test/atom-ctx:1", "cat", "/lib-version") == "lib-v2\n"

    # a file step 20 ADDs through an ARG it expands: 20 onward
    (ws.root / "languages/c/atom.h").write_text("int atom(void);\n")
    out = ws.run("build", "//docker:stock", "--json", "--load", "--tag", "forge-test/atom-ctx:2").assert_success()
    assert out.executed() == STEPS[1:]
    assert run_image(docker_client, "forge-test/atom-ctx:2", "cat", "/c-files").split() == ["atom.c", "atom.h"]

    # ignored files (.dockerignore at the context root) and files no step reads: nothing
    (ws.root / "languages/c/atom.o").write_text("rebuilt object\n")
    (ws.root / "build-output/big.bin").write_text("changed\n")
    (ws.root / "README.md").write_text("docs\n")
    assert ws.run("build", "//docker:stock", "--json").assert_success().executed() == []
    # a glob COPY: a new matching file re-runs step 40 only
    (ws.root / "lua-scripts/more.lua").write_text("return 2\n")
    assert ws.run("build", "//docker:stock", "--json").assert_success().executed() == STEPS[3:]


def test_two_named_images_in_the_style_of_atom_utilities(forge_workspace, docker_client):
    """Atom's utilities/: 01 builds on BASE_IMAGE and reads PRODUCTION_IMAGE in a stage
    (--target with-deps), 02 is FROM ${PRODUCTION_IMAGE} alone; both with the utilities
    folder as the context, filtered by its own '**' .dockerignore."""
    ws = busybox_ws(forge_workspace, {
        "app/prod/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo production > /prod-marker\n",
        "app/utilities/.dockerignore": "# ignore everything\n**\n\n# except\n!/ldd_find_libs.sh\n",
        "app/utilities/ldd_find_libs.sh": "echo libs > /tmp/required_libs.txt\n",
        "app/utilities/scratch.txt": "ignored\n",
        "app/utilities/01-Dockerfile-minimize": (
            "ARG BASE_IMAGE\nARG PRODUCTION_IMAGE\n"
            "FROM ${PRODUCTION_IMAGE} as no-deps\nARG TARGETPLATFORM\n"
            "RUN echo ${TARGETPLATFORM} | sed s/linux\\\\///g > /tmp/arch.txt && cat /prod-marker > /seen-prod\n"
            "FROM ${BASE_IMAGE} as with-deps\nADD ./ldd_find_libs.sh /tmp/ldd_find_libs.sh\n"
            "RUN sh /tmp/ldd_find_libs.sh\nCOPY --from=no-deps /seen-prod /from-prod\n"
            "COPY --from=no-deps /tmp/arch.txt /arch.txt\n"
            "FROM with-deps as unused\nRUN false\n"),
        "app/utilities/02-Dockerfile-production": (
            "ARG PRODUCTION_IMAGE\nFROM ${PRODUCTION_IMAGE} as production\n"
            "ENV PATH=\"/opt/venv/bin:$PATH\"\nRUN echo shipped > /shipped\n"),
        "app/BUILD": (
            'dockerfile(name = "slim", base = ":busybox-amd64", dockerfile = "prod/Dockerfile")\n'
            'dockerfile(name = "minimize", dockerfile = "utilities/01-Dockerfile-minimize",\n'
            '    context = "utilities", base = ":busybox-amd64", target = "with-deps",\n'
            '    images = {"PRODUCTION_IMAGE": ":slim"})\n'
            'dockerfile(name = "production", dockerfile = "utilities/02-Dockerfile-production",\n'
            '    context = "utilities", target = "production", images = {"PRODUCTION_IMAGE": ":slim"})\n'),
    })
    out = ws.run("build", "//app:minimize", "--json", "--load", "--tag", "forge-test/util:1").assert_success()
    assert "//app:slim#DockerBuild.0" in out.executed()
    assert run_image(docker_client, "forge-test/util:1", "cat", "/from-prod") == "production\n"
    assert run_image(docker_client, "forge-test/util:1", "cat", "/arch.txt") == "amd64\n"
    assert run_image(docker_client, "forge-test/util:1", "cat", "/tmp/required_libs.txt") == "libs\n"
    ws.run("build", "//app:production", "--load", "--tag", "forge-test/util-prod:1").assert_success()
    assert run_image(docker_client, "forge-test/util-prod:1", "cat", "/prod-marker", "/shipped") == \
        "production\nshipped\n"
    # an ignored file of the utilities context re-runs nothing
    (ws.root / "app/utilities/scratch.txt").write_text("changed\n")
    assert ws.run("build", "//app:minimize", "//app:production", "--json").assert_success().executed() == []
    # the production image is an input: changing it re-runs both steps that name it
    ws.write({"app/prod/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo prod-v2 > /prod-marker\n"})
    out = ws.run("build", "//app:minimize", "//app:production", "--json").assert_success()
    assert out.executed() == ["//app:minimize#DockerBuild.0", "//app:production#DockerBuild.0",
                              "//app:slim#DockerBuild.0"]


def test_chain_step_that_ignores_base_image_is_an_error_or_an_opt_out(forge_workspace):
    ws = busybox_ws(forge_workspace, {
        "app/c/10-Dockerfile-a": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN true\n",
        "app/c/20-Dockerfile-b": "FROM scratch\nCOPY x /x\n",
        "app/c/x": "x\n",
        "app/BUILD": 'dockerfile_chain(name = "c", dir = "c", base = ":busybox-amd64")\n',
    })
    out = ws.run("build", "//app:c", "--dry-run").assert_failure()
    assert "app/c/20-Dockerfile-b: no FROM uses ${BASE_IMAGE}" in out.stderr
    assert '"uses_base": False' in out.stderr
    build = (ws.root / "app/BUILD").read_text().replace(
        'base = ":busybox-amd64")', 'base = ":busybox-amd64",\n'
        '    steps = {"20-Dockerfile-b": {"uses_base": False, "target": None}})')
    ws.write({"app/BUILD": build})
    ws.run("build", "//app:c", "--dry-run").assert_success()
    # an unknown step name is named with the nearest one
    ws.write({"app/BUILD": build.replace('"20-Dockerfile-b"', '"20-Dockerfile-c"')})
    out = ws.run("build", "//app:c", "--dry-run").assert_failure()
    assert "'20-Dockerfile-c' is not a Dockerfile in c/" in out.stderr and "20-Dockerfile-b" in out.stderr


def test_a_copy_forge_cannot_resolve_keys_the_whole_context_and_explain_says_why(forge_workspace):
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG WHERE\nCOPY ${WHERE} /x\n",
        "app/a.txt": "a\n", "app/b.txt": "b\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", context = ".")\n',
    })
    out = ws.run("explain", "//app:img").assert_success().stdout
    assert "note: app/Dockerfile:4: COPY ${WHERE} /x" in out and "whole context" in out, out
    # a.txt is an input of the step (the whole context is): its edit re-keys it
    ws.run("build", "//app:busybox-amd64").assert_success()
    before = ws.run("aquery", "//app:img", "--json").assert_success().stdout
    (ws.root / "app/a.txt").write_text("a2\n")
    assert ws.run("aquery", "//app:img", "--json").assert_success().stdout != before


def test_a_copy_by_target_arch_reads_only_that_arch(forge_workspace):
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG TARGETARCH\nCOPY bin/${TARGETARCH}/ /usr/local/bin/\n",
        "app/bin/amd64/tool": "amd64\n", "app/bin/arm64/tool": "arm64\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", context = ".")\n',
    })
    ws.run("build", "//app:busybox-amd64").assert_success()
    import json

    events = [json.loads(x) for x in ws.run("aquery", "//app:img", "--json").assert_success().stdout.splitlines()]
    (step,) = [e for e in events if e.get("mnemonic") == "DockerBuild"]
    assert step["params"]["context"] == ["app/bin/amd64/tool"]


def test_a_filegroup_is_a_context_rooted_at_its_package(forge_workspace, docker_client):
    ws = busybox_ws(forge_workspace, {
        "BUILD": 'filegroup(name = "atom-sources", srcs = glob(["languages/**", "third-party/**"]))\n',
        "languages/c/a.c": "a\n", "third-party/lib/VERSION": "v1\n", "docs/x.md": "not in the group\n",
        "docker/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /src/\n",
        "docker/BUILD": ('dockerfile(name = "img", base = "//app:busybox-amd64", context = "//:atom-sources")\n'),
    })
    ws.run("build", "//docker:img", "--load", "--tag", "forge-test/filegroup:1").assert_success()
    listing = run_image(docker_client, "forge-test/filegroup:1", "find", "/src", "-type", "f").split()
    # the Dockerfile travels with the context, at its path from the context root
    assert sorted(listing) == ["/src/docker/Dockerfile", "/src/languages/c/a.c", "/src/third-party/lib/VERSION"]
    (ws.root / "docs/x.md").write_text("changed\n")
    assert ws.run("build", "//docker:img", "--json").assert_success().executed() == []


def test_srcs_and_context_together_are_an_error(forge_workspace):
    ws = busybox_ws(forge_workspace, {
        "app/Dockerfile": "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY a.txt /\n", "app/a.txt": "a\n",
        "app/BUILD": 'dockerfile(name = "img", base = ":busybox-amd64", context = ".", srcs = ["a.txt"])\n',
    })
    out = ws.run("build", "//app:img", "--dry-run").assert_failure()
    assert "srcs and context are both set: with context = //app" in out.stderr
