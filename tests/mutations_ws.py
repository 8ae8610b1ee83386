"""The baseline workspace of the mutation suite (tests/test_mutations.py) and the readers
it checks outputs with.

One package, ``//app``, exercising every built-in rule that needs no network: two busybox
imports (amd64, arm64), two layers of package files (one with ``prefix``,
``strip_prefix``, ``mode_map``, a symlink and an executable script; one from a glob),
an image per platform and an index over them, a three-step ``dockerfile_chain`` on the
amd64 import (an args file per platform, a context file COPY'd by step 2), a
``minimize`` of the chain's ``/usr/local/bin`` and a ``production`` on the amd64 import.

Outputs are read from ``forge-out/app/<name>/`` the way any OCI tool would: the layout's
``index.json`` -> manifest (or index -> manifests) -> config and layer blobs, and the tar
members of a layer blob. Nothing here starts a container or loads an image.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from forge.testing import RunOutcome, Workspace
from tests.services import testdata

PKG = "app"

# -- the baseline -------------------------------------------------------------------------

BUILD = """\
oci_import(name = "base-amd64", src = "busybox-amd64.tar", platform = "amd64")
oci_import(name = "base-arm64", src = "busybox-arm64.tar", platform = "aarch64")

layer(
    name = "files",
    srcs = ["files/bin/run.sh", "files/bin/current", "files/etc/app.conf", "files/etc/motd"],
    strip_prefix = "files",
    prefix = "/opt/app",
    mode_map = {"files/etc/app.conf": "0600"},
)

layer(
    name = "docs",
    srcs = glob(["docs/*.txt"]),
    prefix = "/usr/share/doc/app",
)

image(
    name = "img-amd64",
    base = ":base-amd64",
    layers = [":files", ":docs"],
    env = {"APP_MODE": "edge", "APP_COLOR": "blue"},
    entrypoint = ["/bin/sh", "-c"],
    cmd = ["/opt/app/bin/run.sh"],
    workdir = "/opt/app",
    user = "1000:1000",
    labels = {"org.example.tier": "one"},
)

image(
    name = "img-arm64",
    base = ":base-arm64",
    layers = [":files", ":docs"],
    env = {"APP_MODE": "edge"},
    cmd = ["/opt/app/bin/run.sh"],
)

image_index(
    name = "index",
    images = [":img-amd64", ":img-arm64"],
)

dockerfile_chain(
    name = "chain",
    dir = "chain",
    base = ":base-amd64",
    build_args = {"FLAVOR": "plain"},
)

minimize(
    name = "min",
    image = ":chain",
    paths = ["/usr/local/bin"],
)

production(
    name = "prod",
    base = ":base-amd64",
    minimized = ":min",
    env = {"APP_ENV": "prod"},
    entrypoint = ["/usr/local/bin/greet"],
    cmd = ["--serve"],
)
"""

DOCKERFILE_A = """\
# step a: records the architecture it ran on
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN mkdir -p /usr/local/bin /usr/local/share && uname -m > /usr/local/share/arch && echo step-a > /step-a
"""

DOCKERFILE_B = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG GREETING=none
COPY payload.txt /usr/local/share/payload.txt
RUN echo "$GREETING" > /usr/local/bin/greeting.txt \\
 && printf '#!/bin/sh\\ncat /usr/local/bin/greeting.txt\\n' > /usr/local/bin/greet \\
 && chmod 0755 /usr/local/bin/greet
"""

