"""minimize and production on synthetic images (hand-made ELF files): the rule's
attributes, the report, `forge query why`, the fit to the production base, and the
assembly of the production image — no container anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forge.core.cas import CAS
from forge.core.elf import DirectoryRootFS
from forge.core.elf.harvest import HarvestRequest, harvest, why_chain
from forge.core.oci.image import load_image
from forge.core.oci.validate import validate_image
from forge.rules.production import packages_dockerfile, production_env
from tests.minimize.util import (
    MULTIARCH,
    build_tree,
    layer_members,
    prod_tree,
    rootfs_tar,
    write_tree,
)

BASES = """\
oci_import(name = "build-root", src = "build.tar", platform = "amd64")
image(name = "build", base = ":build-root", env = {"LD_LIBRARY_PATH": "/usr/local/lib"})
oci_import(name = "prod", src = "prod.tar", platform = "amd64")
"""

# What the defaults take from build_tree(), with the libraries the ELF files there need
# (the plugin under /opt/plugins is not asked for, so neither is libextra).
DEFAULT_LAYER = {
    "etc": "dir", "etc/ssl": "dir", "etc/ssl/certs": "dir", "etc/ssl/certs/ca.pem": "file",
    "lib": "dir", MULTIARCH: "dir",
    f"{MULTIARCH}/ld-linux-x86-64.so.2": "file",
    f"{MULTIARCH}/libc.so.6": "file",
    f"{MULTIARCH}/libm.so.6": "file",
    f"{MULTIARCH}/libz.so.1": "-> libz.so.1.2.13",
    f"{MULTIARCH}/libz.so.1.2.13": "file",
    "lib64": "dir", "lib64/ld-linux-x86-64.so.2": "-> /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "opt": "dir", "opt/vendor": "dir", "opt/vendor/lib": "dir",
    "opt/vendor/lib/libvendor.so.2": "file",
    "usr": "dir", "usr/bin": "dir", "usr/bin/python3": "-> python3.11",
    "usr/bin/python3.11": "file",
    "usr/lib": "dir", "usr/lib/python3.11": "dir", "usr/lib/python3.11/os.py": "file",
    "usr/local": "dir", "usr/local/bin": "dir", "usr/local/bin/prog": "file",
    "usr/local/bin/run.sh": "file",
    "usr/local/include": "dir", "usr/local/include/mine.h": "file",
    "usr/local/lib": "dir", "usr/local/lib/libmine.a": "file",
    "usr/local/lib/libmine.so": "-> libmine.so.1", "usr/local/lib/libmine.so.1": "-> libmine.so.1.0.0",
    "usr/local/lib/libmine.so.1.0.0": "file",
}


def workspace(forge_workspace, targets: str, *, build: dict | None = None,
              prod: dict | None = None, name: str = "ws", cache: Path | None = None):
    return forge_workspace({
        "p/BUILD": BASES + targets,
        "p/build.tar": rootfs_tar(build or build_tree()),
        "p/prod.tar": rootfs_tar(prod or prod_tree()),
    }, name=name, cache=cache)


def target(out, label: str) -> dict:
    return next(t for t in out.summary()["targets"] if t["label"] == label)


def report_of(ws, out, label: str) -> dict:
    return json.loads(CAS(ws.cache / "cas").read_bytes(target(out, label)["outputs"]["report"]))


def members_of(ws, out, label: str) -> dict[str, str]:
    return layer_members(CAS(ws.cache / "cas").path(target(out, label)["outputs"]["layer"]))


def test_defaults_take_atoms_paths_and_every_library_they_need(forge_workspace):
    ws = workspace(forge_workspace, 'minimize(name = "min", image = ":build")\n')
    out = ws.run("build", "//p:min", "--json").assert_success()
    assert members_of(ws, out, "//p:min") == DEFAULT_LAYER
    report = report_of(ws, out, "//p:min")
    assert report["absent"] == ["/opt/venv"]  # a default the image lacks is skipped
    assert report["search_dirs"] == ["/opt/vendor/lib", "/usr/local/lib"]
    assert report["totals"] == {"files": 13, "symlinks": 5, "dirs": 6, "bytes": 2544,
                                "libraries": 6, "provided_by_base": 0,
                                "excluded_libraries": 0, "missing": 0}
    # the layer and its report are materialized side by side
    assert (ws.root / "forge-out/p/min/layer.tar.gz").is_file()
    assert json.loads((ws.root / "forge-out/p/min/report.json").read_text()) == report
    # no executor: the action ran here, reading the image's layers
    assert out.executed() == ["//p:build#Image.0", "//p:build-root#OciImport.0",
                              "//p:min#Minimize.0"]
    assert ws.run("build", "//p:min", "--json").assert_success().executed() == []


def test_the_report_says_who_needed_each_library_through_which_soname_and_directory(
        forge_workspace):
    ws = workspace(forge_workspace, 'minimize(name = "min", image = ":build", '
                                    'additional_lib_locations = ["/opt/plugins/*.so"])\n')
    out = ws.run("build", "//p:min", "//p:build", "--json").assert_success()
    report = report_of(ws, out, "//p:min")
    assert report["files"]["/usr/lib/x86_64-linux-gnu/libextra.so.1"]["needed"] == [{
        "opened": "/usr/lib/x86_64-linux-gnu/libextra.so.1",
        "needed_by": "/opt/plugins/libplug.so", "soname": "libextra.so.1",
        "search_dir": "/usr/lib/x86_64-linux-gnu", "how": "default",
    }]
    assert report["files"]["/opt/plugins/libplug.so"]["requested"] == [
        "additional_lib_locations /opt/plugins/*.so"]
    real = report["files"][f"/{MULTIARCH}/libz.so.1.2.13"]
    assert real["kind"] == "file" and real["size"] > 0
    assert {(n["needed_by"], n["soname"], n["search_dir"], n["how"]) for n in real["needed"]} == {
        ("/usr/local/bin/prog", "libz.so.1", "/lib/x86_64-linux-gnu", "default"),
        ("/usr/local/lib/libmine.so.1", "libz.so.1", "/lib/x86_64-linux-gnu", "default"),
        ("/usr/local/lib/libmine.so.1.0.0", "libz.so.1", "/lib/x86_64-linux-gnu", "default"),
    }
    assert report["files"]["/opt/vendor/lib/libvendor.so.2"]["needed"][0]["how"] == "ld.so.conf"
    mine = report["files"]["/usr/local/lib/libmine.so.1.0.0"]
    assert mine["requested"] == ["paths /usr/local/lib"]
    assert mine["needed"][0]["how"] == "ld_library_path"
    loader = report["libraries"]["/lib64/ld-linux-x86-64.so.2"]
    assert (loader["realpath"], loader["links"], loader["status"]) == (
        f"/{MULTIARCH}/ld-linux-x86-64.so.2", ["/lib64/ld-linux-x86-64.so.2"], "kept")
    assert {"needed_by": "/usr/local/bin/prog", "how": "interp", "search_dir": "/lib64",
            "soname": "/lib64/ld-linux-x86-64.so.2"} in loader["reasons"]
    # libc names the loader by soname: the loaded interpreter answers it
    assert {"needed_by": f"/{MULTIARCH}/libc.so.6", "how": "interp", "search_dir": "/lib64",
            "soname": "ld-linux-x86-64.so.2"} in loader["reasons"]
    assert report["platform"] == "linux/amd64"
    assert "image" not in report  # not a digest that re-keys dependents (see harvest_action)


def test_query_why_prints_the_chain_back_to_the_requested_path(forge_workspace):
    tree = build_tree()
    # prog no longer needs libz itself: it comes in through libmine only
    from tests.minimize.util import elf
    tree["usr/local/bin/prog"] = elf(program=True, needed=("libmine.so.1", "libc.so.6"))
    ws = workspace(forge_workspace, 'minimize(name = "min", image = ":build", '
                                    'paths = ["/usr/local/bin"])\n', build=tree)
    out = ws.run("query", "why", "//p:min", f"/{MULTIARCH}/libz.so.1.2.13").assert_success()
    assert out.stdout.splitlines() == [
        f"/{MULTIARCH}/libz.so.1.2.13: file, 277 bytes",
        "  <- needed by /usr/local/lib/libmine.so.1: libz.so.1 in /lib/x86_64-linux-gnu "
        "(via a system directory), opened as /lib/x86_64-linux-gnu/libz.so.1",
        "  <- needed by /usr/local/bin/prog: libmine.so.1 in /usr/local/lib (via LD_LIBRARY_PATH)",
        "  <- requested by paths /usr/local/bin",
    ]
    out = ws.run("query", "why", "//p:min", "/usr/local/bin/prog").assert_success()
    assert out.stdout.splitlines()[1:] == ["  <- requested by paths /usr/local/bin"]
    out = ws.run("query", "why", "//p:min", f"/{MULTIARCH}/libz.so.1.3").assert_failure(2)
    assert f"not in the layer (did you mean '/{MULTIARCH}/libz.so.1" in out.stderr
    out = ws.run("query", "why", "//p:build", "/usr/local/bin/prog").assert_failure(2)
    assert "//p:build is a image target" in out.stderr


def test_exclude_leaves_paths_and_the_libraries_under_them_out(forge_workspace):
    ws = workspace(forge_workspace, 'minimize(name = "min", image = ":build", exclude = '
                                    '["/usr/local/include", "*.a", "/opt/vendor", "*/python3*"])\n')
    out = ws.run("build", "//p:min", "--json").assert_success()
    members = members_of(ws, out, "//p:min")
    gone = {m for m in DEFAULT_LAYER if m.startswith(("usr/local/include", "opt", "usr/bin",
                                                      "usr/lib"))}
    gone |= {"usr/local/lib/libmine.a", f"{MULTIARCH}/libm.so.6"}  # only python needed libm
    assert set(members) == set(DEFAULT_LAYER) - gone
    report = report_of(ws, out, "//p:min")
    assert report["excluded"] == {"*.a": 1, "*/python3*": 3, "/usr/local/include": 1}
    vendor = report["libraries"]["/opt/vendor/lib/libvendor.so.2"]
    assert (vendor["status"], vendor["exclude"]) == ("excluded", "/opt/vendor")
    assert report["missing"] == []  # left out on purpose is not missing
    out = ws.run("query", "why", "//p:min", "/opt/vendor/lib/libvendor.so.2").assert_success()
    assert out.stdout.splitlines()[0] == ("/opt/vendor/lib/libvendor.so.2: not in the layer: "
                                          "left out by exclude '/opt/vendor'")


def test_production_base_libraries_are_left_out_when_identical(forge_workspace):
    ws = workspace(forge_workspace, 'minimize(name = "min", image = ":build", '
                                    'production_base = ":prod")\n')
    out = ws.run("build", "//p:min", "//p:prod", "--json").assert_success()
    members = members_of(ws, out, "//p:min")
    # same path, same content in the base: libc and the loader (with its /lib64 link)
    assert set(DEFAULT_LAYER) - set(members) == {
        f"{MULTIARCH}/libc.so.6", f"{MULTIARCH}/ld-linux-x86-64.so.2", "lib64",
        "lib64/ld-linux-x86-64.so.2"}
    # the base's libz.so.1 is another file (1.2.11): ours stays
    assert members[f"{MULTIARCH}/libz.so.1.2.13"] == "file"
    report = report_of(ws, out, "//p:min")
    statuses = {k: v["status"] for k, v in report["libraries"].items()}
    assert statuses[f"/{MULTIARCH}/libc.so.6"] == "provided_by_base"
    assert statuses["/lib64/ld-linux-x86-64.so.2"] == "provided_by_base"
    assert statuses[f"/{MULTIARCH}/libz.so.1"] == "kept"
    assert "production_base" not in report
    why = ws.run("query", "why", "//p:min", f"/{MULTIARCH}/libc.so.6").assert_success()
    assert "the production base already has it (same content)" in why.stdout


def test_a_missing_library_fails_naming_file_and_soname_or_warns(forge_workspace):
    tree = build_tree()
    del tree[f"{MULTIARCH}/libz.so.1"], tree[f"{MULTIARCH}/libz.so.1.2.13"]
    ws = workspace(forge_workspace, 'minimize(name = "min", image = ":build")\n'
                                    'minimize(name = "lax", image = ":build", missing = "warn")\n',
                   build=tree)
    out = ws.run("build", "//p:min").assert_failure(1)
    assert "3 needed libraries are not in image sha256:" in out.stderr
    for line in ("/usr/local/bin/prog -> libz.so.1", "/usr/local/lib/libmine.so.1 -> libz.so.1",
                 "/usr/local/lib/libmine.so.1.0.0 -> libz.so.1"):
        assert line in out.stderr
    assert 'missing = "warn"' in out.stderr
    out = ws.run("build", "//p:lax", "--json").assert_success()
    warnings = [e["message"] for e in out.events if e.get("event") == "warning"]
    assert len(warnings) == 1 and "/usr/local/bin/prog -> libz.so.1" in warnings[0]
    report = report_of(ws, out, "//p:lax")
    assert {"file": "/usr/local/bin/prog", "soname": "libz.so.1"} in report["missing"]


def test_patterns_given_must_match(forge_workspace):
    ws = workspace(forge_workspace, """\
