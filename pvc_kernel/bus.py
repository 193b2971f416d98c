"""The event bus: ZooKeeper watches and timers in, typed events out to handlers.

Ordering: events of one object (``event.obj``) run one at a time in arrival order;
different objects run in parallel on a bounded worker pool. A handler that raises
is logged with the object and the event; it never stops the bus or the daemon.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pvc_kernel.events import ChildrenChanged, DataChanged, Event, TimerFired
from pvc_kernel.state import schema
from pvc_kernel.state.store import Store

log = logging.getLogger(__name__)

Handler = Callable[[Event], None]


class Bus:
    """Per-object ordered, cross-object parallel delivery of events to one handler."""

    def __init__(self, handler: Handler, workers: int = 8) -> None:
        self._handler = handler
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bus")
        self._queues: dict[str, deque[Event]] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._timers: list[threading.Thread] = []
        self._watches: list[Any] = []
        self.store: Store | None = None

    # -- publishing --------------------------------------------------------------
    def publish(self, event: Event) -> None:
        """Queue an event; returns at once."""
        if self._stopping.is_set():
            return
        with self._lock:
            queue = self._queues.get(event.obj)
            if queue is not None:  # a drain for this object is running: it will take it
                queue.append(event)
                return
            self._queues[event.obj] = deque([event])
        self._pool.submit(self._drain, event.obj)

    def _drain(self, obj: str) -> None:
        while True:
            with self._lock:
                queue = self._queues[obj]
                if not queue:
                    del self._queues[obj]
                    self._idle.notify_all()
                    return
                event = queue.popleft()
            try:
                self._handler(event)
            except Exception:
                log.exception("event handler failed for %s (%s)", obj, type(event).__name__)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no event is queued or running (for tests and shutdown)."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._queues, timeout)

    # -- sources -----------------------------------------------------------------
    def watch_data(self, key: str, obj: str, **args: Any) -> None:
        """Publish DataChanged(obj) whenever schema key ``key`` (with ``args``) changes."""
        assert self.store is not None, "bus.store must be set before watching"
        p = schema.path(key, **args)

        def on_change(data: bytes | None, stat: Any) -> bool:
            if self._stopping.is_set():
                return False
            value = data.decode() if data is not None else None
            self.publish(DataChanged(obj=obj, key=key, path=p, value=value, args=args))
            return True

        self._watches.append(self.store.data_watch(key, on_change, **args))

    def watch_children(self, key: str, obj: str, **args: Any) -> None:
        """Publish ChildrenChanged(obj) whenever the children of ``key`` change."""
        assert self.store is not None, "bus.store must be set before watching"
        p = schema.path(key, **args)
        self.store.ensure(key, **args)

        def on_change(children: list[str]) -> bool:
            if self._stopping.is_set():
                return False
            self.publish(ChildrenChanged(obj=obj, key=key, path=p,
                                         children=tuple(sorted(children)), args=args))
            return True

        self._watches.append(self.store.children_watch(key, on_change, **args))

    def every(self, seconds: float, name: str, obj: str | None = None) -> None:
        """Publish TimerFired(name) every ``seconds`` until the bus stops."""
        def loop() -> None:
            while not self._stopping.wait(seconds):
                self.publish(TimerFired(obj=obj or f"timer:{name}", name=name))

        t = threading.Thread(target=loop, name=f"timer-{name}", daemon=True)
        t.start()
        self._timers.append(t)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop sources, let running handlers finish for up to ``timeout`` seconds."""
        self._stopping.set()
        self.wait_idle(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
