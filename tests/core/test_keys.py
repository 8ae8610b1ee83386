"""The action-key table: what changes a key and what must not."""

import os
import subprocess
from pathlib import Path

import pytest

from forge.core.actions import InputDigest, SourceFile, action_key, key_manifest, make_action
from forge.core.digests import FileDigests
from forge.core.labels import Label
from forge.core.platforms import parse_platform
from tests.services import require_root

LABEL = Label("p", "t")


def _run(_):  # never called
    raise AssertionError


def key_of(root: Path, files: dict, params=None, platform=None, deps=(), memo=None) -> str:
    """Key of an action over ``files`` (relpath -> (content|("link", target), mode))."""
    srcs = []
    for rel, (content, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        if isinstance(content, tuple):
            os.symlink(content[1], path)
        else:
            path.write_bytes(content)
            os.chmod(path, mode)
        srcs.append(SourceFile(path, rel))
    action = make_action(label=LABEL, mnemonic="Test", run=_run, params=params or {},
                         inputs=srcs, platform=platform)
    digests = memo or FileDigests(None)
    inputs = [digests.digest(s) for s in srcs]
    return action_key(key_manifest(action, inputs, list(deps)))


BASE = {"a.txt": (b"alpha", 0o644), "bin/run": (b"#!/bin/sh\n", 0o755), "ln": (("link", "a.txt"), 0)}


def variant(**changes):
    files = dict(BASE)
    files.update(changes)
    return files


@pytest.mark.parametrize(
    "what, kwargs",
    [
        ("content", {"files": variant(**{"a.txt": (b"beta", 0o644)})}),
        ("exec bit", {"files": variant(**{"a.txt": (b"alpha", 0o755)})}),
        ("path", {"files": {"b.txt" if k == "a.txt" else k: v for k, v in BASE.items()}}),
        ("symlink target", {"files": variant(ln=(("link", "bin/run"), 0))}),
        ("parameter", {"params": {"x": 2}}),
        ("platform", {"platform": parse_platform("arm64")}),
        ("dependency", {"deps": ["other-result"]}),
    ],
)
def test_change_changes_key(tmp_path, what, kwargs):
    base = key_of(tmp_path / "base", BASE, params={"x": 1}, platform=parse_platform("amd64"),
                  deps=["dep-result"])
    args = {"files": BASE, "params": {"x": 1}, "platform": parse_platform("amd64"), "deps": ["dep-result"]}
    args.update(kwargs)
    changed = key_of(tmp_path / "changed", args["files"], params=args["params"],
                     platform=args["platform"], deps=args["deps"])
    assert changed != base, f"changing the {what} must change the key"


def test_mtime_touch_does_not_change_key(tmp_path):
    memo = FileDigests(None)
    k1 = key_of(tmp_path, BASE, memo=memo)
    os.utime(tmp_path / "a.txt", (1, 1))
    srcs_root = tmp_path
    # re-key without rewriting content: build the action over the same, touched files
    action = make_action(label=LABEL, mnemonic="Test", run=_run,
                         inputs=[SourceFile(srcs_root / r, r) for r in BASE])
    inputs = [memo.digest(s) for s in action.inputs]
    assert action_key(key_manifest(action, inputs, [])) == k1


def test_checkout_path_and_non_exec_mode_bits_do_not_change_key(tmp_path):
    k1 = key_of(tmp_path / "one", BASE)
    # group-writable, other-readable bits differ (umask 002 vs 022): same key
    files = variant(**{"a.txt": (b"alpha", 0o664), "bin/run": (b"#!/bin/sh\n", 0o775)})
    k2 = key_of(tmp_path / "elsewhere" / "two", files)
    assert k1 == k2


def test_uid_does_not_change_key(tmp_path):
    require_root("chown to another uid")
    k1 = key_of(tmp_path / "one", BASE)
    k2_root = tmp_path / "two"
    k2 = key_of(k2_root, BASE)
    for rel in ("a.txt", "bin/run"):
        os.chown(k2_root / rel, 1234, 1234)
    action = make_action(label=LABEL, mnemonic="Test", run=_run,
                         inputs=[SourceFile(k2_root / r, r) for r in BASE])
    inputs = [FileDigests(None).digest(s) for s in action.inputs]
    assert action_key(key_manifest(action, inputs, [])) == k1 == k2


def test_umask_in_fresh_checkout_same_key(tmp_path):
    """Two checkouts made under different umasks by a real process (cp)."""
    src = tmp_path / "src"
    key_of(src, BASE)
    keys = []
    for i, umask in enumerate(("022", "002")):
        dest = tmp_path / f"co{i}"
        subprocess.run(["sh", "-c", f"umask {umask} && cp -r --no-preserve=mode {src} {dest}"], check=True)
        action = make_action(label=LABEL, mnemonic="Test", run=_run,
                             inputs=[SourceFile(dest / r, r) for r in BASE])
        inputs = [FileDigests(None).digest(s) for s in action.inputs]
        keys.append(action_key(key_manifest(action, inputs, [])))
    assert keys[0] == keys[1]


def test_float_params_are_refused():
    with pytest.raises(TypeError, match="float"):
        make_action(label=LABEL, mnemonic="T", run=_run, params={"x": 1.5})


def test_memo_reads_no_content_when_stat_unchanged(tmp_path):
    memo_path = tmp_path / "memo.json"
    memo = FileDigests(memo_path)
    key_of(tmp_path / "w", BASE, memo=memo)
    memo.save()
    again = FileDigests(memo_path)
    srcs = [SourceFile(tmp_path / "w" / r, r) for r in BASE]
    first = [again.digest(s) for s in srcs]
    assert again.hashed == 0
    (tmp_path / "w" / "a.txt").write_bytes(b"alpha!")
    assert again.digest(srcs[0]) != first[0] and again.hashed == 1
    assert isinstance(first[2], InputDigest) and first[2].symlink == "a.txt"


def test_key_manifest_has_no_absolute_paths(tmp_path):
    action = make_action(label=LABEL, mnemonic="T", run=_run, inputs=[SourceFile(tmp_path / "f", "f")])
    (tmp_path / "f").write_text("x")
    manifest = key_manifest(action, [FileDigests(None).digest(action.inputs[0])], [])
    assert str(tmp_path) not in repr(manifest)




def test_result_identity_covers_everything_a_consumer_reads():
    """Regression (issue 11, bug 2): an image reads a layer's digest, size, media type and
    diff_id, so each of them is in the identity downstream keys see. A zstd layer with the
    same diff_id as a gzip one must re-key the image on it."""
    from forge.core.actions import ActionResult
    from forge.core.cas import Descriptor

    gz = Descriptor("sha256:" + "a" * 64, 10, "application/vnd.oci.image.layer.v1.tar+gzip",
                    diff_id="sha256:" + "d" * 64)
    variants = [
        gz,
        Descriptor(gz.digest, gz.size, "application/vnd.oci.image.layer.v1.tar+zstd", gz.diff_id),
        Descriptor("sha256:" + "b" * 64, gz.size, gz.media_type, gz.diff_id),
        Descriptor(gz.digest, 11, gz.media_type, gz.diff_id),
        Descriptor(gz.digest, gz.size, gz.media_type, "sha256:" + "e" * 64),
        Descriptor(gz.digest, gz.size, gz.media_type, gz.diff_id, platform="linux/amd64"),
    ]
    digests = {ActionResult.make({"layer": d}).digest for d in variants}
    assert len(digests) == len(variants)
    assert ActionResult.make({"layer": gz}, metadata={"n": 1}).digest != ActionResult.make({"layer": gz}).digest
    # ...and nothing else: the log is not part of what a consumer reads
    assert ActionResult.make({"layer": gz}, log="sha256:" + "f" * 64).digest == ActionResult.make({"layer": gz}).digest