minimize(name = "typo", image = ":build", paths = ["/usr/local/bim"])
minimize(name = "plugins", image = ":build", additional_lib_locations = ["/opt/plugin/*.so"])
minimize(name = "relative", image = ":build", additional_files = ["etc/ssl"])
""")
    out = ws.run("build", "//p:typo").assert_failure(1)
    assert "paths: '/usr/local/bim' matches nothing in the image (did you mean 'bin'?)" in out.stderr
    out = ws.run("build", "//p:plugins").assert_failure(1)
    assert "additional_lib_locations: '/opt/plugin/*.so' matches nothing" in out.stderr
    out = ws.run("build", "//p:relative").assert_failure(2)
    assert "additional_files[0] = 'etc/ssl' should be an absolute path" in out.stderr


PRODUCTION = """\
minimize(name = "min", image = ":build", production_base = ":prod")
production(
    name = "app",
    base = ":prod",
    minimized = ":min",
    entrypoint = ["/usr/local/bin/prog"],
    env = {"APP_MODE": "prod"},
    labels = {"org.opencontainers.image.title": "prog"},
)
image(name = "plain", base = ":prod", layers = [":min"])
"""
# Pinned: synthetic inputs, so the digest is the same on every machine and every run.
APP_DIGEST = "sha256:f228fb878a47688ef091d8b2bbce0dc48b88ddf8a37fee7b231cb5c416779133"


def test_production_is_pure_assembly_with_atoms_environment(forge_workspace):
    ws = workspace(forge_workspace, PRODUCTION)
    out = ws.run("build", "//p:app", "//p:min", "//p:prod", "--json",
                 env={"SOURCE_DATE_EPOCH": "0"}).assert_success()
    # no DockerBuild: nothing ran in a container
    assert out.executed() == ["//p:app#Production.0", "//p:build#Image.0",
                              "//p:build-root#OciImport.0", "//p:min#Minimize.0",
                              "//p:prod#OciImport.0"]
    app = target(out, "//p:app")
    assert app["hermetic"] is True
    cas = CAS(ws.cache / "cas")
    image = validate_image(cas, app["digest"])
    prod = load_image(cas, target(out, "//p:prod")["digest"])
    assert image.layers[:-1] == prod.layers
    assert image.layers[-1].digest == report_of(ws, out, "//p:min")["layer"]["digest"]
    config = image.config["config"]
    assert config["Env"] == [
        "PATH=/opt/venv/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LD_LIBRARY_PATH=/usr/local/lib:/opt/vendor/lib",
        "APP_MODE=prod",
    ]
    assert config["Entrypoint"] == ["/usr/local/bin/prog"]
    assert config["Labels"] == {"org.opencontainers.image.title": "prog"}
    assert image.config["history"][-1]["created_by"] == "forge minimize //p:min"
    assert app["digest"] == APP_DIGEST


def test_production_digest_is_the_same_in_another_checkout_and_cache(forge_workspace, tmp_path):
    one = workspace(forge_workspace, PRODUCTION, name="one", cache=tmp_path / "c1")
    two = workspace(forge_workspace, PRODUCTION, name="elsewhere", cache=tmp_path / "c2")
    a = one.run("build", "//p:app", "--json").assert_success()
    b = two.run("build", "//p:app", "--json").assert_success()
    assert target(a, "//p:app")["digest"] == target(b, "//p:app")["digest"]


def test_the_layer_works_in_the_image_rule_too(forge_workspace):
    ws = workspace(forge_workspace, PRODUCTION)
    out = ws.run("build", "//p:plain", "//p:min", "--json").assert_success()
    image = load_image(CAS(ws.cache / "cas"), target(out, "//p:plain")["digest"])
    assert image.layers[-1].digest == target(out, "//p:min")["outputs"]["layer"]


def test_production_refuses_a_layer_fitted_to_another_base_or_platform(forge_workspace):
    ws = workspace(forge_workspace, """\
