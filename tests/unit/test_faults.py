"""The kernel's fault records: sorting, reporting, acknowledging, deleting (in-memory store)."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from kazoo.exceptions import NoNodeError

from pvc_kernel import faults
from pvc_kernel.state import schema
from pvc_kernel.state.store import Store

T0 = 1_700_000_000.0


class _Done:
    def __init__(self, value: Any = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    def get(self, timeout: float | None = None) -> Any:
        if self.error:
            raise self.error
        return self.value


class FakeClient:
    def __init__(self, data: dict[str, tuple[str, int]]) -> None:
        self.data = data

    def get_children_async(self, path: str, watch: Any = None) -> _Done:
        prefix = path + "/"
        return _Done([p[len(prefix):] for p in self.data if p.startswith(prefix)])

    def get_async(self, path: str, watch: Any = None) -> _Done:
        if path not in self.data:
            return _Done(error=NoNodeError())
        value, version = self.data[path]
        return _Done((value.encode(), SimpleNamespace(version=version)))


class FakeStore:
    """Keys in a dict with versions; ``update`` is the real Store's version-checked loop, and
    ``fetch``/``get_many`` its pipelined read (over a fake kazoo client).

    ``before_write`` (if set) runs once, just before the next version-checked write: a
    concurrent writer sneaking in between the read and the write.
    """

    update = Store.update
    get_many = Store.get_many
    fetch = Store.fetch
    view = None

    def __init__(self) -> None:
        self.data: dict[str, tuple[str, int]] = {}
        self.client = FakeClient(self.data)
        self.before_write: Callable[[], None] | None = None
        self.writes = 0

    def get_versioned(self, name: str, **kw: Any) -> tuple[str | None, int]:
        return self.data.get(schema.path(name, **kw), (None, -1))

    def set_if_version(self, name: str, value: Any, version: int, **kw: Any) -> bool:
        hook, self.before_write = self.before_write, None
        if hook:
            hook()
        p = schema.path(name, **kw)
        if self.data.get(p, (None, -1))[1] != version:
            return False
        self.data[p] = (value, version + 1)
        self.writes += 1
        return True

    def delete(self, name: str, recursive: bool = True, **kw: Any) -> bool:
        return self.data.pop(schema.path(name, **kw), None) is not None

    def record(self, fault_id: str) -> dict[str, Any]:
        return json.loads(self.data[schema.path("fault", fault_id=fault_id)][0])


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def _f(fid: str, **kw: Any) -> dict[str, Any]:
    return faults.normalise(fid, kw)


SAMPLE = [
    _f("a", first_reported="2025-01-01 10:00:00", last_reported="2025-01-03 10:00:00",
       acknowledged_at="", status="new", health_delta=10, message="zeta"),
    _f("b", first_reported="2025-01-02 10:00:00", last_reported="2025-01-02 10:00:00",
       acknowledged_at="2025-01-02 11:00:00", status="ack", health_delta=50, message="alpha"),
    _f("c", first_reported="2024-12-31 10:00:00", last_reported="2025-01-04 10:00:00",
       acknowledged_at="2025-01-01 11:00:00", status="ack", health_delta=5, message="mid"),
]


@pytest.mark.parametrize("key, order", [
    ("last_reported", ["c", "a", "b"]),           # newest first
    ("first_reported", ["b", "a", "c"]),
    ("acknowledged_at", ["b", "c", "a"]),         # never acknowledged: last
    ("status", ["b", "c", "a"]),                  # ascending, ties by ID
    ("health_delta", ["c", "a", "b"]),            # numeric, ascending
    ("message", ["b", "c", "a"]),
])
def test_sort_keys(key, order):
    assert [f["id"] for f in faults.sort_faults(SAMPLE, key)] == order


def test_sort_is_numeric_for_deltas_and_rejects_unknown_keys():
    items = [_f("x", health_delta=100), _f("y", health_delta=9), _f("z", health_delta="25")]
    assert [f["id"] for f in faults.sort_faults(items, "health_delta")] == ["y", "z", "x"]
    assert faults.sort_faults([], "message") == []
    with pytest.raises(ValueError, match="Invalid sort key"):
        faults.sort_faults(SAMPLE, "id")


def test_normalise_fills_missing_fields():
    assert faults.normalise("f1", {"health_delta": "7", "status": None}) == {
        "id": "f1", "first_reported": "", "last_reported": "", "acknowledged_at": "",
        "status": "new", "health_delta": 7, "message": ""}
    assert faults.normalise("f2", "not a dict")["health_delta"] == 0


def test_report_creates_then_refreshes(store):
    first = faults.report(store, "bmc-hv1", "BMC down", 10, at=T0)
    assert first == {"id": "bmc-hv1", "first_reported": faults.stamp(T0),
                     "last_reported": faults.stamp(T0), "acknowledged_at": "", "status": "new",
                     "health_delta": 10, "message": "BMC down"}
    again = faults.report(store, "bmc-hv1", "BMC down", 20, at=T0 + 60)
    assert again["first_reported"] == faults.stamp(T0)
    assert again["last_reported"] == faults.stamp(T0 + 60) and again["health_delta"] == 20


def test_acknowledge_sets_status_and_time_once(store):
    faults.report(store, "f", "m", 10, at=T0)
    acked = faults.acknowledge(store, "f", at=T0 + 5)
    assert acked["status"] == "ack" and acked["acknowledged_at"] == faults.stamp(T0 + 5)
    again = faults.acknowledge(store, "f", at=T0 + 99)  # idempotent: the first time stays
    assert again["acknowledged_at"] == faults.stamp(T0 + 5)
    assert store.record("f") == again


def test_reported_again_stays_acknowledged_unless_the_message_changes(store):
    faults.report(store, "f", "disk slow", 10, at=T0)
    faults.acknowledge(store, "f", at=T0 + 1)
    same = faults.report(store, "f", "disk slow", 10, at=T0 + 2)
    assert same["status"] == "ack" and same["acknowledged_at"] == faults.stamp(T0 + 1)
    assert same["last_reported"] == faults.stamp(T0 + 2)
    changed = faults.report(store, "f", "disk failed", 10, at=T0 + 3)
    assert changed["status"] == "new" and changed["acknowledged_at"] == ""
    assert changed["first_reported"] == faults.stamp(T0)


def test_acknowledge_unknown_or_invalid_id(store):
    for bad in ("nope", "..", "a/b", ""):
        with pytest.raises(faults.FaultNotFound):
            faults.acknowledge(store, bad)
    assert store.data == {}  # nothing created


def test_acknowledge_retries_when_a_report_sneaks_in(store):
    """A refresh lands between the ack's read and write: the ack is redone on the new record."""
    faults.report(store, "f", "m", 10, at=T0)
    store.before_write = lambda: faults.report(store, "f", "m", 30, at=T0 + 10)
    acked = faults.acknowledge(store, "f", at=T0 + 5)
    assert acked["status"] == "ack" and acked["health_delta"] == 30
    assert acked["last_reported"] == faults.stamp(T0 + 10)
    assert store.record("f") == acked


