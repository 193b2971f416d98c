"""Keeps a node's last N log lines in ZooKeeper (``node.log``) for ``pvc node log``.

Lines are buffered and written at most once per ``flush_interval`` by one thread,
so logging never waits on ZooKeeper; while it is unreachable lines stay buffered
(bounded to the last N).
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from pvc_kernel.state.store import Store


class ZooKeeperLogHandler(logging.Handler):
    """A logging handler appending formatted records to the node's log key."""

    def __init__(self, store: Store, node: str, lines: int = 2000,
                 flush_interval: float = 1.0) -> None:
        super().__init__()
        self.store = store
        self.node = node
        self.lines = lines
        self.flush_interval = flush_interval
        self._pending: deque[str] = deque(maxlen=lines)
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="zk-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).replace("\n", " | ")
        except Exception:
            self.handleError(record)
            return
        with self._pending_lock:
            self._pending.append(line)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()

    def flush(self) -> None:
        with self._pending_lock:
            if not self._pending or not self.store.connected:
                return
            batch = list(self._pending)
            self._pending.clear()
        try:
            def append(current: str | None) -> str:
                old = current.split("\n") if current else []
                return "\n".join((old + batch)[-self.lines:])
            self.store.update("node.log", append, node=self.node)
        except Exception:
            with self._pending_lock:  # keep them for the next try, newest last
                self._pending.extendleft(reversed(batch))

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()
