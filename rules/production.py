"""production: a slim image made of a production base, the minimize layer and config.

Atom's production step was a Dockerfile: ``ADD`` the minimize tarball onto the production
image, ``apt-get install $PRODUCTION_PACKAGES``, set the environment. Here the layer is
appended by assembly (no container), so without packages the image is a pure function of
its inputs with a reproducible digest; with packages, one ``apt-get install`` runs on an
executor first (chosen as for a Dockerfile step: ``executor``, else the workspace's),
directly on the base (see ``Production.analyze`` for why it comes before the layer).
"""

from __future__ import annotations

from typing import Any

import forge
from forge import attr
from forge.rules.args_files import DEBIAN_PACKAGE
from forge.rules.dockerfile import EXECUTOR_ATTR
from forge.rules.minimize import MinimizeInfo

DOC = """A slim production image: `base` + (when `packages` is set) one apt-get install +
the layer of the `minimized` target + runtime config.

The environment follows Atom's production images: PATH gets /opt/venv/bin (the venv is
active) and /usr/local/bin in front of the base's PATH; LD_LIBRARY_PATH is /usr/local/lib,
then any directory the minimize report found libraries in through ld.so.conf or
LD_LIBRARY_PATH that the loader does not search by itself (the production image's
ld.so.cache does not list them), then the base's. `env` overrides any of it.

Without `packages` nothing runs: the digest depends only on the inputs. With `packages`,
the install runs on an executor (docker by default; see `executor`) with the network (so
that step is non-hermetic); it is keyed on the base and the package list only, so a new
application layer never re-runs apt-get. The `minimized` target's PRODUCTION_PACKAGES (from
its `args` file, as in Atom) are installed too, after `packages`, each once.
"""

ATTRS = {
    "base": attr.label(doc="the production base image target",
                       example='base = ":debian-slim"'),
    "minimized": attr.label(doc="the minimize target whose layer goes on top",
                            example='minimized = ":app-min"'),
    "packages": attr.string_list(
        default=[], doc="Debian packages installed with apt-get on the executor "
                        "(network on, non-hermetic); name, name=version or name:arch",
        example='packages = ["libgomp1", "ca-certificates"]'),
    "env": attr.string_dict(default={}, doc="environment variables, over the defaults above",
                            example='env = {"PYTHONUNBUFFERED": "1"}'),
    "entrypoint": attr.string_list(default=None, doc="entrypoint (clears the base's cmd when set)",
                                   example='entrypoint = ["/usr/local/bin/app"]'),
    "cmd": attr.string_list(default=None, doc="default arguments", example='cmd = ["--serve"]'),
    "workdir": attr.string(default=None, doc="working directory", example='workdir = "/srv"'),
    "labels": attr.string_dict(default={}, doc="config labels",
                               example='labels = {"org.opencontainers.image.version": "1.4"}'),
    "executor": EXECUTOR_ATTR,
}

# Atom's production Dockerfile: the venv first, then /usr/local, over the base's PATH.
PATH_PREFIX = ("/opt/venv/bin", "/usr/local/bin")
LIBRARY_PATH_PREFIX = ("/usr/local/lib",)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Production(forge.Rule):
    name = "production"
    doc = DOC
    attrs = ATTRS

    def analyze(self, ctx: forge.AnalysisContext) -> list[Any]:
        a = ctx.attr
        platform = forge.image_platform(ctx, a.base)
        minimized = a.minimized[MinimizeInfo]
        if minimized.platform != platform:
            raise ctx.fail(f"minimized {a.minimized.label} was harvested from a "
                           f"{minimized.platform} image, but base {a.base.label} is {platform}")
        if minimized.production_base not in (None, a.base.label):
            raise ctx.fail(f"minimized {a.minimized.label} was fitted to production_base "
                           f"{minimized.production_base}, not to base {a.base.label}: libraries "
                           "the other base provides would be missing here")
        for i, package in enumerate(a.packages):
            if not DEBIAN_PACKAGE.match(package):
                raise ctx.fail(f"packages[{i}] = {package!r} is not a Debian package name "
                               "(name, name=version or name:arch)")
        # Ours, then the minimize args file's PRODUCTION_PACKAGES (checked when it was read):
        # one list, first occurrence kept, so naming a package in both installs it once.
        packages = list(dict.fromkeys([*a.packages, *minimized.packages]))
        # Checked whenever given, used only for the packages step (the rest runs nothing).
        executor = ctx.select_executor(a.executor, platform) if packages or a.executor else None
        base_action = a.base[forge.ImageInfo].action
        history = [f"forge minimize {a.minimized.label}"]
        if packages:
            # Installed on the base, before the layer: the step's key is then the base and
            # the package list, so changing the application (the layer) never re-runs
            # apt-get, and the harvested files win over packaged ones at the same path.
            text = packages_dockerfile(packages)
            base_action = ctx.action(
                "ProductionPackages", install_packages, deps=[base_action], platform=platform,
                executor=executor, hermetic=False, timestamps=True,
                # the params forge.Executor.build reads, plus the generated Dockerfile itself
                params={"dockerfile": "Dockerfile", "dockerfile_text": text, "context": [],
                        "build_args": {}, "target": None, "network": True, "context_root": "",
                        "packages": packages},
                description=f"apt-get install {' '.join(packages)}",
                materialize=forge.materialize_image,
            )
        action = ctx.action(
            "Production", assemble_production, deps=[base_action, minimized.action],
            platform=platform, timestamps=True,
            params={
                "env": a.env, "entrypoint": a.entrypoint, "cmd": a.cmd, "workdir": a.workdir,
                "labels": a.labels, "history": history,
                # A layer not fitted to this base is checked against it (see run below).
                "check_fit": minimized.production_base is None,
            },
            description=f"{a.minimized.label} on {a.base.label}" +
                        (f" + {len(packages)} package(s)" if packages else ""),
            materialize=forge.materialize_image,
        )
        return [forge.ImageInfo(action, platform), forge.DefaultInfo(action)]


