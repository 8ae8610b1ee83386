"""dockerfile and dockerfile_chain: Dockerfile steps as cached actions on an executor.

Each build is one action whose key covers the Dockerfile, the context files it can read
(its COPY/ADD/RUN --mount=type=bind sources, resolved at analysis by
forge.rules.dockerfile_context; the whole context when one cannot be resolved), build
args (args files included), the target stage, the platform, the network flag and the
digests of the images it names (through their actions' results). The base reaches the
Dockerfile as the ``BASE_IMAGE`` build argument (the Atom convention), and each of
``images`` as its own argument, loaded into the engine from the CAS, so no registry sits
between steps. The context is ``srcs`` (and a chain's folder), or ``context``: a
directory anywhere in the workspace or a filegroup; its ``.dockerignore`` applies.
Secrets and SSH agents travel beside the action (``rc.secrets``, ``rc.ssh``), never in
its key.

The executor is chosen at analysis (``ctx.select_executor``: the target's ``executor``,
else ``[build] platform_executors``, else ``[build] executor``) and travels as the
action's ``executor``; like the engine, it is not in the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import forge
from forge import attr
from forge.rules.args_files import orphan_args_files, platform_spellings, read_args_lines
from forge.rules.dockerfile_context import apply_dockerignore, context_use, read_dockerignore
from forge.rules.dockerfile_refs import check_image_references

CHAIN_FILE = re.compile(r"^(\d+)-Dockerfile-(.+)$")

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

CONTEXT_ATTR = attr.context(
    doc="the build context: a directory (package-relative, or //dir from the workspace root; "
        "its .dockerignore applied) or a filegroup label; each step's key holds only the "
        "context files its COPY/ADD/RUN --mount=type=bind can read",
    example='context = "//"')
IMAGES_ATTR = attr.label_dict(
    default={}, doc="more images the Dockerfile names, build-arg name -> image target, loaded "
    "into the engine as BASE_IMAGE is (FROM ${PRODUCTION_IMAGE} AS no-deps)",
    example='images = {"PRODUCTION_IMAGE": ":slim-amd64"}')
SECRETS_ATTR = attr.string_dict(
    default={}, doc="secrets for RUN --mount=type=secret,id=ID: id -> a file path (package-"
    "relative, absolute or ~) or env:NAME; never in the key, the logs or --json",
    example='secrets = {"pip": "env:PIP_TOKEN"}')
SSH_ATTR = attr.string_list(
    default=[], doc="SSH agents forwarded to RUN --mount=type=ssh (\"default\": $SSH_AUTH_SOCK); "
    "not in the key", example='ssh = ["default"]')

DOCKERFILE_ATTRS = {
    "dockerfile": attr.string(default="Dockerfile", doc="package-relative Dockerfile path",
                              example='dockerfile = "docker/Dockerfile.app"'),
    "srcs": attr.sources(default=[], doc="the build context when `context` is not set: package "
                         "files COPY may read", example='srcs = glob(["app/**"])'),
    "context": CONTEXT_ATTR,
    "base": attr.label(default=None, doc="image target passed as BASE_IMAGE",
                       example='base = ":stock-amd64"'),
    "images": IMAGES_ATTR,
    "secrets": SECRETS_ATTR,
    "ssh": SSH_ATTR,
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
    """``KEY=VALUE`` per line, ``#`` comments and blank lines allowed; errors name file:line
    (forge.rules.args_files.read_args_lines; a later line of a key wins, as Atom's loop)."""
    return {key: value for _, key, value in read_args_lines(path, display)}


@dataclass(frozen=True)
class BuildContext:
    """A target's build context: ``entries`` maps each path as the Dockerfile sees it
    (relative to the context root) to its input path, in ``space`` ("package": inputs
    relative to the package, as ``srcs``; "workspace": relative to the workspace root, for
    a ``context`` that may span packages); ``root`` is the context root in that space."""

    space: str
    root: str
    entries: dict[str, str]
    checked: tuple[Any, ...] = ()  # package space: every entry as a sandbox-checked SourceFile


def build_context_of(ctx: forge.AnalysisContext, context: Any, legacy: list[str],
                     legacy_root: str = "", legacy_srcs: list[str] | tuple[str, ...] = ()) -> BuildContext:
    """The context a target's steps read: its ``context`` attribute (a directory or a
    filegroup), else the package files ``legacy`` (``srcs``, and a chain's folder) rooted
    at ``legacy_root``. The root's ``.dockerignore`` applies in every case."""
    if isinstance(context, forge.ContextDir):
        files = ctx.tree(context.path)
        root, space = context.path, "workspace"
        names = {f: f"{root}/{f}" if root else f for f in files}
        ignore_dir = Path(ctx.workspace_root) / root
    elif context is not None:
        info = context.get(forge.FilesInfo)
        if info is None:
            raise ctx.fail(f"context = {context.label}: not a filegroup (it provides no files); "
                           "use a filegroup target or a directory")
        root, space = info.package, "workspace"
        names = {f.relpath: f"{root}/{f.relpath}" if root else f.relpath for f in info.files}
        ignore_dir = Path(ctx.workspace_root) / root
    else:
        root, space = legacy_root, "package"
        names = {(rel[len(root) + 1:] if root and rel.startswith(root + "/") else rel): rel
                 for rel in dict.fromkeys(legacy)}
        ignore_dir = Path(ctx.package_dir) / root
    if context is not None and legacy_srcs:
        named = context if isinstance(context, forge.ContextDir) else context.label
        raise ctx.fail(f"srcs and context are both set: with context = {named}, the context is "
                       "that directory or filegroup; drop srcs")
    patterns = read_dockerignore(ignore_dir)
    kept = apply_dockerignore(names, patterns) if patterns else list(names)
    entries = {name: names[name] for name in kept if name != ".dockerignore"}
    # every declared file is checked now (exists, inside the sandbox), read by a step or not
    checked = tuple(ctx.files(list(dict.fromkeys(legacy)))) if space == "package" else ()
    return BuildContext(space, root, entries, checked)


def declare_build(
    ctx: forge.AnalysisContext, *, dockerfile: str, context: BuildContext, base: Any,
    build_args: dict[str, str], args_file: str | None, target: str | None, network: bool,
    platform: forge.Platform, description: str, executor: str, reproducible: bool = False,
    images: dict[str, Any] | None = None, secrets: dict[str, str] | None = None,
    ssh: list[str] | None = None, uses_base: bool | None = None,
) -> forge.Action:
    """Declare one DockerBuild action (shared by both rules) on the executor named
    ``executor`` (from ``ctx.select_executor``). ``uses_base``: True when the Dockerfile
    must build on ``base`` (a chain step), False when it may ignore it."""
    args = dict(build_args)
    if args_file:
        # Parsed here, so its values are params (in the key, and what the engine gets); the
        # file's bytes are not an input: a comment or blank line in it re-runs nothing.
        path = ctx.source_path(args_file, "args_file")
        args.update(parse_args_file(path, f"{ctx.label.package}/{args_file}"))
    base_action = None
    if base is not None:
        base_action = base if isinstance(base, forge.Action) else base[forge.ImageInfo].action
    image_actions = {name: (dep if isinstance(dep, forge.Action) else dep[forge.ImageInfo].action)
                     for name, dep in sorted((images or {}).items())}
    if "BASE_IMAGE" in image_actions:
        raise ctx.fail("images = {'BASE_IMAGE': ...}: BASE_IMAGE is `base`; set base instead")
    # The Dockerfile is read (its content keyed, through a symlink if it is one).
    dockerfile_path = ctx.source_path(dockerfile, "dockerfile")
    display = f"{ctx.label.package}/{dockerfile}" if ctx.label.package else dockerfile
    text = dockerfile_path.read_text(errors="replace")
    # Every image the Dockerfile names must be BASE_IMAGE, an `images` arg, a stage,
    # scratch or pinned by digest: the Dockerfile text and build args are in the key, so a
    # pinned digest is too, and nothing unpinned can reach the engine (it would ask Docker Hub).
    refs = check_image_references(text, display, build_args=args, has_base=base_action is not None,
                                  image_args=frozenset(image_actions))
    if target is not None and target.lower() not in refs.stages:
        raise ctx.fail(f"target = {target!r} is not a stage of {display} "
                       f"(stages: {', '.join(s for s in refs.stages if s) or 'none named'})")
    if uses_base and base_action is not None and not refs.uses_base:
        raise ctx.fail(
            f"{display}: no FROM uses ${{BASE_IMAGE}}, so this step would not build on the one "
            f"before it and the chain would break here; write FROM ${{BASE_IMAGE}}, or opt out: "
            f"steps = {{\"{Path(dockerfile).name}\": {{\"uses_base\": False}}}}")
    # Only the context files the Dockerfile can read are inputs (BuildKit keys a COPY by
    # what it copies): an edit elsewhere in the context re-runs nothing.
    # the target platform args are known here (BUILDPLATFORM, the engine's, is not)
    use = context_use(text, display, build_args={**forge.automatic_args(platform), **args},
                      context_files=sorted(context.entries))
    chosen = [context.entries[name] for name in use.files]
    if context.space == "workspace":
        package = ctx.label.package
        dockerfile_rel = f"{package}/{dockerfile}" if package else dockerfile
        files = ctx.workspace_files([dockerfile_rel], attr="dockerfile", follow=True) + \
            ctx.workspace_files([c for c in chosen if c != dockerfile_rel])
    else:
        dockerfile_rel = dockerfile
        by_path = {f.relpath: f for f in context.checked}
        files = ctx.files([dockerfile], attr="dockerfile", follow=True) + [
            by_path[c] for c in chosen if c != dockerfile]
    deps = [*([base_action] if base_action else []), *image_actions.values()]
    first = 1 if base_action else 0
    return ctx.action(
        "DockerBuild", build_dockerfile,
        inputs=files, deps=deps, platform=platform,
        executor=executor, hermetic=not network,
        timestamps=True,  # the result's config `created` is the build's epoch
        params={"dockerfile": dockerfile_rel, "context": sorted(chosen), "build_args": args,
                "target": target, "network": network, "context_root": context.root,
                # only when set, so the keys of every other step stay what they were
                **({"reproducible": True} if reproducible else {}),
                **({"images": {n: first + i for i, n in enumerate(image_actions)}}
                   if image_actions else {}),
                # why the key is wider than it might be: forge explain says it
                **({"key_notes": list(use.notes)} if use.whole else {})},
        description=description, materialize=forge.materialize_image,
        secrets=_secrets(ctx, secrets or {}), ssh=list(ssh or []),
    )


def _secrets(ctx: forge.AnalysisContext, secrets: dict[str, str]) -> dict[str, str]:
    """id -> env:NAME or an absolute path (package-relative paths from the package)."""
    out = {}
    for ident, source in secrets.items():
        if not ident or "," in ident or "=" in ident:
            raise ctx.fail(f"secrets: {ident!r} is not a secret id (no ',' or '=')")
        try:
            out[ident] = forge.secret_source(source, f"secrets[{ident!r}]", str(ctx.package_dir))
        except forge.UsageError as exc:
            raise ctx.fail(str(exc)) from None
    return out


class Dockerfile(forge.Rule):
    name = "dockerfile"
    doc = DOCKERFILE_DOC
    attrs = DOCKERFILE_ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        a = ctx.attr
        # no base: the platform of the first named image (utilities/02's PRODUCTION_IMAGE)
        platform = forge.image_platform(
            ctx, a.base if a.base is not None else next(iter(a.images.values()), None))
        action = declare_build(
            ctx, dockerfile=a.dockerfile, context=build_context_of(ctx, a.context, list(a.srcs), legacy_srcs=a.srcs),
            base=a.base, images=a.images, secrets=a.secrets, ssh=a.ssh,
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

STEP_FIELDS = {
    "target": attr.string(default=None, doc="stage to stop at"),
    "network": attr.boolean(default=None, doc="network for this step (default: the chain's)"),
    "build_args": attr.string_dict(default={}, doc="build args over the chain's and the args file's"),
    "images": attr.label_dict(default={}, doc="more images, as `images`"),
    "uses_base": attr.boolean(default=True, doc="False: this step starts afresh (its FROM "
                              "does not use BASE_IMAGE) and the chain goes on from it"),
}

CHAIN_ATTRS = {
    "dir": attr.string(doc="package-relative directory of numbered Dockerfiles",
                       example='dir = "graphics"'),
    "base": attr.label(default=None, doc="image target the first file builds on",
                       example='base = ":stock-aarch64"'),
    "srcs": attr.sources(default=[], doc="extra package files added to every step's context "
                         "(when `context` is not set)"),
    "context": CONTEXT_ATTR,
    "images": IMAGES_ATTR,
    "steps": attr.struct_dict(
        STEP_FIELDS, default={}, doc="per-step settings by file name: target, network, "
        "build_args, images, uses_base",
        example='steps = {"30-Dockerfile-make": {"network": False}}'),
    "secrets": SECRETS_ATTR,
    "ssh": SSH_ATTR,
    "build_args": attr.string_dict(default={}, doc="build arguments for every step"),
    "network": attr.boolean(default=False, doc="allow network access in RUN (non-hermetic); "
                            "per step: steps = {...: {\"network\": ...}}"),
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
    for spelling in platform_spellings(platform):
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
        # without `context`, the folder's other files and srcs (not listed when it is set)
        legacy = [] if a.context is not None else sorted(
            f"{a.dir}/{p.relative_to(directory)}" for p in directory.rglob("*")
            if p.is_file() and not CHAIN_FILE.match(p.name) and not p.name.endswith("-args")
        ) + list(a.srcs)
        context = build_context_of(ctx, a.context, legacy, legacy_root=a.dir.strip("/"), legacy_srcs=a.srcs)
        files = [f for _, _, f in steps]
        for name in a.steps:
            if name not in files:
                raise ctx.fail(f"steps: {name!r} is not a Dockerfile in {a.dir}/"
                               f"{forge.did_you_mean(name, files)}; the steps: {', '.join(files)}")
        for warning in orphan_args_files(directory, [d for _, d, _ in steps], display=a.dir):
            ctx.warn(warning)
        executor = ctx.select_executor(a.executor, platform)
        previous: Any = a.base
        action = None
        for _number, descriptor, fname in steps:
            args_file = args_file_for(directory, descriptor, platform)
            step = a.steps.get(fname, {})
            network = a.network if step.get("network") is None else step["network"]
            action = declare_build(
                ctx, dockerfile=f"{a.dir}/{fname}", context=context, base=previous,
                images={**a.images, **(step.get("images") or {})},
                build_args={**a.build_args, **(step.get("build_args") or {})},
                args_file=f"{a.dir}/{args_file}" if args_file else None,
                target=step.get("target"), network=network, platform=platform,
                description=fname, executor=executor, secrets=a.secrets, ssh=a.ssh,
                reproducible=ctx.reproducible if a.reproducible is None else a.reproducible,
                uses_base=step.get("uses_base", True),
            )
            previous = action
        return [forge.ImageInfo(action, platform), forge.DefaultInfo(action)]


def build_dockerfile(rc: forge.RunContext) -> forge.ActionResult:
    """Run the build on the action's executor and bring the image back into the CAS."""
    images = {name: forge.dep_image(rc, rc.action.deps[i])
              for name, i in rc.params.get("images", {}).items()}
    first = min(rc.params.get("images", {}).values(), default=len(rc.action.deps))
    base = forge.dep_image(rc, rc.action.deps[0]) if first > 0 else None
    engine = rc.executor(rc.action.executor)
    kwargs = {"images": images} if images else {}
    image = engine.build(rc, package_dir=rc.source(), base=base, **kwargs)
    return forge.image_result(rc, image)
