"""The delta format and codecs without an engine: codec round trips, source choice, and the
applier running with nothing of forge on its path."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import forge
from forge import delta_apply
from forge.core.oci import delta as core_delta
from forge.plugins.deltas import Bsdiff4Codec, ZstdPatchCodec


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("codec", [ZstdPatchCodec(), Bsdiff4Codec()], ids=["zstd", "bsdiff"])
def test_codecs_rebuild_the_tar_bit_for_bit(codec, tmp_path):
    blob = os.urandom(1 << 20)
    old = tmp_path / "old.tar"
    old.write_bytes(tar_of({"lib/libmine.so": blob, "etc/conf": b"v=1\n"}))
    edited = bytearray(blob)
    edited[5000:5008] = b"EDITED!!"
    new = tmp_path / "new.tar"
    new.write_bytes(tar_of({"lib/libmine.so": bytes(edited), "etc/conf": b"v=2\n", "etc/new": b"x"}))
    out = io.BytesIO()
    level = 3 if codec.name == "zstd" else None
    codec.make([old], new, out, level)
    assert len(out.getvalue()) < 2000  # a one-spot edit of a 1 MiB file
    delta = tmp_path / "delta"
    delta.write_bytes(out.getvalue())
    rebuilt = io.BytesIO()
    decoder, why = delta_apply.decoder_for(codec.media_type)
    assert decoder is not None, why
    decoder(old.read_bytes(), delta, rebuilt)
    assert rebuilt.getvalue() == new.read_bytes()
    # deterministic: the same inputs give the same delta (it is a cached action's output)
    again = io.BytesIO()
    codec.make([old], new, again, level)
    assert again.getvalue() == out.getvalue()
    assert codec.fingerprint(level) == codec.fingerprint(level)


def test_a_truncated_or_padded_zstd_delta_is_refused(tmp_path):
    old = tmp_path / "old.tar"
    old.write_bytes(tar_of({"a": os.urandom(100_000)}))
    new = tmp_path / "new.tar"
    new.write_bytes(tar_of({"a": os.urandom(100_000)}))
    out = io.BytesIO()
    ZstdPatchCodec().make([old], new, out, 3)
    for bad in (out.getvalue()[:-10], out.getvalue() + b"extra"):
        (tmp_path / "d").write_bytes(bad)
        with pytest.raises(delta_apply.Refused):
            delta_apply.decode_zstd_patch(old.read_bytes(), tmp_path / "d", io.BytesIO())


def test_sources_are_the_old_layers_sharing_a_path():
    def t(name, members, size=10):
        return core_delta.LayerTar(name, Path(name), size, frozenset(members))

    base, app, other = t("base", {"var/lib/dpkg/status", "bin/sh"}), t("app", {"opt/app/x"}), t("o", {"srv/y"})
    new = t("new", {"var/lib/dpkg/status", "usr/bin/hello", "opt/app/x"})
    assert [s.diff_id for s in core_delta.choose_sources(new, [base, app, other])] == ["base", "app"]
    # over the budget: the most overlapping first
    big = t("big", {"opt/app/x"}, size=100)
    assert [s.diff_id for s in core_delta.choose_sources(new, [base, big], limit=50)] == ["base"]
    assert core_delta.choose_sources(t("n", {"unrelated"}), [base, app]) == []


def test_codecs_are_plugins_with_did_you_mean():
    codecs = forge.oci.delta_codecs()
    assert {"zstd", "bsdiff"} <= set(codecs.names())
    with pytest.raises(forge.ConfigError, match="did you mean 'zstd'"):
        codecs.get("zstdd")
    with pytest.raises(forge.ConfigError, match="registered twice"):
        codecs.add(ZstdPatchCodec())


def test_the_applier_imports_nothing_of_forge(tmp_path):
    """A device has delta_apply.py and pyzstd: run it with only its own directory (and, for
    the zstd codec, a directory holding pyzstd and what pyzstd needs) on sys.path."""
    device = tmp_path / "device"
    device.mkdir()
    shutil.copy(delta_apply.__file__, device / "delta_apply.py")
    probe = ("import sys; import delta_apply; "
             "names = sys.stdlib_module_names; "
             "print(sorted({m.split('.')[0] for m in sys.modules} - set(names) - {'delta_apply', '__main__'}))")
    # -I -S: no site-packages, no PYTHONPATH, no cwd; the device directory alone
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(device)!r}); {probe}"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    helped = subprocess.run([sys.executable, "-I", "-S", str(device / "delta_apply.py"), "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "--base-engine" in helped.stdout, helped.stderr

    # a real apply: a delta layout, a base layout, an output layout; pyzstd beside the file
    import backports.zstd
    import pyzstd
    import typing_extensions

    site = tmp_path / "site"
    site.mkdir()
    for module in (pyzstd, typing_extensions):
        src = Path(module.__file__)
        target = src.parent if src.name == "__init__.py" else src
        (site / target.name).symlink_to(target)
    (site / "backports").symlink_to(Path(backports.zstd.__file__).parent.parent)
    base_tar = tar_of({"lib/libmine.so": os.urandom(200_000)})
    new_tar = tar_of({"lib/libmine.so": base_tar[1024:100_000] + b"new" + base_tar[100_000:]})
    layout, deltas = _one_layer_layouts(tmp_path, base_tar, new_tar)
    script = (f"import sys; sys.path[:0] = [{str(device)!r}, {str(site)!r}]; import delta_apply; "
              f"sys.exit(delta_apply.main([{str(deltas)!r}, '--base-layout', {str(layout)!r}, "
              f"'--output', {str(tmp_path / 'out')!r}, '--work-dir', {str(tmp_path / 'work')!r}]))")
    ran = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "delta" in ran.stdout
    index = json.loads((tmp_path / "out/index.json").read_bytes())
    manifest = json.loads((tmp_path / "out/blobs/sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    layer = manifest["layers"][0]
    assert (tmp_path / "out/blobs/sha256" / layer["digest"][7:]).read_bytes() == new_tar


def _one_layer_layouts(tmp_path: Path, base_tar: bytes, new_tar: bytes) -> tuple[Path, Path]:
    """A base OCI layout (one uncompressed layer) and a delta layout to a one-layer target,
    written with forge's own maker."""
    from forge.core.cas import CAS
    from forge.core.oci.image import EMPTY_IMAGE, Layer, append_layers, store_image, with_config
    from forge.core.oci.layout import write_layout

    cas = CAS(tmp_path / "cas")

    def image(tar: bytes):
        d = cas.put_bytes(tar)
        img = with_config(append_layers(EMPTY_IMAGE, Layer(d.digest, d.digest, d.size, forge.oci.media.OCI_LAYER)),
                          platform="linux/amd64")
        store_image(cas, img)
        return img

    old, new = image(base_tar), image(new_tar)
    layout = write_layout(cas, old, tmp_path / "base-layout")
    made = core_delta.make_image_delta(cas, new, old, ZstdPatchCodec(), 3, tmp_path)
    return layout, core_delta.write_delta_layout(cas, [made], tmp_path / "delta-layout")