minimize(name = "min", image = ":build", production_base = ":build")
production(name = "app", base = ":prod", minimized = ":min")
oci_import(name = "arm", src = "prod.tar", platform = "arm64")
production(name = "arm-app", base = ":arm", minimized = ":min")
production(name = "bad-pkg", base = ":build", minimized = ":min", packages = ["curl; rm -rf /"])
""")
    out = ws.run("build", "//p:app").assert_failure(2)
    assert "was fitted to production_base //p:build, not to base //p:prod" in out.stderr
    out = ws.run("build", "//p:arm-app").assert_failure(2)
    assert "harvested from a linux/amd64 image, but base //p:arm is linux/arm64/v8" in out.stderr
    out = ws.run("build", "//p:bad-pkg").assert_failure(2)
    assert "packages[0] = 'curl; rm -rf /' is not a Debian package name" in out.stderr


def test_packages_add_one_non_hermetic_docker_step_keyed_on_base_and_packages(forge_workspace):
    from forge.core.session import Session

    ws = workspace(forge_workspace, PRODUCTION + """\
production(name = "with-pkgs", base = ":prod", minimized = ":min", packages = ["libgomp1", "zlib1g=1:1.2.13.dfsg-1"])
""")
    targets, _ = Session(ws.root).analyze(["//p:with-pkgs"])
    install, assemble = targets[0].actions
    assert (install.mnemonic, install.executor, install.hermetic) == (
        "ProductionPackages", "docker", False)
    assert install.deps == (targets[0].actions[0].deps[0],)  # the base only, not the layer
    assert install.params["dockerfile_text"] == packages_dockerfile(
        ["libgomp1", "zlib1g=1:1.2.13.dfsg-1"])
    assert (assemble.mnemonic, assemble.executor, assemble.deps[0]) == ("Production", None, install)
    assert packages_dockerfile(["libgomp1"]) == (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
        "RUN apt-get update \\\n"
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 \\\n"
        " && rm -rf /var/lib/apt/lists/*\n")


def test_environment_defaults_and_overrides():
    assert production_env(None, [], {}) == {
        "PATH": "/opt/venv/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LD_LIBRARY_PATH": "/usr/local/lib"}
    env = production_env(["PATH=/bin:/opt/venv/bin", "LD_LIBRARY_PATH=/opt/cuda/lib64:"],
                         ["/usr/local/lib", "/opt/x"], {"PATH": "/custom"})
    # no empty entry (it would mean the current directory) and no duplicates
    assert env == {"PATH": "/custom", "LD_LIBRARY_PATH": "/usr/local/lib:/opt/x:/opt/cuda/lib64"}


# -- fitting to the production base --------------------------------------------------------


def merged(tree: dict) -> dict:
    """``tree`` with Debian's merged /usr: /lib is a link to usr/lib."""
    out: dict = {"lib": "usr/lib"}
    for name, content in tree.items():
        if name == "lib/":
            continue
        out["usr/" + name if name.startswith("lib/") else name] = content
    out.setdefault("usr/", None)
    out.setdefault("usr/lib/", None)
    return out


