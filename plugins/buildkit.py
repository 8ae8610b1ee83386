"""BuildKit on a Docker engine, through the ``docker`` CLI's BuildKit client.

docker-py speaks only the classic builder's API (BuildKit needs the CLI's gRPC session:
context upload, secrets, SSH agents), so the docker executor runs BuildKit builds with a
CLI: ``docker buildx build`` where the buildx plugin is installed, else a CLI older than
23.0, whose built-in client ``DOCKER_BUILDKIT=1 docker build`` drives the engine's
BuildKit (Debian bookworm's docker.io 20.10 is one; a 23+ CLI without buildx refuses).
``find_client`` tries, in order, ``[executors.docker] cli``, ``docker`` on PATH and
``/usr/bin/docker``.

The build's result lands in the engine's image store as a classic build's does (the
``--iidfile`` names it), so everything after the build (only new layers leave, only
missing layers enter) is the same for both builders.

What each frontend can read: ``frontend_problems`` scans a Dockerfile for syntax newer
than the engine's built-in Dockerfile frontend (or any BuildKit syntax, for the classic
builder) and names the feature, the engine version and the version that has it. A
``# syntax=`` line hands parsing to the frontend image it names; one the engine cannot
get is reported as such (``explain_failure``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dockerfile_parse import DockerfileParser

import forge

# The Dockerfile frontend each Docker engine has built in (its vendored BuildKit), and
# the features newer frontends brought. Versions as the docs of docker/dockerfile say.
_BUILTIN_FRONTEND = ((28, (1, 14)), (27, (1, 9)), (26, (1, 7)), (25, (1, 6)), (24, (1, 5)),
                     (23, (1, 4)), (20, (1, 2)), (19, (1, 1)), (18, (1, 0)))
_FIRST_DOCKER = {(1, 2): "20.10", (1, 4): "23.0", (1, 5): "24.0", (1, 6): "25.0", (1, 7): "26.0"}


@dataclass(frozen=True)
class Feature:
    name: str
    frontend: tuple[int, int]  # the docker/dockerfile version that reads it
    labs: bool = False  # only in the -labs channel of that version

    def needs(self) -> str:
        version = ".".join(map(str, self.frontend)) + ("-labs" if self.labs else "")
        docker = _FIRST_DOCKER.get(self.frontend)
        return (f"Dockerfile frontend {version}" + (f" (built into Docker {docker})"
                                                    if docker and not self.labs else ""))


HEREDOC = Feature("heredocs (<<EOF)", (1, 4))
FLAG_FEATURES = {
    ("RUN", "--mount"): Feature("RUN --mount", (1, 2)),
    ("RUN", "--network"): Feature("RUN --network", (1, 2)),
    ("RUN", "--security"): Feature("RUN --security", (1, 2), labs=True),
    ("COPY", "--chmod"): Feature("COPY --chmod", (1, 2)),
    ("ADD", "--chmod"): Feature("ADD --chmod", (1, 2)),
    ("COPY", "--link"): Feature("COPY --link", (1, 4)),
    ("ADD", "--link"): Feature("ADD --link", (1, 4)),
    ("ADD", "--keep-git-dir"): Feature("ADD --keep-git-dir", (1, 5)),
    ("ADD", "--checksum"): Feature("ADD --checksum", (1, 6)),
    ("COPY", "--parents"): Feature("COPY --parents", (1, 7), labs=True),
    ("COPY", "--exclude"): Feature("COPY --exclude", (1, 7), labs=True),
    ("ADD", "--exclude"): Feature("ADD --exclude", (1, 7), labs=True),
}
_HEREDOC = re.compile(r"<<-?\s*[\"']?[A-Za-z_][A-Za-z0-9_]*[\"']?")
_SYNTAX = re.compile(r"^\s*#\s*syntax\s*=\s*(\S+)", re.IGNORECASE)


def builtin_frontend(engine_version: str) -> tuple[int, int]:
    """The Dockerfile frontend built into a Docker engine of ``engine_version``."""
    m = re.match(r"(\d+)", engine_version or "")
    major = int(m.group(1)) if m else 0
    return next((frontend for first, frontend in _BUILTIN_FRONTEND if major >= first), (1, 0))


def syntax_directive(text: str) -> tuple[str, int] | None:
    """The ``# syntax=`` frontend image and its line, when the Dockerfile names one
    (a parser directive: only among the comments at the very top)."""
    for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        if not line.lstrip().startswith("#"):
            return None
        m = _SYNTAX.match(line)
        if m:
            return m.group(1), number
    return None


def features(text: str) -> list[tuple[Feature, int]]:
    """The BuildKit-era features a Dockerfile uses, with the line of first use."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.removeprefix("\ufeff").encode()))
    found: dict[str, tuple[Feature, int]] = {}
    for instr in parser.structure:
        kind, value, line = instr["instruction"], instr["value"], instr["startline"] + 1
        if kind not in ("RUN", "COPY", "ADD"):
            continue
        if _HEREDOC.search(value) and not value.lstrip().startswith("["):
            found.setdefault(HEREDOC.name, (HEREDOC, line))
        for flag in _leading_flags(value):
            feature = FLAG_FEATURES.get((kind, flag.partition("=")[0].lower()))
            if feature is not None:
                found.setdefault(feature.name, (feature, line))
    return sorted(found.values(), key=lambda f: f[1])


