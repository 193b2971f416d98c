"""The route table of ``/provisioner/...`` objects (added by ``pvc_api_routes``)."""

from __future__ import annotations

from typing import Any

from pvc_api.sdk import Param, Route, array_of, ref
from pvc_plugins.provisioner import api as h
from pvc_plugins.provisioner import model

TAG = "provisioner"
MSG = ref("Message")
BASE = "/provisioner"
LIMIT = Param("limit", description="Regex on the name (fuzzy unless ^/$)")
TEMPLATE = Param("template", location="path", description="The template's name")
NAME = Param("name", required=True, description="A unique name (letters, digits, -_.)")
NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}

SYSTEM_PARAMS = (
    Param("vcpus", "int", description="Virtual CPUs", minimum=1, maximum=1024),
    Param("vram", "int", description="Memory in MB", minimum=1),
    Param("serial", "bool", description="Give the VM a serial console"),
    Param("vnc", "bool", description="Give the VM a VNC console"),
    Param("vnc_bind", description="Address the VNC console listens on (with vnc)"),
    Param("node_limit", description="Nodes the VM may run on, comma-separated"),
    Param("node_selector", description="How a node is chosen (none: the cluster default)"),
    Param("node_autostart", "bool", description="Start the VM when its node starts"),
    Param("migration_method", description="live, shutdown or none"),
    Param("migration_max_downtime", "int", minimum=1,
          description="Longest pause of a live migration, ms (default 300)"),
)
DISK_PARAMS = (
    Param("pool", required=True, description="The Ceph pool of the disk's volume"),
    Param("source_volume", description="Clone this volume of the pool instead of making a "
          "new one (no size, filesystem or mountpoint then)"),
    Param("disk_size", "int", minimum=1, description="Size of a new volume, GB"),
    Param("filesystem", description="Filesystem the script makes: "
          + ", ".join(model.FILESYSTEMS)),
    Param("filesystem_arg", many=True, description="An argument of mkfs (repeat)"),
    Param("mountpoint", description="Where the script mounts it in the guest (needs "
          "filesystem)"),
)
PROFILE_PARAMS = (
    Param("system_template", description="The system template"),
    Param("network_template", description="The network template (provisioner profiles)"),
    Param("storage_template", description="The storage template (provisioner profiles)"),
    Param("userdata", description="The cloud-init user data"),
    Param("script", description="The provisioner script"),
    Param("arg", many=True, description="A script argument key=value (repeat)"),
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "SystemTemplate": {"type": "object", "required": ["id", "name"], "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"},
        "vcpu_count": {"type": "integer"}, "vram_mb": {"type": "integer"},
        "serial": {"type": "boolean"}, "vnc": {"type": "boolean"}, "vnc_bind": NULLABLE_STR,
        "node_limit": NULLABLE_STR, "node_selector": NULLABLE_STR,
        "node_autostart": {"type": "boolean"}, "migration_method": NULLABLE_STR,
        "migration_max_downtime": NULLABLE_INT, "ova": NULLABLE_INT}},
    "NetworkTemplateNet": {"type": "object", "required": ["id", "vni"], "properties": {
        "id": {"type": "integer"}, "network_template": {"type": "integer"},
        "vni": {"type": "string"}}},
    "NetworkTemplate": {"type": "object", "required": ["id", "name", "networks"],
                        "properties": {
                            "id": {"type": "integer"}, "name": {"type": "string"},
                            "mac_template": NULLABLE_STR, "ova": NULLABLE_INT,
                            "networks": array_of("NetworkTemplateNet")}},
    "StorageTemplateDisk": {"type": "object", "required": ["id", "disk_id", "pool"],
                            "properties": {
                                "id": {"type": "integer"},
                                "storage_template": {"type": "integer"},
                                "pool": {"type": "string"}, "disk_id": {"type": "string"},
                                "source_volume": NULLABLE_STR, "disk_size_gb": NULLABLE_INT,
                                "mountpoint": NULLABLE_STR, "filesystem": NULLABLE_STR,
                                "filesystem_args": {"type": "string"}}},
    "StorageTemplate": {"type": "object", "required": ["id", "name", "disks"], "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "ova": NULLABLE_INT,
        "disks": array_of("StorageTemplateDisk")}},
    "Userdata": {"type": "object", "required": ["id", "name", "userdata"], "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"},
        "userdata": {"type": "string"}}},
    "Script": {"type": "object", "required": ["id", "name", "script"], "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "script": {"type": "string"}}},
    "Profile": {"type": "object", "required": ["id", "name", "type"], "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"},
        "type": {"type": "string", "enum": list(model.PROFILE_TYPES)},
        **{k: {"type": "string"} for k in h.PROFILE_REFS},
        "arguments": {"type": "array", "items": {"type": "string"}}}},
    "ProvisionerTaskReply": {"type": "object",
                             "required": ["message", "task_id", "task_name", "run_on"],
                             "properties": {k: {"type": "string"} for k in (
                                 "message", "task_id", "task_name", "run_on")}},
    "Templates": {"type": "object", "properties": {
        "system_templates": array_of("SystemTemplate"),
        "network_templates": array_of("NetworkTemplate"),
        "storage_templates": array_of("StorageTemplate")}},
}


