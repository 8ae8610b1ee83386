"""A static ``ldd``: which shared libraries glibc's loader would map for ELF files of an
image, found by reading the image's root filesystem — nothing is executed, so it works
for any architecture and needs no emulator.

* ``rootfs``: ``RootFS``, a read-only view of an image root with every path resolved
  inside it; ``DirectoryRootFS`` for an unpacked tree.
* ``layered``: ``LayeredRootFS``, the merged root of OCI layer blobs (whiteouts,
  opaque directories, hard links), read on demand.
* ``elfinfo``: ``ElfInfo`` and the readers of what the loader uses from an ELF file.
* ``loaderconf``: ld.so.conf, the interpreter's system directories, ``$ORIGIN`` & co.
* ``resolver``: ``LibraryResolver`` / ``resolve_needed`` — the search rules, with the
  reason each library is needed and what is missing.
* ``harvest``: the minimize rule's engine — requested paths plus the libraries they
  need, fitted to a production base, and the report (imported on its own, not here).

Typical use (the minimize rule)::

    with LayeredRootFS(layer_blob_paths) as fs:
        llp = ld_library_path_from_env(config["config"].get("Env"))
        result = LibraryResolver(fs, llp).resolve(["/usr/bin/app"])
        keep = result.keep_paths()        # symlinks and real files to keep
        assert not result.missing, result.missing

Not here: writing layers or images (``forge.core.oci``), running anything.
"""

from forge.core.elf.elfinfo import ElfInfo, read_elf_info
from forge.core.elf.layered import LayeredRootFS, LayerError
from forge.core.elf.resolver import (
    Library,
    LibraryResolver,
    Reason,
    Resolution,
    env_value,
    ld_library_path_from_env,
    resolve_needed,
)
from forge.core.elf.rootfs import DirectoryRootFS, Entry, NoSuchPathError, RootFS, RootFSError

__all__ = [
    "DirectoryRootFS",
    "ElfInfo",
    "Entry",
    "LayerError",
    "LayeredRootFS",
    "Library",
    "LibraryResolver",
    "NoSuchPathError",
    "Reason",
    "Resolution",
    "RootFS",
    "RootFSError",
    "env_value",
    "ld_library_path_from_env",
    "read_elf_info",
    "resolve_needed",
]
