"""Handlers of the ``/vm/<vm>/snapshot`` routes: checks answered at once (404 for no such
VM or snapshot, 400 for a bad name or a running VM), the work as a task on the primary."""

from __future__ import annotations

from typing import Any

from pvc_api.sdk import ApiError, Call, Reply, zk
from pvc_kernel.sdk import tasks
from pvc_plugins.vm_protect import snapshots


def _vm(call: Call) -> dict[str, Any]:
    try:
        return snapshots.find_vm(call.api, call.args["vm"])
    except snapshots.SnapshotError as exc:
        raise ApiError(exc.status, str(exc)) from None


def _name(call: Call, default: str | None = None) -> str:
    name = call.args.get("snapshot_name") or default
    if not name:
        raise ApiError(400, "snapshot_name is required")
    try:
        snapshots.check_name(name)
    except snapshots.SnapshotError as exc:
        raise ApiError(400, str(exc)) from None
    return name


def _start(call: Call, kind: str, info: dict[str, Any], name: str, message: str) -> Reply:
    (primary,) = zk.fetch(call.api.store, [zk.get("config.primary_node")], call.api.zk_timeout)
    if not primary or primary == "none":
        raise ApiError(503, "There is no primary node to run the task; try again")
    record = tasks.create_task(call.api.store, kind, primary,
                               {"vm": info["uuid"], "snapshot": name})
    return Reply({"message": message, "task_id": record["id"], "task_name": record["type"],
                  "run_on": f"{primary} (primary)"}, status=202,
                 headers={"Location": call.url(f"/tasks/{record['id']}")})


def _existing(call: Call, info: dict[str, Any], name: str) -> dict[str, Any]:
    rec = call.api.store.get_json("vm_protect.snapshot", uuid=info["uuid"], snapshot=name)
    if not isinstance(rec, dict):
        raise ApiError(404, f"VM '{info['name']}' has no snapshot '{name}'")
    return rec


def list_snapshots(call: Call) -> list[dict[str, Any]]:
    """The VM's snapshots, newest first."""
    info = _vm(call)
    return snapshots.listing(call.api.store, info["uuid"])


def create_snapshot(call: Call) -> Reply:
    """Snapshot every volume of the VM (task ``vm.create_snapshot``)."""
    name = _name(call, snapshots.default_name())
    info = _vm(call)
    if call.api.store.exists("vm_protect.snapshot", uuid=info["uuid"], snapshot=name):
        raise ApiError(400, f"VM '{info['name']}' already has a snapshot '{name}'")
    return _start(call, snapshots.CREATE_TASK, info, name,
                  f"Creating snapshot '{name}' of VM '{info['name']}'.")


def remove_snapshot(call: Call) -> Reply:
    """Remove a snapshot (task ``vm.remove_snapshot``)."""
    name = _name(call)
    info = _vm(call)
    _existing(call, info, name)
    return _start(call, snapshots.REMOVE_TASK, info, name,
                  f"Removing snapshot '{name}' of VM '{info['name']}'.")


def rollback_snapshot(call: Call) -> Reply:
    """Roll a stopped VM back to a snapshot (task ``vm.rollback_snapshot``)."""
    name = _name(call)
    info = _vm(call)
    _existing(call, info, name)
    if info["state"] not in snapshots.STOPPED or info.get("running_on"):
        raise ApiError(400, f"VM '{info['name']}' must be stopped to roll back "
                            f"(it is {info['state']})")
    return _start(call, snapshots.ROLLBACK_TASK, info, name,
                  f"Rolling back VM '{info['name']}' to snapshot '{name}'.")
