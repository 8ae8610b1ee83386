"""The OCI image model: layers, images and indexes as values over blobs in the CAS.

- ``media``: media types (OCI and Docker schema 2 read, OCI written)
- ``compression``: deterministic gzip (ISA-L) / zstd, and reading layers back
- ``layer_writer``: deterministic tar layers from files, trees or tars
- ``image``: ``Layer``, ``Image``, ``Index``, ``EMPTY_IMAGE``; ``append_layers``,
  ``with_config``, ``make_index``; store and load
- ``validate``: ``validate_image``, the check every produced image passes
- ``layout``, ``docker_archive``, ``rootfs_tar``, ``importers``: images in and out as OCI
  layouts, ``docker save`` tarballs and rootfs tarballs
- ``reference``: image references and the credentials a URL may carry
- ``registry_auth``, ``registry_client``, ``registry_transfer``: registry logins (Docker
  config, credential helpers), the oras-py client (blob and manifest calls, resumable),
  and whole-image push and pull on it, verified; ``registry`` re-exports their old names

Nothing here runs containers (that is the Docker executor plugin) or knows about actions
and keys; what an action must put in its key is said where it matters
(``compression.fingerprint``, ``SOURCE_DATE_EPOCH`` in ``image``).
"""
