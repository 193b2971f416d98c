"""``vms.wait_for``: woken by ZooKeeper watches, not polling (a fake store and client whose
one-shot watches fire on writes, like kazoo's)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from typing import Any

import pytest
from kazoo.exceptions import ConnectionLoss, KazooException

from pvc_kernel.state import schema
from pvc_plugins.vm_kvm import keys, vms

UUID = "6e0b5b4c-9c39-4b8e-9a3c-2f4c6f0d1a01"
LONG = 60.0     # a recheck no test may rely on: the wait must be woken by a watch
for _key in keys.KEYS:
    schema.register(_key)


class _Done:
    def __init__(self, value: Any = None) -> None:
        self.value = value

    def get(self, timeout: float | None = None) -> Any:
        return self.value


class FakeClient:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.watches: dict[str, set[Any]] = defaultdict(set)
        self.arms = 0
        self.fail = 0           # the next `fail` arms raise ConnectionLoss

    def exists_async(self, path: str, watch: Any = None) -> _Done:
        if self.fail:
            self.fail -= 1
            raise ConnectionLoss()
        self.arms += 1
        self.watches[path].add(watch)
        return _Done(path in self.store.data or None)

    def fire(self, path: str) -> None:
        for watch in self.watches.pop(path, set()):
            watch(("CHANGED", path))


class FakeStore:
    """Paths → text; every write fires (and drops) the path's watches, like ZooKeeper."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.client = FakeClient(self)
        self.reads = 0
        self.read_done = threading.Event()      # a whole record was read
        for key, value in (("vm", "vm1"), ("vm.state", keys.START), ("vm.node", "hv1"),
                           ("vm.observed", "{}")):
            self.data[schema.path(key, uuid=UUID)] = value

    def watch_once(self, keys_: list[tuple[str, dict[str, Any]]], watcher: Any,
                   timeout: float = 10.0) -> None:
        """Like ``Store.watch_once``: a one-shot watch per key, existing or not."""
        for name, kw in keys_:
            self.client.exists_async(schema.path(name, **kw), watcher)

    def get(self, name: str, default: str | None = None, **kw: Any) -> str | None:
        if name == "vm.observed":         # the last key records.read needs
            self.reads += 1
            self.read_done.set()
        return self.data.get(schema.path(name, **kw), default)

    def get_versioned(self, name: str, **kw: Any) -> tuple[str | None, int]:
        p = schema.path(name, **kw)
        return (self.data[p], 1) if p in self.data else (None, -1)

    def fetch(self, requests: list[tuple[str, str, dict[str, Any]]], *_a: Any,
              **_kw: Any) -> list[Any]:
        """``Store.fetch``'s answers (how records.read reads a record)."""
        return [self.get_versioned(name, **kw) if kind == "versioned" else self.get(name, **kw)
                for kind, name, kw in requests]

    def write(self, name: str, value: str | None, **kw: Any) -> None:
        p = schema.path(name, **kw)
        if value is None:
            self.data.pop(p, None)
        else:
            self.data[p] = value
        self.client.fire(p)

    def after_first_read(self, fn: Any) -> threading.Thread:
        def run() -> None:
            assert self.read_done.wait(10)
            fn()
        t = threading.Thread(target=run)
        t.start()
        return t


def running(rec: Any) -> bool:
    return rec.observed.get("state") == keys.RUNNING


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def test_a_change_wakes_the_wait_at_once(store):
    t = store.after_first_read(lambda: store.write(
        "vm.observed", json.dumps({"node": "hv1", "state": keys.RUNNING}), uuid=UUID))
    rec = vms.wait_for(store, UUID, running, 30, recheck=LONG)
    t.join()
    assert rec is not None and running(rec)
    assert store.reads == 2                        # the first read, and one per change


def test_a_removed_vm_ends_the_wait_with_none(store):
    def remove() -> None:
        for key in ("vm.observed", "vm.node", "vm.state", "vm"):
            store.write(key, None, uuid=UUID)

    t = store.after_first_read(remove)
    assert vms.wait_for(store, UUID, running, 30, recheck=LONG) is None
    t.join()


def test_timeout_reads_once_more_and_leaves_no_watch_armed_again(store):
    assert vms.wait_for(store, UUID, running, 0.05, recheck=LONG) is None
    assert store.reads == 2                        # first read, then one at the deadline
    arms = store.client.arms
    assert set(store.client.watches) == {schema.path(k, uuid=UUID) for k in vms.WATCHED}
    for key in vms.WATCHED:     # each one-shot watch fires once more, and nothing re-arms
        store.write(key, store.data[schema.path(key, uuid=UUID)], uuid=UUID)
    assert store.client.arms == arms and not any(store.client.watches.values())


def test_stop_ends_the_wait_without_waiting_for_zookeeper(store):
    stop = threading.Event()
    t = store.after_first_read(stop.set)
    started = time.monotonic()
    assert vms.wait_for(store, UUID, running, 30, stop, recheck=LONG) is None
    t.join()
    assert time.monotonic() - started < 10 and store.reads == 1


def test_also_watches_other_keys_the_condition_reads(store):
    def fenced(_rec: Any) -> bool:
        return store.data.get(schema.path("node.daemon_state", node="hv1")) == "fenced"

    t = store.after_first_read(lambda: store.write("node.daemon_state", "fenced", node="hv1"))
    rec = vms.wait_for(store, UUID, fenced, 30, also=[("node.daemon_state", {"node": "hv1"})],
                       recheck=LONG)
    t.join()
    assert rec is not None and store.reads == 2


def test_zookeeper_errors_propagate_unless_tolerated(store, monkeypatch):
    store.client.fail = 1
    with pytest.raises(KazooException):
        vms.wait_for(store, UUID, running, 30, recheck=LONG)
    monkeypatch.setattr(vms, "ERROR_RETRY", 0.01)
    store.client.fail = 2
    store.data[schema.path("vm.observed", uuid=UUID)] = json.dumps({"state": keys.RUNNING})
    rec = vms.wait_for(store, UUID, running, 30, recheck=LONG, errors=(KazooException,))
    assert rec is not None and running(rec) and store.client.fail == 0
