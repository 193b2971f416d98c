"""The route table of ``/storage/ceph/*`` (added to the API by ``pvc_api_routes``)."""

from __future__ import annotations

from typing import Any

from pvc_api.sdk import Param, Route, array_of, ref
from pvc_plugins.storage_ceph import api as h
from pvc_plugins.storage_ceph.upload import FORMATS

TAG = "storage"
MSG = ref("Message")
TASK = ref("StorageTaskReply")
CONFIRM = Param("yes-i-really-mean-it", required=True,
                description="Confirmation: any non-empty value (the CLI sends yes)")
LIMIT = Param("limit", description="Regex on the name; fuzzy unless it starts with ^ or ends "
                                   "with $")
FORCE = Param("force", "bool", default=False,
              description="Allow sizes beyond the pool's free space / its 80 % soft cap")
POOL_P = Param("pool", location="path", description="The pool's name")
VOL_P = Param("volume", location="path", description="The volume's name")
SNAP_P = Param("snapshot", location="path", description="The snapshot's name")
OSD_P = Param("osdid", location="path", description="The OSD's id")
PGS = Param("pgs", "int", required=True, minimum=1, description="PG count (a power of 2)")
REPL = Param("replcfg", required=True,
             description="Replication: copies=N,mincopies=M (copies ≥ mincopies)")
TIER = Param("tier", choices=("default", "hdd", "ssd", "nvme"), default="default",
             description="Device class tier (CRUSH rule <tier>_tier)")
DB_RATIO = Param("ext_db_ratio", "float",
                 description="Put the bluestore DB on an osd-db LV of this fraction of the "
                             "device's size (0 to 1)")
DB_SIZE = Param("ext_db_size", description="Put the bluestore DB on an osd-db LV of this size, "
                                           "e.g. 20G (not with ext_db_ratio)")
SIZE = Param("size", required=True, description="Bytes, or a number with a 1024-based unit "
                                                "(B, K, M, G, T, P), e.g. 10G")

SCHEMAS: dict[str, dict[str, Any]] = {
    "StorageTaskReply": {"type": "object", "required": ["task_id", "task_name", "run_on"],
                         "properties": {k: {"type": "string"} for k in
                                        ("message", "task_id", "task_name", "run_on")}},
    "CephText": {"type": "object", "required": ["type", "primary_node", "ceph_data"],
                 "properties": {k: {"type": "string"} for k in
                                ("type", "primary_node", "ceph_data")}},
    "OSD": {"type": "object", "required": ["id", "node", "device", "stats"]},
    "OSDState": {"type": "object", "required": ["id", "in", "up"]},
    "Pool": {"type": "object", "required": ["name", "volume_count", "tier", "pgs", "stats"]},
    "Volume": {"type": "object", "required": ["name", "pool", "stats"]},
    "Snapshot": {"type": "object", "required": ["pool", "volume", "snapshot", "stats"]},
    "Benchmark": {"type": "object", "required": ["id", "job", "test_format",
                                                 "benchmark_result"]},
}


def _r(method: str, path: str, handler: Any, summary: str, params: tuple = (),
       responses: dict | None = None) -> Route:
    """A storage route; every one but the stubs answers 400 while Ceph is not configured."""
    responses = dict(responses or {200: ("Done", MSG), 400: ("Refused", MSG)})
    if handler is not h.stub:
        handler = h.requires_ceph(handler)
        responses.setdefault(400, ("Refused, or Ceph is not configured on this node", MSG))
    return Route(method, "/storage/ceph" + path if path != "/storage" else path, handler,
                 summary, params=params, tag=TAG, responses=responses)


def _list(name: str) -> dict:
    return {200: (f"The {name} objects", array_of(name)), 404: ("None found", MSG)}


VOLUME_PATH = "/volume/{pool}/{volume}"
SNAP_PATH = "/snapshot/{pool}/{volume}/{snapshot}"
TASK_RESPONSES = {202: ("Task created", TASK), 400: ("Refused", MSG), 404: ("Not found", MSG)}

