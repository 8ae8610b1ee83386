"""The mutation suite (issue 11): one baseline workspace, one change at a time.

Every case starts from the baseline (files restored, a build that must run nothing and
give the baseline digests), applies one change, builds every target and asserts:

(a) exactly the actions that must re-run did, by id (``//pkg:name#Mnemonic.N``),
(b) no other did (``out.executed()`` equals the expected list), every other target
    keeps its baseline digest, and the targets of the re-run actions changed (unless the
    case says a re-run makes the same bytes: early cutoff),
(c) for a relevant change, the output shows it: read from the OCI layouts and layer
    tarballs under forge-out/app/<name>/ (no container is started, no image loaded).

An irrelevant change must re-run nothing and give the same digests. The workspace is
described in ``tests/mutations_ws.py``; outputs are read with its ``Layout`` helpers.

The engine keeps its own layer cache (the classic builder's): a DockerBuild that re-runs
with a Dockerfile whose instructions, base and used build args are unchanged gets the
engine's cached image back, so the steps after it see the same result and do not re-run.
The expectations below are what forge does on an engine that still holds the baseline's
images (this module builds them first); on a pruned engine such re-runs make new
timestamps and the rest of the chain re-runs too.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from forge.testing import RunOutcome, Workspace
from tests import mutations_ws as mws
from tests.mutations_ws import (
    ALL_ACTIONS,
    CHAIN,
    IMAGE_AMD64,
    IMAGE_ARM64,
    IMPORT_AMD64,
    IMPORT_ARM64,
    INDEX,
    LAYER_DOCS,
    LAYER_FILES,
    MINIMIZE,
    PKG,
    PRODUCTION,
    STEP_A,
    STEP_B,
    STEP_C,
    edit,
    edit_build,
    file_text,
    image_of,
    index_of,
    layer_members_of,
)
from tests.services import require_binfmt, require_docker, require_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCH = 1700000000
EPOCH_TEXT = "2023-11-14T22:13:20Z"


# -- the baseline, built once per module ---------------------------------------------------


@dataclass
class Baseline:
    ws: Workspace
    snapshot: Path  # a pristine copy of the workspace's files
    digests: dict[str, str]  # label -> product digest
    diff_ids: dict[str, str]  # layer target -> diff_id
    images: dict[str, mws.ImageView] = field(default_factory=dict)


def diff_id_of(root: Path, name: str) -> str:
    """sha256 of the uncompressed tar of a layer target's forge-out file."""
    path = mws.layer_file(root, name)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    elif path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Baseline:
    require_docker()
    top = tmp_path_factory.mktemp("mutations")
    snapshot = top / "snapshot"
    snapshot.mkdir()
    mws.write_baseline(snapshot)
    root = top / "ws"
    root.mkdir()
    mws.restore(snapshot, root)
    ws = Workspace(root, top / "cache")
    out = mws.build(ws)
    assert out.executed() == ALL_ACTIONS
    again = mws.build(ws)
    assert again.executed() == [], "a second build of the baseline re-ran actions"
    digests = mws.target_digests(again)
    images = {name: image_of(root, name) for name in ("img-amd64", "img-arm64", "chain", "prod")}
    return Baseline(ws, snapshot, digests, {n: diff_id_of(root, n) for n in ("files", "docs")},
                    images)


@pytest.fixture
def base(baseline: Baseline) -> Baseline:
    """The baseline, restored: files as the snapshot has them, and a build that runs
    nothing and gives the baseline digests (so no case depends on the one before)."""
    mws.restore(baseline.snapshot, baseline.ws.root)
    out = mws.build(baseline.ws)
    assert out.executed() == [], f"restoring the baseline re-ran {out.executed()}"
    assert mws.target_digests(out) == baseline.digests
    return baseline


# -- cases -----------------------------------------------------------------------------------


@dataclass
class Ctx:
    """What a check sees: the workspace root, the build's outcome and the baseline."""

    root: Path
    out: RunOutcome
    base: Baseline

    def image(self, name: str) -> mws.ImageView:
        return image_of(self.root, name)

    def layer(self, name: str) -> dict[str, mws.Member]:
        return layer_members_of(self.root, name)

    def fs(self, name: str) -> dict[str, mws.Member]:
        return self.image(name).files()

    def digest(self, name: str) -> str:
        return mws.target_digests(self.out)[f"//{PKG}:{name}"]


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[Path], None]
    executed: list[str]
    check: Callable[[Ctx], None] | None = None
    env: dict[str, str] | None = None
    # targets whose product must differ from the baseline's; None: the targets of the
    # executed actions (a case with early cutoff lists fewer)
    changed: list[str] | None = None
    needs: Callable[[], None] | None = None
    note: str = ""


def label_of(action_id: str) -> str:
    return action_id.split("#", 1)[0]


IMAGES_OF_LAYER = [IMAGE_AMD64, IMAGE_ARM64, INDEX]


