"""The ``buildah`` executor: runs Dockerfile builds with buildah, no daemon and no Docker
engine (Debian's ``buildah`` package; tested with bookworm's 1.28.2).

Select it for a target (``executor = "buildah"`` on a ``dockerfile`` or
``dockerfile_chain``), for a platform (``[build] platform_executors = {arm64 =
"buildah"}``) or for the workspace (``[build] executor = "buildah"``). The executor is not
in the action key: a result built on Docker serves a buildah build and the other way round.
Foreign platforms run under QEMU user emulation (binfmt_misc, as for the docker executor).

How a step runs. Every image the step names (``BASE_IMAGE``, ``images``) goes from the CAS
into forge's own buildah storage as ``localhost/forge-base/<config digest>`` (a
docker-archive whose gzip layers go in as they are; skipped when that image is there
already). ``buildah bud --layers`` builds the step (buildah's layer cache serves a step
that forge's cache misses). ``buildah push`` writes the result to an OCI layout, and only
the layers the input images lack are read back into the CAS, each checked against its
diff_id; the config's platform is set to the target's. buildah sets the automatic
platform args itself from ``--platform``; forge passes them too (TARGETPLATFORM,
TARGETARCH, BUILDPLATFORM…), so ``FROM --platform=$BUILDPLATFORM`` resolves as on BuildKit.

Where its state lives. Everything is under the cache dir, in ``<cache>/buildah/``:
``<driver>/storage`` and ``<driver>/run`` (buildah's ``--root`` and ``--runroot``),
``tmp/`` (its temporary files; ``RUN --mount=type=cache`` directories persist in
``tmp/buildah-cache``) and the configuration forge hands it (``containers.conf``,
``registries.conf``, ``storage-<driver>.conf``, ``policy.json``), so neither
``/etc/containers`` nor the machine's ``/var/lib/containers/storage`` is read or written,
and ``BUILDAH_*``/``CONTAINERS_*`` variables of the caller are ignored. One exception
buildah 1.28 has no setting for: as root it keeps a cache of blob digest pairs (no image
content) in ``/var/lib/containers/cache/blob-info-cache-v1.boltdb``. ``forge clean
--engine`` and ``forge cache gc`` remove forge's images from that storage (the results
as ``localhost/forge-build:<config hex>``, the bases as ``localhost/forge-base/…``);
``forge build --load`` tags an image there (``buildah --root <cache>/buildah/<driver>/storage
images`` lists it), not in a Docker engine.

``[executors.buildah]`` settings (every key is checked):

- ``storage_driver = "auto"`` (default): ``overlay`` where the kernel mounts it for the
  storage directory (asked once per process; about 2.5 times as fast as vfs on a step
  that writes 50 MB), else ``vfs``; or name one of them.
- ``isolation = "chroot"`` (default; needs no user namespaces and no OCI runtime) or
  ``"oci"`` (runc, with its state in ``<driver>/run/runc``). chroot cannot give a RUN its
  own network, so a step with ``network = False`` runs the whole buildah process in an
  empty network namespace (``unshare --net``, which needs CAP_SYS_ADMIN): an image the
  Dockerfile pins by digest rather than declaring it is then not pulled. Where
  ``unshare --net`` fails, such a step fails naming the fixes.
- ``format = "docker"`` (default: HEALTHCHECK, SHELL and ONBUILD stay in the config, as
  with the docker executor) or ``"oci"`` (buildah drops them, with a warning).
- ``cli = "/path/to/buildah"``: another buildah (default: ``buildah`` on PATH).

Dockerfile features on buildah 1.28.2 (each tried on bookworm's package):

- Work: ``FROM ${BASE_IMAGE}``, multi-stage builds and ``--target``, ``COPY --from=<stage>``,
  ``COPY --chown``, ``COPY --chmod``, ``ADD`` of context files, ``ARG``, ``ENV``, ``LABEL``,
  ``USER``, ``WORKDIR``, ``EXPOSE``, ``VOLUME``, ``STOPSIGNAL``, ``ENTRYPOINT``, ``CMD``;
  ``HEALTHCHECK``, ``SHELL`` and ``ONBUILD`` with ``format = "docker"``; the automatic
  platform args (read after ``ARG TARGETARCH``, as on BuildKit) and ``FROM
  --platform=$BUILDPLATFORM``; a ``# syntax=`` line is ignored.
- Work: ``RUN --mount=type=cache`` (kept in ``<cache>/buildah/tmp``, not in the key, as on
  BuildKit), ``type=secret`` (the target's ``secrets``: files and ``env:NAME``),
  ``type=bind`` (from the context or ``from=<stage>``), ``type=tmpfs``, ``type=ssh`` (the
  target's ``ssh`` agents).
- Refused by forge before the build, naming the line: heredocs (``RUN <<EOF``, ``COPY
  <<EOF``), which buildah reads from 1.33 on; 1.28 takes their lines for instructions.
- Refused by buildah, naming the step: ``COPY --link``, ``COPY --exclude``, ``ADD
  --checksum``, ``RUN --network``, ``RUN --security``.
- Differs from Docker: a RUN step's layer also holds the empty mount points buildah 1.28
  leaves (``/etc/hostname``, ``/etc/hosts``, ``/etc/resolv.conf``, ``/run``); the files the
  Dockerfile writes are the same as on the docker executor (tests/buildah checks it), the
  digests are not (mtimes, history). With ``reproducible = True`` two buildah storages
  give one digest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import forge
from forge.plugins.docker import build_context, failure_excerpt, reproducible, tar_name

INSTALL_HINT = "apt-get install buildah (scripts/services.sh installs it)"
_KEYS = ("storage_driver", "isolation", "format", "cli")
_DRIVERS = ("auto", "overlay", "vfs")
_ISOLATIONS = ("chroot", "oci")
_FORMATS = ("docker", "oci")
BASE_REPO = "localhost/forge-base"  # forge's images in buildah's storage, named by config digest
BUILD_REPO = "localhost/forge-build"  # buildah's results, tagged with forge's config hex
HEREDOCS_FROM = (1, 33)  # the first buildah that reads Dockerfile heredocs
# The caller's settings for buildah and containers/storage: forge hands it its own.
_FOREIGN_ENV = ("BUILDAH_", "CONTAINERS_", "_CONTAINERS_", "STORAGE_", "REGISTRIES_CONFIG")
_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}  # local transports only
_REGISTRIES = ('# forge\'s buildah: no registry is searched for a short name\n'
               'unqualified-search-registries = []\nshort-name-mode = "enforcing"\n')
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Settings:
    """``[executors.buildah]``, checked."""

    storage_driver: str = "auto"
    isolation: str = "chroot"
    format: str = "docker"
    cli: str | None = None


def _settings(workspace: Any) -> Settings:
    table = workspace.section("executors").get("buildah", {})
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise forge.ConfigError(f"{workspace.where('executors', 'buildah', unknown[0])}: "
                                f"[executors.buildah] unknown key '{unknown[0]}'"
                                f"{forge.did_you_mean(unknown[0], _KEYS)}; valid keys: {', '.join(_KEYS)}")

    def choice(key: str, valid: tuple[str, ...]) -> str:
        value = table.get(key, getattr(Settings, key))
        if value not in valid:
            raise forge.ConfigError(f"{workspace.where('executors', 'buildah', key)}: [executors.buildah] "
                                    f"{key} = {value!r}; valid: {', '.join(valid)}"
                                    f"{forge.did_you_mean(str(value), valid)}")
        return value

    cli = table.get("cli")
    if cli is not None and (not isinstance(cli, str) or not cli):
        raise forge.ConfigError(f"{workspace.where('executors', 'buildah', 'cli')}: [executors.buildah] "
                                f"cli should be the path of a buildah program, got {cli!r}")
    return Settings(choice("storage_driver", _DRIVERS), choice("isolation", _ISOLATIONS),
                    choice("format", _FORMATS), cli)


def selected_by(workspace: Any) -> str:
    """Where the workspace chooses buildah (``[build] executor`` or a platform's), or ''."""
    name, where = workspace.configured_executor(None)
    if name == "buildah":
        return where
    platforms = [text for text, chosen in workspace.platform_executors.values() if chosen == "buildah"]
    return f"[build] platform_executors ({', '.join(platforms)})" if platforms else ""


class BuildahExecutor(forge.Executor):
    """The ``buildah`` executor (``forge.Executor``), one per forge process. buildah is
    found, and the storage driver chosen, on first use; ``run`` runs one buildah command
    on forge's storage."""

    def __init__(self, workspace: Any):
        self.workspace = workspace
        self.settings = _settings(workspace)
        self._lock = threading.Lock()
        self._program: str | None = None
        self._version: str | None = None
        self._driver: tuple[str, str] | None = None  # (driver, why it was chosen)
        self._netns: str | None = None  # why `unshare --net` fails here ('' when it works)
        self._prepared: set[str] = set()  # drivers whose configuration files are written
        self._load_locks: dict[str, threading.Lock] = {}

    # -- buildah and its storage ---------------------------------------------------------
    def home(self) -> Path:
        """``<cache>/buildah``: everything buildah keeps for this workspace's cache."""
        return Path(self.workspace.checked_cache_dir()) / "buildah"

    def program(self) -> str:
        with self._lock:
            if self._program is None:
                found = shutil.which(self.settings.cli or "buildah")
                if found is None:
                    where = (f"[executors.buildah] cli = {self.settings.cli!r} is not an executable"
                             if self.settings.cli else "buildah is not installed")
                    raise forge.ExecutorError(f"{where}; {INSTALL_HINT}")
                self._program = found
            return self._program

    def buildah_version(self) -> str:
        """buildah's version, e.g. ``1.28.2`` (asked once)."""
        if self._version is None:
            out = subprocess.run([self.program(), "version"], capture_output=True, text=True,
                                 timeout=30).stdout
            m = re.search(r"^Version:\s*(\S+)", out, re.MULTILINE)
            self._version = m.group(1) if m else "unknown"
        return self._version

    def _version_tuple(self) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", self.buildah_version())[:3])

    def driver(self) -> str:
        """The storage driver: the setting, or with ``auto`` overlay where it mounts."""
        return self.driver_choice()[0]

    def driver_choice(self) -> tuple[str, str]:
        with self._lock:
            chosen = self._driver
        if chosen is None:
            chosen = self._choose_driver()
            with self._lock:
                self._driver = self._driver or chosen
                chosen = self._driver
        return chosen

    def _choose_driver(self) -> tuple[str, str]:
        wanted = self.settings.storage_driver
        if wanted != "auto":
            return wanted, "[executors.buildah] storage_driver"
        # containers/storage test-mounts an overlay when it opens the store: `info` fails
        # where the kernel or the file system under the cache dir cannot
        probe = self.run("info", driver="overlay", check=False)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            if probe.returncode == 0 and json.loads(probe.stdout)["store"]["GraphDriverName"] == "overlay":
                return "overlay", "auto: overlay mounts here"
        why = _last_line(probe.stderr) or f"exit {probe.returncode}"
        return "vfs", f"auto: overlay does not work here ({why}); vfs copies every layer in full"

    def _paths(self, driver: str) -> dict[str, Path]:
        home = self.home()
        return {"root": home / driver / "storage", "run": home / driver / "run", "tmp": home / "tmp",
                "policy": home / "policy.json", "registries": home / "registries.conf",
                "containers": home / "containers.conf", "storage": home / f"storage-{driver}.conf"}

    def _prepare(self, driver: str) -> dict[str, Path]:
        """The configuration files buildah gets instead of /etc/containers (once per driver)."""
        paths = self._paths(driver)
        with self._lock:
            if driver in self._prepared:
                return paths
        paths["tmp"].mkdir(parents=True, exist_ok=True)
        storage = (f"[storage]\ndriver = {json.dumps(driver)}\ngraphroot = {json.dumps(str(paths['root']))}\n"
                   f"runroot = {json.dumps(str(paths['run']))}\n")
        for name, text in (("policy", json.dumps(_POLICY) + "\n"), ("registries", _REGISTRIES),
                           ("containers", "# forge's buildah: the built-in defaults\n"),
                           ("storage", storage)):
            if not paths[name].is_file() or paths[name].read_text() != text:
                forge.write_atomic(paths[name], text.encode())
        with self._lock:
            self._prepared.add(driver)
        return paths

    def _command(self, driver: str) -> tuple[list[str], dict[str, str], dict[str, Path]]:
        """buildah's argv prefix, environment and paths for ``driver``'s storage."""
        paths = self._prepare(driver)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
        env.update(CONTAINERS_CONF=str(paths["containers"]), CONTAINERS_STORAGE_CONF=str(paths["storage"]),
                   CONTAINERS_REGISTRIES_CONF=str(paths["registries"]), TMPDIR=str(paths["tmp"]))
        argv = [self.program(), "--root", str(paths["root"]), "--runroot", str(paths["run"]),
                "--storage-driver", driver]
        return argv, env, paths

    def run(self, *args: str, driver: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """One buildah command on forge's storage; ExecutorError when it fails (``check``)."""
        argv, env, _ = self._command(driver or self.driver())
        proc = subprocess.run([*argv, *args], env=env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise forge.ExecutorError(f"buildah {args[0]} failed (exit {proc.returncode}): "
                                      f"{_last_line(proc.stderr) or _last_line(proc.stdout)}")
        return proc

    def _network_wrapper(self, network: bool) -> list[str]:
        """What runs buildah: nothing more, or ``unshare --net`` for a step without network
        under chroot isolation (which cannot give a RUN a network namespace of its own)."""
        if network or self.settings.isolation != "chroot":
            return []
        with self._lock:
            problem = self._netns
        if problem is None:
            unshare = shutil.which("unshare")
            if unshare is None:
                problem = "there is no unshare program (util-linux)"
            else:
                test = subprocess.run([unshare, "--net", "true"], capture_output=True, text=True)
                problem = "" if test.returncode == 0 else (_last_line(test.stderr) or f"exit {test.returncode}")
            with self._lock:
                self._netns = problem
        if problem:
            raise forge.ActionFailed(
                f"network = False under [executors.buildah] isolation = \"chroot\" runs buildah in an "
                f"empty network namespace, and `unshare --net` fails here ({problem}); set isolation "
                "= \"oci\" where runc works, or give the target network = True")
        return [shutil.which("unshare") or "unshare", "--net"]

    # -- the contract --------------------------------------------------------------------
    def host_for(self, platform: forge.Platform | None) -> str:
        return f"buildah ({self.home()})"

    def is_native_remote(self, platform: forge.Platform) -> bool:
        return False

    def version(self, platform: forge.Platform | None = None) -> str:
        return f"{self.buildah_version()} ({forge.buildx_spelling(platform or forge.host_platform())})"

    def describe(self) -> str:
        """One line for ``forge doctor``: version, program, storage, isolation, format."""
        driver, why = self.driver_choice()
        detail = (f"buildah {self.buildah_version()} ({self.program()}); {driver} storage ({why}) at "
                  f"{self._paths(driver)['root']}; isolation {self.settings.isolation}; "
                  f"format {self.settings.format}")
        if self._version_tuple() < HEREDOCS_FROM:
            detail += "; no Dockerfile heredocs (buildah 1.33+)"
        return detail

    def ensure_loaded(self, cas: Any, image: Any, *, count: Any, tempdir: Path) -> str:
        """Make ``image`` (in ``cas``) the storage's ``localhost/forge-base/<config hex>``
        unless it is there; return that name."""
        hexdigest = image.config_digest.split(":", 1)[1]
        ref = f"{BASE_REPO}/{hexdigest}:latest"
        with self._lock:
            lock = self._load_locks.setdefault(hexdigest, threading.Lock())
        with lock:
            found = self.run("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref, check=False)
            if found.returncode == 0 and found.stdout.strip() == hexdigest:
                return ref
            archive = tempdir / f"{hexdigest[:16]}.tar"
            # gzip layers as stored: buildah decompresses what it lacks, and skips (by
            # diff_id) what it has, as for a step it built itself
            sent = forge.oci.write_docker_archive(cas, image, archive, repo_tags=[ref], gzip_as_is=True)
            platform = ["--platform", str(forge.buildx_spelling(image.platform))] if image.platform else []
            try:
                pulled = self.run("pull", "--quiet", *platform, "--signature-policy",
                                  str(self._paths(self.driver())["policy"]), f"docker-archive:{archive}")
            finally:
                archive.unlink(missing_ok=True)
            got = _last_line(pulled.stdout)
            if got != hexdigest:
                raise forge.ExecutorError(f"buildah stored {got or 'nothing'} for image {image.digest} "
                                          f"(config {image.config_digest})")
            count("cas_to_engine_bytes", sent)
            count("cas_to_engine_layers", len(image.layers))
        return ref

    def load(self, cas: Any, image: Any, ref: str, platform: forge.Platform | None) -> dict[str, int]:
        """``--load``: tag ``image`` as ``ref`` in forge's buildah storage."""
        counters: dict[str, int] = {}

        def count(name: str, n: int) -> None:
            counters[name] = counters.get(name, 0) + n

        tempdir = cas.tempdir()
        try:
            self.run("tag", self.ensure_loaded(cas, image, count=count, tempdir=tempdir), ref)
        finally:
            shutil.rmtree(tempdir, ignore_errors=True)
        return counters

    def clean(self, select: Any, *, dry_run: bool = False) -> list[str]:
        """Remove forge's images (``forge-base/<digest>``, ``forge-build:<digest hex>``)
        whose config digest ``select`` picks, from the storage of every driver used; a
        buildah layer-cache image goes with the last result above it."""
        picked = []
        for driver in ("overlay", "vfs"):
            if not self._paths(driver)["root"].is_dir():
                continue  # never used: nothing to clean, and buildah need not be installed
            listing = self.run("images", "--json", driver=driver).stdout.strip()
            for row in json.loads(listing or "[]"):
                for name in row.get("names") or ():
                    digest = _forge_digest(name)
                    if digest is None or not select(digest):
                        continue
                    picked.append(digest)
                    if not dry_run:
                        self.run("rmi", name, driver=driver, check=False)
        return sorted(set(picked))

    # -- builds --------------------------------------------------------------------------
    def build(self, rc: forge.RunContext, *, package_dir: Path, base: Any,
              images: dict[str, Any] | None = None) -> Any:
        p = rc.params
        platform = rc.platform or forge.host_platform()
        images = images or {}
        display = self._display(rc)
        root = p.get("context_root", "")
        rel_dockerfile = tar_name(p["dockerfile"], root)
        problems = self.dockerfile_problems((package_dir / p["dockerfile"]).read_text(errors="replace"),
                                            display)
        if problems:
            raise forge.ActionFailed("\n".join(problems))
        wrapper = self._network_wrapper(bool(p["network"]))
        work = rc.tempdir()
        context = build_context(package_dir, root, [p["dockerfile"], *p["context"]], follow={p["dockerfile"]})
        with tarfile.open(fileobj=context) as tf:
            tf.extractall(work / "context", filter="tar")  # forge's own tar: the declared files
        args = {**forge.automatic_args(platform, forge.host_platform()), **p["build_args"]}
        for name, image in [("BASE_IMAGE", base), *sorted(images.items())]:
            if image is not None:
                args[name] = self.ensure_loaded(rc.cas, image, count=rc.count, tempdir=work)
        driver = self.driver()
        rc.log(f"buildah bud -f {rel_dockerfile} ({len(p['context'])} context files) for {platform} "
               f"({driver} storage, {self.settings.isolation} isolation, "
               f"{'host network' if p['network'] else 'no network'})")
        rc.note("engine", self.host_for(platform))
        image_id = self._bud(rc, work, rel_dockerfile, args, platform, wrapper, display)
        known = {layer.diff_id: layer for image in [base, *images.values()] if image is not None
                 for layer in image.layers}
        image = self.export(rc, image_id, known, work / "out")
        if p.get("reproducible"):
            image = reproducible(rc, image, base)
        image = forge.with_config(image, platform=platform, epoch=rc.epoch)
        forge.store_image(rc.cas, image)
        # buildah's own image is its layer cache: named after forge's result, so that
        # `forge clean --engine` and `forge cache gc` collect it with that result
        self.run("tag", image_id, f"{BUILD_REPO}:{image.config_digest.split(':', 1)[1]}")
        rc.log(f"buildah→CAS {forge.human_size(rc.counters.get('engine_to_cas_bytes', 0))} "
               f"({rc.counters.get('engine_to_cas_layers', 0)} layers), CAS→buildah "
               f"{forge.human_size(rc.counters.get('cas_to_engine_bytes', 0))}")
        return image

    def _display(self, rc: forge.RunContext) -> str:
        """The Dockerfile as the user names it: from the workspace root."""
        rel = rc.params["dockerfile"]
        source = next((f for f in rc.action.inputs if f.relpath == rel), None)
        with contextlib.suppress(ValueError, TypeError, AttributeError):  # not under the root
            return str(Path(source.abspath).relative_to(self.workspace.root))
        return rel

    def dockerfile_problems(self, text: str, display: str) -> list[str]:
        """What this buildah would misread: heredocs before 1.33 (1.28 takes their lines
        for instructions and fails with "Unknown instruction")."""
        if self._version_tuple() >= HEREDOCS_FROM:
            return []
        return [f"{display}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(1).upper()} with a heredoc "
                f"(<<{m.group(2)}) needs buildah 1.33 or later, this is buildah {self.buildah_version()}: "
                "put the file in the context and COPY it, or build this target with executor = \"docker\""
                for m in _HEREDOC.finditer(text)]

    def _bud(self, rc: forge.RunContext, work: Path, rel_dockerfile: str, args: dict[str, str],
             platform: forge.Platform, wrapper: list[str], display: str) -> str:
        """Run ``buildah bud``; buildah's image ID. Build args travel in its environment
        (``--build-arg NAME`` reads it), so their values are in no process list; secret
        sources are files or env names, never values."""
        p, s = rc.params, self.settings
        prefix, env, paths = self._command(self.driver())
        network = "host" if p["network"] or s.isolation == "chroot" else "none"  # chroot: wrapper
        argv = ["bud", "--layers", "--force-rm", "--pull=false", "--identity-label=false",
                "--isolation", s.isolation, "--network", network, "--format", s.format,
                "--signature-policy", str(paths["policy"]),
                "--platform", str(forge.buildx_spelling(platform)),
                "-f", str(work / "context" / rel_dockerfile), "--iidfile", str(work / "iid")]
        if s.isolation == "oci":
            argv += ["--runtime-flag", f"root={paths['run'] / 'runc'}"]
        if p["target"]:
            argv += ["--target", p["target"]]
        for name, value in sorted(args.items()):
            if name.startswith(_FOREIGN_ENV) or name in ("PATH", "HOME", "TMPDIR") \
                    or env.get(name, value) != value:
                argv += ["--build-arg", f"{name}={value}"]  # a name buildah itself reads
            else:
                env[name] = value
                argv += ["--build-arg", name]
        argv += [f"--secret=id={ident},{'env=' + source[4:] if source.startswith('env:') else 'src=' + source}"
                 for ident, source in sorted(rc.secrets.items())]
        argv += [f"--ssh={agent}" for agent in rc.ssh]
        argv.append(str(work / "context"))
        proc = subprocess.Popen([*wrapper, *prefix, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        threading.Thread(target=_stop_on_cancel, args=(proc, rc.cancelled), daemon=True).start()
        step = ""
        output: deque[str] = deque(maxlen=200)  # the current step's output, for the excerpt
        error = ""
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if not line.strip():
                continue
            rc.log(line)
            if _STEP.match(line):
                step = line
                output.clear()  # an earlier step's output is not this failure's
            elif line.startswith("Error: "):
                error = line
            elif not _NOISE.match(line):
                output.append(line)
        code = proc.wait()
        if rc.cancelled.is_set():
            raise forge.ActionFailed("cancelled")
        if code != 0:
            raise forge.ActionFailed(explain_failure(display, step, list(output), error, code))
        image_id = (work / "iid").read_text().strip() if (work / "iid").is_file() else ""
        if not _DIGEST.fullmatch(image_id):
            raise forge.ActionFailed(f"{display}: buildah reported no image ID")
        return image_id.split(":", 1)[1]

    def export(self, rc: forge.RunContext, image_id: str, known: dict[str, Any], out: Path) -> Any:
        """buildah's image ``image_id`` as a CAS image: the layers in ``known`` (diff_id →
        Layer of an input image) are reused, the others read from ``buildah push``'s OCI
        layout, each checked against its diff_id."""
        try:
            layout = self._push(image_id, out, placeholders=known)
        except forge.ExecutorError as exc:  # a buildah that checks what it reuses
            rc.log(f"push without placeholders ({exc})")
            layout = self._push(image_id, out.with_name(out.name + "-full"), placeholders={})
        manifest = json.loads(_blob(layout, json.loads((layout / "index.json").read_bytes())
                                    ["manifests"][0]["digest"]).read_bytes())
        config = json.loads(_blob(layout, manifest["config"]["digest"]).read_bytes())
        layers = []
        for desc, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
            layer = known.get(diff_id)
            if layer is None:
                kind = forge.oci.media.layer_compression(desc["mediaType"])
                with open(_blob(layout, desc["digest"]), "rb") as fh:
                    layer = forge.oci.store_tar(rc.cas, forge.oci.open_decompressed(fh, kind))
                if layer.diff_id != diff_id:
                    raise forge.ExecutorError(f"buildah image {image_id[:12]}: layer {desc['digest']} "
                                              f"holds {layer.diff_id}, its config says {diff_id}")
                rc.count("engine_to_cas_bytes", desc["size"])
                rc.count("engine_to_cas_layers", 1)
            layers.append(layer)
        # What names buildah's own build containers and intermediate images (its layer
        # cache, in forge's storage only) goes: `reproducible` then gives one digest
        if (config.get("config") or {}).get("Hostname"):
            config["config"]["Hostname"] = ""
        config.pop("parent", None)
        for entry in config.get("history") or ():
            if _INTERMEDIATE.fullmatch(entry.get("comment", "")):
                del entry["comment"]
        config_bytes = forge.canonical_json(config)
        rc.cas.put_bytes(config_bytes)
        image = forge.oci.assemble_image(config_bytes, layers)
        forge.store_image(rc.cas, image)
        return image

    def _push(self, image_id: str, out: Path, *, placeholders: dict[str, Any]) -> Path:
        """``buildah push`` to an OCI layout at ``out``. An empty file named by each
        placeholder diff_id stands for a layer forge has: buildah 1.28 then reuses it
        (it checks the name only) instead of compressing and writing it again, and forge
        never reads those files."""
        blobs = out / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for diff_id in placeholders:
            (blobs / diff_id.split(":", 1)[1]).touch()
        self.run("push", "--quiet", "--format", "v2s2" if self.settings.format == "docker" else "oci",
                 "--signature-policy", str(self._paths(self.driver())["policy"]), image_id, f"oci:{out}:result")
        return out


# `RUN <<EOF`, `COPY <<-"EOF" /x`; not a shell here-string (`<<<`)
_HEREDOC = re.compile(r"^[ \t]*(RUN|COPY|ADD)\b[^\n]*?<<(?!<)-?[ \t]*[\"']?([A-Za-z_]\w*)",
                      re.IGNORECASE | re.MULTILINE)
_STEP = re.compile(r"^(\[\d+/\d+\] )?STEP \d+/\d+: ")  # "STEP 3/4: RUN ...", "[2/2] STEP 1/3: FROM ..."
_NOISE = re.compile(r"^(time=\"[^\"]*\" level=|subprocess exited with status \d+$|--> |COMMIT)")
_INTERMEDIATE = re.compile(r"FROM [0-9a-f]{12,64}")  # a history comment naming buildah's image
_GO_VALUE = re.compile(r" &imagebuilder\.Step\{.*$")  # buildah 1.28 prints the parser's struct


def explain_failure(display: str, step: str, output: list[str], error: str, code: int) -> str:
    """The failed step as the user needs it: the instruction, buildah's error, the step's
    last output."""
    detail = _GO_VALUE.sub("", error.removeprefix("Error: ")) or f"buildah exited {code}"
    m = re.match(r'building at STEP "(.*)": (.*)$', detail)
    if m:
        step = step or f"STEP {m.group(1)}"
        detail = m.group(2)
    last = "\n    ".join(failure_excerpt(output)) or "(no output)"
    where = f"failed at {step}" if step else "failed before its first step"
    return f"{display}: {where}\n    {detail}\n  last output:\n    {last}"


def _stop_on_cancel(proc: subprocess.Popen, cancelled: threading.Event) -> None:
    while proc.poll() is None:
        if cancelled.wait(0.2):
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGTERM)  # buildah and the RUN it started
            return


def _blob(layout: Path, digest: str) -> Path:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise forge.ExecutorError(f"{layout}: buildah wrote a bad digest {digest!r}")
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _forge_digest(name: str) -> str | None:
    """The forge config digest an image name in buildah's storage carries, if forge's."""
    m = re.fullmatch(rf"{BASE_REPO}/([0-9a-f]{{64}}):latest|{BUILD_REPO}:([0-9a-f]{{64}})", name)
    return f"sha256:{m.group(1) or m.group(2)}" if m else None


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


@forge.hookimpl
def forge_register_executors(registry: Any) -> None:
    registry.add("buildah", BuildahExecutor)


@forge.hookimpl
def forge_doctor_checks(session: Any) -> list[Any]:
    """buildah's version, storage driver and isolation. A missing buildah fails only where
    the workspace selects it (a warning otherwise: targets may still name it); wrong
    ``[executors.buildah]`` settings always fail."""
    chosen = selected_by(session.workspace)
    try:
        executor = session.executor("buildah")
        return [forge.DoctorCheck("buildah executor", True, executor.describe(), needed=bool(chosen))]
    except forge.ConfigError as exc:
        return [forge.DoctorCheck("buildah executor", False, str(exc))]
    except forge.ForgeError as exc:
        why = f"selected by {chosen}" if chosen else "needed only by targets with executor = \"buildah\""
        return [forge.DoctorCheck("buildah executor", False, f"{exc} ({why})", needed=bool(chosen))]