DOCKERFILE_C = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG FLAVOR=none
RUN cat /step-a /usr/local/bin/greeting.txt > /usr/local/bin/final.txt && echo "flavor=$FLAVOR" >> /usr/local/bin/final.txt
"""


def big_text(seed: int = 11, size: int = 96 * 1024) -> str:
    """Deterministic, compressible but not trivial text: compression levels give
    different bytes for it (tiny files often compress the same at every level)."""
    rng = random.Random(seed)
    words = ["forge", "layer", "image", "action", "digest", "blake3", "cache", "chain",
             "busybox", "index", "minimize", "production", "engine", "qemu", "key"]
    out: list[str] = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(words) + str(rng.randrange(100)) for _ in range(12)) + "\n"
        out.append(line)
        total += len(line)
    return "".join(out)


FILES: dict[str, str] = {
    "WORKSPACE.toml": '[workspace]\nname = "mutations"\n\n[build]\nplatforms = ["linux/amd64"]\n',
    f"{PKG}/BUILD": BUILD,
    f"{PKG}/files/bin/run.sh": "#!/bin/sh\necho run-v1\n",
    f"{PKG}/files/etc/app.conf": "mode=edge\n",
    f"{PKG}/files/etc/motd": "welcome v1\n",
    f"{PKG}/docs/a.txt": "doc a v1\n",
    f"{PKG}/docs/b.txt": "doc b v1\n",
    f"{PKG}/docs/big.txt": big_text(),
    f"{PKG}/unused.txt": "nobody reads me\n",
    f"{PKG}/chain/10-Dockerfile-a": DOCKERFILE_A,
    f"{PKG}/chain/20-Dockerfile-b": DOCKERFILE_B,
    f"{PKG}/chain/30-Dockerfile-c": DOCKERFILE_C,
    f"{PKG}/chain/b-amd64-args": "# greeting for amd64\nGREETING=hello-amd64\n",
    f"{PKG}/chain/b-aarch64-args": "GREETING=hello-aarch64\n",
    f"{PKG}/chain/payload.txt": "payload v1\n",
}
EXECUTABLE = (f"{PKG}/files/bin/run.sh",)
SYMLINKS = {f"{PKG}/files/bin/current": "run.sh"}
TARBALLS = {f"{PKG}/busybox-amd64.tar": "busybox-amd64.tar",
            f"{PKG}/busybox-arm64.tar": "busybox-arm64.tar"}

TARGETS = ["base-amd64", "base-arm64", "files", "docs", "img-amd64", "img-arm64", "index",
           "chain", "min", "prod"]
LABELS = [f"//{PKG}:{t}" for t in TARGETS]

# action ids (label#Mnemonic.index)
IMPORT_AMD64 = f"//{PKG}:base-amd64#OciImport.0"
IMPORT_ARM64 = f"//{PKG}:base-arm64#OciImport.0"
LAYER_FILES = f"//{PKG}:files#Layer.0"
LAYER_DOCS = f"//{PKG}:docs#Layer.0"
IMAGE_AMD64 = f"//{PKG}:img-amd64#Image.0"
IMAGE_ARM64 = f"//{PKG}:img-arm64#Image.0"
INDEX = f"//{PKG}:index#Index.0"
STEP_A, STEP_B, STEP_C = (f"//{PKG}:chain#DockerBuild.{i}" for i in range(3))
CHAIN = [STEP_A, STEP_B, STEP_C]
MINIMIZE = f"//{PKG}:min#Minimize.0"
PRODUCTION = f"//{PKG}:prod#Production.0"
ALL_ACTIONS = sorted([IMPORT_AMD64, IMPORT_ARM64, LAYER_FILES, LAYER_DOCS, IMAGE_AMD64,
                      IMAGE_ARM64, INDEX, *CHAIN, MINIMIZE, PRODUCTION])


def write_baseline(root: Path) -> None:
    """The baseline files at ``root``: contents, the exec bit, the symlink, the tarballs."""
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755 if rel in EXECUTABLE else 0o644)
    for rel, target in SYMLINKS.items():
        (root / rel).symlink_to(target)
    for rel, name in TARBALLS.items():
        shutil.copyfile(testdata(name), root / rel)
        (root / rel).chmod(0o644)


def restore(snapshot: Path, root: Path) -> None:
    """Make ``root`` the baseline again: everything but forge-out replaced by a copy of
    ``snapshot`` (modes and symlinks kept; owner root, as a fresh checkout would be)."""
    for entry in root.iterdir():
        if entry.name == "forge-out":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for entry in snapshot.iterdir():
        dest = root / entry.name
        if entry.is_dir():
            shutil.copytree(entry, dest, symlinks=True)
        else:
            shutil.copy2(entry, dest)


def source_paths(root: Path) -> Iterator[Path]:
    """Every file and symlink of the workspace outside forge-out."""
    for path in sorted(root.rglob("*")):
        if "forge-out" in path.relative_to(root).parts:
            continue
        if path.is_symlink() or path.is_file():
            yield path


def edit(root: Path, rel: str, old: str, new: str) -> None:
    """Replace the one occurrence of ``old`` in a file (a mutation that silently matches
    nothing would test nothing)."""
    path = root / rel
    text = path.read_text()
    assert text.count(old) == 1, f"{rel}: {old!r} occurs {text.count(old)} times"
    path.write_text(text.replace(old, new))


def edit_build(root: Path, old: str, new: str) -> None:
    edit(root, f"{PKG}/BUILD", old, new)


# -- running --------------------------------------------------------------------------------


def build(ws: Workspace, *, env: dict[str, str] | None = None, cwd: Path | None = None,
          args: tuple[str, ...] = ()) -> RunOutcome:
    """``forge build <every baseline target> --json`` from ``cwd`` (default the root)."""
    argv = ("build", *LABELS, "--json", *args)
    out = ws.run(*argv, env=env) if cwd is None else run_from(ws, cwd, *argv, env=env)
    return out.assert_success()


def run_from(ws: Workspace, cwd: Path, *args: str, env: dict[str, str] | None = None) -> RunOutcome:
    """``Workspace.run`` from another directory (it always runs from the root)."""
    from click.testing import CliRunner

    from forge.cli import main

    environ = {"FORGE_CACHE": str(ws.cache), **(env or {})}
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, list(args), env=environ, catch_exceptions=True)
    finally:
        os.chdir(old)
    exc = result.exception if not isinstance(result.exception, SystemExit) else None
    events = [json.loads(line) for line in result.stdout.splitlines()
              if line.strip().startswith("{")]
    return RunOutcome(tuple(args), result.exit_code, result.stdout, result.stderr, exc, events)


def target_digests(out: RunOutcome) -> dict[str, str]:
    """label -> the digest of its product (index, manifest or layer), from the summary."""
    return {t["label"]: t["digest"] for t in out.summary()["targets"]}


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# -- reading forge-out ----------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One tar member of a layer, as an unpacker sees it."""

    kind: str  # file, dir, symlink, other
    mode: int
    uid: int
    gid: int
    mtime: int
    data: bytes = b""
    target: str = ""


