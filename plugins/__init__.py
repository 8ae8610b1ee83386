"""The built-in plugins (``forge.plugins``): the docker executor, QEMU emulation and the
OCI remote cache. Each is an ordinary pluggy plugin, registered like third-party ones."""
