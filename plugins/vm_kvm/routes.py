"""The route table of ``/vm*`` (added to the API by ``pvc_api_routes``)."""

from __future__ import annotations

import re
from typing import Any

from pvc_api.sdk import ApiError, Call, Param, Route, array_of, ref
from pvc_plugins.vm_kvm import api as h
from pvc_plugins.vm_kvm import keys

TAG = "vm"
MSG = ref("Message")
VM = Param("vm", location="path", description="The VM's name or UUID")
SELECTOR = Param("selector", choices=(*keys.SELECTORS, "none"),
                 description="How a target node is chosen (default: the cluster's, mem)")
METHOD = Param("migration_method", choices=keys.MIGRATION_METHODS,
               description="live, shutdown, or none (the default: live)")
DOWNTIME = Param("migration_max_downtime", "int", minimum=1,
                 description="Max pause of a live migration in ms (default 300)")
AUTOSTART = Param("autostart", "bool", description="Start it when its node returns from a "
                                                   "flush")
LIMIT_NODES = Param("limit", description="Comma-separated nodes the VM may run on")
XML = Param("xml", required=True, description="Libvirt domain XML (uuid, name, memory, vcpu)")
DEFINE_PARAMS = (XML, Param("node", description="Target node (default: chosen by selector)"),
                 LIMIT_NODES, SELECTOR, AUTOSTART, METHOD,
                 Param("migration_max_downtime", "int", minimum=1, default=300,
                       description="Max pause of a live migration in ms"),
                 Param("user_tags", many=True, description="User tags (repeatable)"),
                 Param("protected_tags", many=True, description="Protected user tags"))
T202 = {"type": "object", "required": ["task_id", "task_name", "run_on"],
        "properties": {k: {"type": "string"} for k in ("task_id", "task_name", "run_on")}}

SCHEMAS: dict[str, dict[str, Any]] = {
    "VM": {"type": "object", "required": ["name", "uuid", "state", "node", "last_node",
                                          "migrated", "failed_reason", "memory", "vcpu", "xml"]},
    "VMMeta": {"type": "object", "required": ["name", "node_limit", "node_selector",
                                              "node_autostart", "migration_method",
                                              "migration_max_downtime"]},
    "VMTags": {"type": "object", "required": ["name", "tags"]},
    "VMState": {"type": "object", "required": ["name", "state"]},
    "VMNode": {"type": "object", "required": ["name", "node", "last_node"]},
    "VMConsole": {"type": "object", "required": ["name", "data"]},
    "VMTaskReply": T202,
}


_REMOVED = re.compile(r"^Removed VM (.*) from the cluster\.$")


def remove_vm(call: Call) -> dict[str, str]:
    """Remove (undefine) the VM, stopped first if it runs; its disks are kept.

    The message is the original's: ``Undefined VM 'x' from the cluster.`` for an undefine
    (``delete_disks`` false), ``Removed VM 'x' from the cluster.`` otherwise (no disk is
    deleted either way).
    """
    reply = h.remove_vm(call)
    found = _REMOVED.match(str(reply.get("message", "")))
    if found and not call.args.get("delete_disks"):
        return {"message": f"Undefined VM {found.group(1)} from the cluster."}
    return reply


def not_implemented(job: str) -> Any:
    """A handler for ``POST /vm/<job>`` that answers 501 with a message."""
    def handler(call: Call) -> None:
        raise ApiError(501, f"POST /vm/{job} (task cluster.{job}) is not implemented by this "
                            f"PVC API yet; nothing was done.")
    handler.__doc__ = f"Not implemented yet: answers 501 (never taken for a VM named {job})."
    return handler


def _ok(what: str = "Done") -> dict:
    return {200: (what, MSG), 400: ("Refused (the message says why)", MSG)}