def _decompress(data: bytes, media_type: str) -> bytes:
    if media_type.endswith("+gzip") or media_type.endswith(".gzip"):
        return gzip.decompress(data)
    if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def tar_members(tar_bytes: bytes) -> dict[str, Member]:
    out: dict[str, Member] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tf:
        for m in tf.getmembers():
            name = m.name.removeprefix("./").rstrip("/")
            if not name or name == ".":
                continue
            if m.isfile():
                fh = tf.extractfile(m)
                data = fh.read() if fh else b""
                out[name] = Member("file", m.mode & 0o7777, m.uid, m.gid, int(m.mtime), data)
            elif m.isdir():
                out[name] = Member("dir", m.mode & 0o7777, m.uid, m.gid, int(m.mtime))
            elif m.issym():
                out[name] = Member("symlink", m.mode & 0o7777, m.uid, m.gid, int(m.mtime),
                                   target=m.linkname)
            elif m.islnk():
                out[name] = Member("hardlink", m.mode & 0o7777, m.uid, m.gid, int(m.mtime),
                                   target=m.linkname)
            else:
                out[name] = Member("other", m.mode & 0o7777, m.uid, m.gid, int(m.mtime))
    return out


@dataclass
class LayerView:
    descriptor: dict[str, Any]
    blob: bytes
    diff_id: str

    @property
    def media_type(self) -> str:
        return self.descriptor["mediaType"]

    @property
    def digest(self) -> str:
        return self.descriptor["digest"]

    def members(self) -> dict[str, Member]:
        return tar_members(_decompress(self.blob, self.media_type))


