"""A pvcapid (waitress) server run in a thread of the test process, and its clean stop."""

from __future__ import annotations

import threading
from typing import Any

from waitress import wasyncore


def stop(server: Any, thread: threading.Thread, timeout: float = 5.0) -> None:
    """Close every socket of ``server`` from its own loop thread (waitress' trigger), so the
    loop ends when its map is empty; closing them from here raced with its ``select``
    (EBADF in the server thread)."""
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
    thread.join(timeout)
