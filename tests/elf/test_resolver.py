"""The loader's search rules, one gcc-built root filesystem per rule.

Each test states what glibc does, checks the resolver says so, and — as root, where
``chroot`` works — checks the real loader (``ld.so --list`` chrooted into the same tree,
with an ld.so.cache made by ``ldconfig -r``) opens exactly the same paths.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from forge.core.elf.layered import LayeredRootFS
from forge.core.elf.resolver import Library, LibraryResolver, Reason, Resolution
from forge.core.elf.rootfs import DirectoryRootFS, NoSuchPathError
from tests.elf.util import (
    can_chroot,
    gcc,
    ldconfig,
    loader_list,
    make_root,
    program,
    retag,
    set_machine,
    shared_lib,
    tar_layer,
    tar_tree,
)
from tests.services import require_tool


@pytest.fixture(autouse=True)
def _gcc():
    require_tool("gcc", "gcc")

DT_SONAME, DT_RUNPATH = 14, 29
EM_AARCH64 = 183
LIBDIR = "/usr/lib/x86_64-linux-gnu"
NO_DTAGS = "-Wl,--disable-new-dtags"  # DT_RPATH
NEW_DTAGS = "-Wl,--enable-new-dtags"  # DT_RUNPATH


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "root")


def resolve(root: Path, prog: str, ld_library_path: str = "") -> Resolution:
    return LibraryResolver(DirectoryRootFS(root), ld_library_path).resolve(prog)


def check_loader(root: Path, prog: str, result: Resolution, **env: str) -> None:
    """The real loader, chrooted into ``root``, opens the same paths and misses the same
    names as the resolver says."""
    if not can_chroot():
        return
    ldconfig(root)
    paths, missing = loader_list(root, prog, **env)
    expected = set(result.closure[prog])
    interp = result.closure[prog][0] if expected else ""
    if not any(r.soname != interp for r in result.libraries.get(interp, Library("", "", ())).reasons):
        expected.discard(interp)  # ldd lists ld.so only if some DT_NEEDED names it
    assert expected == paths
    assert {name for _, name in result.missing} == missing


def reasons(result: Resolution, path: str) -> list[Reason]:
    return result.libraries[path].reasons


def test_origin_rpath(root: Path) -> None:
    shared_lib(root, "/opt/app/lib/libfoo.so.1", "libfoo.so.1")
    program(root, "/opt/app/bin/prog", ("libfoo.so.1",), ("/opt/app/lib",), NO_DTAGS,
            "-Wl,-rpath,$ORIGIN/../lib")
    result = resolve(root, "/opt/app/bin/prog")
    lib = result.libraries["/opt/app/bin/../lib/libfoo.so.1"]
    assert lib.realpath == "/opt/app/lib/libfoo.so.1"
    assert lib.reasons == [Reason("/opt/app/bin/prog", "libfoo.so.1", "/opt/app/bin/../lib",
                                  "rpath")]
    assert result.missing == []
    check_loader(root, "/opt/app/bin/prog", result)


def test_braced_origin_and_lib_tokens(root: Path) -> None:
    # Debian's ld.so expands $LIB to its first system directory: lib/x86_64-linux-gnu
    shared_lib(root, "/opt/app/lib/x86_64-linux-gnu/libfoo.so.1", "libfoo.so.1")
    program(root, "/opt/app/bin/prog", ("libfoo.so.1",), ("/opt/app/lib/x86_64-linux-gnu",),
            NEW_DTAGS, "-Wl,-rpath,${ORIGIN}/../../app/$LIB")
    result = resolve(root, "/opt/app/bin/prog")
    (lib,) = [p for p in result.closure["/opt/app/bin/prog"] if "libfoo" in p]
    assert lib == "/opt/app/bin/../../app/lib/x86_64-linux-gnu/libfoo.so.1"
    assert reasons(result, lib)[0].how == "runpath"
    check_loader(root, "/opt/app/bin/prog", result)


def test_runpath_disables_rpath_of_the_same_object(root: Path) -> None:
    shared_lib(root, "/opt/r/libfoo.so.1", "libfoo.so.1", value=1)
    shared_lib(root, "/opt/n/libfoo.so.1", "libfoo.so.1", value=2)
    prog = program(root, "/usr/bin/prog", ("libfoo.so.1",), ("/opt/r",), NO_DTAGS,
                   "-Wl,-rpath,/opt/r", "-Wl,-soname,/opt/n")
    retag(prog, DT_SONAME, DT_RUNPATH)  # now DT_RPATH=/opt/r and DT_RUNPATH=/opt/n
    result = resolve(root, "/usr/bin/prog")
    assert "/opt/n/libfoo.so.1" in result.libraries
    assert "/opt/r/libfoo.so.1" not in result.libraries
    assert reasons(result, "/opt/n/libfoo.so.1")[0].how == "runpath"
    check_loader(root, "/usr/bin/prog", result)


@pytest.mark.parametrize("dtags", [NO_DTAGS, NEW_DTAGS], ids=["rpath", "runpath"])
def test_runpath_reaches_direct_dependencies_only(root: Path, dtags: str) -> None:
    shared_lib(root, "/opt/n/libleaf.so.1", "libleaf.so.1")
    shared_lib(root, "/opt/n/libmid.so.1", "libmid.so.1", needs=("libleaf.so.1",),
               link_dirs=("/opt/n",))
    program(root, "/usr/bin/prog", ("libmid.so.1",), ("/opt/n",), dtags,
            "-Wl,-rpath,/opt/n", f"-Wl,-rpath-link,{root}/opt/n")
    result = resolve(root, "/usr/bin/prog")
    if dtags == NO_DTAGS:  # the executable's DT_RPATH serves its dependencies' needs too
        assert reasons(result, "/opt/n/libleaf.so.1") == [
            Reason("/opt/n/libmid.so.1", "libleaf.so.1", "/opt/n", "rpath")]
        assert result.missing == []
    else:
        assert result.missing == [("/opt/n/libmid.so.1", "libleaf.so.1")]
    check_loader(root, "/usr/bin/prog", result)


def test_runpath_of_the_loader_hides_the_executables_rpath(root: Path) -> None:
    shared_lib(root, "/opt/r/libleaf.so.1", "libleaf.so.1")
    shared_lib(root, "/opt/r/libmid.so.1", "libmid.so.1", needs=("libleaf.so.1",),
               link_dirs=("/opt/r",), flags=(NEW_DTAGS, "-Wl,-rpath,/opt/m"))
    program(root, "/usr/bin/prog", ("libmid.so.1",), ("/opt/r",), NO_DTAGS,
            "-Wl,-rpath,/opt/r", f"-Wl,-rpath-link,{root}/opt/r")
    result = resolve(root, "/usr/bin/prog")
    assert result.missing == [("/opt/r/libmid.so.1", "libleaf.so.1")]
    check_loader(root, "/usr/bin/prog", result)


def test_ld_so_conf_with_include_globs(root: Path) -> None:
    shared_lib(root, "/opt/a/lib/libconf.so.1", "libconf.so.1")
    shared_lib(root, "/opt/c/libextra.so.1", "libextra.so.1")
    shared_lib(root, "/opt/a/lib/libdup.so.1", "libdup.so.1", value=1)
    shared_lib(root, "/opt/c/libdup.so.1", "libdup.so.1", value=2)
    (root / "etc/ld.so.conf").write_text("# system\ninclude /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d").mkdir()
    (root / "etc/ld.so.conf.d/10-a.conf").write_text("/opt/a/lib/   # trailing slash\n")
    (root / "etc/ld.so.conf.d/20-b.conf").write_text("include ../extra.conf\n")
    (root / "etc/ld.so.conf.d/README").write_text("/opt/nothing\n")
    (root / "etc/extra.conf").write_text("/opt/c\n")
    program(root, "/usr/bin/prog", ("libconf.so.1", "libextra.so.1", "libdup.so.1"),
            ("/opt/a/lib", "/opt/c"))
    resolver = LibraryResolver(DirectoryRootFS(root))
    assert resolver.conf_dirs == ("/opt/a/lib", "/opt/c")
    result = resolver.resolve("/usr/bin/prog")
    assert reasons(result, "/opt/a/lib/libconf.so.1")[0].how == "ld.so.conf"
    assert reasons(result, "/opt/c/libextra.so.1")[0].search_dir == "/opt/c"
    assert "/opt/a/lib/libdup.so.1" in result.libraries  # the first conf directory wins
    check_loader(root, "/usr/bin/prog", result)


def test_dangling_link_in_an_earlier_directory_is_skipped_a_loop_ends_the_list(
        root: Path) -> None:
    # open_path goes on after ENOENT (a dangling link) but gives up the whole list after
    # any other error, such as ELOOP; the next lists (RUNPATH, cache, defaults) still count
    shared_lib(root, "/opt/b/libfoo.so.1", "libfoo.so.1")
    shared_lib(root, "/opt/b/libbar.so.1", "libbar.so.1")
    (root / "opt/a").mkdir()
    (root / "opt/a/libfoo.so.1").symlink_to("libfoo.so.1.0")  # dangling
    (root / "opt/a/libbar.so.1").symlink_to("/opt/a/libbar.so.1")  # a loop
    program(root, "/usr/bin/prog", ("libfoo.so.1", "libbar.so.1"), ("/opt/b",))
    result = resolve(root, "/usr/bin/prog", "/opt/a:/opt/b")
    assert reasons(result, "/opt/b/libfoo.so.1")[0].how == "ld_library_path"
    assert result.missing == [("/usr/bin/prog", "libbar.so.1")]
    check_loader(root, "/usr/bin/prog", result, LD_LIBRARY_PATH="/opt/a:/opt/b")


def test_libraries_of_another_class_or_machine_are_skipped(root: Path, tmp_path: Path) -> None:
    src = tmp_path / "f.c"
    src.write_text("int f(void) { return 3; }\n")
    (root / "opt/a").mkdir(parents=True)
    try:  # a real i386 library; without gcc-multilib, flip the class byte of a 64-bit one
        gcc("-m32", "-nostdlib", "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1", "-o",
            root / "opt/a/libfoo.so.1", src)
    except Exception:
        shared_lib(root, "/opt/a/libfoo.so.1", "libfoo.so.1")
        data = bytearray((root / "opt/a/libfoo.so.1").read_bytes())
        data[4] = 1  # ELFCLASS32
        (root / "opt/a/libfoo.so.1").write_bytes(bytes(data))
    set_machine(shared_lib(root, "/opt/a/libbar.so.1", "libbar.so.1"), EM_AARCH64)
    shared_lib(root, "/opt/b/libfoo.so.1", "libfoo.so.1")
    shared_lib(root, "/opt/b/libbar.so.1", "libbar.so.1")
    program(root, "/usr/bin/prog", ("libfoo.so.1", "libbar.so.1"), ("/opt/b",), NO_DTAGS,
            "-Wl,-rpath,/opt/a:/opt/b")
    result = resolve(root, "/usr/bin/prog")
    assert {"/opt/b/libfoo.so.1", "/opt/b/libbar.so.1"} <= set(result.libraries)
    assert not any(p.startswith("/opt/a") for p in result.libraries)
    check_loader(root, "/usr/bin/prog", result)


def test_a_non_elf_candidate_stops_the_load(root: Path) -> None:
    shared_lib(root, "/opt/b/libfoo.so.1", "libfoo.so.1")
    (root / "opt/a").mkdir()
    (root / "opt/a/libfoo.so.1").write_text("INPUT(libfoo.so.1.2)\n")
    program(root, "/usr/bin/prog", ("libfoo.so.1",), ("/opt/b",), NO_DTAGS,
            "-Wl,-rpath,/opt/a:/opt/b")
    result = resolve(root, "/usr/bin/prog")
    assert result.missing == [("/usr/bin/prog", "libfoo.so.1")]
    assert result.errors == [("/usr/bin/prog", "libfoo.so.1",
                              "/opt/a/libfoo.so.1: invalid ELF header")]


def test_absolute_symlink_resolves_inside_the_root(root: Path) -> None:
    shared_lib(root, "/opt/vendor/lib/libabs.so.1.0", "libabs.so.1")
    assert not os.path.exists("/opt/vendor/lib/libabs.so.1.0")  # only in the root
    (root / LIBDIR.lstrip("/") / "libabs.so.1").symlink_to("/opt/vendor/lib/libabs.so.1.0")
    program(root, "/usr/bin/prog", ("libabs.so.1.0",), ("/opt/vendor/lib",))
    result = resolve(root, "/usr/bin/prog")
    lib = result.libraries["/lib/x86_64-linux-gnu/libabs.so.1"]
    assert lib.realpath == "/opt/vendor/lib/libabs.so.1.0"
    assert lib.links == ("/lib", f"{LIBDIR}/libabs.so.1")
    assert lib.reasons[0].how == "default"
    assert {"/lib", f"{LIBDIR}/libabs.so.1", "/opt/vendor/lib/libabs.so.1.0"} <= (
        result.keep_paths())
    check_loader(root, "/usr/bin/prog", result)


def test_missing_library_is_reported_with_the_file_needing_it(root: Path) -> None:
    shared_lib(root, "/opt/x/libgone.so.1", "libgone.so.1")
    shared_lib(root, "/opt/x/libmid.so.1", "libmid.so.1", needs=("libgone.so.1",),
               link_dirs=("/opt/x",))
    program(root, "/usr/bin/prog", ("libmid.so.1",), ("/opt/x",), NO_DTAGS,
            "-Wl,-rpath,/opt/x", f"-Wl,-rpath-link,{root}/opt/x")
    (root / "opt/x/libgone.so.1").unlink()
    result = resolve(root, "/usr/bin/prog")
    assert result.missing == [("/opt/x/libmid.so.1", "libgone.so.1")]
    check_loader(root, "/usr/bin/prog", result)


def test_a_name_already_loaded_is_not_searched_again(root: Path) -> None:
    # prog finds libdup in /opt/one through its RPATH; libmid's RUNPATH points at another
    # libdup, but glibc matches the name against the loaded object first
    shared_lib(root, "/opt/one/libdup.so.1", "libdup.so.1", value=1)
    shared_lib(root, "/opt/two/libdup.so.1", "libdup.so.1", value=2)
    shared_lib(root, "/opt/two/libmid.so.1", "libmid.so.1", needs=("libdup.so.1",),
               link_dirs=("/opt/two",), flags=(NEW_DTAGS, "-Wl,-rpath,/opt/two"))
    program(root, "/usr/bin/prog", ("libdup.so.1", "libmid.so.1"), ("/opt/one", "/opt/two"),
            NO_DTAGS, "-Wl,-rpath,/opt/one:/opt/two")
    result = resolve(root, "/usr/bin/prog")
    assert "/opt/two/libdup.so.1" not in result.libraries
    assert {r.needed_by for r in reasons(result, "/opt/one/libdup.so.1")} == {
        "/usr/bin/prog", "/opt/two/libmid.so.1"}
    check_loader(root, "/usr/bin/prog", result)


def test_needed_with_a_slash_is_opened_directly(root: Path) -> None:
    shared_lib(root, "/opt/d/libdirect.so", "/opt/d/libdirect.so")
    program(root, "/usr/bin/prog", ("libdirect.so",), ("/opt/d",))
    result = resolve(root, "/usr/bin/prog")
    assert reasons(result, "/opt/d/libdirect.so")[0].how == "direct"
    check_loader(root, "/usr/bin/prog", result)


def test_ld_preload_and_ld_so_preload(root: Path) -> None:
    shared_lib(root, f"{LIBDIR}/libpre.so.1", "libpre.so.1")
    shared_lib(root, "/opt/p/libenv.so.1", "libenv.so.1")
    (root / "etc/ld.so.preload").write_text("libpre.so.1\n")
    program(root, "/usr/bin/prog", (), ())
    resolver = LibraryResolver(DirectoryRootFS(root), ld_preload="/opt/p/libenv.so.1")
    result = resolver.resolve("/usr/bin/prog")
    assert reasons(result, "/lib/x86_64-linux-gnu/libpre.so.1")[0].needed_by == (
        "/etc/ld.so.preload")
    assert reasons(result, "/opt/p/libenv.so.1") == [
        Reason("LD_PRELOAD", "/opt/p/libenv.so.1", "/opt/p", "direct")]
    check_loader(root, "/usr/bin/prog", result, LD_PRELOAD="/opt/p/libenv.so.1")


def test_nodefaultlib_skips_cache_and_default_directories(root: Path) -> None:
    shared_lib(root, f"{LIBDIR}/libfoo.so.1", "libfoo.so.1")
    program(root, "/usr/bin/prog", ("libfoo.so.1",), (LIBDIR,), "-Wl,-z,nodefaultlib")
    result = resolve(root, "/usr/bin/prog")
    assert ("/usr/bin/prog", "libfoo.so.1") in result.missing
    check_loader(root, "/usr/bin/prog", result)


def test_layered_whiteout_hides_a_library(root: Path, tmp_path: Path) -> None:
    shared_lib(root, "/opt/app/lib/libfoo.so.1", "libfoo.so.1")
    program(root, "/opt/app/bin/prog", ("libfoo.so.1",), ("/opt/app/lib",), NEW_DTAGS,
            "-Wl,-rpath,$ORIGIN/../lib")
    base = tar_tree(root, tmp_path / "base.tar", compress="gzip")
    with LayeredRootFS([base]) as fs:
        result = LibraryResolver(fs).resolve("/opt/app/bin/prog")
        assert result.missing == []
        assert result.realpaths() == {"/opt/app/lib/libfoo.so.1",
                                      f"{LIBDIR}/libc.so.6", f"{LIBDIR}/ld-linux-x86-64.so.2"}
    wh = tar_layer(tmp_path / "wh.tar", {"opt/app/lib/.wh.libfoo.so.1": b""}, compress="zstd")
    with LayeredRootFS([base, wh]) as fs:
        result = LibraryResolver(fs).resolve("/opt/app/bin/prog")
        assert result.missing == [("/opt/app/bin/prog", "libfoo.so.1")]


def test_inputs_that_load_nothing_and_inputs_that_do_not_exist(root: Path) -> None:
    (root / "usr/bin/script").write_text("#!/bin/sh\necho hi\n")
    src = root / "static.c"
    src.write_text("int main(void) { return 0; }\n")
    try:
        gcc("-static", "-o", root / "usr/bin/static", src)
        static = ["/usr/bin/static"]
    except Exception:  # no static libc installed
        static = []
    resolver = LibraryResolver(DirectoryRootFS(root))
    result = resolver.resolve(["/usr/bin/script", *static])
    assert result.libraries == {} and result.missing == []
    with pytest.raises(NoSuchPathError, match=r"/usr/bin/scirpt \(did you mean 'script'\?\)"):
        resolver.resolve("/usr/bin/scirpt")


def test_ld_library_path_from_an_image_env() -> None:
    from forge.core.elf import env_value, ld_library_path_from_env

    env = ["PATH=/usr/bin", "LD_LIBRARY_PATH=/a", "LD_LIBRARY_PATH=/opt/x:/opt/y", "X"]
    assert ld_library_path_from_env(env) == "/opt/x:/opt/y"
    assert ld_library_path_from_env(None) == ""
    assert env_value(env, "PATH") == "/usr/bin" and env_value(env, "X") == ""