def _ok(what: str, missing: int | None = None) -> dict:
    out = {200: (what, MSG), 400: ("Refused (the message names the field)", MSG)}
    if missing:
        out[missing] = ("No such object", MSG)
    return out


def _crud(kind: str, path: str, field: str, schema: str, adds: tuple[Param, ...],
          changes: tuple[Param, ...], add: Any, modify: Any | None, what: str) -> list[Route]:
    """List/add on ``path``, get/add/(modify)/remove on ``path/{field}``."""
    key = Param(field, location="path", description=f"The {what}'s name")
    routes = [
        Route("GET", path, lambda c: h.listing(c, kind), f"List {what}s", tag=TAG,
              params=(LIMIT,), responses={200: (f"The {what}s", array_of(schema)),
                                          404: ("None", MSG), 400: ("Bad filter", MSG)}),
        Route("POST", path, add, f"Add a {what}", tag=TAG, params=(NAME, *adds),
              responses=_ok("Added")),
        Route("GET", f"{path}/{{{field}}}", lambda c: h.one(c, kind, field), f"Show a {what}",
              tag=TAG, params=(key,), responses={200: (f"The {what}", array_of(schema)),
                                                 404: ("No such object", MSG)}),
        Route("POST", f"{path}/{{{field}}}", add, f"Add a {what} named in the path", tag=TAG,
              params=(key, *adds), responses=_ok("Added")),
        Route("DELETE", f"{path}/{{{field}}}", lambda c: h.remove(c, kind, c.args[field]),
              f"Remove a {what} (refused while a profile uses it)", tag=TAG, params=(key,),
              responses={**_ok("Removed"), 409: ("Used by a profile", MSG)}),
    ]
    if modify is not None:
        routes.append(Route("PUT", f"{path}/{{{field}}}", modify, f"Change a {what}",
                            tag=TAG, params=(key, *changes), responses=_ok("Changed", 404)))
    return routes


DATA = Param("data", required=True, description="The text (a form field or query)")
VNI = Param("vni", location="path", description="The network's VNI")
DISK = Param("disk_id", location="path", description="The disk (sdX or vdX)")
T = f"{BASE}/template"

