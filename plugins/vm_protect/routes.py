"""The route table of ``/vm/<vm>/snapshot`` (added by ``pvc_api_routes``)."""

from __future__ import annotations

from typing import Any

from pvc_api.sdk import Param, Route, array_of, ref
from pvc_plugins.vm_protect import api as h

TAG = "vm"
MSG = ref("Message")
VM = Param("vm", location="path", description="The VM's name or UUID")
NAME = Param("snapshot_name", description="The snapshot's name (a-z 0-9 . _ -)")
NEEDED = Param("snapshot_name", required=True, description="The snapshot's name")
TASK = {202: ("Started; follow GET /tasks/{task_id}", ref("VMSnapshotTaskReply")),
        400: ("Refused (the message says why)", MSG), 404: ("No such VM or snapshot", MSG),
        503: ("No primary node", MSG)}

SCHEMAS: dict[str, Any] = {
    "VMSnapshot": {"type": "object",
                   "required": ["name", "timestamp", "age", "rbd_snapshots", "consistency"],
                   "properties": {"name": {"type": "string"}, "timestamp": {"type": "string"},
                                  "age": {"type": "integer"},
                                  "rbd_snapshots": {"type": "array",
                                                    "items": {"type": "string"}},
                                  "consistency": {"type": "string",
                                                  "enum": ["crash", "frozen"]}}},
    "VMSnapshotTaskReply": {"type": "object",
                            "required": ["message", "task_id", "task_name", "run_on"],
                            "properties": {k: {"type": "string"} for k in (
                                "message", "task_id", "task_name", "run_on")}},
}

EXPORT = (VM, NEEDED,
          Param("export_path", required=True,
                description="Absolute path of a directory on the primary node"),
          Param("incremental_parent",
                description="Export only the changes since this older snapshot, which was "
                            "exported to the same path"))
IMPORT = (Param("vm", location="path", description="The VM's name: its directory under "
                                                     "import_path"),
          NEEDED,
          Param("import_path", required=True,
                description="Absolute path of the directory on the primary node it was "
                            "exported to"),
          Param("retain_snapshot", type="bool", default=True,
                description="Keep the imported snapshots as snapshots of the new VM"))

ROUTES = [
    Route("GET", "/vm/{vm}/snapshot", h.list_snapshots, "A VM's snapshots, newest first",
          tag=TAG, params=(VM,),
          responses={200: ("The snapshots", array_of("VMSnapshot")),
                     400: ("Bad VM name", MSG), 404: ("No such VM", MSG)}),
    Route("POST", "/vm/{vm}/snapshot", h.create_snapshot,
          "Snapshot all of a VM's volumes (a task on the primary)", tag=TAG,
          params=(VM, NAME), responses=TASK),
    Route("DELETE", "/vm/{vm}/snapshot", h.remove_snapshot,
          "Remove a VM snapshot (a task on the primary)", tag=TAG, params=(VM, NEEDED),
          responses=TASK),
    Route("POST", "/vm/{vm}/snapshot/rollback", h.rollback_snapshot,
          "Roll a stopped VM back to a snapshot (a task on the primary)", tag=TAG,
          params=(VM, NEEDED), responses=TASK),
    Route("POST", "/vm/{vm}/snapshot/export", h.export_snapshot,
          "Export a VM snapshot to files on the primary, whole or since a parent snapshot "
          "(a task on the primary)", tag=TAG, params=EXPORT, responses=TASK),
    Route("POST", "/vm/{vm}/snapshot/import", h.import_snapshot,
          "Define a removed VM again, with its volumes, from an export (a task on the "
          "primary)", tag=TAG, params=IMPORT, responses=TASK),
    Route("POST", "/vm/autobackup", h.start_autobackup,
          "Back up every VM with an autobackup tag: full every N runs, incremental between, "
          "old chains pruned (a task on the primary)", tag=TAG,
          params=(Param("force_full", type="bool", default=False,
                        description="A full backup of every VM this time"),
                  Param("email_recipients", many=True,
                        description="Accepted from v1 clients; no mail is sent (the report "
                                    "is the task's status)")),
          responses={202: TASK[202], 503: TASK[503]}),
]


def add_to(api: Any) -> None:
    for name, schema in SCHEMAS.items():
        api.add_schema(name, schema)
    for route in ROUTES:
        api.add_route(route)
