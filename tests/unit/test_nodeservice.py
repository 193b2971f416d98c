"""Node transitions (flush / unflush) never overlap: the real TaskRunner and nodeservice
handlers on an in-memory store, with a test plugin whose hooks block until told."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from kazoo.exceptions import NodeExistsError, NoNodeError

from pvc_kernel import nodeservice, tasks
from pvc_kernel.hookspecs import hookimpl
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import schema
from pvc_kernel.state.store import Store

WAIT = 10.0     # s a test waits for something that should happen at once


class _Done:
    def __init__(self, value: Any = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def get(self, timeout: float | None = None) -> Any:
        if self.error:
            raise self.error
        return self.value


class FakeStore:
    """Paths → (text, version) under one lock; ``update`` is the real Store's loop.
    ``changed`` is notified on every write, so a test can wait for a value."""

    update = Store.update

    def __init__(self) -> None:
        self.data: dict[str, tuple[str, int]] = {}
        self.changed = threading.Condition()
        self.client = SimpleNamespace(create=self._create, get_async=self._get_async)

    def _create(self, path: str, data: bytes, makepath: bool = False) -> None:
        with self.changed:
            if path in self.data:
                raise NodeExistsError()
            self.data[path] = (data.decode(), 0)
            self.changed.notify_all()

    def _get_async(self, path: str) -> _Done:
        with self.changed:
            if path not in self.data:
                return _Done(error=NoNodeError())
            return _Done((self.data[path][0].encode(), None))

    # the Store methods tasks.py may use in place of the raw client ones
    def create(self, name: str, value: Any, **kw: Any) -> None:
        self._create(schema.path(name, **kw), value.encode())

    def fetch(self, requests: list[tuple[str, str, dict[str, Any]]],
              timeout: float = 10.0) -> list[str | None]:
        return [self.get_versioned(name, **kw)[0] for _op, name, kw in requests]

    def get(self, name: str, default: str | None = None, **kw: Any) -> str | None:
        return self.get_versioned(name, **kw)[0] or default

    def get_json(self, name: str, default: Any = None, **kw: Any) -> Any:
        text = self.get(name, **kw)
        return json.loads(text) if text else default

    def get_versioned(self, name: str, **kw: Any) -> tuple[str | None, int]:
        with self.changed:
            return self.data.get(schema.path(name, **kw), (None, -1))

    def set(self, name: str, value: Any, **kw: Any) -> None:
        p = schema.path(name, **kw)
        with self.changed:
            self.data[p] = (value, self.data.get(p, ("", -1))[1] + 1)
            self.changed.notify_all()

    def set_if_version(self, name: str, value: Any, version: int, **kw: Any) -> bool:
        p = schema.path(name, **kw)
        with self.changed:
            if self.data.get(p, (None, -1))[1] != version:
                return False
            self.data[p] = (value, version + 1)
            self.changed.notify_all()
            return True

    def children(self, name: str, **kw: Any) -> list[str]:
        prefix = schema.path(name, **kw) + "/"
        with self.changed:
            return sorted(p[len(prefix):] for p in self.data if p.startswith(prefix))

    def wait_until(self, what: str, test: Any) -> None:
        with self.changed:
            assert self.changed.wait_for(test, WAIT), f"timed out waiting for {what}"


class Hooks:
    """The test plugin: each hook logs, signals that it runs, and does what the test set."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.running = {"flush": threading.Event(), "unflush": threading.Event()}
        self.saw_cancel = threading.Event()   # the flush hook saw its task cancelled
        self.release = threading.Event()      # lets a blocked hook return
        self.honour_cancel = True              # flush returns as soon as it is cancelled

    def _run(self, kind: str, ctx: Any) -> None:
        self.log.append(f"{kind} start")
        self.running[kind].set()
        if kind == "flush":
            if self.honour_cancel:
                assert ctx._cancelled.wait(WAIT)
                self.log.append("flush saw cancel")
                self.saw_cancel.set()
            assert self.release.wait(WAIT)
        self.log.append(f"{kind} end")

    @hookimpl
    def pvc_node_flush(self, daemon: Any, ctx: Any) -> None:
        self._run("flush", ctx)

    @hookimpl
    def pvc_node_unflush(self, daemon: Any, ctx: Any) -> None:
        self._run("unflush", ctx)