ROUTES = [
    Route("GET", T, h.list_templates, "List every template by kind", tag=TAG, params=(LIMIT,),
          responses={200: ("The templates", ref("Templates")), 400: ("Bad filter", MSG)}),
    *_crud(model.SYSTEM, f"{T}/system", "template", "SystemTemplate", SYSTEM_PARAMS,
           SYSTEM_PARAMS, h.add_system, h.modify_system, "system template"),
    *_crud(model.NETWORK, f"{T}/network", "template", "NetworkTemplate",
           (Param("mac_template", description="MAC of each NIC from {prefix}, {vmid}, "
                  "{netid} (default: random)"),), (), h.add_network, None, "network template"),
    Route("GET", f"{T}/network/{{template}}/net", h.list_nets,
          "List the networks of a network template", tag=TAG, params=(TEMPLATE,),
          responses={200: ("The networks", array_of("NetworkTemplateNet")),
                     404: ("No such template", MSG)}),
    Route("POST", f"{T}/network/{{template}}/net", h.add_net, "Add a network to a template",
          tag=TAG, params=(TEMPLATE, Param("vni", required=True, description="The VNI"),
                           Param("permit_duplicate", "bool", description="Allow a second "
                                 "NIC on the same network")), responses=_ok("Added")),
    Route("GET", f"{T}/network/{{template}}/net/{{vni}}", h.get_net,
          "Show a network of a template", tag=TAG, params=(TEMPLATE, VNI),
          responses={200: ("The network", ref("NetworkTemplateNet")),
                     404: ("No such template or network", MSG)}),
    Route("POST", f"{T}/network/{{template}}/net/{{vni}}", h.add_net,
          "Add the network in the path to a template", tag=TAG,
          params=(TEMPLATE, VNI, Param("permit_duplicate", "bool", description="Allow a "
                                       "second NIC on the same network")),
          responses=_ok("Added")),
    Route("DELETE", f"{T}/network/{{template}}/net/{{vni}}", h.remove_net,
          "Remove a network from a template", tag=TAG, params=(TEMPLATE, VNI),
          responses=_ok("Removed")),
    *_crud(model.STORAGE, f"{T}/storage", "template", "StorageTemplate", (), (),
           h.add_storage, None, "storage template"),
    Route("GET", f"{T}/storage/{{template}}/disk", h.list_disks,
          "List the disks of a storage template", tag=TAG, params=(TEMPLATE,),
          responses={200: ("The disks", array_of("StorageTemplateDisk")),
                     404: ("No such template", MSG)}),
    Route("POST", f"{T}/storage/{{template}}/disk", h.add_disk, "Add a disk to a template",
          tag=TAG, params=(TEMPLATE, Param("disk_id", required=True,
                                           description="The disk (sdX or vdX)"),
                           *DISK_PARAMS), responses=_ok("Added")),
    Route("GET", f"{T}/storage/{{template}}/disk/{{disk_id}}", h.get_disk,
          "Show a disk of a template", tag=TAG, params=(TEMPLATE, DISK),
          responses={200: ("The disk", ref("StorageTemplateDisk")),
                     404: ("No such template or disk", MSG)}),
    Route("POST", f"{T}/storage/{{template}}/disk/{{disk_id}}", h.add_disk,
          "Add the disk in the path to a template", tag=TAG, params=(TEMPLATE, DISK,
                                                                     *DISK_PARAMS),
          responses=_ok("Added")),
    Route("DELETE", f"{T}/storage/{{template}}/disk/{{disk_id}}", h.remove_disk,
          "Remove a disk from a template", tag=TAG, params=(TEMPLATE, DISK),
          responses=_ok("Removed")),
    *_crud(model.USERDATA, f"{BASE}/userdata", "userdata", "Userdata", (DATA,), (DATA,),
           h.add_text(model.USERDATA, model.userdata),
           h.modify_text(model.USERDATA, model.userdata), "userdata"),
    *_crud(model.SCRIPT, f"{BASE}/script", "script", "Script", (DATA,), (DATA,),
           h.add_text(model.SCRIPT, model.script), h.modify_text(model.SCRIPT, model.script),
           "script"),
    Route("GET", f"{BASE}/profile", h.list_profiles, "List profiles", tag=TAG, params=(LIMIT,),
          responses={200: ("The profiles", array_of("Profile")), 404: ("None", MSG),
                     400: ("Bad filter", MSG)}),
    Route("POST", f"{BASE}/profile", h.add_profile, "Add a profile", tag=TAG, params=(
        NAME, Param("profile_type", required=True, choices=model.PROFILE_TYPES,
                    description="provisioner or ova"), *PROFILE_PARAMS,
        Param("ova", description="The OVA (ova profiles)")), responses=_ok("Added")),
    Route("GET", f"{BASE}/profile/{{profile}}", h.get_profile, "Show a profile", tag=TAG,
          params=(Param("profile", location="path", description="The profile's name"),),
          responses={200: ("The profile", array_of("Profile")), 404: ("No such profile", MSG)}),
    Route("POST", f"{BASE}/profile/{{profile}}", h.add_profile,
          "Add the profile named in the path", tag=TAG, params=(
              Param("profile", location="path", description="The profile's name"),
              Param("profile_type", required=True, choices=model.PROFILE_TYPES,
                    description="provisioner or ova"), *PROFILE_PARAMS,
              Param("ova", description="The OVA (ova profiles)")), responses=_ok("Added")),
    Route("PUT", f"{BASE}/profile/{{profile}}", h.modify_profile,
          "Change a profile (not its type or OVA)", tag=TAG,
          params=(Param("profile", location="path", description="The profile's name"),
                  *PROFILE_PARAMS), responses=_ok("Changed", 404)),
    Route("DELETE", f"{BASE}/profile/{{profile}}",
          lambda c: h.remove(c, model.PROFILE, c.args["profile"]), "Remove a profile",
          tag=TAG, params=(Param("profile", location="path",
                                 description="The profile's name"),),
          responses=_ok("Removed")),
]

