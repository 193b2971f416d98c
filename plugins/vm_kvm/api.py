"""REST handlers of ``/vm*`` (pvcapid). They validate and write desired state; node daemons act.

Wire-compatible with PVC API v1 (paths, parameters, field names, list 404s, one-element
arrays for "get one"); see docs/vms.md for the deliberate differences.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pvc_api.sdk import ApiError, Call, RawJson, Reply, params, zk
from pvc_kernel.sdk import schema, tasks
from pvc_plugins.vm_kvm import domxml, keys, nics, records, vminfo, vms
from pvc_plugins.vm_kvm import flush_locks as locks_task
from pvc_plugins.vm_kvm.records import Record

NOT_FOUND = "VM not found."


def _fail(exc: vms.VmError) -> ApiError:
    return ApiError(exc.status, exc.message)


def read_many(call: Call, uuids: list[str]) -> list[Record]:
    """The records of ``uuids`` with what the API shows, in one pipelined round trip."""
    return records.read_many(call.api.store, uuids, shown=True, timeout=call.api.zk_timeout)


def _one(call: Call) -> Record:
    """The VM named by the path (name or UUID); 404 if there is none."""
    uuid = records.find(call.api.store, call.args["vm"])
    found = read_many(call, [uuid]) if uuid else []
    if not found:
        raise ApiError(404, NOT_FOUND)
    return found[0]


def _object(rec: Record, networks: nics.Lookup | None = None) -> dict[str, Any] | None:
    try:
        return vminfo.build(rec, networks)
    except domxml.XmlError:
        return None           # unreadable data: left out, like the original


# -- list / get / define / modify / remove ------------------------------------------------

Listed = tuple[Record, "dict[str, Any] | None", "str | None"]
"""A VM as the list shows it: its record, its object (None: unreadable XML), its JSON."""


def _listing(call: Call) -> list[Listed]:
    """Every VM's record, object and JSON; kept in pvcapid's view between requests and made
    again only for VMs whose keys changed (or all when a network plugin's answers did)."""
    store = call.api.store
    networks = nics.Lookup(call.api.plugins, store)

    def build(uuids: list[str]) -> dict[str, Listed]:
        out = {}
        for rec in read_many(call, uuids):
            obj = _object(rec, networks)
            out[rec.uuid] = (rec, obj, None if obj is None else json.dumps(obj))
        return out

    kept = store.per_child("vm_kvm.listing", "vms", build,
                           depends=nics.devices_stamp(call.api.plugins, store))
    if kept is None:          # no view (yet): read everything
        (uuids,) = zk.fetch(store, [zk.children("vms")], call.api.zk_timeout)
        kept = build(uuids)
    return list(kept.values())


def list_vms(call: Call) -> RawJson:
    """List VMs sorted by name; ``negate`` inverts the node/state/tag filters. 404 if none."""
    a = call.args
    if a["state"] and a["state"] not in keys.LIST_STATES:
        raise ApiError(400, f'VM state "{a["state"]}" is not valid.')
    node = a["node"]
    if node and not (schema.valid_segment(node) and call.api.store.exists("node", node=node)):
        raise ApiError(400, f'Specified node "{node}" is invalid.')
    match = params.name_filter(a["limit"])
    out = []
    for rec, obj, text in _listing(call):
        if a["limit"] and not (match(rec.name) or rec.uuid == a["limit"]):
            continue
        if obj is None:
            continue
        checks = []
        if a["node"]:
            checks.append(obj["node"] == a["node"])
        if a["state"]:
            checks.append(obj["state"] == a["state"])
        if a["tag"]:
            checks.append(any(t["name"] == a["tag"] for t in obj["tags"]))
        if checks and (all(checks) == bool(a["negate"])):
            continue
        out.append((rec.name, text))
    if not out:
        raise ApiError(404, NOT_FOUND)
    return RawJson("[" + ", ".join(text for _name, text in sorted(out)) + "]")


def get_vm(call: Call) -> list[dict[str, Any]]:
    """One VM (by name or UUID) as a one-element array."""
    obj = _object(_one(call), nics.Lookup(call.api.plugins, call.api.store))
    if obj is None:
        raise ApiError(404, NOT_FOUND)
    return [obj]


def define_vm(call: Call) -> dict[str, str]:
    """Define a VM from libvirt XML (state ``stop``) on ``node`` or the selector's choice.

    400 for invalid XML, a duplicate name or UUID, an unknown node, or memory/vCPUs that no
    node can hold.
    """
    a = call.args
    limit = [n.strip() for n in (a["limit"] or "").split(",") if n.strip()] or None
    try:
        with call.api.store.snapshot():   # many reads (placement), one catch-up
            rec = vms.define(call.api.store, a["xml"], node=a["node"], limit=limit,
                             selector=a["selector"], autostart=a["autostart"],
                             migration_method=a["migration_method"],
                             max_downtime=a["migration_max_downtime"],
                             user_tags=a["user_tags"], protected_tags=a["protected_tags"],
                             plugins=call.api.plugins)
    except vms.VmError as exc:
        raise _fail(exc) from None
    return {"message": f"Added new VM with Name '{rec.name}' and UUID '{rec.uuid}' to "
                       "database."}


def modify_vm(call: Call) -> dict[str, str]:
    """Replace the VM's XML (same UUID and name); ``restart`` restarts a running VM."""
    try:
        return {"message": vms.modify(call.api.store, call.args["vm"], call.args["xml"],
                                      call.args["restart"], plugins=call.api.plugins)}
    except vms.VmError as exc:
        raise _fail(exc) from None


def remove_vm(call: Call) -> dict[str, str]:
    """Undefine the VM (stopped first if it runs). File disks are never deleted."""
    try:
        return {"message": vms.remove(call.api.store, call.args["vm"])}
    except vms.VmError as exc:
        raise _fail(exc) from None


# -- meta / tags -------------------------------------------------------------------------

def get_meta(call: Call) -> dict[str, Any]:
    """The VM's PVC metadata."""
    return vminfo.meta_object(_one(call))


def set_meta(call: Call) -> dict[str, str]:
    """Change the given metadata fields (only those); 400 if none is given."""
    a = call.args
    changes = {"node_limit": a["limit"], "node_selector": a["selector"],
               "node_autostart": a["autostart"], "migration_method": a["migration_method"],
               "migration_max_downtime": a["migration_max_downtime"], "profile": a["profile"]}
    try:
        return {"message": vms.set_meta(call.api.store, a["vm"], changes)}
    except vms.VmError as exc:
        raise _fail(exc) from None


def get_tags(call: Call) -> dict[str, Any]:
    """The VM's tags."""
    rec = _one(call)
    return {"name": rec.name, "tags": [{"name": t.get("name"), "type": t.get("type", "user"),
                                        "protected": bool(t.get("protected"))}
                                       for t in rec.tags]}


def set_tags(call: Call) -> dict[str, str]:
    """Add or remove a user tag; protected tags cannot be removed."""
    a = call.args
    if a["action"] not in ("add", "remove"):
        raise ApiError(400, "Tag action must be one of 'add', 'remove'.")
    _one(call)
    try:
        return {"message": vms.tag(call.api.store, a["vm"], a["action"], a["tag"],
                                   bool(a["protected"]))}
    except vms.VmError as exc:
        raise _fail(exc) from None


# -- state / node ------------------------------------------------------------------------

def get_state(call: Call) -> dict[str, str]:
    """The VM's state (the failure shows as ``fail``)."""
    rec = _one(call)
    return {"name": rec.name, "state": rec.display_state}


def _wait(call: Call, uuid: str, done: Callable[[Record], bool]) -> Record | None:
    return vms.wait_for(call.api.store, uuid, done, call.api.wait_timeout, call.api.stopping)


def set_state(call: Call) -> dict[str, str]:
    """start | shutdown (ACPI, then a hard stop after the node's timeout) | stop (hard) |
    restart | disable. ``wait`` blocks a shutdown or restart until it has finished."""
    a = call.args
    try:
        rec, message = vms.set_state(call.api.store, a["vm"], a["state"], a["force"],
                                     plugins=call.api.plugins)
    except vms.VmError as exc:
        raise _fail(exc) from None
    if a["wait"] and a["state"] in (keys.SHUTDOWN, keys.RESTART, keys.STOP, keys.START):
        want = {keys.SHUTDOWN: lambda r: r.state == keys.STOP and r.running_on is None,
                keys.STOP: lambda r: r.running_on is None,
                keys.RESTART: lambda r: r.state == keys.START and r.running_on is not None,
                keys.START: lambda r: r.running_on == r.node or r.display_state == keys.FAIL}
        final = _wait(call, rec.uuid, want[a["state"]])
        if final is not None and final.display_state == keys.FAIL:
            raise ApiError(400, f"VM '{rec.name}' failed: {final.observed.get('failed_reason')}")
    return {"message": message}


def get_node(call: Call) -> dict[str, str]:
    """Where the VM is assigned, and where it was migrated from."""
    rec = _one(call)
    return {"name": rec.name, "node": rec.node, "last_node": rec.last_node}


def set_node(call: Call) -> dict[str, str]:
    """migrate (temporary; remembers the node it came from) | unmigrate | move (permanent).

    Live migration with the VM's max downtime, falling back to a shutdown migration unless
    ``force_live``; the target is chosen by the VM's selector when ``node`` is absent.
    """
    a = call.args
    try:
        rec, target, message = vms.migrate(call.api.store, a["vm"], a["action"], a["node"],
                                           a["force"], a["force_live"],
                                           plugins=call.api.plugins)
    except vms.VmError as exc:
        raise _fail(exc) from None
    if a["wait"] and rec.state in keys.RUN_STATES:
        final = _wait(call, rec.uuid, lambda r: r.running_on == target
                      or r.node != target or r.display_state == keys.FAIL)
        if final is not None and final.node != target:
            raise ApiError(400, final.observed.get("failed_reason")
                           or f"VM '{rec.name}' was not moved to '{target}'.")
    return {"message": message}


# -- console / rename / devices / locks ---------------------------------------------------

def console(call: Call) -> dict[str, str]:
    """The last ``lines`` lines of the VM's serial console log."""
    uuid = records.find(call.api.store, call.args["vm"])
    if uuid is None:
        raise ApiError(400, f"ERROR: Could not find VM '{call.args['vm']}' in the cluster!")
    name, text = zk.fetch(call.api.store, [zk.get("vm", uuid=uuid), zk.get("vm.console",
                                                                           uuid=uuid)],
                          call.api.zk_timeout)
    lines = call.args["lines"]
    kept = (text or "").splitlines()[-lines:] if lines > 0 else []
    return {"name": name or call.args["vm"], "data": "\n".join(kept)}


def rename(call: Call) -> dict[str, str]:
    """Rename a stopped VM (its XML name too)."""
    try:
        return {"message": vms.rename(call.api.store, call.args["vm"], call.args["new_name"])}
    except vms.VmError as exc:
        raise _fail(exc) from None


def _device(call: Call, detach: bool) -> Reply:
    rec = _one(call)
    try:
        domxml.device(call.args["xml"])
    except domxml.XmlError as exc:
        raise ApiError(400, str(exc)) from None
    node = rec.observed.get("node") if rec.running_on else None
    if node is None:
        raise ApiError(400, f"ERROR: VM '{rec.name}' is not running; edit its XML instead.")
    kind = "vm.device_detach" if detach else "vm.device_attach"
    return _task(call, kind, node, {"uuid": rec.uuid, "xml": call.args["xml"]})


def _task(call: Call, kind: str, node: str, args: dict[str, Any]) -> Reply:
    """Create a task owned by ``node``; the 202 reply pointing at it."""
    record = tasks.create_task(call.api.store, kind, node, args)
    return Reply({"task_id": record["id"], "task_name": kind, "run_on": node}, status=202,
                 headers={"Location": call.url(f"/tasks/{record['id']}")})


def attach_device(call: Call) -> Reply:
    """Hot-attach a device (its XML) to the running VM, as a task on the VM's node."""
    return _device(call, detach=False)


def detach_device(call: Call) -> Reply:
    """Hot-detach a device (its XML) from the running VM, as a task on the VM's node."""
    return _device(call, detach=True)


def flush_locks(call: Call) -> Reply:
    """Break the storage (RBD) locks of the VM's disks, as a task on the VM's node.

    The VM must be in state stop, disable, fail or mirror, unless ``force`` (400 otherwise).
    """
    rec = _one(call)
    why = locks_task.refusal(rec, call.args["force"])
    if why:
        raise ApiError(400, why)
    return _task(call, locks_task.TASK, rec.node, {"uuid": rec.uuid, "force": call.args["force"]})


# -- cluster status --------------------------------------------------------------------------

def status(api: Any) -> dict[str, Any]:
    """``vms`` counts by state and ``detail.vm`` for ``GET /status``."""
    def build(uuids: list[str]) -> dict[str, tuple[str, str]]:
        reqs = [r for u in uuids for r in (zk.get("vm", uuid=u), zk.versioned("vm.state", uuid=u),
                                            zk.get("vm.observed", uuid=u))]
        values = zk.fetch(api.store, reqs, api.zk_timeout)
        out = {}
        for i, u in enumerate(uuids):
            name, (state, version), observed = values[i * 3:(i + 1) * 3]
            if name is not None:
                out[u] = (name, records.display_state(state or keys.STOP, version,
                                                      keys.loads(observed, {})))
        return out

    kept = api.store.per_child("vm_kvm.status", "vms", build)
    if kept is None:          # no view (yet): read everything
        (uuids,) = zk.fetch(api.store, [zk.children("vms")], api.zk_timeout)
        kept = build(uuids)
    counts: dict[str, int] = {"total": len(kept)}
    for _name, shown in kept.values():
        counts[shown] = counts.get(shown, 0) + 1
    detail = [{"uuid": u, "name": name, "state": shown} for u, (name, shown) in kept.items()]
    return {"vms": counts, "detail": {"vm": sorted(detail, key=lambda d: d["name"])}}
