"""Fault records at ``/faults/<id>`` (the API's Fault schema): raise, refresh, clear."""

from __future__ import annotations

import json
import time
from typing import Any

from pvc_kernel.state import schema


def stamp(at: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at or time.time()))


def report(store: Any, fault_id: str, message: str, health_delta: int) -> dict[str, Any]:
    """Create the fault, or refresh its message and ``last_reported`` (a repeated fault that
    was acknowledged becomes new again when its message changes)."""
    now = stamp()

    def change(text: str | None) -> str:
        old = json.loads(text) if text else {}
        new = {"id": fault_id, "first_reported": old.get("first_reported") or now,
               "last_reported": now, "acknowledged_at": old.get("acknowledged_at", ""),
               "status": old.get("status", "new"), "health_delta": int(health_delta),
               "message": message}
        if old.get("message") != message:
            new.update(status="new", acknowledged_at="")
        return json.dumps(new)

    return json.loads(store.update("fault", change, fault_id=fault_id))


def clear(store: Any, fault_id: str) -> None:
    store.delete("fault", fault_id=fault_id)


def get(store: Any, fault_id: str) -> dict[str, Any] | None:
    return store.get_json("fault", None, fault_id=fault_id) if schema.valid_segment(fault_id) \
        else None
