"""The forge engine: labels, BUILD loading, analysis, graph, hashing, CAS, action cache,
scheduler and the OCI model.

Nothing here is public API for plugin authors; they import ``forge``. Nothing here talks
to Docker or a registry directly: that lives in ``forge.plugins``.
"""
