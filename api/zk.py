"""Pipelined ZooKeeper reads with the API's time-out (``Store.fetch``: every request sent
at once, then collected).

A request answers in one round trip however many keys it reads, and never blocks longer than
``timeout`` (kazoo's synchronous calls wait forever while the connection is down). ``Cache``
keeps hot keys in memory until a watch says they changed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pvc_kernel.state import Store, schema
from pvc_kernel.state.store import Read

Request = Read
"""(``"get"`` | ``"versioned"`` | ``"children"``, schema key name, placeholder values)."""


def get(name: str, **kw: Any) -> Request:
    """Read a key's value as text (None when it does not exist)."""
    return ("get", name, kw)


def versioned(name: str, **kw: Any) -> Request:
    """Read a key as (text, version); (None, -1) when it does not exist."""
    return ("versioned", name, kw)


def children(name: str, **kw: Any) -> Request:
    """List a key's children, sorted ([] when it does not exist)."""
    return ("children", name, kw)


def fetch(store: Store, requests: Sequence[Request], timeout: float,
          watch: Callable[[Any], None] | None = None) -> list[Any]:
    """Run ``requests`` concurrently; results in the same order (see ``Store.fetch``).

    ``watch`` (optional) is set as a one-shot watch on every key read. Raises kazoo's
    ConnectionLoss/SessionExpiredError or KazooTimeoutError when ZooKeeper cannot answer.
    """
    return store.fetch(requests, timeout, watch)


class Cache:
    """Values read through it stay in memory until a ZooKeeper watch says they changed.

    For hot, read-mostly keys that only others write (what node daemons report). Only
    ``get`` and ``children`` requests; a key that does not exist is not cached (ZooKeeper sets
    no data watch on it). Everything is dropped whenever the session is not connected, and an
    entry older than ``max_age`` seconds is read again, so a lost watch cannot pin a value.
    """

    def __init__(self, store: Store, max_age: float = 30.0) -> None:
        self.store = store
        self.max_age = max_age
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[Any, float]] = {}
        self._generation: dict[tuple[str, str], int] = {}
        self._watchers: dict[tuple[str, str], Callable[[Any], None]] = {}
        self._epoch = 0
        store.add_listener(self._on_state)

    def _on_state(self, state: str) -> None:
        if state != "connected":  # watches may be lost: forget everything
            with self._lock:
                self._entries.clear()
                self._epoch += 1

    def _watcher(self, entry: tuple[str, str]) -> Callable[[Any], None]:
        # one callable per key: kazoo keeps watchers in a set, so re-reads do not pile up
        watcher = self._watchers.get(entry)
        if watcher is None:
            watcher = self._watchers.setdefault(entry, lambda _event: self.invalidate(entry))
        return watcher

    def invalidate(self, entry: tuple[str, str]) -> None:
        with self._lock:
            self._entries.pop(entry, None)
            self._generation[entry] = self._generation.get(entry, 0) + 1

    def fetch(self, requests: Sequence[Request], timeout: float) -> list[Any]:
        """Like ``fetch``: cached values at once, the others read concurrently (and kept)."""
        now = time.monotonic()
        results: list[Any] = [None] * len(requests)
        misses = []
        with self._lock:
            for i, (kind, name, kw) in enumerate(requests):
                if kind not in ("get", "children"):
                    raise ValueError(f"cannot cache {kind!r} reads")
                entry = (kind, schema.path(name, **kw))
                cached = self._entries.get(entry)
                if cached is not None and now - cached[1] < self.max_age:
                    results[i] = cached[0]
                else:
                    misses.append((i, entry, (self._generation.get(entry, 0), self._epoch)))
        read = self.store.fetch([requests[i] for i, _entry, _stamp in misses], timeout,
                                [self._watcher(entry) for _i, entry, _stamp in misses],
                                missing_as_none=True)
        for (i, entry, stamp), value in zip(misses, read, strict=True):
            exists = value is not None      # a get of an empty key reads "", never None
            results[i] = value if exists or entry[0] == "get" else []
            with self._lock:  # unless a watch fired (or the session dropped) since the read
                if exists and stamp == (self._generation.get(entry, 0), self._epoch):
                    self._entries[entry] = (results[i], now)
        return results


def load_json(text: str | None, default: Any) -> Any:
    """Decode a JSON value read by ``fetch``; ``default`` if absent, invalid or of another type."""
    if not text:
        return default
    try:
        value = json.loads(text)
    except ValueError:
        return default
    return value if isinstance(value, type(default)) else default