def test_a_split_lib_is_placed_through_the_bases_lib_link(forge_workspace):
    ws = workspace(forge_workspace, """\
minimize(name = "unfitted", image = ":build", paths = ["/usr/local/bin"])
production(name = "broken", base = ":prod", minimized = ":unfitted")
minimize(name = "fitted", image = ":build", paths = ["/usr/local/bin"], production_base = ":prod")
production(name = "app", base = ":prod", minimized = ":fitted")
""", prod=merged(prod_tree()))
    out = ws.run("build", "//p:broken").assert_failure(1)
    assert "/lib: a directory in the layer, a symlink to /usr/lib in the base" in out.stderr
    assert 'set production_base = "//p:prod" on //p:unfitted' in out.stderr
    out = ws.run("build", "//p:app", "//p:fitted", "--json").assert_success()
    members = members_of(ws, out, "//p:fitted")
    assert "lib" not in members
    assert members[f"usr/{MULTIARCH}/libz.so.1.2.13"] == "file"
    assert members[f"usr/{MULTIARCH}/libz.so.1"] == "-> libz.so.1.2.13"
    report = report_of(ws, out, "//p:fitted")
    assert report["relocated"][f"/{MULTIARCH}/libz.so.1.2.13"] == f"/usr/{MULTIARCH}/libz.so.1.2.13"
    why = ws.run("query", "why", "//p:fitted", f"/{MULTIARCH}/libz.so.1.2.13").assert_success()
    assert why.stdout.startswith(f"/usr/{MULTIARCH}/libz.so.1.2.13 (from /{MULTIARCH}/libz.so.1.2.13)")


