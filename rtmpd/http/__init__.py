"""The HTTP surface: one ``twisted.web`` tree served on ``--http``.

``root.HTTPRoot`` is the tree; each feature mounts its resource under a name
(``metrics``, ``api``, ``healthz``, ``readyz``, ``hls``, the HTTP players, the
dashboard) from its own wiring in ``rtmpd.tap``. Errors are JSON with a status
code (``jsonio``). Nothing here is imported unless ``--http`` is given.
"""
