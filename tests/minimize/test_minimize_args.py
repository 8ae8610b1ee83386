"""Atom's minimize-<platform>-args files: the parser, where they are found, the orphan
check for chain folders, and what `minimize(args = ...)` and `production` make of them."""

from __future__ import annotations

from pathlib import Path

import pytest

import forge
from forge.core.platforms import parse_platform
from forge.core.session import Session
from forge.rules.args_files import (
    MinimizeArgs,
    find_minimize_args,
    orphan_args_files,
    platform_spellings,
    read_minimize_args,
)
from forge.rules.production import packages_dockerfile
from tests.minimize.test_minimize import members_of, workspace
from tests.minimize.util import build_tree

# Atom's docker/graphics/minimize-amd64-args (elementary-robotics/atom), verbatim.
ATOM_GRAPHICS = (
    "ADDITIONAL_LIB_LOCATIONS=/opt/venv/lib/python3.7/site-packages/PyQt5/*.so,"
    "/usr/lib/xorg/modules/*.so*,/usr/lib/xorg/modules/*/*.so*,/usr/local/lib/qt5/plugins/*/*.so\n"
    "ADDITIONAL_FILES=/vnc/vnc.tar.gz,/usr/bin/platforms\n"
    "PRODUCTION_PACKAGES=net-tools,procps\n"
)


def read(tmp_path: Path, text: str) -> MinimizeArgs:
    path = tmp_path / "minimize-amd64-args"
    path.write_text(text)
    return read_minimize_args(path, "graphics/minimize-amd64-args")


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(forge.BuildFileError) as e:
        read(tmp_path, text)
    return str(e.value)


# -- the parser -----------------------------------------------------------------------------


def test_atoms_own_file_reads_as_three_comma_lists(tmp_path):
    args = read(tmp_path, ATOM_GRAPHICS)
    assert args.lib_locations == (
        "/opt/venv/lib/python3.7/site-packages/PyQt5/*.so", "/usr/lib/xorg/modules/*.so*",
        "/usr/lib/xorg/modules/*/*.so*", "/usr/local/lib/qt5/plugins/*/*.so")
    assert args.files == ("/vnc/vnc.tar.gz", "/usr/bin/platforms")
    assert args.packages == ("net-tools", "procps")
    assert args.lines == {"ADDITIONAL_LIB_LOCATIONS": 1, "ADDITIONAL_FILES": 2,
                          "PRODUCTION_PACKAGES": 3}


def test_comments_blank_lines_quotes_spaces_and_empty_items(tmp_path):
    args = read(tmp_path, "# graphics: the X server's modules are dlopen()ed\n   \n" """\
ADDITIONAL_LIB_LOCATIONS="/usr/lib/xorg/modules/*.so, /usr/lib/dri/*.so,"
  ADDITIONAL_FILES='/etc/fonts'
PRODUCTION_PACKAGES=procps,,libgomp1,procps
""")
    assert args.lib_locations == ("/usr/lib/xorg/modules/*.so", "/usr/lib/dri/*.so")
    assert args.files == ("/etc/fonts",)
    assert args.packages == ("procps", "libgomp1")  # the first of each kept
    assert args.lines["ADDITIONAL_LIB_LOCATIONS"] == 3  # after the comment and the blank line
    # an empty value and a missing key are both nothing
    assert read(tmp_path, "PRODUCTION_PACKAGES=\n") == MinimizeArgs(
        "graphics/minimize-amd64-args", lines={"PRODUCTION_PACKAGES": 1})


def test_a_broken_line_names_file_and_line_but_not_the_line(tmp_path):
    message = error(tmp_path, "# ok\nPRODUCTION_PACKAGES=procps\nhunter2-token\n")
    assert message.startswith("graphics/minimize-amd64-args:3: expected KEY=VALUE (no '='")
    assert "hunter2" not in message
    message = error(tmp_path, "MY KEY=secret-value\n")
    assert message.startswith("graphics/minimize-amd64-args:1: expected KEY=VALUE (the part before")
    assert "secret-value" not in message


