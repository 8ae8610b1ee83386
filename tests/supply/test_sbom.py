"""SBOMs: the packages of the image's dpkg database, layer by layer, as SPDX 2.3 and
CycloneDX 1.6 that their own libraries validate."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

import forge
from forge.core import sbom
from forge.core.cas import CAS
from forge.core.sbom import PackageState, packages, scan
from tests.services import testdata
from tests.supply.util import BUSYBOX, OS_RELEASE, STATUS, SUPPLY, out_json, target, workspace_files


def validate_spdx(path) -> None:
    """Parse the file back with spdx-tools and validate it (the writer validated too)."""
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    problems = validate_full_spdx_document(parse_file(str(path)))
    assert not problems, [p.validation_message for p in problems]


def validate_cyclonedx(path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(path.read_text()) is None


def test_sbom_of_an_image_lists_its_installed_packages_and_validates(forge_workspace):
    ws = forge_workspace(workspace_files(testdata(BUSYBOX), config=SUPPLY))
    out = ws.run("build", "//:app", "--json").assert_success()
    statuses = out.statuses()
    assert statuses["//:app#Sbom.4"] == "built"
    assert statuses["//:app#SbomDraft.3"] == "built"
    assert statuses["//:app#ImagePackages.1"] == statuses["//:app#SbomPackages.2"] == "built"
    assert statuses["//:base#ImagePackages.1"] == "built"  # the base's scan, reused by //:app's
    spdx = out_json(ws, "//:app", "sbom.spdx.json")
    names = sorted((p["name"], p.get("versionInfo")) for p in spdx["packages"]
                   if p["SPDXID"].startswith("SPDXRef-Package-deb-"))
    assert names == [("base-files", "12.4+deb12u5"), ("libzz1", "1:1.2.13.dfsg-1")]  # not oldtool
    image = next(p for p in spdx["packages"] if p["SPDXID"] == "SPDXRef-Image")
    digest = out.summary()["targets"][0]["digest"]
    assert image["checksums"] == [{"algorithm": "SHA256", "checksumValue": digest.split(":")[1]}]
    purls = {r["referenceLocator"] for p in spdx["packages"] for r in p.get("externalRefs", [])}
    assert "pkg:deb/debian/libzz1@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zz" in purls
    assert spdx["creationInfo"]["created"] == "1970-01-01T00:00:00Z"  # SOURCE_DATE_EPOCH
    validate_spdx(ws.root / "forge-out/app/sbom.spdx.json")
    validate_cyclonedx(ws.root / "forge-out/app/sbom.cdx.json")
    cdx = out_json(ws, "//:app", "sbom.cdx.json")
    assert cdx["metadata"]["component"]["version"] == digest
    assert sorted(c["name"] for c in cdx["components"]) == ["base-files", "debian", "libzz1"]

    again = ws.run("build", "//:app", "--json").assert_success()  # a no-op: all cached
    assert again.executed() == []
    # query prints the document forge-out holds, byte for byte
    query = ws.run("query", "sbom", "//:app").assert_success()
    assert query.stdout == (ws.root / "forge-out/app/sbom.spdx.json").read_text()
    query = ws.run("query", "sbom", "//:app", "--format", "cyclonedx").assert_success()
    assert json.loads(query.stdout)["serialNumber"] == cdx["serialNumber"]


def test_supply_chain_is_off_by_default_and_query_builds_what_it_needs(forge_workspace):
    ws = forge_workspace(workspace_files(testdata(BUSYBOX)))
    out = ws.run("build", "//:app", "--json").assert_success()
    assert not [a for a in out.statuses() if "Sbom" in a or "Provenance" in a]
    assert not (ws.root / "forge-out/app/sbom.spdx.json").exists()
    query = ws.run("query", "sbom", "//:app").assert_success()
    assert '"name": "libzz1"' in query.stdout
    assert ws.run("query", "sbom", "//:conf").assert_failure(2).stderr.count("not an image target")


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _image(cas: CAS, *layers: bytes) -> forge.Image:
    stored = [forge.oci.store_tar(cas, io.BytesIO(data)) for data in layers]
    image = forge.append_layers(forge.EMPTY_IMAGE, *stored)
    image = forge.with_config(image, platform=forge.parse_platform("amd64"))
    forge.store_image(cas, image)
    return image


STANZA = b"Package: libqq2\nStatus: install ok installed\nVersion: 2.0-1\nArchitecture: amd64\n"


def test_scan_applies_whiteouts_and_opaque_directories_and_reuses_a_base_scan(tmp_path):
    cas = CAS(tmp_path / "cas")
    lib = b"\x7fELF not really"
    md5 = __import__("hashlib").md5(lib).hexdigest()
    lower = _tar([("var/lib/dpkg/status", STATUS.encode()),
                  ("var/lib/dpkg/status.d/libqq2", STANZA),
                  ("var/lib/dpkg/status.d/libqq2.md5sums", f"{md5}  usr/lib/libqq.so.2\n".encode()),
                  ("usr/lib/libqq.so.2", lib)])
    base = _image(cas, lower)
    state = scan(cas, base)
    assert [p.name for p in packages(cas, state)] == ["base-files", "libqq2", "libzz1"]
    qq = next(p for p in packages(cas, state) if p.name == "libqq2")
    assert qq.md5sums == {"usr/lib/libqq.so.2": md5}
    assert state.hashes["usr/lib/libqq.so.2"]["sha256"] == __import__("hashlib").sha256(lib).hexdigest()

    # an upper layer removes the status.d record (whiteout) and hides status (opaque dir)
    upper = _tar([("var/lib/dpkg/status.d/.wh.libqq2", b""), ("var/lib/dpkg/.wh..wh..opq", b""),
                  ("var/lib/dpkg/status", STANZA.replace(b"libqq2", b"newpkg"))])
    image = _image(cas, lower, upper)
    fresh = scan(cas, image)
    reused = scan(cas, image, PackageState.from_bytes(state.to_bytes()))
    assert reused.to_bytes() == fresh.to_bytes()
    assert [p.name for p in packages(cas, fresh)] == ["newpkg"]
    assert fresh.layers == [layer.digest for layer in image.layers]
    with pytest.raises(ValueError):
        scan(cas, base, fresh)  # a state that is not a prefix


def test_a_bound_draft_is_the_document_written_for_the_image_and_validates(tmp_path):
    cas = CAS(tmp_path / "cas")
    lib = b"\x7fELF not really"
    md5 = __import__("hashlib").md5(lib).hexdigest()
    state = scan(cas, _image(cas, _tar([
        ("var/lib/dpkg/status", STATUS.encode()), ("etc/os-release", OS_RELEASE.encode()),
        ("var/lib/dpkg/status.d/libqq2", STANZA),
        ("var/lib/dpkg/status.d/libqq2.md5sums", f"{md5}  usr/lib/libqq.so.2\n".encode()),
        ("usr/lib/libqq.so.2", lib)])))
    pkgs, distro = packages(cas, state), sbom.os_release(cas, state)
    assert distro["ID"] == "debian" and state.hashes
    draft = sbom.draft_subject("//app:img", "linux/arm64/v8", 1700000000)
    writers = {"spdx": sbom.spdx_json, "cyclonedx": sbom.cyclonedx_json}
    drafts = {kind: write(draft, pkgs, distro, state.hashes, "forge-test") for kind, write in writers.items()}
    for digest in ("sha256:" + "f" * 64, "sha256:" + __import__("hashlib").sha256(b"an image").hexdigest()):
        subject = sbom.ImageSubject(draft.name, digest, draft.platform, draft.epoch)
        for kind, write in writers.items():
            bound = sbom.bind(kind, drafts[kind], subject)
            # byte for byte what the library writes (and validates) for the image itself
            assert bound == write(subject, pkgs, distro, state.hashes, "forge-test")
            assert digest.split(":")[1] in bound.decode() and sbom.PLACEHOLDER_DIGEST[7:] not in bound.decode()
            (tmp_path / f"doc.{kind}.json").write_bytes(bound)
            (validate_spdx if kind == "spdx" else validate_cyclonedx)(tmp_path / f"doc.{kind}.json")
    subject = sbom.ImageSubject(draft.name, "sha256:" + "f" * 64, draft.platform, draft.epoch)
    with pytest.raises(sbom.SbomError, match="not sha256"):
        sbom.bind("spdx", drafts["spdx"], sbom.ImageSubject(draft.name, "sha256:F00", draft.platform))
    with pytest.raises(sbom.SbomError, match="not a draft"):  # a document, not a draft
        sbom.bind("cyclonedx", sbom.bind("cyclonedx", drafts["cyclonedx"], subject), subject)
    with pytest.raises(sbom.SbomError, match="outside the image's own fields"):
        hidden = drafts["spdx"].replace(b'"name": "libqq2"', f'"name": "libqq2 {"0" * 64}"'.encode())
        sbom.bind("spdx", hidden, subject)
    with pytest.raises(sbom.SbomError, match="not a draft"):  # a draft of another platform
        sbom.bind("spdx", drafts["spdx"], sbom.ImageSubject(draft.name, subject.digest, "linux/amd64"))


def test_an_edit_that_leaves_the_packages_re_binds_the_drafts(forge_workspace):
    ws = forge_workspace(workspace_files(testdata(BUSYBOX), config=SUPPLY))
    ws.run("build", "//:app").assert_success()
    first = out_json(ws, "//:app", "sbom.cdx.json")
    ws.write({"app/app.conf": "mode = prod\n"})
    out = ws.run("build", "//:app", "--json").assert_success()
    assert {"//:app#ImagePackages.1", "//:app#SbomPackages.2", "//:app#Sbom.4"} <= set(out.executed())
    assert "//:app#SbomDraft.3" not in out.executed()  # the same package state: a cache hit
    cdx = out_json(ws, "//:app", "sbom.cdx.json")
    assert cdx["metadata"]["component"]["version"] == target(out, "//:app")["digest"] != \
        first["metadata"]["component"]["version"]
    assert cdx["components"] == first["components"]
    validate_spdx(ws.root / "forge-out/app/sbom.spdx.json")
    validate_cyclonedx(ws.root / "forge-out/app/sbom.cdx.json")


def test_a_misspelt_supply_chain_key_is_a_config_error(forge_workspace):
    ws = forge_workspace(workspace_files(testdata(BUSYBOX), config="[plugins.supply_chain]\nsbomm = true\n"))
    out = ws.run("build", "//:app").assert_failure(2)
    assert "unknown key 'sbomm'" in out.stderr and "sbom" in out.stderr
