"""Handlers of the ``/vm/<vm>/snapshot`` routes: checks answered at once (404 for no such
VM or snapshot, 400 for a bad name or a running VM), the work as a task on the primary."""

from __future__ import annotations

from typing import Any

from pvc_api.sdk import ApiError, Call, Reply, zk
from pvc_kernel.sdk import tasks
from pvc_plugins.vm_protect import autobackup, exports, snapshots


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


def _task(call: Call, kind: str, args: dict[str, Any], message: str) -> Reply:
    """Start task ``kind`` on the primary; the v1 202 reply."""
    (primary,) = zk.fetch(call.api.store, [zk.get("config.primary_node")], call.api.zk_timeout)
    if not primary or primary == "none":
        raise ApiError(503, "There is no primary node to run the task; try again")
    record = tasks.create_task(call.api.store, kind, primary, args)
    return Reply({"message": message, "task_id": record["id"], "task_name": record["type"],
                  "run_on": f"{primary} (primary)"}, status=202,
                 headers={"Location": call.url(f"/tasks/{record['id']}")})


def _start(call: Call, kind: str, info: dict[str, Any], name: str, message: str,
           **extra: Any) -> Reply:
    return _task(call, kind, {"vm": info["uuid"], "snapshot": name, **extra}, message)


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


def _path(call: Call, param: str) -> str:
    path = call.args.get(param)
    if not path:
        raise ApiError(400, f"{param} is required")
    if not path.startswith("/"):
        raise ApiError(400, f"{param} must be an absolute path (a directory on the primary "
                            "node)")
    return path


def export_snapshot(call: Call) -> Reply:
    """Export a snapshot to files on the primary (task ``vm.export_snapshot``)."""
    name = _name(call)
    path = _path(call, "export_path")
    info = _vm(call)
    rec = _existing(call, info, name)
    parent = call.args.get("incremental_parent") or None
    if parent:
        older = _existing(call, info, parent)
        if float(older["timestamp"]) >= float(rec["timestamp"]):
            raise ApiError(400, f"the parent '{parent}' is not older than '{name}'")
    return _start(call, exports.EXPORT_TASK, info, name,
                  f"Exporting snapshot '{name}' of VM '{info['name']}' to {path}.",
                  path=path, parent=parent)


def import_snapshot(call: Call) -> Reply:
    """Define a VM again from an export on the primary (task ``vm.import_snapshot``)."""
    name = _name(call)
    path = _path(call, "import_path")
    vm = call.args["vm"]
    if "/" in vm or vm.startswith("."):
        raise ApiError(400, f"VM name {vm!r} is not valid")
    if snapshots.ask(call.api, "pvc_vm_volumes", vm=vm):
        raise ApiError(400, f"VM '{vm}' exists: remove it before importing it")
    retain = call.args.get("retain_snapshot")
    info = {"uuid": vm, "name": vm}
    return _start(call, exports.IMPORT_TASK, info, name,
                  f"Importing VM '{vm}' from snapshot '{name}' in {path}.", path=path,
                  retain=True if retain is None else bool(retain))


def start_autobackup(call: Call) -> Reply:
    """Back up every VM with an autobackup tag (task ``cluster.autobackup``)."""
    message = "Starting autobackup of the tagged VMs."
    if call.args.get("email_recipients"):
        message += " (no mail is sent: the report is the task's status)"
    return _task(call, autobackup.TASK, {"force_full": bool(call.args.get("force_full"))},
                 message)
