"""Cluster faults: JSON records at ``/faults/<id>`` (the API's Fault schema).

Any plugin reports (raises or refreshes) and clears its faults; the API lists, acknowledges
and deletes them. A record::

    {"id": "...", "first_reported": "YYYY-MM-DD HH:MM:SS", "last_reported": "...",
     "acknowledged_at": "" | "...", "status": "new" | "ack", "health_delta": 10,
     "message": "..."}

Every change is a version-checked read-modify-write (``Store.update``), so an acknowledgement
and a refresh of the same fault never overwrite each other. A fault reported again stays
acknowledged while its message is unchanged; a new message makes it ``new`` again.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pvc_kernel.state import schema

NEW, ACK = "new", "ack"
TIME_KEYS = ("first_reported", "last_reported", "acknowledged_at")
SORT_KEYS = (*TIME_KEYS, "status", "health_delta", "message")
DEFAULT_SORT = "last_reported"


class FaultNotFound(LookupError):
    """No fault record with this ID."""


def stamp(at: float | None = None) -> str:
    """A fault time stamp: local time as ``YYYY-MM-DD HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() if at is None else at))


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def normalise(fault_id: str, record: Any) -> dict[str, Any]:
    """A complete Fault object from a stored record (missing fields read as "" / 0 / new)."""
    rec = record if isinstance(record, dict) else {}

    def text(name: str, default: str = "") -> str:
        value = rec.get(name)
        return default if value is None else str(value)

    return {"id": text("id", fault_id) or fault_id, "first_reported": text("first_reported"),
            "last_reported": text("last_reported"), "acknowledged_at": text("acknowledged_at"),
            "status": text("status", NEW) or NEW, "health_delta": _int(rec.get("health_delta")),
            "message": text("message")}


def _load(fault_id: str, text: str | bytes | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        record = json.loads(text) if text else {}
    except ValueError:
        record = {}
    return normalise(fault_id, record)


def sort_faults(faults: list[dict[str, Any]], sort_key: str = DEFAULT_SORT) -> list[dict[str, Any]]:
    """Sorted by ``sort_key``: time keys newest first, the others ascending; ties by ID."""
    if sort_key not in SORT_KEYS:
        raise ValueError(f"Invalid sort key {sort_key!r}; use one of {', '.join(SORT_KEYS)}")
    by_id = sorted(faults, key=lambda f: str(f.get("id", "")))
    if sort_key == "health_delta":
        return sorted(by_id, key=lambda f: _int(f.get(sort_key)))
    return sorted(by_id, key=lambda f: str(f.get(sort_key) or ""), reverse=sort_key in TIME_KEYS)


# -- reporting (plugins) --------------------------------------------------------------------

def report(store: Any, fault_id: str, message: str, health_delta: int,
           at: float | None = None, sticky: bool = False) -> dict[str, Any]:
    """Raise the fault, or refresh its message, delta and ``last_reported``.

    An acknowledged fault stays acknowledged unless its message changes (then it is new
    again); with ``sticky`` it stays acknowledged whatever the message (for a condition
    whose text carries changing figures, e.g. a count of degraded objects).
    """
    now = stamp(at)

    def change(text: str | None) -> str:
        old = _load(fault_id, text) or {}
        new = {**normalise(fault_id, old), "id": fault_id,
               "first_reported": old.get("first_reported") or now, "last_reported": now,
               "health_delta": int(health_delta), "message": message}
        if not old or (old.get("message") != message and not sticky):
            new.update(status=NEW, acknowledged_at="")
        return json.dumps(new)

    return json.loads(store.update("fault", change, fault_id=fault_id))


def clear(store: Any, fault_id: str) -> None:
    """Remove the fault if it exists (the condition is over)."""
    store.delete("fault", fault_id=fault_id)


# -- reading --------------------------------------------------------------------------------

def get(store: Any, fault_id: str) -> dict[str, Any] | None:
    """One fault, or None (also for an ID that cannot be a fault ID)."""
    if not schema.valid_segment(fault_id):
        return None
    text, _ = store.get_versioned("fault", fault_id=fault_id)
    return _load(fault_id, text)


def sync(store: Any, prefix: str, current: dict[str, tuple[str, int]],
         sticky: bool = False) -> None:
    """Make the faults whose ID starts with ``prefix`` exactly ``current``.

    ``current`` maps fault ID → (message, health delta): each is reported (raised or
    refreshed), and every other fault with the prefix is cleared. For a plugin that re-reads
    a whole condition set each period (e.g. a subsystem's health checks).
    """
    for fault_id, (message, delta) in current.items():
        if not fault_id.startswith(prefix):
            raise ValueError(f"fault ID {fault_id!r} does not start with {prefix!r}")
        report(store, fault_id, message, delta, sticky=sticky)
    for fault in list_faults(store, "first_reported"):
        if fault["id"].startswith(prefix) and fault["id"] not in current:
            clear(store, fault["id"])


def list_faults(store: Any, sort_key: str = DEFAULT_SORT,
                timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every fault, sorted (see ``sort_faults``); all records read in one round trip."""
    if sort_key not in SORT_KEYS:
        raise ValueError(f"Invalid sort key {sort_key!r}; use one of {', '.join(SORT_KEYS)}")
    (ids,) = store.fetch([("children", "faults", {})], timeout)
    ids = [i for i in ids if schema.valid_segment(i)]
    texts = store.get_many([("fault", {"fault_id": i}) for i in ids], timeout)
    found = [_load(i, text or "") for i, (text, version) in zip(ids, texts, strict=True)
             if version >= 0]                                 # not deleted meanwhile
    return sort_faults(found, sort_key)


# -- managing (API) -------------------------------------------------------------------------

def acknowledge(store: Any, fault_id: str, at: float | None = None) -> dict[str, Any]:
    """Mark the fault ``ack`` (an already acknowledged fault keeps its first ``acknowledged_at``).

    Raises FaultNotFound. Version-checked against concurrent reports of the same fault.
    """
    if not schema.valid_segment(fault_id):
        raise FaultNotFound(fault_id)
    now = stamp(at)

    def change(text: str | None) -> str:
        record = _load(fault_id, text)
        if record is None:
            raise FaultNotFound(fault_id)
        if record["status"] != ACK or not record["acknowledged_at"]:
            record.update(status=ACK, acknowledged_at=now)
        return json.dumps(record)

    return json.loads(store.update("fault", change, fault_id=fault_id))


def acknowledge_all(store: Any, at: float | None = None, timeout: float = 10.0) -> list[str]:
    """Acknowledge every fault; the IDs acknowledged (faults deleted meanwhile are skipped)."""
    done = []
    for fault in list_faults(store, "first_reported", timeout):
        try:
            acknowledge(store, fault["id"], at)
        except FaultNotFound:
            continue
        done.append(fault["id"])
    return sorted(done)


def delete(store: Any, fault_id: str) -> None:
    """Delete the fault; raises FaultNotFound. A plugin may raise it again if it persists."""
    if not schema.valid_segment(fault_id):
        raise FaultNotFound(fault_id)
    if not store.delete("fault", recursive=False, fault_id=fault_id):
        raise FaultNotFound(fault_id)


def delete_all(store: Any, timeout: float = 10.0) -> list[str]:
    """Delete every fault; the IDs deleted."""
    done = []
    for fault in list_faults(store, "first_reported", timeout):
        try:
            delete(store, fault["id"])
        except FaultNotFound:
            continue
        done.append(fault["id"])
    return sorted(done)
