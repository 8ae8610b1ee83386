"""dockerfile and dockerfile_chain: Dockerfile steps as cached actions on an executor.

Each build is one action whose key covers the Dockerfile, the declared context files,
build args (args files included), the target stage, the platform, the network flag and
the base image's digest (through the base action's result). The base reaches the
Dockerfile as the ``BASE_IMAGE`` build argument (the Atom convention), loaded into the
engine from the CAS, so no registry sits between steps.

The executor is chosen at analysis (``ctx.select_executor``: the target's ``executor``,
else ``[build] platform_executors``, else ``[build] executor``) and travels as the
action's ``executor``; like the engine, it is not in the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import forge
from forge import attr
from forge.rules.dockerfile_refs import check_image_references

CHAIN_FILE = re.compile(r"^(\d+)-Dockerfile-(.+)$")
_ARG_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")

DOCKERFILE_DOC = """One Dockerfile (optionally one stage of it) built on an executor (docker by
default; see `executor`).

The context holds only `srcs` (a file not declared is invisible to COPY). `base` is passed
as the BASE_IMAGE build argument. Network is off unless `network = True`, which marks
the action non-hermetic.
"""

# Shared by every rule that runs a container (dockerfile, dockerfile_chain, production).
EXECUTOR_ATTR = attr.string(
    default=None, doc="executor that runs the build (default: [build] platform_executors for "
    "the platform, then [build] executor); not in the key",
    example='executor = "podman"')

DOCKERFILE_ATTRS = {
    "dockerfile": attr.string(default="Dockerfile", doc="package-relative Dockerfile path",
                              example='dockerfile = "docker/Dockerfile.app"'),
    "srcs": attr.sources(default=[], doc="the build context: package files COPY may read",
                         example='srcs = glob(["app/**"])'),
    "base": attr.label(default=None, doc="image target passed as BASE_IMAGE",
                       example='base = ":stock-amd64"'),
    "build_args": attr.string_dict(default={}, doc="build arguments",
                                   example='build_args = {"VERSION": "1.2"}'),
    "args_file": attr.string(default=None, doc="file of KEY=VALUE lines added to build_args",
                             example='args_file = "graphics-aarch64-args"'),
    "target": attr.string(default=None, doc="stage to stop at", example='target = "build"'),
    "network": attr.boolean(default=False, doc="allow network access in RUN (non-hermetic)",
                            example="network = True"),
    "reproducible": attr.boolean(default=None, doc="clamp the new layers' mtimes and the history "
                                 "to SOURCE_DATE_EPOCH (default: [build] reproducible)",
                                 example="reproducible = True"),
    "executor": EXECUTOR_ATTR,
    "platform": attr.platform(),
}


def parse_args_file(path: Path, display: str) -> dict[str, str]:
    """``KEY=VALUE`` per line, ``#`` comments and blank lines allowed; errors name file:line."""
    out: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ARG_LINE.match(line)
        if not m:
            # The line itself is never echoed: args files hold tokens and passwords.
            what = "no '='" if "=" not in line else "the part before '=' is not a variable name"
            raise forge.BuildFileError(f"{display}:{number}: expected KEY=VALUE ({what}; the line is "
                                 "not shown, it may hold a secret)")
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[m.group(1)] = value
    return out


def declare_build(
    ctx: forge.AnalysisContext, *, dockerfile: str, context: list[str], base: Any,
    build_args: dict[str, str], args_file: str | None, target: str | None, network: bool,
    platform: forge.Platform, description: str, executor: str, context_root: str = "",
    reproducible: bool = False,
) -> forge.Action:
    """Declare one DockerBuild action (shared by both rules) on the executor named
    ``executor`` (from ``ctx.select_executor``)."""
    args = dict(build_args)
    if args_file:
        # Parsed here, so its values are params (in the key, and what the engine gets); the
        # file's bytes are not an input: a comment or blank line in it re-runs nothing.
        path = ctx.source_path(args_file, "args_file")
        args.update(parse_args_file(path, f"{ctx.label.package}/{args_file}"))
    base_action = None
    if base is not None:
        base_action = base if isinstance(base, forge.Action) else base[forge.ImageInfo].action
    # The Dockerfile is read (its content keyed, through a symlink if it is one); context
    # files are sent as they are (a symlink stays a symlink).
    dockerfile_path = ctx.source_path(dockerfile, "dockerfile")
    files = ctx.files([dockerfile], attr="dockerfile", follow=True) + ctx.files(
        [c for c in dict.fromkeys(context) if c != dockerfile])
    # Every image the Dockerfile names must be BASE_IMAGE, a stage, scratch or pinned by
    # digest: the Dockerfile text and build args are in the key, so a pinned digest is too,
    # and nothing unpinned can reach the engine (which would ask Docker Hub).
    display = f"{ctx.label.package}/{dockerfile}" if ctx.label.package else dockerfile
    refs = check_image_references(
        dockerfile_path.read_text(errors="replace"), display,
        build_args=args, has_base=base_action is not None)
    if target is not None and target.lower() not in refs.stages:
        raise ctx.fail(f"target = {target!r} is not a stage of {display} "
                       f"(stages: {', '.join(s for s in refs.stages if s) or 'none named'})")
    return ctx.action(
        "DockerBuild", build_dockerfile,
        inputs=files, deps=[base_action] if base_action else [], platform=platform,
        executor=executor, hermetic=not network,
        timestamps=True,  # the result's config `created` is the build's epoch
        params={"dockerfile": dockerfile, "context": sorted(context), "build_args": args,
                "target": target, "network": network, "context_root": context_root,
                # only when on, so the keys of every other step stay what they were
                **({"reproducible": True} if reproducible else {})},
        description=description, materialize=forge.materialize_image,
    )


