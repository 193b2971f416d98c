"""A pvcapid (waitress) server run in a thread of the test process, and its clean stop."""

from __future__ import annotations

import threading
from typing import Any

from waitress import wasyncore


def stop(server: Any, thread: threading.Thread, timeout: float = 5.0) -> None:
    """Close every socket of ``server`` from its own loop thread (waitress' trigger), so the
    loop ends when its map is empty; closing them from here raced with its ``select``
    (EBADF in the server thread).

    ``pull_trigger`` queues the closing before it writes to the trigger's pipe: a loop
    already woken (a worker's answer) may run it, and so close the pipe, before that
    write, which then fails with EBADF. The closing happened, so that error is no fault."""
    trigger = server.trigger
    if not trigger._closed:
        try:
            trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        except OSError:
            if not trigger._closed:
                raise
    thread.join(timeout)
    if not thread.is_alive():
        wasyncore.close_all(server._map)
