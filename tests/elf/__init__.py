"""Tests of the static ldd (``forge.core.elf``): root filesystems, ELF parsing, the loader's
search rules on gcc-built fixtures, and differential runs against the real glibc loader
(host ``ldd``, and arm64 ``ld.so --list`` under QEMU)."""