class Dockerfile(forge.Rule):
    name = "dockerfile"
    doc = DOCKERFILE_DOC
    attrs = DOCKERFILE_ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        a = ctx.attr
        platform = forge.image_platform(ctx, a.base)
        action = declare_build(
            ctx, dockerfile=a.dockerfile, context=list(a.srcs), base=a.base,
            build_args=a.build_args, args_file=a.args_file, target=a.target, network=a.network,
            platform=platform, description=a.dockerfile + (f" --target {a.target}" if a.target else ""),
            executor=ctx.select_executor(a.executor, platform),
            reproducible=ctx.reproducible if a.reproducible is None else a.reproducible,
        )
        return [forge.ImageInfo(action, platform), forge.DefaultInfo(action)]


CHAIN_DOC = """The Atom layout: `NN-Dockerfile-<descriptor>` files in `dir`, built in numeric
order, each on the previous result (BASE_IMAGE), each reading
`<descriptor>-<platform>-args` when present (platform spelled amd64, aarch64, armv7…).
Every file is its own action: editing file 40 rebuilds 40 onward only. The context of
each step is the other files of `dir` (not the Dockerfiles or args files) plus `srcs`.
"""

CHAIN_ATTRS = {
    "dir": attr.string(doc="package-relative directory of numbered Dockerfiles",
                       example='dir = "graphics"'),
    "base": attr.label(default=None, doc="image target the first file builds on",
                       example='base = ":stock-aarch64"'),
    "srcs": attr.sources(default=[], doc="extra package files added to every step's context"),
    "build_args": attr.string_dict(default={}, doc="build arguments for every step"),
    "network": attr.boolean(default=False, doc="allow network access in RUN (non-hermetic)"),
    "reproducible": attr.boolean(default=None, doc="clamp every step's new layers' mtimes and "
                                 "history to SOURCE_DATE_EPOCH (default: [build] reproducible)"),
    "executor": EXECUTOR_ATTR,
    "platform": attr.platform(),
}


def chain_files(directory: Path) -> list[tuple[int, str, str]]:
    """(number, descriptor, file name) of the numbered Dockerfiles, in build order."""
    found = []
    for path in directory.iterdir():
        m = CHAIN_FILE.match(path.name)
        if m and path.is_file():
            found.append((int(m.group(1)), m.group(2), path.name))
    return sorted(found)


def args_file_for(directory: Path, descriptor: str, platform: forge.Platform) -> str | None:
    for spelling in dict.fromkeys((platform.short, platform.architecture, platform.debian_arch,
                                   platform.uname_machine)):
        candidate = f"{descriptor}-{spelling}-args"
        if (directory / candidate).is_file():
            return candidate
    return None


class DockerfileChain(forge.Rule):
    name = "dockerfile_chain"
    doc = CHAIN_DOC
    attrs = CHAIN_ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        a = ctx.attr
        directory = ctx.source_path(a.dir, "dir", kind="dir")
        steps = chain_files(directory)
        if not steps:
            raise ctx.fail(f"no NN-Dockerfile-<descriptor> files in {a.dir}/")
        numbers = [n for n, _, _ in steps]
        if len(set(numbers)) != len(numbers):
            raise ctx.fail(f"two files share a number in {a.dir}/: {[f for _, _, f in steps]}")
        platform = forge.image_platform(ctx, a.base)
        context = sorted(
            f"{a.dir}/{p.relative_to(directory)}" for p in directory.rglob("*")
            if p.is_file() and not CHAIN_FILE.match(p.name) and not p.name.endswith("-args")
        ) + list(a.srcs)
        executor = ctx.select_executor(a.executor, platform)
        previous: Any = a.base
        action = None
        for _number, descriptor, fname in steps:
            args_file = args_file_for(directory, descriptor, platform)
            action = declare_build(
                ctx, dockerfile=f"{a.dir}/{fname}", context=context, base=previous,
                build_args=a.build_args, args_file=f"{a.dir}/{args_file}" if args_file else None,
                target=None, network=a.network, platform=platform, description=fname,
                executor=executor, context_root=a.dir.strip("/"),
                reproducible=ctx.reproducible if a.reproducible is None else a.reproducible,
            )
            previous = action
        return [forge.ImageInfo(action, platform), forge.DefaultInfo(action)]


def build_dockerfile(rc: forge.RunContext) -> forge.ActionResult:
    """Run the build on the action's executor and bring the image back into the CAS."""
    base = forge.dep_image(rc, rc.action.deps[0]) if rc.action.deps else None
    engine = rc.executor(rc.action.executor)
    image = engine.build(rc, package_dir=rc.source(), base=base)
    return forge.image_result(rc, image)