@dataclass
class ImageView:
    digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: list[LayerView] = field(default_factory=list)

    @property
    def run_config(self) -> dict[str, Any]:
        return self.config.get("config") or {}

    @property
    def env(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.run_config.get("Env") or [])

    @property
    def platform(self) -> str:
        c = self.config
        return "/".join(p for p in (c["os"], c["architecture"], c.get("variant", "")) if p)

    def files(self) -> dict[str, Member]:
        """The merged filesystem of every layer, whiteouts applied."""
        merged: dict[str, Member] = {}
        for layer in self.layers:
            for name, member in layer.members().items():
                base = name.rsplit("/", 1)
                leaf = base[-1]
                if leaf.startswith(".wh."):
                    parent = base[0] + "/" if len(base) == 2 else ""
                    if leaf == ".wh..wh..opq":
                        for k in [k for k in merged if k.startswith(parent)]:
                            del merged[k]
                    else:
                        gone = parent + leaf[len(".wh."):]
                        for k in [k for k in merged if k == gone or k.startswith(gone + "/")]:
                            del merged[k]
                    continue
                merged[name] = member
        return merged


class Layout:
    """An OCI layout directory (forge-out/<pkg>/<name>/)."""

    def __init__(self, path: Path):
        self.path = path
        index = json.loads((path / "index.json").read_bytes())
        assert len(index["manifests"]) == 1, f"{path}/index.json: {index}"
        self.top = index["manifests"][0]

    def blob(self, digest: str) -> bytes:
        algorithm, hexdigest = digest.split(":", 1)
        return (self.path / "blobs" / algorithm / hexdigest).read_bytes()

    def json(self, digest: str) -> dict[str, Any]:
        return json.loads(self.blob(digest))

    @property
    def is_index(self) -> bool:
        return self.top["mediaType"].endswith("index.v1+json") or "manifest.list" in self.top["mediaType"]

    def index(self) -> dict[str, Any]:
        assert self.is_index, f"{self.path} holds an image, not an index"
        return self.json(self.top["digest"])

    def image(self, digest: str | None = None) -> ImageView:
        digest = digest or self.top["digest"]
        manifest = self.json(digest)
        config = self.json(manifest["config"]["digest"])
        diff_ids = config["rootfs"]["diff_ids"]
        layers = [LayerView(d, self.blob(d["digest"]), diff_id)
                  for d, diff_id in zip(manifest["layers"], diff_ids, strict=True)]
        return ImageView(digest, manifest, config, layers)

    def images(self) -> dict[str, ImageView]:
        """platform -> image, for an index."""
        out = {}
        for entry in self.index()["manifests"]:
            p = entry["platform"]
            name = "/".join(x for x in (p["os"], p["architecture"], p.get("variant", "")) if x)
            out[name] = self.image(entry["digest"])
        return out


def out_dir(root: Path, name: str) -> Path:
    return root / "forge-out" / PKG / name


def image_of(root: Path, name: str) -> ImageView:
    return Layout(out_dir(root, name)).image()


def index_of(root: Path, name: str = "index") -> Layout:
    return Layout(out_dir(root, name))


def layer_file(root: Path, name: str) -> Path:
    """forge-out/<pkg>/<name>/layer.tar.gz (or .tar.zst / .tar): the one that exists."""
    found = [p for p in out_dir(root, name).glob("layer.tar*")]
    assert len(found) == 1, f"{name}: expected one layer file, found {found}"
    return found[0]


def layer_members_of(root: Path, name: str) -> dict[str, Member]:
    path = layer_file(root, name)
    kind = {".gz": "+gzip", ".zst": "+zstd"}.get(path.suffix, "")
    return tar_members(_decompress(path.read_bytes(), kind))


def file_text(members: dict[str, Member], path: str) -> str:
    assert path in members, f"{path} not in {sorted(members)}"
    member = members[path]
    assert member.kind == "file", f"{path} is a {member.kind}"
    return member.data.decode()


# -- mutating a tarball ---------------------------------------------------------------------


def add_to_tar(path: Path, name: str, data: bytes) -> None:
    """Append one regular file to an (uncompressed) rootfs tarball."""
    with tarfile.open(path, mode="a") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        tf.addfile(info, io.BytesIO(data))
