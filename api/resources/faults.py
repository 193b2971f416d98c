"""Fault routes: list, acknowledge and delete fault records (``pvc_kernel.faults``)."""

from __future__ import annotations

from typing import Any

from pvc_api.errors import ApiError
from pvc_api.spec import Call
from pvc_kernel import faults


def _not_found(fault_id: str) -> ApiError:
    return ApiError(404, f"No fault with ID {fault_id} found")


def list_faults(call: Call) -> list[dict[str, Any]]:
    """Every fault, sorted by ``sort_key``: time keys newest first, the others ascending.

    An empty list when there is no fault.
    """
    return faults.list_faults(call.api.store, call.args["sort_key"] or faults.DEFAULT_SORT,
                              call.api.zk_timeout)


def _on_all(call: Call, action: Any, verb: str) -> dict[str, str]:
    """Run ``action`` on every fault; the original's message, IDs newest report first.

    With no fault at all the ID list is empty, as in the original (a script may grep
    ``Successfully <verb> fault(s)``).
    """
    store, timeout = call.api.store, call.api.zk_timeout
    order = [f["id"] for f in faults.list_faults(store, "last_reported", timeout)]
    done = set(action(store, timeout=timeout))
    ids = [i for i in order if i in done] + sorted(done.difference(order))
    return {"message": f"Successfully {verb} fault(s) {', '.join(ids)}"}


def _on_one(call: Call, action: Any, verb: str) -> dict[str, str]:
    fault_id = call.args["fault_id"]
    try:
        action(call.api.store, fault_id)
    except faults.FaultNotFound:
        raise _not_found(fault_id) from None
    return {"message": f"Successfully {verb} fault(s) {fault_id}"}


def acknowledge_all(call: Call) -> dict[str, str]:
    """Acknowledge every fault: they no longer count against the cluster health."""
    return _on_all(call, faults.acknowledge_all, "acknowledged")


def delete_all(call: Call) -> dict[str, str]:
    """Delete every fault (a plugin raises a fault again while its condition lasts)."""
    return _on_all(call, faults.delete_all, "deleted")


def get_fault(call: Call) -> list[dict[str, Any]]:
    """One fault as a one-element array; an empty array (still 200) for an unknown ID."""
    fault = faults.get(call.api.store, call.args["fault_id"])
    return [fault] if fault else []


def acknowledge(call: Call) -> dict[str, str]:
    """Acknowledge one fault (status ``ack``, ``acknowledged_at`` set).

    It stays acknowledged when reported again with the same message.
    """
    return _on_one(call, faults.acknowledge, "acknowledged")


def delete(call: Call) -> dict[str, str]:
    """Delete one fault."""
    return _on_one(call, faults.delete, "deleted")