def _leading_flags(value: str) -> list[str]:
    lexer = shlex.shlex(value, posix=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    flags = []
    with contextlib.suppress(ValueError):
        for token in lexer:
            if not token.startswith("--"):
                break
            flags.append(token)
    return flags


def frontend_problems(text: str, display: str, *, builder: str, engine_version: str) -> list[str]:
    """Why the engine's frontend cannot read the Dockerfile: one message per feature it
    lacks, naming the feature, its line, the engine and the version that has it."""
    if builder == "buildkit" and syntax_directive(text):
        return []  # the named frontend parses it; if the engine cannot get it, it says so
    used = features(text)
    if builder == "classic":
        return [f"{display}:{line}: {f.name} needs BuildKit, and this step runs on the classic "
                f"builder ([executors.docker] builder = \"classic\", or no BuildKit client "
                f"found: see `forge doctor`)" for f, line in used]
    have = builtin_frontend(engine_version)
    have_s = ".".join(map(str, have))
    return [f"{display}:{line}: {f.name} needs the {f.needs()}; the engine is Docker "
            f"{engine_version}, whose built-in frontend is {have_s}"
            + ("" if not f.labs else "; the -labs syntax needs '# syntax=docker/dockerfile:"
               f"{'.'.join(map(str, f.frontend))}-labs' and that image in the engine")
            for f, line in used if f.labs or f.frontend > have]


# -- the client ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Client:
    """A BuildKit client: the CLI and how it builds (``buildx``: ``docker buildx build``;
    ``builtin``: ``DOCKER_BUILDKIT=1 docker build`` of a CLI older than 23.0)."""

    cli: str
    kind: str
    version: str

    def describe(self) -> str:
        how = "docker buildx build" if self.kind == "buildx" else "DOCKER_BUILDKIT=1 docker build"
        return f"{how} ({self.cli}, {self.version})"

    def argv(self) -> list[str]:
        return [self.cli, "buildx", "build", "--load"] if self.kind == "buildx" else [self.cli, "build"]


def _run(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20,
                              env={**os.environ, "DOCKER_CLI_HINTS": "false"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_client(configured: str | None = None) -> tuple[Client | None, list[str]]:
    """The first CLI that can run a BuildKit build, and what was tried (for doctor)."""
    candidates = [configured] if configured else [shutil.which("docker"), "/usr/bin/docker"]
    tried = []
    for cli in dict.fromkeys(c for c in candidates if c):
        if not os.access(cli, os.X_OK):
            tried.append(f"{cli}: not there")
            continue
        buildx = _run([cli, "buildx", "version"])
        version = _run([cli, "version", "--format", "{{.Client.Version}}"]) or ""
        if buildx:
            return Client(cli, "buildx", buildx.split("\n")[0]), tried
        major = re.match(r"(\d+)", version)
        if major and int(major.group(1)) < 23:
            return Client(cli, "builtin", f"Docker CLI {version}"), tried
        tried.append(f"{cli}: Docker CLI {version or '?'} without the buildx plugin (a 23+ CLI "
                     "builds with BuildKit only through buildx)")
    return None, tried


_STEP = re.compile(r"^#(\d+) (\[.*)$")  # "#5 [stage-0 2/4] RUN ..."
_STEP_LINE = re.compile(r"^#(\d+) (?:\d+\.\d+ )?(.*)$")


def run_build(client: Client, *, host: str, tls: str | None = None, context: io.BytesIO, dockerfile: str,
              build_args: dict[str, str], target: str | None, platform: str | None,
              network: str, secrets: dict[str, str], ssh: Iterable[str], iidfile: Path,
              log: Callable[[str], None], cancelled: threading.Event,
              syntax: tuple[str, int] | None = None, display: str | None = None) -> str:
    """Run one build; the image ID. Build args travel in the CLI's environment
    (``--build-arg NAME`` reads it), so their values are in no process list; secret
    sources are files or env names, never values."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BUILDKIT_") and k not in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH",
                                                          "DOCKER_CONTEXT")}
    env.update(DOCKER_HOST=host, DOCKER_BUILDKIT="1", BUILDKIT_PROGRESS="plain",
               DOCKER_CLI_HINTS="false")
    if tls:  # the engine verifies its clients: the CLI presents the member's certificate
        env.update(DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=tls)
    argv = [*client.argv(), "--progress", "plain", "-f", dockerfile, "--iidfile", str(iidfile),
            "--network", network]
    if platform:
        argv += ["--platform", platform]
    if target:
        argv += ["--target", target]
    for name, value in sorted(build_args.items()):
        if name in env and env[name] != value or name.startswith(("DOCKER_", "BUILDKIT_")) \
                or name in ("PATH", "HOME"):
            argv += ["--build-arg", f"{name}={value}"]  # a name the CLI itself needs
        else:
            env[name] = value
            argv += ["--build-arg", name]
    for ident, source in sorted(secrets.items()):
        if source.startswith("env:"):
            argv += ["--secret", f"id={ident},env={source[4:]}"]
        else:
            argv += ["--secret", f"id={ident},src={source}"]
    for agent in ssh:
        argv += ["--ssh", agent]
    argv.append("-")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            shutil.copyfileobj(context, proc.stdin, 1 << 20)
        with contextlib.suppress(OSError):
            proc.stdin.close()

    feeder = threading.Thread(target=feed, name="forge-buildkit-context", daemon=True)
    feeder.start()
    watch = threading.Thread(target=_cancel_on, args=(proc, cancelled), daemon=True)
    watch.start()
    steps: dict[str, str] = {}
    outputs: dict[str, list[str]] = {}
    errors: list[tuple[str, str]] = []
    tail: list[str] = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        if not line.strip():
            continue
        log(line)
        tail = [*tail[-40:], line]
        m = _STEP.match(line)
        if m:
            steps.setdefault(m.group(1), m.group(2))
            continue
        m = _STEP_LINE.match(line)
        if m:
            text = m.group(2)
            if text.startswith("ERROR:") or text.startswith("ERROR "):
                errors.append((m.group(1), text.partition(" ")[2]))
            else:
                outputs.setdefault(m.group(1), []).append(text)
    code = proc.wait()
    feeder.join(timeout=5)
    if cancelled.is_set():
        raise forge.ActionFailed("cancelled")
    if code != 0:
        raise forge.ActionFailed(explain_failure(display or dockerfile, steps, outputs, errors, tail,
                                                 syntax))
    image_id = iidfile.read_text().strip() if iidfile.is_file() else ""
    if not image_id:
        raise forge.ActionFailed(f"{dockerfile}: BuildKit reported no image ID")
    return image_id


def _cancel_on(proc: subprocess.Popen, cancelled: threading.Event) -> None:
    while proc.poll() is None:
        if cancelled.wait(0.2):
            with contextlib.suppress(OSError):
                proc.terminate()
            return


_NOISE = re.compile(r"^(sha256:[0-9a-f]{64}|DONE |CACHED|transferring |exporting |writing image)")


def explain_failure(dockerfile: str, steps: dict[str, str], outputs: dict[str, list[str]],
                    errors: list[tuple[str, str]], tail: list[str],
                    syntax: tuple[str, int] | None = None) -> str:
    """The failure as the user needs it: the step, BuildKit's error, the step's last
    output; a ``# syntax=`` frontend image the engine cannot get, as that."""
    from forge.plugins.docker import failure_excerpt

    final = next((line for line in reversed(tail) if line.startswith(("error:", "ERROR:", "failed to"))),
                 tail[-1] if tail else "the BuildKit client failed")
    final = final.removeprefix("ERROR: ").removeprefix("error: ")
    if syntax and ("gateway.v0" in final or any("resolve image config" in s for s in steps.values())):
        image, line = syntax
        reason = final.rsplit(": ", 1)[-1]
        return (f"{dockerfile}:{line}: '# syntax={image}' names a frontend image the engine cannot "
                f"get ({reason}); load it into the engine (pinned by digest: # syntax={image}@sha256:…), "
                "or drop the line to use the engine's built-in frontend")
    # BuildKit's wrapping of a frontend error says nothing to the user: drop it, and put
    # the Dockerfile line where it belongs
    plain = re.sub(r"^(failed to solve with frontend [\w.]+: )?(failed to create LLB definition: )?",
                   "", final)
    parse = re.match(r"(dockerfile parse error) line (\d+): (.*)", plain)
    if parse:
        return f"{dockerfile}:{parse.group(2)}: {parse.group(1)}: {parse.group(3)}"
    if errors:
        step_id, message = errors[-1]
        step = steps.get(step_id, "an unknown step")
        shown = [line for line in outputs.get(step_id, []) if not _NOISE.match(line)]
        last = "\n    ".join(failure_excerpt(shown)) or "(no output)"
        return f"{dockerfile}: failed at {step}\n    {message}\n  last output:\n    {last}"
    return f"{dockerfile}: {plain}"