def test_report_retries_when_an_ack_sneaks_in(store):
    """An ack lands between a refresh's read and write: the refresh keeps the ack."""
    faults.report(store, "f", "m", 10, at=T0)
    store.before_write = lambda: faults.acknowledge(store, "f", at=T0 + 1)
    refreshed = faults.report(store, "f", "m", 10, at=T0 + 2)
    assert refreshed["status"] == "ack" and refreshed["acknowledged_at"] == faults.stamp(T0 + 1)


def test_acknowledge_of_a_fault_deleted_meanwhile_is_not_found(store):
    faults.report(store, "f", "m", 10, at=T0)
    store.before_write = lambda: faults.clear(store, "f")
    with pytest.raises(faults.FaultNotFound):
        faults.acknowledge(store, "f")
    assert store.data == {}  # not re-created by the ack


def test_list_get_and_the_all_variants(store):
    faults.report(store, "old", "o", 5, at=T0)
    faults.report(store, "new", "n", 20, at=T0 + 100)
    assert [f["id"] for f in faults.list_faults(store)] == ["new", "old"]
    assert [f["id"] for f in faults.list_faults(store, "health_delta")] == ["old", "new"]
    with pytest.raises(ValueError):
        faults.list_faults(store, "bogus")
    assert faults.get(store, "old")["message"] == "o"
    assert faults.get(store, "none") is None and faults.get(store, "..") is None
    assert faults.acknowledge_all(store, at=T0 + 200) == ["new", "old"]
    assert {f["status"] for f in faults.list_faults(store)} == {"ack"}
    faults.delete(store, "old")
    with pytest.raises(faults.FaultNotFound):
        faults.delete(store, "old")
    assert faults.delete_all(store) == ["new"]
    assert faults.list_faults(store) == [] and faults.delete_all(store) == []
    assert faults.acknowledge_all(store) == []


def test_sticky_report_keeps_an_acknowledgement_through_new_figures(store):
    faults.report(store, "ceph-warn-pg_degraded", "Degraded: 12/36 objects", 10, at=T0)
    faults.acknowledge(store, "ceph-warn-pg_degraded", at=T0 + 1)
    rec = faults.report(store, "ceph-warn-pg_degraded", "Degraded: 3/36 objects", 10,
                        at=T0 + 2, sticky=True)
    assert rec["status"] == "ack" and rec["message"] == "Degraded: 3/36 objects"
    assert rec["acknowledged_at"] == faults.stamp(T0 + 1)


def test_sync_raises_refreshes_and_clears_only_its_prefix(store):
    faults.report(store, "bmc-hv2", "BMC does not answer", 10, at=T0)
    faults.sync(store, "ceph-", {"ceph-warn-a": ("A", 10), "ceph-err-b": ("B", 50)})
    assert sorted(f["id"] for f in faults.list_faults(store)) == ["bmc-hv2", "ceph-err-b",
                                                                  "ceph-warn-a"]
    faults.sync(store, "ceph-", {"ceph-warn-a": ("A again", 10)})
    assert sorted(f["id"] for f in faults.list_faults(store)) == ["bmc-hv2", "ceph-warn-a"]
    assert faults.get(store, "ceph-warn-a")["message"] == "A again"
    faults.sync(store, "ceph-", {})
    assert [f["id"] for f in faults.list_faults(store)] == ["bmc-hv2"]
    with pytest.raises(ValueError, match="does not start with"):
        faults.sync(store, "ceph-", {"other": ("x", 1)})