ROUTES = [
    Route("GET", "/vm", h.list_vms, "List VMs", tag=TAG, params=(
        Param("limit", description="Regex on the name (fuzzy unless ^/$), or an exact UUID"),
        Param("node", description="Only VMs assigned to this node"),
        Param("state", description="Only VMs in this state"),
        Param("tag", description="Only VMs with this tag"),
        Param("negate", "bool", default=False, description="Invert node/state/tag filters")),
        responses={200: ("The VMs, sorted by name", array_of("VM")), 404: ("None", MSG),
                   400: ("Bad filter", MSG)}),
    Route("POST", "/vm", h.define_vm, "Define a VM", tag=TAG, params=DEFINE_PARAMS,
          responses=_ok("Defined")),
    Route("GET", "/vm/{vm}", h.get_vm, "VM details", tag=TAG, params=(VM,),
          responses={200: ("A one-element array", array_of("VM")), 404: ("No such VM", MSG)}),
    Route("POST", "/vm/{vm}", h.define_vm, "Define a VM (the XML's name is used)", tag=TAG,
          params=(VM, *DEFINE_PARAMS), responses=_ok("Defined")),
    Route("PUT", "/vm/{vm}", h.modify_vm, "Replace a VM's XML", tag=TAG, params=(
        VM, XML, Param("restart", "bool", default=False, description="Restart it if running")),
        responses=_ok("Modified")),
    Route("DELETE", "/vm/{vm}", remove_vm, "Remove (undefine) a VM", tag=TAG, params=(
        VM, Param("delete_disks", "bool", default=False,
                  description="Accepted for compatibility; no disk is deleted")),
        responses=_ok("Removed")),
    # fixed paths win over /vm/{vm} for POST (other methods still reach /vm/{vm});
    # POST /vm/autobackup is the vm_protect plugin's
    Route("POST", "/vm/automirror", not_implemented("automirror"),
          "Mirror VMs by tag (not implemented)",
          tag=TAG, params=(Param("email_recipients", many=True,
                                 description="Send a report to these addresses"),
                           Param("email_errors_only", "bool", default=False,
                                 description="Report only errors")),
          responses={501: ("Not implemented yet", MSG)}),
    Route("GET", "/vm/{vm}/meta", h.get_meta, "VM metadata", tag=TAG, params=(VM,),
          responses={200: ("The metadata", ref("VMMeta")), 404: ("No such VM", MSG)}),
    Route("POST", "/vm/{vm}/meta", h.set_meta, "Change VM metadata", tag=TAG, params=(
        VM, LIMIT_NODES, SELECTOR, AUTOSTART, Param("profile", description="Profile name"),
        METHOD, DOWNTIME),
        responses={**_ok("Changed"), 404: ("No such VM", MSG)}),
    Route("GET", "/vm/{vm}/tags", h.get_tags, "VM tags", tag=TAG, params=(VM,),
          responses={200: ("The tags", ref("VMTags")), 404: ("No such VM", MSG)}),
    Route("POST", "/vm/{vm}/tags", h.set_tags, "Add or remove a VM tag", tag=TAG, params=(
        VM, Param("action", description="add or remove"), Param("tag", description="Tag name"),
        Param("protected", "bool", default=False, description="A protected tag")),
        responses={**_ok("Changed"), 404: ("No such VM", MSG)}),
    Route("GET", "/vm/{vm}/state", h.get_state, "VM state", tag=TAG, params=(VM,),
          responses={200: ("The state", ref("VMState")), 404: ("No such VM", MSG)}),
    Route("POST", "/vm/{vm}/state", h.set_state, "Start, stop, shut down, restart or disable",
          tag=TAG, params=(
              VM, Param("state", required=True, choices=("start", "shutdown", "stop", "restart",
                                                         "disable"),
                        description="The state wanted"),
              Param("force", "bool", default=False, description="disable: stop hard"),
              Param("wait", "bool", default=False, description="Answer when done")),
          responses=_ok("Requested")),
    Route("GET", "/vm/{vm}/node", h.get_node, "VM node", tag=TAG, params=(VM,),
          responses={200: ("Node and last node", ref("VMNode")), 404: ("No such VM", MSG)}),
    Route("POST", "/vm/{vm}/node", h.set_node, "Migrate, unmigrate or move a VM", tag=TAG,
          params=(VM, Param("action", required=True, choices=("migrate", "unmigrate", "move"),
                            description="migrate (temporary), unmigrate, move (permanent)"),
                  Param("node", description="Target (default: chosen by selector)"),
                  Param("force", "bool", default=False, description="Migrate a migrated VM"),
                  Param("wait", "bool", default=False, description="Answer when done"),
                  Param("force_live", "bool", default=False,
                        description="Never fall back to a shutdown migration")),
          responses=_ok("Requested")),
    Route("GET", "/vm/{vm}/console", h.console, "VM serial console log", tag=TAG, params=(
        VM, Param("lines", "int", default=10, minimum=0, description="How many last lines")),
        responses={200: ("The lines", ref("VMConsole")), 400: ("No such VM", MSG)}),
    Route("POST", "/vm/{vm}/rename", h.rename, "Rename a stopped VM", tag=TAG, params=(
        VM, Param("new_name", description="The new name")), responses=_ok("Renamed")),
    Route("POST", "/vm/{vm}/device", h.attach_device, "Hot-attach a device", tag=TAG,
          params=(VM, Param("xml", required=True, description="Device XML")),
          responses={202: ("Task created", ref("VMTaskReply")), 400: ("Bad XML", MSG),
                     404: ("No such VM", MSG)}),
    Route("DELETE", "/vm/{vm}/device", h.detach_device, "Hot-detach a device", tag=TAG,
          params=(VM, Param("xml", required=True, description="Device XML")),
          responses={202: ("Task created", ref("VMTaskReply")), 400: ("Bad XML", MSG),
                     404: ("No such VM", MSG)}),
    Route("POST", "/vm/{vm}/locks", h.flush_locks, "Flush the RBD locks of a VM's disks",
          tag=TAG, params=(VM, Param("force", "bool", default=False,
                                     description="Also when the VM is not in state stop, "
                                                 "disable, fail or mirror (cuts a running "
                                                 "VM's storage)")),
          responses={202: ("Task vm.flush_locks created on the VM's node",
                           ref("VMTaskReply")),
                     400: ("The VM's state forbids it without force", MSG),
                     404: ("No such VM", MSG)}),
]


def add_to(api: Any) -> None:
    for name, schema in SCHEMAS.items():
        api.add_schema(name, schema)
    for route in ROUTES:
        api.add_route(route)