def test_a_merged_lib_link_over_a_split_base_becomes_links_to_each_library(tmp_path):
    fs = DirectoryRootFS(write_tree(tmp_path / "build", merged(build_tree())))
    base = DirectoryRootFS(write_tree(tmp_path / "base", prod_tree()))
    h = harvest(fs, HarvestRequest(paths=("/usr/local/bin",),
                                   ld_library_path="/usr/local/lib"), base)
    assert "/lib" not in h.nodes  # would replace the base's /lib directory
    link = h.nodes[f"/{MULTIARCH}/libz.so.1"]
    assert (link.kind, link.target) == ("symlink", f"/usr/{MULTIARCH}/libz.so.1.2.13")
    assert h.nodes[f"/usr/{MULTIARCH}/libz.so.1.2.13"].kind == "file"
    # through the new link the loader finds the same file as in the build image
    assert f"/{MULTIARCH}/libc.so.6" not in h.nodes  # the base has the same one


def test_why_chain_for_preloaded_libraries_and_unknown_paths():
    report = {"files": {"/usr/lib/libjemalloc.so.2": {"kind": "file", "size": 1, "needed": [
        {"opened": "/usr/lib/libjemalloc.so.2", "needed_by": "LD_PRELOAD",
         "soname": "libjemalloc.so.2", "search_dir": "/usr/lib", "how": "default"}]}},
        "libraries": {}}
    assert why_chain(report, "/usr/lib/libjemalloc.so.2")[1] == (
        "  <- needed by LD_PRELOAD: libjemalloc.so.2 in /usr/lib (via a system directory)")
    with pytest.raises(Exception, match="holds 1 paths"):
        why_chain(report, "/nope")