def test_an_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    assert error(tmp_path, "ADDITIONAL_FILE=/etc/fonts\n").startswith(
        "graphics/minimize-amd64-args:1: unknown key 'ADDITIONAL_FILE' "
        "(did you mean 'ADDITIONAL_FILES'?)")
    # Docker build args are case-sensitive: Atom would have ignored this one silently
    assert "unknown key 'production_packages' (did you mean 'PRODUCTION_PACKAGES'?)" in error(
        tmp_path, "production_packages=procps\n")
    # what build.sh set itself is an attribute here
    assert "BASE_IMAGE is the minimize's `image` attribute" in error(
        tmp_path, "BASE_IMAGE=debian:buster-slim\n")


def test_a_key_set_twice_is_an_error(tmp_path):
    message = error(tmp_path, "PRODUCTION_PACKAGES=procps\n\nPRODUCTION_PACKAGES=net-tools\n")
    assert message.startswith("graphics/minimize-amd64-args:3: PRODUCTION_PACKAGES is set again "
                              "(first on line 1)")


def test_paths_must_be_absolute_and_stay_in_the_image(tmp_path):
    message = error(tmp_path, "ADDITIONAL_FILES=/etc/fonts,usr/bin/platforms\n")
    assert message.startswith("graphics/minimize-amd64-args:1: ADDITIONAL_FILES: "
                              "'usr/bin/platforms' is not absolute")
    assert "ADDITIONAL_LIB_LOCATIONS: '/usr/lib/../../x.so' goes up with '..'" in error(
        tmp_path, "\nADDITIONAL_LIB_LOCATIONS=/usr/lib/../../x.so\n")


def test_packages_must_be_debian_package_names(tmp_path):
    message = error(tmp_path, "PRODUCTION_PACKAGES=procps,curl;rm\n")
    assert message.startswith("graphics/minimize-amd64-args:1: PRODUCTION_PACKAGES: 'curl;rm' is "
                              "not a Debian package name")
    assert "separate packages with commas" in error(tmp_path, "PRODUCTION_PACKAGES=net-tools procps\n")
    # name=version and name:arch, as production(packages = ...) takes them
    assert read(tmp_path, "PRODUCTION_PACKAGES=zlib1g=1:1.2.13.dfsg-1,libc6:arm64\n").packages == (
        "zlib1g=1:1.2.13.dfsg-1", "libc6:arm64")


# -- finding the file, and orphans in a chain folder ----------------------------------------


@pytest.mark.parametrize(("platform", "spelling"), [
    ("amd64", "amd64"), ("x86_64", "x86_64"), ("aarch64", "aarch64"), ("aarch64", "arm64"),
    ("armv7", "armv7"), ("armv7", "armhf"), ("armv7", "armv7l"),
])
def test_find_minimize_args_takes_every_spelling(tmp_path, platform, spelling):
    (tmp_path / f"minimize-{spelling}-args").write_text("")
    assert find_minimize_args(tmp_path, parse_platform(platform)) == f"minimize-{spelling}-args"


def test_find_minimize_args_prefers_the_short_spelling_and_ignores_other_platforms(tmp_path):
    for name in ("minimize-arm64-args", "minimize-aarch64-args", "minimize-amd64-args"):
        (tmp_path / name).write_text("")
    assert find_minimize_args(tmp_path, parse_platform("arm64")) == "minimize-aarch64-args"
    assert find_minimize_args(tmp_path, parse_platform("armv7")) is None
    assert platform_spellings(parse_platform("armv7")) == ("armv7", "arm", "armhf", "armv7l")


