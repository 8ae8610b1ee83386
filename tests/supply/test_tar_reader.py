"""The SBOM scan's own tar reader reads every layer format as tarfile does, and leaves
what it does not know to tarfile."""

from __future__ import annotations

import io
import tarfile

import pytest

from forge.core import sbom
from forge.core.cas import CAS
from forge.core.sbom import scan
from tests.supply.test_sbom import STANZA, _image
from tests.supply.util import STATUS

LONG = "usr/lib/python3.11/site-packages/" + "very-long-directory-name/" * 5 + "module.py"


def _entries(fmt: int) -> list[tarfile.TarInfo]:
    def info(name: str, kind: bytes = tarfile.REGTYPE, **attrs) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        for key, value in attrs.items():
            setattr(ti, key, value)
        return ti

    out = [info("usr/", tarfile.DIRTYPE), info("usr/bin/tool", size=3 * 512 + 7, mode=0o755),
           info("usr/bin/empty", size=0), info("usr/bin/tool-link", tarfile.LNKTYPE, linkname="usr/bin/tool"),
           info("usr/lib/libz.so", tarfile.SYMTYPE, linkname="libz.so.1.2.13"),
           info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), info("run/fifo", tarfile.FIFOTYPE),
           info("var/lib/dpkg/status.d/.wh.old", size=0), info("etc/.wh..wh..opq", size=0),
           info(LONG, size=100)]
    if fmt != tarfile.USTAR_FORMAT:  # what only GNU and pax can say
        out += [info("usr/share/doc/ünïcödé.txt", size=5),
                info("usr/lib/deep-link", tarfile.SYMTYPE, linkname="../" * 40 + LONG)]
    if fmt == tarfile.PAX_FORMAT:
        out.append(info("usr/bin/ping", size=9, pax_headers={"SCHILY.xattr.security.capability": "\x01\x00"}))
    return out


def _tar(fmt: int, entries: list[tarfile.TarInfo], **kwargs) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kwargs) as tf:
        for n, ti in enumerate(entries):
            tf.addfile(ti, io.BytesIO(bytes([n % 251]) * ti.size) if ti.isfile() else None)
    return buf.getvalue()


def _read(members) -> list[tuple]:
    out = []
    for member, data in members:
        content = data().read() if member.isfile() else None
        out.append((member.name, member.type, member.size, member.linkname, member.isfile(),
                    member.isdir(), member.issym(), member.islnk(), content))
    return out


def _tarfile(data: bytes) -> list[tuple]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
        return _read((m, lambda m=m: tf.extractfile(m)) for m in tf)


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_the_fast_reader_reads_what_tarfile_reads(fmt):
    data = _tar(fmt, _entries(fmt))
    expected = _tarfile(data)
    assert len(expected) == len(_entries(fmt)) and any(e[0] == LONG for e in expected)
    assert _read(sbom._fast_members(io.BytesIO(data))) == expected
    # a member whose data the reader leaves unread is skipped as well
    names = [m.name for m, _ in sbom._fast_members(io.BytesIO(data))]
    assert names == [e[0] for e in expected]


def test_what_the_fast_reader_does_not_know_goes_to_tarfile(tmp_path):
    # a global pax header (tarfile applies its keys to every member): the fast reader
    # stops, the scan reads the layer with tarfile, and the state is what tarfile says
    entries = [tarfile.TarInfo("var/lib/dpkg/status"), tarfile.TarInfo("var/lib/dpkg/status.d/libqq2")]
    entries[0].size, entries[1].size = len(STATUS), len(STANZA)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as tf:
        tf.addfile(entries[0], io.BytesIO(STATUS.encode()))
        tf.addfile(entries[1], io.BytesIO(STANZA))
    with pytest.raises(sbom._Unusual):
        list(sbom._fast_members(io.BytesIO(buf.getvalue())))
    cas = CAS(tmp_path / "cas")
    state = scan(cas, _image(cas, buf.getvalue()))
    assert sorted(state.entries) == ["var/lib/dpkg/status", "var/lib/dpkg/status.d/libqq2"]
    assert [p.name for p in sbom.packages(cas, state)] == ["base-files", "libqq2", "libzz1"]
    # a bad checksum too (tarfile then decides: here, the end of the archive)
    data = bytearray(_tar(tarfile.GNU_FORMAT, _entries(tarfile.GNU_FORMAT)))
    data[148:156] = b"0000000\0"
    with pytest.raises(sbom._Unusual):
        list(sbom._fast_members(io.BytesIO(bytes(data))))


def test_a_truncated_layer_is_an_sbom_error(tmp_path):
    data = _tar(tarfile.GNU_FORMAT, _entries(tarfile.GNU_FORMAT))
    with pytest.raises(sbom.SbomError, match="unexpected end of data"):
        _read(sbom._fast_members(io.BytesIO(data[:512 + 700])))
    cas = CAS(tmp_path / "cas")
    with pytest.raises(sbom.SbomError, match="not a readable tar"):
        scan(cas, _image(cas, data[:512 * 3 + 700]))