def packages_dockerfile(packages: list[str]) -> str:
    """The one-step Dockerfile that installs ``packages`` on BASE_IMAGE, leaving no apt
    lists behind (they are most of what `apt-get update` writes)."""
    return (
        "ARG BASE_IMAGE\n"
        "FROM ${BASE_IMAGE}\n"
        "RUN apt-get update \\\n"
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
        f"{' '.join(packages)} \\\n"
        " && rm -rf /var/lib/apt/lists/*\n"
    )


def install_packages(rc: forge.RunContext) -> forge.ActionResult:
    """Build the generated Dockerfile on the action's executor, from an otherwise empty
    context directory."""
    package_dir = rc.tempdir()
    (package_dir / "Dockerfile").write_text(rc.params["dockerfile_text"])
    base = forge.dep_image(rc, rc.action.deps[0])
    image = rc.executor(rc.action.executor).build(rc, package_dir=package_dir, base=base)
    return forge.image_result(rc, image)


def _join(*groups: Any) -> str:
    """``:``-joined, first occurrence kept, empty entries dropped (an empty entry in PATH
    or LD_LIBRARY_PATH means the current directory)."""
    out: dict[str, None] = {}
    for group in groups:
        out.update((d, None) for d in group if d)
    return ":".join(out)


def production_env(base_env: list[str] | None, search_dirs: list[str],
                   overrides: dict[str, str]) -> dict[str, str]:
    """PATH and LD_LIBRARY_PATH as Atom's production images have them, then ``overrides``."""
    path = forge.elf.env_value(base_env, "PATH") or DEFAULT_PATH
    llp = forge.elf.env_value(base_env, "LD_LIBRARY_PATH")
    env = {
        "PATH": _join(PATH_PREFIX, path.split(":")),
        "LD_LIBRARY_PATH": _join(LIBRARY_PATH_PREFIX, search_dirs, llp.split(":")),
    }
    env.update(overrides)
    return env


def assemble_production(rc: forge.RunContext) -> forge.ActionResult:
    """Base (+ packages) + the minimize layer + config; runs nothing."""
    from forge.rules.images import layer_of

    p = rc.params
    base_action, minimized = rc.action.deps
    base = forge.dep_image(rc, base_action)
    layer = layer_of(rc, minimized)
    if p["check_fit"]:
        check_fit(rc, base, layer, minimized)
    image = forge.append_layers(base, layer, history=p["history"], epoch=rc.epoch)
    env = production_env((base.config.get("config") or {}).get("Env"),
                         rc.dep(minimized).metadata.get("search_dirs", []), p["env"])
    image = forge.with_config(
        image, env=[f"{k}={v}" for k, v in env.items()], entrypoint=p["entrypoint"],
        cmd=p["cmd"], workdir=p["workdir"], labels=p["labels"] or None, platform=rc.platform,
        epoch=rc.epoch,
    )
    return forge.image_result(rc, image)


def base_label(rc: forge.RunContext) -> str:
    """The base target's label, for messages: from the action graph, not a param (a label
    is not an output, so renaming the base target must not re-run the assembly)."""
    base = rc.action.deps[0]
    if base.label == rc.action.label and base.deps:  # ProductionPackages: its own base
        base = base.deps[0]
    return str(base.label)


def check_fit(rc: forge.RunContext, base: Any, layer: Any, minimized: forge.Action) -> None:
    """Fail if the layer would hide part of the base (a directory over the base's
    ``/lib -> usr/lib``, a symlink over a base directory): the image would not start."""
    tmp = str(rc.tempdir())
    with forge.elf.LayeredRootFS([rc.cas.path(x.digest) for x in base.layers], tmpdir=tmp) as base_fs, \
            forge.elf.LayeredRootFS([rc.cas.path(layer.digest)], tmpdir=tmp) as layer_fs:
        conflicts = forge.elf.layer_conflicts(base_fs, layer_fs)
    if conflicts:
        raise forge.elf.MinimizeError(
            f"the layer of {minimized.label} would hide parts of the base:\n    " +
            "\n    ".join(conflicts) +
            f"\n  set production_base = \"{base_label(rc)}\" on {minimized.label} so "
            "that its paths go through the base's links")