def test_orphan_args_files_name_the_file_and_the_nearest_descriptor(tmp_path):
    for name in ("10-Dockerfile-pyqt5", "11-Dockerfile-python-arrow", "12-Dockerfile-python",
                 "90-Dockerfile-vnc",
                 # read by a step (python-arrow, not python, owns the second)
                 "pyqt5-amd64-args", "python-arrow-aarch64-args", "vnc-x86_64-args",
                 # the minimize rule's, never an orphan, and not args files at all
                 "minimize-amd64-args", "minimize-aarch64-args", "notes.txt",
                 # never read
                 "pyqt-amd64-args", "vnc-amd46-args", "python-x86-64-args",
                 "production-amd64-args", "unrelated-args"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub-args").mkdir()  # a directory is not a file
    warnings = orphan_args_files(tmp_path, ["pyqt5", "python-arrow", "python", "vnc"],
                                 display="graphics")
    assert warnings == [
        "graphics/production-amd64-args is never read: no Dockerfile-production in graphics/ "
        "(Atom's build.sh passed it to the production Dockerfile; here the production rule's "
        "`packages` and the minimize args file's PRODUCTION_PACKAGES do that); "
        "descriptors: pyqt5, python, python-arrow, vnc",
        "graphics/pyqt-amd64-args is never read: no Dockerfile-pyqt in graphics/; nearest "
        "descriptor: 'pyqt5' (Dockerfile-pyqt5), whose args file is pyqt5-amd64-args",
        "graphics/python-x86-64-args is never read: 'x86-64' is not how an args file spells "
        "that platform (spell it amd64, x86_64); Dockerfile-python reads python-<platform>-args",
        "graphics/unrelated-args is never read: no Dockerfile-unrelated in graphics/; "
        "descriptors: pyqt5, python, python-arrow, vnc",
        "graphics/vnc-amd46-args is never read: 'amd46' is not a platform (did you mean "
        "'amd64'?); Dockerfile-vnc reads vnc-<platform>-args",
    ]
    assert orphan_args_files(tmp_path, ["pyqt5", "python-arrow", "python", "vnc", "production",
                                        "pyqt", "unrelated"]) == [
        f"{tmp_path.name}/python-x86-64-args is never read: 'x86-64' is not how an args file "
        "spells that platform (spell it amd64, x86_64); Dockerfile-python reads "
        "python-<platform>-args",
        f"{tmp_path.name}/unrelated-args is never read: it names no platform; "
        "Dockerfile-unrelated reads unrelated-<platform>-args, e.g. unrelated-amd64-args",
        f"{tmp_path.name}/vnc-amd46-args is never read: 'amd46' is not a platform (did you mean "
        "'amd64'?); Dockerfile-vnc reads vnc-<platform>-args",
    ]


# -- minimize(args = ...) and production, at analysis ---------------------------------------

ARGS_TARGETS = """\
minimize(name = "min", image = ":build", args = "utilities",
         additional_files = ["/etc/ssl/certs"])
production(name = "app", base = ":prod", minimized = ":min", packages = ["libgomp1", "procps"])
minimize(name = "one-file", image = ":build", args = "utilities/minimize-aarch64-args")
minimize(name = "empty-folder", image = ":build", args = "empty")
"""
AMD64_ARGS = """\
# what the graphics folder adds
ADDITIONAL_LIB_LOCATIONS=/opt/plugins/*.so
ADDITIONAL_FILES=/usr/share/app,/etc/ssl/certs
PRODUCTION_PACKAGES=net-tools,procps
"""


def args_workspace(forge_workspace, amd64: str = AMD64_ARGS, **kwargs):
    ws = workspace(forge_workspace, ARGS_TARGETS, **kwargs)
    ws.write({"p/utilities/minimize-amd64-args": amd64,
              "p/utilities/minimize-aarch64-args": "PRODUCTION_PACKAGES=qemu-only\n",
              "p/empty/README": "no args file here\n"})
    return ws


def analyzed(ws, label: str):
    targets, _ = Session(ws.root).analyze([label])
    return targets[0]


def test_a_folder_gives_the_build_images_platforms_file_to_minimize_and_production(forge_workspace):
    ws = args_workspace(forge_workspace)
    (harvest,) = analyzed(ws, "//p:min").actions
    # the attribute's items first, then the file's, each once
    assert harvest.params["additional_files"] == ["/etc/ssl/certs", "/usr/share/app"]
    assert harvest.params["additional_lib_locations"] == ["/opt/plugins/*.so"]
    # PRODUCTION_PACKAGES do not change the harvest, so they are not in its key
    assert "net-tools" not in repr(harvest.params)
    install, assemble = analyzed(ws, "//p:app").actions
    assert install.mnemonic == "ProductionPackages"
    assert install.params["packages"] == ["libgomp1", "procps", "net-tools"]
    assert install.params["dockerfile_text"] == packages_dockerfile(["libgomp1", "procps", "net-tools"])
    assert assemble.deps[0] is install


def test_only_the_parsed_values_enter_the_minimize_action(forge_workspace):
    ws = args_workspace(forge_workspace)
    before = analyzed(ws, "//p:min").actions[0]
    ws.write({"p/utilities/minimize-amd64-args":
              "# reordered, commented, quoted: the same values\n\n"
              "PRODUCTION_PACKAGES=net-tools, procps\n"
              'ADDITIONAL_FILES="/usr/share/app"\n'
              "ADDITIONAL_LIB_LOCATIONS=/opt/plugins/*.so,\n"})
    after = analyzed(ws, "//p:min").actions[0]
    assert (after.params, after.inputs) == (before.params, before.inputs)


def test_a_file_is_taken_as_it_is_and_a_folder_without_one_is_an_error(forge_workspace):
    ws = args_workspace(forge_workspace)
    # a file given by name is read whatever platform it names
    assert analyzed(ws, "//p:one-file").actions[0].params["additional_files"] == []
    with pytest.raises(forge.ForgeError) as e:
        analyzed(ws, "//p:empty-folder")
    assert ("args = 'empty': p/empty/ has no minimize args file for the build image's platform "
            "linux/amd64 (looked for minimize-amd64-args, minimize-x86_64-args)") in str(e.value)


def test_errors_in_the_file_name_it_and_the_line(forge_workspace):
    ws = args_workspace(forge_workspace,
                        amd64="ADDITIONAL_FILES=/usr/share/app\nADDITIONAL_LIB_LOCATION=/x/*.so\n")
    out = ws.run("build", "//p:min").assert_failure(2)
    assert ("p/utilities/minimize-amd64-args:2: unknown key 'ADDITIONAL_LIB_LOCATION' (did you "
            "mean 'ADDITIONAL_LIB_LOCATIONS'?)") in out.stderr


# -- a build --------------------------------------------------------------------------------


def test_a_minimize_with_an_args_file_harvests_what_it_names(forge_workspace):
    # No engine: the images are synthetic tarballs and minimize only reads them.
    tree = {**build_tree(), "usr/share/": None, "usr/share/app/": None,
            "usr/share/app/data.txt": b"data\n"}
    ws = args_workspace(forge_workspace, build=tree)
    out = ws.run("build", "//p:min", "--json").assert_success()
    members = members_of(ws, out, "//p:min")
    assert members["usr/share/app/data.txt"] == "file"  # ADDITIONAL_FILES
    assert members["opt/plugins/libplug.so"] == "file"  # ADDITIONAL_LIB_LOCATIONS
    assert members["usr/lib/x86_64-linux-gnu/libextra.so.1"] == "file"  # ... and what it needs
    # a new package list, a comment: the harvest is not re-run
    ws.write({"p/utilities/minimize-amd64-args": "# now with curl\n" +
              AMD64_ARGS.replace("net-tools,procps", "net-tools,procps,curl")})
    assert ws.run("build", "//p:min", "--json").assert_success().executed() == []
