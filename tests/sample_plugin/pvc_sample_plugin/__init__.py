"""A third-party PVC plugin, the one docs/plugins.md walks through: it uses only the PVC
SDK (``pvc_kernel.sdk``, ``pvc_api.sdk``, ``pvc_cli.sdk``) for

* a config key: ``plugins.sample.greeting`` (and ``note_limit``), declared in ``config``;
* hooks: each keepalive carries ``{"sample": {"greeting", "keepalives"}}`` (``plugin``);
* a ZooKeeper key: ``/sample/note`` (``keys``);
* API routes: ``GET /sample/greetings``, ``GET|PUT /sample/note`` (``api``);
* CLI commands: ``pvc sample greetings``, ``pvc sample note [TEXT]`` (``cli``).
"""
