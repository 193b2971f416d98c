"""A watch-maintained copy of chosen ZooKeeper subtrees, for a process that reads far more
than it writes (pvcapid).

``Store.use_view(["vms", ...])`` keeps every key under those schema keys in memory; the
Store's reads (``get``, ``get_versioned``, ``exists``, ``children``, ``fetch`` without a
watch) of a covered path are then answered from it instead of ZooKeeper.

How it stays right:

- Each cached key holds a one-shot data watch, each key that may have children (by the
  schema's templates) a children watch; a worker thread reads a key again after its watch
  fires (which sets the watch again), in pipelined rounds, and follows new children down.
- A read first catches up (``catch_up``): a ZooKeeper ``sync`` (so the server we talk to has
  every write acknowledged to anyone before the read began), then a marker behind the watch
  events kazoo has queued by then; the read waits until the worker has re-read everything
  those events named. So a read sees every write that completed before it started, from this
  process or any other, in one round trip however many keys it covers.
- A ``volatile`` key (see ``schema.Key``: stats rewritten every few seconds) is not read
  again when its watch fires, only marked stale; the next catch-up reads every stale key
  (re-arming its watch). A process that does not read pays nothing for keys rewritten by
  others, and one that does reads each at most once per write.
- Until the first full load ends, and from a connection loss until the reload after the
  reconnect ends, the view is not ``ready`` and reads go to ZooKeeper directly.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import Callback, EventType

from pvc_kernel.state import schema

log = logging.getLogger(__name__)

RELOAD_PAUSE = 1.0
"""Seconds before the view loads again after a read failed while connected."""

CATCH_UP_TIMEOUT = 5.0
"""Seconds a read waits for the view to catch up before it reads ZooKeeper directly."""


@dataclass
class _Marker:
    """A reader's place in the event stream: released once the worker passed it."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


def volatile_paths() -> re.Pattern[str] | None:
    """What matches the path of every registered volatile key (None if there is none)."""
    found = [re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(k.template))
             for k in schema.keys().values() if k.volatile]
    return re.compile("(?:" + "|".join(found) + ")\\Z") if found else None


def subtree_depths(names: Iterable[str]) -> dict[str, int]:
    """Root path → depth of the deepest registered key below it, for schema key names
    without placeholders (``"vms"`` → ``{"/vms": 2}`` for ``/vms/{uuid}/xml``)."""
    templates = [k.template for k in schema.keys().values()]
    depths = {}
    for name in names:
        root = schema.path(name)
        below = [t[len(root) + 1:].count("/") + 1 for t in templates
                 if t.startswith(root + "/")]
        depths[root] = max(below, default=0)
    return depths


