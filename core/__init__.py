"""The forge engine: labels, BUILD loading, analysis, graph, hashing, CAS, action cache,
scheduler and the OCI model.

Nothing here is public API for plugin authors; they import ``forge``. Nothing here talks
to the Docker engine (that is ``forge.plugins.docker``); ``oci/registry_client.py`` is the one
registry client, shared by ``oci_pull``, ``forge push`` and the remote cache plugin.
"""