ROUTES = [
    _r("GET", "/storage", h.stub, "Storage stub (null)", responses={200: ("null", None)}),
    _r("GET", "", h.stub, "Ceph storage stub (null)", responses={200: ("null", None)}),
    _r("GET", "/status", h.status, "Ceph status text",
       responses={200: ("ceph status", ref("CephText"))}),
    _r("GET", "/utilization", h.utilization, "Ceph utilization text",
       responses={200: ("ceph df", ref("CephText"))}),
    _r("GET", "/benchmark", h.list_benchmarks, "List benchmark results",
       (Param("job", description="Only the benchmark of this exact name"),),
       _list("Benchmark")),
    _r("POST", "/benchmark", h.run_benchmark, "Run the storage benchmark",
       (Param("pool", required=True, description="The pool to test"),
        Param("name", description="Job name (default: <ISO time>_<primary>)")),
       TASK_RESPONSES),
    _r("POST", "/option", h.set_option, "Set or unset an OSD flag",
       (Param("option", required=True, description="The flag, e.g. noout"),
        Param("action", required=True, choices=("set", "unset"), description="set or unset"))),
    _r("GET", "/osd", h.list_osds, "List OSDs", (LIMIT,), _list("OSD")),
    _r("POST", "/osd", h.add_osd, "Add an OSD on a node's device",
       (Param("node", required=True, description="The node holding the device"),
        Param("device", required=True, description="Block device or file path on the node"),
        Param("weight", "float", required=True, minimum=0, description="CRUSH weight"),
        DB_RATIO, DB_SIZE, Param("osd_count", "int", description="Not supported above 1")),
       TASK_RESPONSES),
    _r("POST", "/osddb", h.add_db_vg, "Create the OSD DB volume group (osd-db) on a node",
       (Param("node", required=True, description="The node holding the device"),
        Param("device", required=True, description="Block device on the node")),
       TASK_RESPONSES),
    _r("GET", "/osd/{osdid}", h.get_osd, "OSD details (fuzzy id match)", (OSD_P,),
       {**_list("OSD"), 400: ("The id is not a valid regex", MSG)}),
    _r("POST", "/osd/{osdid}", h.replace_osd, "Replace an OSD's device (same id)",
       (OSD_P, Param("new_device", required=True, description="The new block device or file"),
        CONFIRM, Param("old_device", description="The old device (default: the recorded one)"),
        Param("weight", "float", minimum=0, description="New CRUSH weight (default: kept)"),
        DB_RATIO, DB_SIZE, Param("force", "bool", default=False,
                                 description="Skip the safe-to-destroy wait")),
       TASK_RESPONSES),
    _r("PUT", "/osd/{osdid}", h.refresh_osd, "Re-import an OSD from its device",
       (OSD_P, Param("device", required=True, description="The device holding the OSD")),
       TASK_RESPONSES),
    _r("DELETE", "/osd/{osdid}", h.remove_osd, "Remove an OSD",
       (OSD_P, CONFIRM, Param("force", "bool", default=False,
                              description="Skip the safe-to-destroy wait")), TASK_RESPONSES),
    _r("GET", "/osd/{osdid}/state", h.get_osd_state, "OSD up/in state", (OSD_P,),
       {200: ("The state", ref("OSDState")), 404: ("No such OSD", MSG)}),
    _r("POST", "/osd/{osdid}/state", h.set_osd_state, "Mark an OSD in or out",
       (OSD_P, Param("state", required=True, choices=("in", "out"), description="in or out"))),
    _r("GET", "/pool", h.list_pools, "List pools", (LIMIT,), _list("Pool")),
    _r("POST", "/pool", h.add_pool, "Create a pool",
       (Param("pool", required=True, description="The pool's name"), PGS, REPL, TIER)),
    _r("GET", "/pool/{pool}", h.get_pool, "Pool details", (POOL_P,), _list("Pool")),
    _r("POST", "/pool/{pool}", h.add_pool, "Create a pool", (POOL_P, PGS, REPL, TIER)),
    _r("PUT", "/pool/{pool}", h.set_pool_pgs, "Set a pool's PG count", (POOL_P, PGS)),
    _r("DELETE", "/pool/{pool}", h.remove_pool, "Remove a pool and its volumes",
       (POOL_P, CONFIRM)),
    _r("GET", "/volume", h.list_volumes, "List volumes",
       (LIMIT, Param("pool", description="Only volumes of this pool")), _list("Volume")),
    _r("POST", "/volume", h.add_volume, "Create a volume",
       (Param("volume", required=True, description="The volume's name"),
        Param("pool", required=True, description="The pool"), SIZE, FORCE)),
    _r("GET", VOLUME_PATH, h.get_volume, "Volume details", (POOL_P, VOL_P), _list("Volume")),
    _r("POST", VOLUME_PATH, h.add_volume, "Create a volume", (POOL_P, VOL_P, SIZE, FORCE)),
    _r("PUT", VOLUME_PATH, h.modify_volume, "Grow or rename a volume",
       (POOL_P, VOL_P, Param("new_size", description="New, larger size"),
        Param("new_name", description="New name"), FORCE)),
    _r("DELETE", VOLUME_PATH, h.remove_volume, "Remove a volume", (POOL_P, VOL_P)),
    _r("POST", VOLUME_PATH + "/scan", h.scan_volume, "Check a volume", (POOL_P, VOL_P)),
    _r("POST", VOLUME_PATH + "/clone", h.clone_volume, "Copy a volume",
       (POOL_P, VOL_P, Param("new_volume", required=True, description="The copy's name"),
        FORCE, Param("snapshot", description="Clone this snapshot copy-on-write instead"))),
    _r("POST", VOLUME_PATH + "/upload", h.upload_volume, "Upload a disk image",
       (POOL_P, VOL_P, Param("image_format", required=True, choices=FORMATS,
                             description="Format of the uploaded image"),
        Param("file_size", "int", minimum=0, description="Size of the upload in bytes"))),
    _r("GET", "/snapshot", h.list_snapshots, "List snapshots",
       (Param("pool", description="Only this pool"),
        Param("volume", description="Only this volume"), LIMIT), _list("Snapshot")),
    _r("POST", "/snapshot", h.add_snapshot, "Create a snapshot",
       (Param("snapshot", required=True, description="The snapshot's name"),
        Param("volume", required=True, description="The volume"),
        Param("pool", required=True, description="The pool"))),
    _r("GET", SNAP_PATH, h.get_snapshot, "Snapshot details", (POOL_P, VOL_P, SNAP_P),
       _list("Snapshot")),
    _r("POST", SNAP_PATH, h.add_snapshot, "Create a snapshot", (POOL_P, VOL_P, SNAP_P)),
    _r("PUT", SNAP_PATH, h.rename_snapshot, "Rename a snapshot",
       (POOL_P, VOL_P, SNAP_P, Param("new_name", required=True, description="New name"))),
    _r("DELETE", SNAP_PATH, h.remove_snapshot, "Remove a snapshot", (POOL_P, VOL_P, SNAP_P)),
    _r("POST", SNAP_PATH + "/rollback", h.rollback_snapshot, "Roll a volume back",
       (POOL_P, VOL_P, SNAP_P)),
]


def install(api: Any) -> None:
    for name, schema in SCHEMAS.items():
        api.add_schema(name, schema)
    for route in ROUTES:
        api.add_route(route)