class View:
    """The cached subtrees (``roots``: root path → depth) of one kazoo client's session."""

    def __init__(self, client: Any, roots: dict[str, int]) -> None:
        self.client = client
        self.roots = dict(roots)
        self._data: dict[str, tuple[str, int]] = {}
        self._children: dict[str, frozenset[str]] = {}
        self._clock = 0
        self._stamps: dict[str, int] = {}
        """Root's child path → the clock when something under it last changed."""
        self._generations: dict[str, int] = dict.fromkeys(self.roots, 0)
        self._volatile = volatile_paths()
        self._stale: set[str] = set()
        """Volatile keys whose watch fired since they were last read."""
        self._queue: deque[tuple[str, Any]] = deque()
        self._cv = threading.Condition()
        self._reload = False
        self._stopping = False
        self._ready = False
        self.loads = 0
        """Full loads completed (the first one and one after each reconnect)."""
        self._thread = threading.Thread(target=self._run, name="pvc-view", daemon=True)
        self._thread.start()

    # -- what it covers ----------------------------------------------------------------
    def _depth(self, path: str) -> int | None:
        """Depth of ``path`` below its root (0: the root), None if outside every root."""
        for root, depth in self.roots.items():
            if path == root:
                return 0
            if path.startswith(root + "/"):
                d = path[len(root) + 1:].count("/") + 1
                return d if d <= depth else None
        return None

    def _max_depth(self, path: str) -> int:
        return next(d for r, d in self.roots.items() if path == r or path.startswith(r + "/"))

    def covers(self, path: str, children: bool = False) -> bool:
        """True if the view answers reads of ``path`` (of its children with ``children``)."""
        depth = self._depth(path)
        if depth is None:
            return False
        return not children or depth < self._max_depth(path)

    @property
    def ready(self) -> bool:
        return self._ready

    # -- reads (after catch_up) -----------------------------------------------------------
    def versioned(self, path: str) -> tuple[str | None, int]:
        """(text, version); (None, -1) if the key does not exist."""
        return self._data.get(path, (None, -1))

    def exists(self, path: str) -> bool:
        return path in self._data

    def children(self, path: str) -> list[str] | None:
        """Sorted child names, None if the key does not exist."""
        found = self._children.get(path)
        return sorted(found) if found is not None else None

    def stamps(self, root: str) -> dict[str, int]:
        """Each child of ``root`` (a root path) → a number that changes whenever anything in
        that child's subtree changes: what memos of values derived per child key on."""
        children = self._children.get(root) or frozenset()
        return {c: self._stamps.get(f"{root}/{c}", 0) for c in children}

    def generation(self, root: str) -> int:
        """A number that changes whenever anything under ``root`` changes."""
        return self._generations.get(root, 0)

    def _touch(self, path: str) -> None:
        self._clock += 1
        for root in self.roots:
            if path == root or path.startswith(root + "/"):
                self._generations[root] = self._clock
                rest = path[len(root) + 1:]
                if rest:
                    self._stamps[f"{root}/{rest.split('/', 1)[0]}"] = self._clock
                return

    def catch_up(self, timeout: float = CATCH_UP_TIMEOUT) -> bool:
        """Wait until the view holds every write completed before this call (see the module
        docstring); False if it is not ready or could not catch up in time."""
        if not self._ready:
            return False
        try:
            self.client.sync_async("/").get(timeout=timeout)
        except (KazooException, KazooTimeoutError):
            return False
        marker = _Marker()
        # behind every watch event kazoo read before the sync's answer
        self.client.handler.dispatch_callback(Callback("watch", self._push, (("mark", marker),)))
        return marker.done.wait(timeout) and marker.ok

    # -- connection ----------------------------------------------------------------------
    def on_state(self, state: str) -> None:
        """Store listener: not ready while disconnected; a full reload once connected (the
        watches of a lost session are gone, and events may have been missed meanwhile)."""
        with self._cv:
            if state == "connected":
                self._reload = True
                self._cv.notify()
            else:
                self._ready = False

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._ready = False
            self._cv.notify()

    # -- the worker ----------------------------------------------------------------------
    def _push(self, item: tuple[str, Any]) -> None:
        with self._cv:
            self._queue.append(item)
            self._cv.notify()

    def _on_data(self, event: Any) -> None:
        if event.type != EventType.NONE and event.path:   # a root created: all of it
            self._push(("node" if event.type == EventType.CREATED else "data", event.path))

    def _on_children(self, event: Any) -> None:
        if event.type != EventType.NONE and event.path:
            self._push(("children", event.path))

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._queue or self._reload or self._stopping):
                    self._cv.wait()
                if self._stopping:
                    self._release(list(self._queue), False)
                    return
                work = list(self._queue)
                self._queue.clear()
                reload, self._reload = self._reload, False
            if reload:
                self._ready = False
                self._data.clear()
                self._children.clear()
                self._stamps.clear()
                self._stale.clear()
                work += [("node", root) for root in self.roots]
            try:
                self._refresh(self._reads(work, reload))
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                log.warning("view: reading ZooKeeper failed (%s); direct reads until it "
                            "is loaded again", type(exc).__name__)
                self._ready = False
                self._release(work, False)
                with self._cv:      # connected: load again after a pause; else at reconnect
                    self._cv.wait(RELOAD_PAUSE)
                    self._reload = self._reload or self.client.connected
                continue
            if reload:
                self.loads += 1
                self._ready = self.client.connected
                log.info("view: %d keys under %s loaded", len(self._data),
                         ", ".join(self.roots))
            self._release(work, True)

    def _reads(self, work: list[tuple[str, Any]], reload: bool) -> list[tuple[str, str]]:
        """The keys to read for ``work``: a volatile key's change only marks it stale, and a
        reader waiting in ``work`` (a marker) has every stale key read."""
        reading = reload or any(kind == "mark" for kind, _ in work)
        reads = []
        for kind, path in work:
            if kind == "mark":
                continue
            if (kind == "data" and not reading and self._volatile is not None
                    and self._volatile.match(path)):
                self._stale.add(path)
            else:
                reads.append((kind, path))
        if reading and self._stale:
            reads += [("data", path) for path in self._stale]
            self._stale.clear()
        return reads

    @staticmethod
    def _release(work: list[tuple[str, Any]], ok: bool) -> None:
        for kind, marker in work:
            if kind == "mark":
                marker.ok = ok
                marker.done.set()

    def _refresh(self, work: list[tuple[str, str]]) -> None:
        """Read the named keys again (watching them), following new children down, in as
        many pipelined rounds as the tree is deep."""
        while work:
            pending = []
            for kind, path in dict.fromkeys(work):
                if kind in ("data", "node"):
                    if path in self.roots:   # a missing root is watched until it exists
                        pending.append(("root", path, self.client.exists_async(
                            path, watch=self._on_data)))
                    pending.append(("data", path, self.client.get_async(
                        path, watch=self._on_data)))
                if kind in ("children", "node") and self.covers(path, children=True):
                    pending.append(("children", path, self.client.get_children_async(
                        path, watch=self._on_children)))
            work = []
            for kind, path, result in pending:
                try:
                    value = result.get(timeout=30)
                except NoNodeError:
                    self._drop(path)
                    continue
                if kind == "data":
                    data, stat = value
                    text = data.decode("utf-8", "replace") if data is not None else ""
                    if self._data.get(path) != (text, stat.version):
                        self._data[path] = (text, stat.version)
                        self._touch(path)
                elif kind == "children":
                    work += self._set_children(path, frozenset(value))

    def _set_children(self, path: str, now: frozenset[str]) -> list[tuple[str, str]]:
        before = self._children.get(path)
        if before == now:
            return []
        before = before or frozenset()
        for gone in before - now:
            self._drop(f"{path}/{gone}")
        self._children[path] = now
        self._touch(path)
        return [("node", f"{path}/{new}") for new in now - before]

    def _drop(self, path: str) -> None:
        """Forget ``path`` and everything below it."""
        if path in self._data or path in self._children:
            self._touch(path)
        self._stamps.pop(path, None)
        self._data.pop(path, None)
        below = self._children.pop(path, None) or ()
        for child in below:
            self._drop(f"{path}/{child}")
        parent, _, name = path.rpartition("/")
        siblings = self._children.get(parent)
        if siblings is not None and name in siblings:
            self._children[parent] = siblings - {name}