ROUTES.append(Route(
    "POST", f"{BASE}/create", h.create_vm, "Create a VM from a profile (a task on the primary)",
    tag=TAG, params=(
        Param("name", required=True, description="The new VM's name"),
        Param("profile", required=True, description="The profile to make it from"),
        Param("define_vm", "bool", description="Define the VM (default true)"),
        Param("start_vm", "bool", description="Start it when made (default true)"),
        Param("arg", many=True, description="A script argument key=value, added to the "
              "profile's (repeat)")),
    responses={202: ("Started; follow GET /tasks/{task_id}", ref("ProvisionerTaskReply")),
               400: ("Refused (the message says why)", MSG),
               503: ("No primary node", MSG)}))

OVA = Param("ova", location="path", description="The OVA's name")
UPLOAD = (Param("pool", required=True, description="The pool of the OVA's volumes"),
          Param("ova_size", "int", minimum=1, description="The file's size in bytes (checked)"))
OVA_TASK = {202: ("Started; follow GET /tasks/{task_id}", ref("ProvisionerTaskReply")),
            400: ("Refused (the message says why)", MSG)}
SCHEMAS["Ova"] = {"type": "object", "required": ["id", "name", "volumes"], "properties": {
    "id": {"type": "integer"}, "name": {"type": "string"},
    "volumes": {"type": "array", "items": {"type": "object", "properties": {
        "pool": {"type": "string"}, "volume_name": {"type": "string"},
        "volume_format": {"type": "string"}, "disk_id": {"type": "string"},
        "disk_size_gb": {"type": "integer"}}}}}}
ROUTES += [
    Route("GET", f"{BASE}/ova", h.list_ovas, "List OVA images", tag=TAG, params=(LIMIT,),
          responses={200: ("The OVAs", array_of("Ova")), 404: ("None", MSG),
                     400: ("Bad filter", MSG)}),
    Route("POST", f"{BASE}/ova", h.upload_ova, "Upload and import an OVA (the body is the "
          ".ova file, application/octet-stream)", tag=TAG, params=(NAME, *UPLOAD),
          responses=OVA_TASK),
    Route("GET", f"{BASE}/ova/{{ova}}", h.get_ova, "Show an OVA image", tag=TAG, params=(OVA,),
          responses={200: ("The OVA", array_of("Ova")), 404: ("No such OVA", MSG)}),
    Route("POST", f"{BASE}/ova/{{ova}}", h.upload_ova, "Upload and import the OVA named in "
          "the path (the body is the .ova file)", tag=TAG, params=(OVA, *UPLOAD),
          responses=OVA_TASK),
    Route("DELETE", f"{BASE}/ova/{{ova}}", h.remove_ova, "Remove an OVA and its volumes (a "
          "task; refused while a profile uses it)", tag=TAG, params=(OVA,),
          responses={**OVA_TASK, 409: ("Used by a profile", MSG), 503: ("No primary", MSG)}),
]


def add_to(api: Any) -> None:
    for name, schema in SCHEMAS.items():
        api.add_schema(name, schema)
    for route in ROUTES:
        api.add_route(route)