def write(rel: str, text: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        (root / rel).write_text(text)
    return mutate


def build_edit(old: str, new: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        edit_build(root, old, new)
    return mutate


def file_edit(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        edit(root, rel, old, new)
    return mutate


def chmod(rel: str, mode: int) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        (root / rel).chmod(mode)
    return mutate


def steps(*fns: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        for fn in fns:
            fn(root)
    return mutate


def index_matches_images(c: Ctx) -> None:
    """The index's children are the current per-platform images."""
    children = {p: v.digest for p, v in index_of(c.root).images().items()}
    assert children == {"linux/amd64": c.digest("img-amd64"),
                        "linux/arm64/v8": c.digest("img-arm64")}


def in_both_images(path: str, predicate: Callable[[mws.Member], bool]) -> Callable[[Ctx], None]:
    """A check: ``path`` in the merged filesystem of both images satisfies ``predicate``,
    and the index names the new images."""
    def check(c: Ctx) -> None:
        for name in ("img-amd64", "img-arm64"):
            fs = c.fs(name)
            assert path in fs, f"{name}: {path} missing"
            assert predicate(fs[path]), f"{name}: {path} is {fs[path]}"
        index_matches_images(c)
    return check


def absent_from_both_images(path: str) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        for name in ("img-amd64", "img-arm64"):
            assert path not in c.fs(name), f"{name}: {path} still there"
        index_matches_images(c)
    return check


def all_of(*checks: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        for one in checks:
            one(c)
    return check


def has_text(text: str) -> Callable[[mws.Member], bool]:
    return lambda m: m.kind == "file" and m.data.decode() == text


def has_mode(mode: int) -> Callable[[mws.Member], bool]:
    return lambda m: m.mode == mode


# ---- layer sources

def rename_motd(root: Path) -> None:
    (root / PKG / "files/etc/motd").rename(root / PKG / "files/etc/banner")
    edit_build(root, '"files/etc/motd"]', '"files/etc/banner"]')


def add_extra_conf(root: Path) -> None:
    (root / PKG / "files/etc/extra.conf").write_text("extra=1\n")
    edit_build(root, '"files/etc/motd"]', '"files/etc/motd", "files/etc/extra.conf"]')


def retarget_symlink(root: Path) -> None:
    link = root / PKG / "files/bin/current"
    link.unlink()
    link.symlink_to("../etc/motd")


def symlink_to_file(root: Path) -> None:
    link = root / PKG / "files/bin/current"
    link.unlink()
    link.write_text("not a link\n")


def check_zstd(c: Ctx) -> None:
    assert mws.layer_file(c.root, "files").name == "layer.tar.zst"
    for name in ("img-amd64", "img-arm64"):
        layer = c.image(name).layers[1]
        assert layer.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"
        assert layer.blob[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
        assert layer.diff_id == c.base.diff_ids["files"]  # the same tar, compressed otherwise
    assert file_text(c.layer("files"), "opt/app/etc/motd") == "welcome v1\n"
    index_matches_images(c)


def check_uncompressed(c: Ctx) -> None:
    assert mws.layer_file(c.root, "files").name == "layer.tar"
    layer = c.image("img-amd64").layers[1]
    assert layer.media_type == "application/vnd.oci.image.layer.v1.tar"
    assert layer.digest == layer.diff_id == c.base.diff_ids["files"]
    index_matches_images(c)


def check_level(c: Ctx) -> None:
    layer = c.image("img-amd64").layers[2]
    before = c.base.images["img-amd64"].layers[2]
    assert layer.media_type == before.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert layer.diff_id == before.diff_id  # same tar
    assert layer.digest != before.digest  # other gzip bytes
    index_matches_images(c)


def all_modes(c: Ctx) -> dict[str, int]:
    return {k: m.mode for k, m in c.layer("files").items() if m.kind == "file"}


def check_owner(c: Ctx) -> None:
    members = c.layer("files")
    assert {(m.uid, m.gid) for m in members.values()} == {(1000, 1000)}
    assert {(m.uid, m.gid) for m in c.layer("docs").values()} == {(0, 0)}
    index_matches_images(c)


def check_prefix(c: Ctx) -> None:
    files = set(c.layer("files"))
    assert "srv/app/bin/run.sh" in files and "srv/app/etc/app.conf" in files
    assert not any(f.startswith("opt") for f in files)
    index_matches_images(c)


def check_strip_prefix(c: Ctx) -> None:
    members = c.layer("files")
    assert members["opt/app/files/bin/run.sh"].mode == 0o755
    assert members["opt/app/files/etc/app.conf"].mode == 0o600  # mode_map keys: package paths
    assert "opt/app/bin/run.sh" not in members
    index_matches_images(c)


# ---- image config

def config_is(name: str, key: str, value: Any, *, index: bool = True) -> Callable[[Ctx], None]:
    def check(c: Ctx) -> None:
        run = c.image(name).run_config
        if value is None:
            assert key not in run, f"{name}: {key} = {run.get(key)!r}"
        else:
            assert run.get(key) == value, f"{name}: {key} = {run.get(key)!r}, expected {value!r}"
        if index:
            index_matches_images(c)
    return check


def check_base_is_chain(c: Ctx) -> None:
    image = c.image("img-amd64")
    chain = c.image("chain")
    assert [x.digest for x in image.layers[:-2]] == [x.digest for x in chain.layers]
    assert file_text(image.files(), "usr/local/bin/final.txt").startswith("step-a\n")
    index_matches_images(c)


def check_scratch(c: Ctx) -> None:
    image = c.image("img-amd64")
    assert len(image.layers) == 2
    assert "bin/busybox" not in image.files()
    assert image.config["architecture"] == "amd64"
    index_matches_images(c)


def check_layer_order(c: Ctx) -> None:
    image = c.image("img-amd64")
    before = c.base.images["img-amd64"]
    assert [x.digest for x in image.layers] == [before.layers[0].digest, before.layers[2].digest,
                                                before.layers[1].digest]
    assert image.config["rootfs"]["diff_ids"] == [before.config["rootfs"]["diff_ids"][i]
                                                   for i in (0, 2, 1)]
    index_matches_images(c)


def check_layer_dropped(c: Ctx) -> None:
    image = c.image("img-arm64")
    assert len(image.layers) == 2
    assert "usr/share/doc/app/docs/a.txt" not in image.files()
    index_matches_images(c)


# ---- index

def check_index_one(c: Ctx) -> None:
    children = {p: v.digest for p, v in index_of(c.root).images().items()}
    assert children == {"linux/amd64": c.digest("img-amd64")}


def check_index_prod(c: Ctx) -> None:
    children = {p: v.digest for p, v in index_of(c.root).images().items()}
    assert children == {"linux/amd64": c.digest("prod"), "linux/arm64/v8": c.digest("img-arm64")}


# ---- imports

MARKER = b"forge mutation marker\n"


def mark_tarball(name: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        mws.add_to_tar(root / PKG / name, "etc/forge-marker", MARKER)
    return mutate


def check_marked_amd64(c: Ctx) -> None:
    assert c.image("base-amd64").layers[0].members()["etc/forge-marker"].data == MARKER
    for name in ("img-amd64", "chain", "prod"):
        assert c.fs(name)["etc/forge-marker"].data == MARKER, name
    assert "etc/forge-marker" not in c.fs("img-arm64")
    index_matches_images(c)


def check_marked_arm64(c: Ctx) -> None:
    assert c.fs("img-arm64")["etc/forge-marker"].data == MARKER
    assert "etc/forge-marker" not in c.fs("img-amd64")
    index_matches_images(c)


def check_armv7(c: Ctx) -> None:
    assert c.image("base-arm64").platform == "linux/arm/v7"
    assert c.image("img-arm64").platform == "linux/arm/v7"
    children = {p: v.digest for p, v in index_of(c.root).images().items()}
    assert children == {"linux/amd64": c.digest("img-amd64"), "linux/arm/v7": c.digest("img-arm64")}


# ---- chain

def chain_file(path: str, text: str, *, minimized: bool = True) -> Callable[[Ctx], None]:
    """The chain's image (and the minimize layer and production image, when the path is
    under /usr/local/bin) hold ``text`` at ``path``."""
    def check(c: Ctx) -> None:
        assert file_text(c.fs("chain"), path) == text
        if minimized:
            assert file_text(c.layer("min"), path) == text
            assert file_text(c.fs("prod"), path) == text
    return check


def check_payload(c: Ctx) -> None:
    assert file_text(c.fs("chain"), "usr/local/share/payload.txt") == "payload v2\n"
    assert "usr/local/share/payload.txt" not in c.layer("min")  # not under paths


def check_arm64_chain(c: Ctx) -> None:
    chain = c.image("chain")
    assert chain.platform == "linux/arm64/v8"
    fs = chain.files()
    assert file_text(fs, "usr/local/share/arch") == "aarch64\n"  # ran under QEMU
    assert file_text(fs, "usr/local/bin/greeting.txt") == "hello-aarch64\n"  # its args file
    assert c.image("prod").platform == "linux/arm64/v8"
    assert file_text(c.fs("prod"), "usr/local/bin/final.txt") == \
        "step-a\nhello-aarch64\nflavor=plain\n"


STEP_D = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo step-d > /usr/local/bin/step-d.txt\n"


def check_step_c_gone(c: Ctx) -> None:
    assert "usr/local/bin/final.txt" not in c.fs("chain")
    assert file_text(c.fs("chain"), "usr/local/bin/greeting.txt") == "hello-amd64\n"
    assert "usr/local/bin/final.txt" not in c.layer("min")
    assert "usr/local/bin/final.txt" not in c.fs("prod")


def to_arm64(root: Path) -> None:
    edit_build(root, 'dir = "chain",\n    base = ":base-amd64",', 'dir = "chain",\n    base = ":base-arm64",')
    edit_build(root, 'name = "prod",\n    base = ":base-amd64",', 'name = "prod",\n    base = ":base-arm64",')


def check_epoch(c: Ctx) -> None:
    for name in ("base-amd64", "base-arm64", "img-amd64", "img-arm64", "chain", "prod"):
        image = c.image(name)
        assert image.config["created"] == EPOCH_TEXT, name
    for name in ("img-amd64", "img-arm64"):
        image = c.image(name)
        for layer in image.layers:  # the import's and both forge layers
            assert {m.mtime for m in layer.members().values()} == {EPOCH}, name
    for name in ("files", "docs", "min"):
        assert {m.mtime for m in c.layer(name).values()} == {EPOCH}, name
    prod = c.image("prod")
    assert {m.mtime for m in prod.layers[-1].members().values()} == {EPOCH}
    index_matches_images(c)


def check_same_outputs(c: Ctx) -> None:
    """Another output format key, the same writers: the same bytes (chain included, the
    engine's cache giving back the same images)."""
    assert mws.target_digests(c.out) == c.base.digests


def patch_output_format(monkeypatch: pytest.MonkeyPatch) -> None:
    import forge.core.actions

    monkeypatch.setattr(forge.core.actions, "OUTPUT_FORMAT", forge.core.actions.OUTPUT_FORMAT + 1)


# ---- minimize and production

def check_min_paths(c: Ctx) -> None:
    members = c.layer("min")
    assert file_text(members, "usr/local/share/payload.txt") == "payload v1\n"
    assert file_text(members, "usr/local/share/arch") == "x86_64\n"
    assert file_text(c.fs("prod"), "usr/local/share/payload.txt") == "payload v1\n"


def check_min_exclude(c: Ctx) -> None:
    members = c.layer("min")
    assert "usr/local/bin/final.txt" not in members
    assert "usr/local/bin/greet" in members
    assert "usr/local/bin/final.txt" not in c.fs("prod")


def check_min_one_path(c: Ctx) -> None:
    files = {k for k, m in c.layer("min").items() if m.kind != "dir"}
    assert files == {"usr/local/bin/greet"}


def check_prod_base(c: Ctx) -> None:
    prod = c.image("prod")
    img = c.image("img-amd64")
    assert [x.digest for x in prod.layers[:-1]] == [x.digest for x in img.layers]
    assert file_text(prod.files(), "opt/app/etc/app.conf") == "mode=edge\n"


def prod_config(key: str, value: Any) -> Callable[[Ctx], None]:
    return config_is("prod", key, value, index=False)


def check_prod_env(c: Ctx) -> None:
    env = c.image("prod").env
    assert env["APP_ENV"] == "staging"
    assert env["PATH"].startswith("/opt/venv/bin:/usr/local/bin:")


FILES_LAYER = "files/etc/app.conf"
RELEVANT: list[Case] = [
    # -- sources of a layer (files: used by both images, so both and the index re-run)
    Case("content", write(f"{PKG}/{FILES_LAYER}", "mode=strict\n"),
         [LAYER_FILES, *IMAGES_OF_LAYER],
         in_both_images("opt/app/etc/app.conf",
                        lambda m: has_text("mode=strict\n")(m) and m.mode == 0o600)),
    Case("exec-bit-set", chmod(f"{PKG}/files/etc/motd", 0o755), [LAYER_FILES, *IMAGES_OF_LAYER],
         in_both_images("opt/app/etc/motd", has_mode(0o755))),
    Case("exec-bit-cleared", chmod(f"{PKG}/files/bin/run.sh", 0o644), [LAYER_FILES, *IMAGES_OF_LAYER],
         in_both_images("opt/app/bin/run.sh", has_mode(0o644))),
    Case("src-renamed", rename_motd, [LAYER_FILES, *IMAGES_OF_LAYER],
         all_of(in_both_images("opt/app/etc/banner", has_text("welcome v1\n")),
                absent_from_both_images("opt/app/etc/motd"))),
    Case("src-added", add_extra_conf, [LAYER_FILES, *IMAGES_OF_LAYER],
         in_both_images("opt/app/etc/extra.conf", has_text("extra=1\n"))),
    Case("src-removed", build_edit(', "files/etc/motd"]', "]"), [LAYER_FILES, *IMAGES_OF_LAYER],
         absent_from_both_images("opt/app/etc/motd")),
    Case("symlink-target", retarget_symlink, [LAYER_FILES, *IMAGES_OF_LAYER],
         in_both_images("opt/app/bin/current",
                        lambda m: m.kind == "symlink" and m.target == "../etc/motd")),
    Case("symlink-becomes-file", symlink_to_file, [LAYER_FILES, *IMAGES_OF_LAYER],
         in_both_images("opt/app/bin/current", has_text("not a link\n"))),
    Case("glob-gains-file", write(f"{PKG}/docs/c.txt", "doc c\n"), [LAYER_DOCS, *IMAGES_OF_LAYER],
         in_both_images("usr/share/doc/app/docs/c.txt", has_text("doc c\n"))),
    Case("glob-loses-file", lambda root: (root / PKG / "docs/b.txt").unlink(),
         [LAYER_DOCS, *IMAGES_OF_LAYER], absent_from_both_images("usr/share/doc/app/docs/b.txt")),
    Case("glob-file-content", write(f"{PKG}/docs/a.txt", "doc a v2\n"),
         [LAYER_DOCS, *IMAGES_OF_LAYER],
         in_both_images("usr/share/doc/app/docs/a.txt", has_text("doc a v2\n"))),
    # -- every layer attribute
    Case("layer-prefix", build_edit('prefix = "/opt/app"', 'prefix = "/srv/app"'),
         [LAYER_FILES, *IMAGES_OF_LAYER], check_prefix),
    Case("layer-strip-prefix", build_edit('strip_prefix = "files"', 'strip_prefix = ""'),
         [LAYER_FILES, *IMAGES_OF_LAYER], check_strip_prefix),
    Case("layer-mode-map-value", build_edit('"0600"', '"0640"'), [LAYER_FILES, *IMAGES_OF_LAYER],
         in_both_images("opt/app/etc/app.conf", has_mode(0o640))),
    Case("layer-mode-map-entry-added",
         build_edit('"0600"}', '"0600", "files/bin/run.sh": "0700"}'),
         [LAYER_FILES, *IMAGES_OF_LAYER],
         all_of(in_both_images("opt/app/bin/run.sh", has_mode(0o700)),
                in_both_images("opt/app/etc/app.conf", has_mode(0o600)))),
    Case("layer-mode-map-emptied", build_edit('{"files/etc/app.conf": "0600"}', "{}"),
         [LAYER_FILES, *IMAGES_OF_LAYER],
         in_both_images("opt/app/etc/app.conf", has_mode(0o644))),
    Case("layer-owner", build_edit('prefix = "/opt/app",', 'prefix = "/opt/app",\n    owner = "1000:1000",'),
         [LAYER_FILES, *IMAGES_OF_LAYER], check_owner),
    Case("layer-compression-zstd",
         build_edit('prefix = "/opt/app",', 'prefix = "/opt/app",\n    compression = "zstd",'),
         [LAYER_FILES, *IMAGES_OF_LAYER], check_zstd),
    Case("layer-compression-none",
         build_edit('prefix = "/opt/app",', 'prefix = "/opt/app",\n    compression = "none",'),
         [LAYER_FILES, *IMAGES_OF_LAYER], check_uncompressed),
    Case("layer-level",
         build_edit('prefix = "/usr/share/doc/app",', 'prefix = "/usr/share/doc/app",\n    level = 1,'),
         [LAYER_DOCS, *IMAGES_OF_LAYER], check_level),
    # -- every image attribute (img-amd64: only it and the index re-run)
    Case("image-env-value", build_edit('"APP_MODE": "edge", "APP_COLOR"', '"APP_MODE": "strict", "APP_COLOR"'),
         [IMAGE_AMD64, INDEX], config_is("img-amd64", "Env", ["APP_COLOR=blue", "APP_MODE=strict"])),
    Case("image-env-added", build_edit('"APP_COLOR": "blue"}', '"APP_COLOR": "blue", "APP_DEBUG": "1"}'),
         [IMAGE_AMD64, INDEX], config_is("img-amd64", "Env", ["APP_COLOR=blue", "APP_DEBUG=1", "APP_MODE=edge"])),
    Case("image-env-removed", build_edit(', "APP_COLOR": "blue"}', "}"),
         [IMAGE_AMD64, INDEX], config_is("img-amd64", "Env", ["APP_MODE=edge"])),
    Case("image-cmd", build_edit('cmd = ["/opt/app/bin/run.sh"],\n    workdir', 'cmd = ["/opt/app/bin/run.sh --once"],\n    workdir'),
         [IMAGE_AMD64, INDEX], config_is("img-amd64", "Cmd", ["/opt/app/bin/run.sh --once"])),
    Case("image-entrypoint", build_edit('entrypoint = ["/bin/sh", "-c"]', 'entrypoint = ["/bin/sh", "-ec"]'),
         [IMAGE_AMD64, INDEX], config_is("img-amd64", "Entrypoint", ["/bin/sh", "-ec"])),
    Case("image-entrypoint-removed", build_edit('    entrypoint = ["/bin/sh", "-c"],\n', ""),
         [IMAGE_AMD64, INDEX], config_is("img-amd64", "Entrypoint", None)),
    Case("image-workdir", build_edit('workdir = "/opt/app"', 'workdir = "/tmp"'),
         [IMAGE_AMD64, INDEX], config_is("img-amd64", "WorkingDir", "/tmp")),
    Case("image-user", build_edit('user = "1000:1000"', 'user = "nobody"'),
         [IMAGE_AMD64, INDEX], config_is("img-amd64", "User", "nobody")),
    Case("image-label-value", build_edit('"org.example.tier": "one"', '"org.example.tier": "two"'),
         [IMAGE_AMD64, INDEX], config_is("img-amd64", "Labels", {"org.example.tier": "two"})),
    Case("image-label-added", build_edit('"org.example.tier": "one"}', '"org.example.tier": "one", "org.example.team": "core"}'),
         [IMAGE_AMD64, INDEX],
         config_is("img-amd64", "Labels", {"org.example.tier": "one", "org.example.team": "core"})),
    Case("image-base", build_edit('name = "img-amd64",\n    base = ":base-amd64"', 'name = "img-amd64",\n    base = ":chain"'),
         [IMAGE_AMD64, INDEX], check_base_is_chain),
    Case("image-base-scratch", build_edit('name = "img-amd64",\n    base = ":base-amd64",\n', 'name = "img-amd64",\n'),
         [IMAGE_AMD64, INDEX], check_scratch),
    Case("image-layer-order", build_edit('layers = [":files", ":docs"],\n    env = {"APP_MODE": "edge", "APP_COLOR"',
                                         'layers = [":docs", ":files"],\n    env = {"APP_MODE": "edge", "APP_COLOR"'),
         [IMAGE_AMD64, INDEX], check_layer_order),
    Case("image-layer-dropped", build_edit('layers = [":files", ":docs"],\n    env = {"APP_MODE": "edge"}',
                                           'layers = [":files"],\n    env = {"APP_MODE": "edge"}'),
         [IMAGE_ARM64, INDEX], check_layer_dropped),
    Case("image-arm64-cmd", build_edit('env = {"APP_MODE": "edge"},\n    cmd = ["/opt/app/bin/run.sh"]',
                                       'env = {"APP_MODE": "edge"},\n    cmd = ["/opt/app/bin/run.sh", "-v"]'),
         [IMAGE_ARM64, INDEX], config_is("img-arm64", "Cmd", ["/opt/app/bin/run.sh", "-v"])),
    # -- index membership
    Case("index-member-dropped", build_edit('images = [":img-amd64", ":img-arm64"]', 'images = [":img-amd64"]'),
         [INDEX], check_index_one),
    Case("index-member-replaced", build_edit('images = [":img-amd64", ":img-arm64"]', 'images = [":prod", ":img-arm64"]'),
         [INDEX], check_index_prod),
    # -- bases
    Case("base-content-amd64", mark_tarball("busybox-amd64.tar"),
         [IMPORT_AMD64, IMAGE_AMD64, INDEX, *CHAIN, MINIMIZE, PRODUCTION], check_marked_amd64,
         # the minimize layer is the same bytes: the marker is outside its paths
         changed=["base-amd64", "img-amd64", "index", "chain", "prod"]),
    Case("base-content-arm64", mark_tarball("busybox-arm64.tar"),
         [IMPORT_ARM64, IMAGE_ARM64, INDEX], check_marked_arm64),
    Case("import-platform", build_edit('src = "busybox-arm64.tar", platform = "aarch64"',
                                       'src = "busybox-arm64.tar", platform = "armv7"'),
         [IMPORT_ARM64, IMAGE_ARM64, INDEX], check_armv7),
    # -- the Dockerfile chain
    Case("chain-build-arg", build_edit('build_args = {"FLAVOR": "plain"}', 'build_args = {"FLAVOR": "fancy"}'),
         [*CHAIN, MINIMIZE, PRODUCTION],
         chain_file("usr/local/bin/final.txt", "step-a\nhello-amd64\nflavor=fancy\n")),
    Case("chain-args-file-line", file_edit(f"{PKG}/chain/b-amd64-args", "GREETING=hello-amd64", "GREETING=hi-amd64"),
         [STEP_B, STEP_C, MINIMIZE, PRODUCTION],
         chain_file("usr/local/bin/greeting.txt", "hi-amd64\n")),
    Case("chain-dockerfile-a", file_edit(f"{PKG}/chain/10-Dockerfile-a", "echo step-a", "echo step-A"),
         [*CHAIN, MINIMIZE, PRODUCTION],
         chain_file("usr/local/bin/final.txt", "step-A\nhello-amd64\nflavor=plain\n")),
    Case("chain-dockerfile-b", file_edit(f"{PKG}/chain/20-Dockerfile-b", "'#!/bin/sh\\ncat", "'#!/bin/sh\\necho; cat"),
         [STEP_B, STEP_C, MINIMIZE, PRODUCTION],
         chain_file("usr/local/bin/greet", "#!/bin/sh\necho; cat /usr/local/bin/greeting.txt\n")),
    Case("chain-dockerfile-c", file_edit(f"{PKG}/chain/30-Dockerfile-c", '"flavor=$FLAVOR"', '"taste=$FLAVOR"'),
         [STEP_C, MINIMIZE, PRODUCTION],
         chain_file("usr/local/bin/final.txt", "step-a\nhello-amd64\ntaste=plain\n")),
    # per-step context (issue 14): step b COPYs payload.txt, so b and c re-run; step a,
    # which copies nothing, does not
    Case("chain-context-file", write(f"{PKG}/chain/payload.txt", "payload v2\n"),
         [*CHAIN[1:], MINIMIZE], check_payload,
         # The minimize layer and report are the same bytes (payload is outside its
         # paths): Production does not re-run (the report names no image digest).
         changed=["chain"]),
    Case("chain-step-added", write(f"{PKG}/chain/40-Dockerfile-d", STEP_D),
         [f"//{PKG}:chain#DockerBuild.3", MINIMIZE, PRODUCTION],
         chain_file("usr/local/bin/step-d.txt", "step-d\n")),
    # the chain now ends at step b, whose result is cached: nothing of the chain runs
    Case("chain-step-removed", lambda root: (root / PKG / "chain/30-Dockerfile-c").unlink(),
         [MINIMIZE, PRODUCTION], check_step_c_gone, changed=["chain", "min", "prod"]),
    Case("chain-platform-arm64", to_arm64, [*CHAIN, MINIMIZE, PRODUCTION], check_arm64_chain,
         needs=lambda: require_binfmt("aarch64")),
    # -- minimize and production
    Case("minimize-paths", build_edit('paths = ["/usr/local/bin"]', 'paths = ["/usr/local/bin", "/usr/local/share"]'),
         [MINIMIZE, PRODUCTION], check_min_paths),
    Case("minimize-paths-narrowed", build_edit('paths = ["/usr/local/bin"]', 'paths = ["/usr/local/bin/greet"]'),
         [MINIMIZE, PRODUCTION], check_min_one_path),
    Case("minimize-exclude", build_edit('paths = ["/usr/local/bin"],', 'paths = ["/usr/local/bin"],\n    exclude = ["/usr/local/bin/final.txt"],'),
         [MINIMIZE, PRODUCTION], check_min_exclude),
    Case("production-base", build_edit('name = "prod",\n    base = ":base-amd64"', 'name = "prod",\n    base = ":img-amd64"'),
         [PRODUCTION], check_prod_base),
    Case("production-env", build_edit('env = {"APP_ENV": "prod"}', 'env = {"APP_ENV": "staging"}'),
         [PRODUCTION], check_prod_env),
    Case("production-cmd", build_edit('cmd = ["--serve"]', 'cmd = ["--once"]'),
         [PRODUCTION], prod_config("Cmd", ["--once"])),
    Case("production-entrypoint", build_edit('entrypoint = ["/usr/local/bin/greet"]', 'entrypoint = ["/bin/sh", "/usr/local/bin/greet"]'),
         [PRODUCTION], prod_config("Entrypoint", ["/bin/sh", "/usr/local/bin/greet"])),
    Case("production-workdir", build_edit('cmd = ["--serve"],', 'cmd = ["--serve"],\n    workdir = "/srv",'),
         [PRODUCTION], prod_config("WorkingDir", "/srv")),
    Case("production-labels", build_edit('cmd = ["--serve"],', 'cmd = ["--serve"],\n    labels = {"tier": "prod"},'),
         [PRODUCTION], prod_config("Labels", {"tier": "prod"})),
    # -- the build's epoch and forge's own output format
    Case("source-date-epoch", lambda root: None, ALL_ACTIONS, check_epoch,
         env={"SOURCE_DATE_EPOCH": str(EPOCH)}),
]

# Changes whose output is the same bytes, where today's forge still re-runs an action (it
# keys on the input's bytes or on the parameter as written) and the early cutoff stops
# there. Asserted as they are; each is listed in the report as a possible needless rebuild.
CUTOFF: list[Case] = [
    Case("dockerfile-comment", file_edit(f"{PKG}/chain/10-Dockerfile-a", "# step a: records", "# step a (commented): records"),
         [STEP_A], None, changed=[],
         note="the Dockerfile's bytes are the input; the engine's cache gives the same image"),
]


# -- irrelevant changes ----------------------------------------------------------------------


def utime_all(root: Path) -> None:
    for path in mws.source_paths(root):
        os.utime(path, (1_000_000_000, 1_000_000_000), follow_symlinks=False)


def touch_dockerfile(root: Path) -> None:
    path = root / PKG / "chain/20-Dockerfile-b"
    later = path.stat().st_mtime + 3600
    os.utime(path, (later, later))


def non_exec_modes(root: Path) -> None:
    for rel, mode in (("files/etc/motd", 0o600), ("files/etc/app.conf", 0o664),
                      ("files/bin/run.sh", 0o700), ("docs/a.txt", 0o400),
                      ("chain/payload.txt", 0o600), ("chain/20-Dockerfile-b", 0o640),
                      ("chain/b-amd64-args", 0o600), ("busybox-amd64.tar", 0o600)):
        (root / PKG / rel).chmod(mode)


def rewrite_under_umask(root: Path) -> None:
    """Every file written again as a checkout would under umask 077 (0600, 0700 for
    executables), same content."""
    with mws.umask(0o077):
        for path in mws.source_paths(root):
            if path.is_symlink():
                continue
            data = path.read_bytes()
            executable = bool(path.stat().st_mode & 0o111)
            path.unlink()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o777 if executable else 0o666)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            assert path.stat().st_mode & 0o777 == (0o700 if executable else 0o600)


def chown_all(root: Path) -> None:
    require_root("chown the workspace's files to another user")
    for path in mws.source_paths(root):
        os.chown(path, 1000, 1000, follow_symlinks=False)


def outside_srcs(root: Path) -> None:
    (root / PKG / "unused.txt").write_text("still nobody reads me\n")
    (root / PKG / "docs/notes.md").write_text("not a *.txt\n")  # beside the glob's files
    (root / PKG / "files/etc/undeclared.conf").write_text("not in srcs\n")
    (root / PKG / "other").mkdir()
    (root / PKG / "other/x.txt").write_text("x\n")


def reorder_srcs(root: Path) -> None:
    edit_build(root, '["files/bin/run.sh", "files/bin/current", "files/etc/app.conf", "files/etc/motd"]',
               '["files/etc/motd", "files/etc/app.conf", "files/bin/current", "files/bin/run.sh"]')


def rename_production_base(root: Path) -> None:
    path = root / PKG / "BUILD"
    path.write_text(path.read_text() + 'oci_import(name = "renamed-base", src = "busybox-amd64.tar", '
                    'platform = "amd64")\n')
    edit_build(root, 'name = "prod",\n    base = ":base-amd64"', 'name = "prod",\n    base = ":renamed-base"')


def glob_to_list(root: Path) -> None:
    edit_build(root, 'srcs = glob(["docs/*.txt"])', 'srcs = ["docs/a.txt", "docs/b.txt", "docs/big.txt"]')


def reorder_attributes(root: Path) -> None:
    edit_build(root, '    env = {"APP_ENV": "prod"},\n    entrypoint = ["/usr/local/bin/greet"],\n',
               '    entrypoint = ["/usr/local/bin/greet"],\n    env = {"APP_ENV": "prod"},\n')
    edit_build(root, '    strip_prefix = "files",\n    prefix = "/opt/app",\n',
               '    prefix = "/opt/app",\n    strip_prefix = "files",\n')


def build_comments(root: Path) -> None:
    path = root / PKG / "BUILD"
    text = path.read_text()
    text = "# the mutation suite's package\n\n" + text.replace(
        "\nlayer(\n    name = \"docs\",", "\n\n# documentation, from a glob\n\nlayer(\n    name = \"docs\",")
    path.write_text(text.replace('    prefix = "/opt/app",\n', '    prefix = "/opt/app",  # where it goes\n'))


@dataclass(frozen=True)
class Irrelevant:
    id: str
    mutate: Callable[[Path], None] = lambda root: None
    env: dict[str, str] | None = None
    cwd: str | None = None  # run from this workspace-relative directory
    args: tuple[str, ...] = ()


IRRELEVANT: list[Irrelevant] = [
    Irrelevant("mtime", utime_all),
    # a file of the chain's folder that no COPY reads is no step's input (issue 14)
    Irrelevant("chain-context-file-unused", write(f"{PKG}/chain/notes.txt", "nobody COPYs me\n")),
    # the args file's values are params; its comments and blank lines are nothing
    Irrelevant("args-file-comment", file_edit(f"{PKG}/chain/b-amd64-args", "# greeting for amd64",
                                              "# the greeting for amd64\n")),
    # level = 2 is gzip's default: the same output as no level, so the same key
    Irrelevant("layer-level-explicit-default",
               build_edit('prefix = "/usr/share/doc/app",', 'prefix = "/usr/share/doc/app",\n    level = 2,')),
    Irrelevant("touch-dockerfile", touch_dockerfile),
    Irrelevant("non-exec-mode-bits", non_exec_modes),
    Irrelevant("umask", rewrite_under_umask),
    Irrelevant("uid", chown_all),
    Irrelevant("file-outside-srcs", outside_srcs),
    Irrelevant("tz-env", env={"TZ": "Pacific/Kiritimati"}),
    Irrelevant("lang-env", env={"LANG": "tr_TR.UTF-8", "LC_ALL": "C", "LC_COLLATE": "C"}),
    Irrelevant("from-subdirectory", cwd=f"{PKG}/chain"),
    Irrelevant("workspace-toml-comment",
               lambda root: (root / "WORKSPACE.toml").write_text(
                   "# mutation suite\n" + (root / "WORKSPACE.toml").read_text() + "\n# end\n")),
    Irrelevant("build-file-comments", build_comments),
    Irrelevant("unused-platform-args-file",
               file_edit(f"{PKG}/chain/b-aarch64-args", "hello-aarch64", "bonjour-aarch64")),
    Irrelevant("source-date-epoch-0", env={"SOURCE_DATE_EPOCH": "0"}),
    Irrelevant("source-date-epoch-empty", env={"SOURCE_DATE_EPOCH": ""}),
    Irrelevant("env-dict-order", build_edit('{"APP_MODE": "edge", "APP_COLOR": "blue"}',
                                            '{"APP_COLOR": "blue", "APP_MODE": "edge"}')),
    Irrelevant("label-spelling", build_edit('minimized = ":min"', 'minimized = "//app:min"')),
    Irrelevant("srcs-order", reorder_srcs),
    # the same base under another target name: a label is not an output (issue 19)
    Irrelevant("production-base-renamed", rename_production_base),
    Irrelevant("glob-as-list", glob_to_list),
    Irrelevant("attribute-order", reorder_attributes),
    Irrelevant("jobs-1", args=("-j", "1")),
    Irrelevant("image-platform-explicit",
               build_edit('name = "img-arm64",\n', 'name = "img-arm64",\n    platform = "arm64",\n')),
]


# -- the tests -------------------------------------------------------------------------------


def assert_digests(out: RunOutcome, base: Baseline, changed: set[str]) -> None:
    now = mws.target_digests(out)
    assert set(now) == set(base.digests)
    same = sorted(k for k in now if now[k] == base.digests[k])
    differ = sorted(k for k in now if now[k] != base.digests[k])
    assert differ == sorted(changed), f"changed targets {differ}, expected {sorted(changed)} (same: {same})"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in RELEVANT + CUTOFF])
def test_relevant_change_reruns_exactly_what_reads_it(case: Case, base: Baseline) -> None:
    if case.needs:
        case.needs()
    root = base.ws.root
    case.mutate(root)
    out = mws.build(base.ws, env=case.env)
    assert out.executed() == sorted(case.executed), case.note
    assert set(out.statuses().values()) <= {"built", "cached-local"}
    changed = case.changed if case.changed is not None else \
        sorted({label_of(a).split(":", 1)[1] for a in case.executed})
    assert_digests(out, base, {f"//{PKG}:{n}" for n in changed})
    if case.check:
        case.check(Ctx(root, out, base))


def test_output_format_reruns_everything(base: Baseline, monkeypatch: pytest.MonkeyPatch) -> None:
    """A forge whose shared writers changed (OUTPUT_FORMAT bumped) re-runs every action;
    these writers did not change, so the products are the same bytes."""
    patch_output_format(monkeypatch)
    out = mws.build(base.ws)
    assert out.executed() == ALL_ACTIONS
    check_same_outputs(Ctx(base.ws.root, out, base))


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in IRRELEVANT])
def test_irrelevant_change_reruns_nothing(case: Irrelevant, base: Baseline) -> None:
    root = base.ws.root
    case.mutate(root)
    before = {n: (mws.out_dir(root, n) / "index.json").read_bytes()
              for n in ("img-amd64", "index", "chain", "prod")}
    tz = os.environ.get("TZ")
    if case.env and "TZ" in case.env:  # make the process's local time really change
        os.environ["TZ"] = case.env["TZ"]
        time.tzset()
    try:
        out = mws.build(base.ws, env=case.env, cwd=root / case.cwd if case.cwd else None,
                        args=case.args)
    finally:
        if case.env and "TZ" in case.env:
            if tz is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = tz
            time.tzset()
    assert out.executed() == []
    assert mws.target_digests(out) == base.digests
    assert {n: (mws.out_dir(root, n) / "index.json").read_bytes() for n in before} == before


def test_checkout_path_is_irrelevant(base: Baseline, tmp_path: Path) -> None:
    """The same files at another path, the same cache: nothing runs, the same outputs."""
    elsewhere = tmp_path / "another" / "checkout"
    shutil.copytree(base.ws.root, elsewhere, symlinks=True,
                    ignore=lambda d, names: ["forge-out"] if Path(d) == base.ws.root else [])
    ws = Workspace(elsewhere, base.ws.cache)
    out = mws.build(ws)
    assert out.executed() == []
    assert mws.target_digests(out) == base.digests
    for name in ("img-amd64", "index", "chain", "min", "prod"):
        ours = mws.out_dir(elsewhere, name)
        theirs = mws.out_dir(base.ws.root, name)
        index_file = "index.json" if (theirs / "index.json").exists() else mws.layer_file(base.ws.root, name).name
        assert (ours / index_file).read_bytes() == (theirs / index_file).read_bytes(), name