class Node:
    """A daemon as nodeservice sees it, with a real TaskRunner."""

    def __init__(self) -> None:
        self.node = "hv1"
        self.store = FakeStore()
        self.hooks = Hooks()
        self.plugins = PluginHost()
        self.plugins.register(self.hooks, "testhooks")
        self.tasks = tasks.TaskRunner(self.store, self.node, nodeservice.task_handlers(self),
                                      daemon=self)
        self.waiting = threading.Event()      # a transition waits for a cancelled one
        real_wait = self.tasks.wait_stopped

        def wait_stopped(task_id: str, timeout: float) -> bool:
            self.waiting.set()
            return real_wait(task_id, timeout)

        self.tasks.wait_stopped = wait_stopped  # type: ignore[method-assign]

    def request(self, kind: str) -> dict[str, Any]:
        record = tasks.create_task(self.store, kind, self.node)
        self.tasks.scan()
        return record

    def finished(self, record: dict[str, Any]) -> dict[str, Any]:
        self.store.wait_until(f"task {record['id']} to finish", lambda: (
            tasks.get_task(self.store, record["id"]) or {}).get("state") in tasks.FINISHED)
        return tasks.get_task(self.store, record["id"])

    @property
    def domain_state(self) -> str | None:
        return self.store.get("node.domain_state", node=self.node)


@pytest.fixture
def node():
    n = Node()
    yield n
    n.hooks.release.set()
    n.tasks.stop()


def test_a_cancelled_transition_is_confirmed_stopped_before_the_new_one_starts(node):
    flush = node.request(nodeservice.FLUSH_TASK)
    assert node.hooks.running["flush"].wait(WAIT)
    assert node.domain_state == "flush"

    unflush = node.request(nodeservice.UNFLUSH_TASK)
    assert node.waiting.wait(WAIT)                    # the unflush waits for the flush ...
    assert node.hooks.saw_cancel.wait(WAIT)
    assert node.tasks.running(nodeservice.FLUSH_TASK)  # ... which has not returned yet
    assert not node.hooks.running["unflush"].is_set()
    assert node.domain_state == "flush"

    node.hooks.release.set()
    assert node.finished(flush)["state"] == tasks.FAILURE
    done = node.finished(unflush)
    assert done["state"] == tasks.SUCCESS, done["status"]
    assert node.hooks.log == ["flush start", "flush saw cancel", "flush end",
                              "unflush start", "unflush end"]
    assert node.domain_state == "ready"
    assert "Cancelled" in tasks.get_task(node.store, flush["id"])["status"]


def test_a_transition_that_does_not_stop_makes_the_new_one_fail_clearly(node, monkeypatch):
    monkeypatch.setattr(nodeservice, "CANCEL_WAIT", 0.2)
    node.hooks.honour_cancel = False                  # a hook that never checks
    flush = node.request(nodeservice.FLUSH_TASK)
    assert node.hooks.running["flush"].wait(WAIT)

    unflush = node.request(nodeservice.UNFLUSH_TASK)
    failed = node.finished(unflush)
    assert failed["state"] == tasks.FAILURE
    assert f"the node.flush task {flush['id']} was cancelled but is still running" \
        in failed["status"]
    assert "domain state left unchanged" in failed["status"]
    assert not node.hooks.running["unflush"].is_set()
    assert node.domain_state == "flush"               # the unflush did not touch it

    node.hooks.release.set()                           # the flush ends at last ...
    assert node.finished(flush)["state"] == tasks.FAILURE
    assert node.domain_state == "flush"               # ... cancelled: not "flushed"
    assert node.hooks.log == ["flush start", "flush end"]


def test_a_transition_that_finds_a_newer_one_running_stops_at_once(node):
    older = tasks.new_record(nodeservice.FLUSH_TASK, node.node)
    newer = {**tasks.new_record(nodeservice.UNFLUSH_TASK, node.node),
             "created": older["created"] + 1}
    running = tasks.TaskContext(node.store, newer, node)
    node.tasks._running[newer["id"]] = running
    with pytest.raises(tasks.TaskCancelled, match=f"superseded by node.unflush task "
                                                  f"{newer['id']}"):
        nodeservice._run_transition(tasks.TaskContext(node.store, older, node),
                                    threading.Lock())
    assert not running.cancelled and node.domain_state is None


def test_the_transition_lock_keeps_hooks_from_overlapping(node, monkeypatch):
    monkeypatch.setattr(nodeservice, "CANCEL_WAIT", 0.1)
    lock = threading.Lock()
    lock.acquire()                  # a transition this daemon's runner does not list
    ctx = tasks.TaskContext(node.store, tasks.new_record(nodeservice.UNFLUSH_TASK, node.node),
                            node)
    with pytest.raises(RuntimeError, match="another transition of this node still runs"):
        nodeservice._run_transition(ctx, lock)
    assert node.domain_state is None and node.hooks.log == []
