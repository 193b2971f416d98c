"""``/provisioner`` object handlers (PVC API v1 §4): templates, userdata, scripts and
profiles; the route table is in ``routes.py``.

Every write runs under the ``provisioner`` lock: it reads what it checks (does the
template exist, does a profile use it) and writes in the same hold.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from typing import Any

from pvc_api.sdk import ApiError, Call, Reply, params, zk
from pvc_kernel.sdk import LockBusy, tasks
from pvc_plugins.provisioner import model
from pvc_plugins.provisioner.keys import LOCK

TITLES = {model.SYSTEM: "System template", model.NETWORK: "Network template",
          model.STORAGE: "Storage template", model.USERDATA: "Userdata",
          model.SCRIPT: "Script", model.OVA: "OVA", model.PROFILE: "Profile"}


def read_kind(call: Call, kind: str) -> list[dict[str, Any]]:
    """Every object of ``kind``, by name."""
    store, t = call.api.store, call.api.zk_timeout
    (names,) = zk.fetch(store, [zk.children("provisioner.kind", kind=kind)], t)
    names = sorted(names)
    texts = zk.fetch(store, [zk.get("provisioner.object", kind=kind, obj=n) for n in names], t)
    return [obj for obj in (zk.load_json(x, {}) for x in texts) if obj.get("name")]


def read_one(call: Call, kind: str, name: str) -> dict[str, Any] | None:
    if not model.NAME.match(name):
        return None
    (text,) = zk.fetch(call.api.store, [zk.get("provisioner.object", kind=kind, obj=name)],
                       call.api.zk_timeout)
    obj = zk.load_json(text, {})
    return obj if obj.get("name") else None


def names(call: Call, kinds: tuple[str, ...]) -> dict[str, set[str]]:
    store, t = call.api.store, call.api.zk_timeout
    found = zk.fetch(store, [zk.children("provisioner.kind", kind=k) for k in kinds], t)
    return {k: set(n) for k, n in zip(kinds, found, strict=True)}


def locked(call: Call, work: Callable[[], Any]) -> Any:
    """Run ``work`` under the provisioner lock; model problems are 400s."""
    try:
        with call.api.store.locked(LOCK, "pvcapid", timeout=10, what="the provisioner"):
            return work()
    except LockBusy as exc:
        raise ApiError(503, f"{exc}; try again") from None
    except model.ModelError as exc:
        raise ApiError(400, str(exc)) from None


def next_id(call: Call, kind: str) -> int:
    """The next integer id of ``kind`` (call under the lock; the id is used once written)."""
    ids = zk.load_json(call.api.store.get("provisioner.ids"), {})
    ids = ids if isinstance(ids, dict) else {}
    ids[kind] = int(ids.get(kind, 0)) + 1
    call.api.store.set("provisioner.ids", json.dumps(ids))
    return ids[kind]


def store_object(call: Call, kind: str, obj: dict[str, Any]) -> None:
    call.api.store.set("provisioner.object", json.dumps(obj), kind=kind, obj=obj["name"])


def existing(call: Call, kind: str, name: str, status: int = 404) -> dict[str, Any]:
    """The object; ``status`` (404, or 400 where v1 answers 400) when there is none."""
    obj = read_one(call, kind, name)
    if obj is None:
        raise ApiError(status, f"{TITLES[kind]} '{name}' does not exist.")
    return obj


def create(call: Call, kind: str, name: str, build: Callable[[], dict[str, Any]]) -> dict:
    """Store a new object ``build()`` makes; 400 when the name is taken."""
    def work() -> dict[str, str]:
        model.check_name(name)
        if read_one(call, kind, name) is not None:
            raise ApiError(400, f"{TITLES[kind]} '{name}' already exists.")
        obj = build()
        store_object(call, kind, {"id": next_id(call, kind), "name": name, **obj})
        return {"message": f"Added new {TITLES[kind].lower()} '{name}'."}

    return locked(call, work)


def change(call: Call, kind: str, name: str,
           edit: Callable[[dict[str, Any]], dict[str, Any]], what: str = "Modified",
           missing: int = 404) -> dict:
    def work() -> dict[str, str]:
        old = existing(call, kind, name, missing)
        new = edit(old)
        if new != old:
            store_object(call, kind, new)
        return {"message": f"{what} {TITLES[kind].lower()} '{name}'."}

    return locked(call, work)


def remove(call: Call, kind: str, name: str) -> dict[str, str]:
    """Remove an object; 409 while a profile refers to it."""
    def work() -> dict[str, str]:
        existing(call, kind, name, 400)
        if kind != model.PROFILE:
            using = model.users(read_kind(call, model.PROFILE), kind, name)
            if using:
                raise ApiError(409, f"{TITLES[kind]} '{name}' is used by profile(s) "
                                    f"{', '.join(using)}: change or remove them first.")
        call.api.store.delete("provisioner.object", kind=kind, obj=name)
        return {"message": f"Removed {TITLES[kind].lower()} '{name}'."}

    return locked(call, work)


def listing(call: Call, kind: str, shape: Callable[[dict], dict] = lambda o: o) -> list[dict]:
    """The objects of ``kind`` whose name matches ``limit``; 404 when none."""
    match = params.name_filter(call.args.get("limit"))
    found = [shape(o) for o in read_kind(call, kind) if match(o["name"])]
    if not found:
        raise ApiError(404, f"No {TITLES[kind].lower()} found.")
    return found


def one(call: Call, kind: str, field: str,
        shape: Callable[[dict], dict] = lambda o: o) -> list[dict]:
    obj = read_one(call, kind, call.args[field])
    if obj is None:
        raise ApiError(404, f"{TITLES[kind]} not found.")
    return [shape(obj)]


# -- system templates ----------------------------------------------------------------------

def _system_given(call: Call) -> dict[str, Any]:
    return {k: call.args.get(k) for k in ("vcpus", "vram", *model.SYSTEM_FIELDS[2:])}


def list_templates(call: Call) -> dict[str, list[dict[str, Any]]]:
    """Every template, by kind (always 200)."""
    match = params.name_filter(call.args.get("limit"))
    return {f"{k}s": [o for o in read_kind(call, k) if match(o["name"])]
            for k in (model.SYSTEM, model.NETWORK, model.STORAGE)}


def add_system(call: Call) -> dict[str, str]:
    name = call.args.get("name") or call.args.get("template")
    return create(call, model.SYSTEM, name,
                  lambda: model.system_template(None, _system_given(call)))


def modify_system(call: Call) -> dict[str, str]:
    return change(call, model.SYSTEM, call.args["template"],
                  lambda old: model.system_template(old, _system_given(call)))


# -- network templates ---------------------------------------------------------------------

def add_network(call: Call) -> dict[str, str]:
    name = call.args.get("name") or call.args.get("template")
    return create(call, model.NETWORK, name,
                  lambda: model.network_template(None, call.args.get("mac_template") or ""))


def list_nets(call: Call) -> list[dict[str, Any]]:
    return existing(call, model.NETWORK, call.args["template"])["networks"]


def get_net(call: Call) -> dict[str, Any]:
    t = existing(call, model.NETWORK, call.args["template"])
    for net in t["networks"]:
        if net["vni"] == call.args["vni"]:
            return net
    raise ApiError(404, f"Network {call.args['vni']} is not in template '{t['name']}'.")


def add_net(call: Call) -> dict[str, str]:
    vni = call.args.get("vni")
    return change(call, model.NETWORK, call.args["template"],
                  lambda t: model.add_net(t, vni, bool(call.args.get("permit_duplicate"))),
                  f"Added network {vni} to", 400)


def remove_net(call: Call) -> dict[str, str]:
    vni = call.args["vni"]
    return change(call, model.NETWORK, call.args["template"],
                  lambda t: model.remove_net(t, vni), f"Removed network {vni} from", 400)


# -- storage templates ---------------------------------------------------------------------

def add_storage(call: Call) -> dict[str, str]:
    name = call.args.get("name") or call.args.get("template")
    return create(call, model.STORAGE, name, lambda: model.storage_template(None))


def list_disks(call: Call) -> list[dict[str, Any]]:
    return existing(call, model.STORAGE, call.args["template"])["disks"]


def get_disk(call: Call) -> dict[str, Any]:
    t = existing(call, model.STORAGE, call.args["template"])
    for disk in t["disks"]:
        if disk["disk_id"] == call.args["disk_id"]:
            return disk
    raise ApiError(404, f"Disk {call.args['disk_id']} is not in template '{t['name']}'.")


def add_disk(call: Call) -> dict[str, str]:
    disk_id = call.args.get("disk_id")
    given = {k: call.args.get(k) for k in ("pool", "source_volume", "disk_size", "filesystem",
                                           "filesystem_arg", "mountpoint")}
    return change(call, model.STORAGE, call.args["template"],
                  lambda t: model.add_disk(t, disk_id, given), f"Added disk {disk_id} to", 400)


def remove_disk(call: Call) -> dict[str, str]:
    disk_id = call.args["disk_id"]
    return change(call, model.STORAGE, call.args["template"],
                  lambda t: model.remove_disk(t, disk_id), f"Removed disk {disk_id} from", 400)


# -- userdata and scripts --------------------------------------------------------------------

def add_text(kind: str, check: Callable[[Any], str]) -> Callable[[Call], dict[str, str]]:
    field = "userdata" if kind == model.USERDATA else "script"

    def handler(call: Call) -> dict[str, str]:
        name = call.args.get("name") or call.args.get(field)
        return create(call, kind, name, lambda: {field: check(call.args.get("data"))})
    return handler


def modify_text(kind: str, check: Callable[[Any], str]) -> Callable[[Call], dict[str, str]]:
    field = "userdata" if kind == model.USERDATA else "script"

    def handler(call: Call) -> dict[str, str]:
        return change(call, kind, call.args[field],
                      lambda old: {**old, field: check(call.args.get("data"))})
    return handler


# -- profiles ------------------------------------------------------------------------------

PROFILE_REFS = (model.SYSTEM, model.NETWORK, model.STORAGE, model.USERDATA, model.SCRIPT,
                model.OVA)


def _profile_given(call: Call) -> dict[str, Any]:
    given = {k: call.args.get(k) for k in (*PROFILE_REFS, "profile_type")}
    given["arg"] = call.args.get("arg") if call.args.get("arg") else None
    return given


def add_profile(call: Call) -> dict[str, str]:
    name = call.args.get("name") or call.args.get("profile")
    return create(call, model.PROFILE, name, lambda: model.profile(
        None, _profile_given(call), names(call, PROFILE_REFS)))


def modify_profile(call: Call) -> dict[str, str]:
    def edit(old: dict[str, Any]) -> dict[str, Any]:
        return {"id": old["id"], "name": old["name"],
                **model.profile(old, _profile_given(call), names(call, PROFILE_REFS))}
    return change(call, model.PROFILE, call.args["profile"], edit)


def list_profiles(call: Call) -> list[dict[str, Any]]:
    return listing(call, model.PROFILE, model.wire_profile)


def get_profile(call: Call) -> list[dict[str, Any]]:
    return one(call, model.PROFILE, "profile", model.wire_profile)


# -- create ----------------------------------------------------------------------------------

def create_vm(call: Call) -> Reply:
    """Start task ``provisioner.create`` on the primary; 202 with its id."""
    name = call.args["name"]
    try:
        model.check_name(name)
        model.arguments(call.args.get("arg"))
    except model.ModelError as exc:
        raise ApiError(400, str(exc)) from None
    profile = read_one(call, model.PROFILE, call.args["profile"])
    if profile is None:
        raise ApiError(400, f"Profile \"{call.args['profile']}\" is not valid.")
    (primary,) = zk.fetch(call.api.store, [zk.get("config.primary_node")], call.api.zk_timeout)
    if not primary or primary == "none":
        raise ApiError(503, "There is no primary node to run the create; try again")
    define = call.args.get("define_vm")
    define = True if define is None else bool(define)
    start = call.args.get("start_vm")
    start = define and (True if start is None else bool(start))
    record = tasks.create_task(call.api.store, "provisioner.create", primary, {
        "name": name, "profile": profile["name"], "define_vm": define, "start_vm": start,
        "arg": list(call.args.get("arg") or [])})
    return Reply({"message": f"Creating VM '{name}' from profile '{profile['name']}'.",
                  "task_id": record["id"], "task_name": record["type"],
                  "run_on": f"{primary} (primary)"}, status=202,
                 headers={"Location": call.url(f"/tasks/{record['id']}")})


# -- OVA images --------------------------------------------------------------------------------

def _ova_shape(o: dict[str, Any]) -> dict[str, Any]:
    return {"id": o["id"], "name": o["name"], "volumes": o.get("volumes") or []}


def list_ovas(call: Call) -> list[dict[str, Any]]:
    return listing(call, model.OVA, _ova_shape)


def get_ova(call: Call) -> list[dict[str, Any]]:
    return one(call, model.OVA, "ova", _ova_shape)


def upload_ova(call: Call) -> Reply:
    """Spool the uploaded OVA on this node, check it, and import it there (a task)."""
    from pvc_plugins.provisioner import config, ova
    from pvc_plugins.provisioner.ova_import import IMPORT

    a, req = call.args, call.req
    name = a.get("ova") or a.get("name")
    try:
        model.check_name(name, "name")
    except model.ModelError as exc:
        raise ApiError(400, str(exc)) from None
    if read_one(call, model.OVA, name) is not None:
        raise ApiError(400, f"OVA '{name}' already exists.")
    files = getattr(req.context, "files", None) or {}
    stream = files.get("file") or next(iter(files.values()), None)
    if stream is None:
        if (req.content_type or "").split(";")[0].strip().lower() != \
                "application/octet-stream" or not req.content_length:
            raise ApiError(400, "Send the OVA as the request body with Content-Type "
                                "application/octet-stream")
        stream = req.bounded_stream
    node = call.api.config.node
    spool = os.path.join(config.load(call.api.config)["work_dir"], node)
    os.makedirs(spool, mode=0o700, exist_ok=True)
    path = os.path.join(spool, f"upload-{uuid.uuid4().hex[:12]}.ova")
    try:
        with open(path, "wb") as out:
            shutil.copyfileobj(stream, out, 4 * 2 ** 20)
        if a.get("ova_size") is not None and os.path.getsize(path) != a["ova_size"]:
            raise ApiError(400, f"The upload has {os.path.getsize(path)} bytes, not the "
                                f"{a['ova_size']} of 'ova_size'")
        facts = ova.inspect(path)
        _refuse_no_room(call, a["pool"], sum(d.capacity_bytes for d in facts.disks))
    except ova.OvaError as exc:
        os.unlink(path)
        raise ApiError(400, f"Invalid OVA: {exc}") from None
    except BaseException:
        os.unlink(path)
        raise
    record = tasks.create_task(call.api.store, IMPORT, node, {
        "name": name, "pool": a["pool"], "path": path})
    return Reply({"message": f"Importing OVA '{name}' ({len(facts.disks)} disk(s)) into pool "
                             f"{a['pool']}.", "task_id": record["id"],
                  "task_name": record["type"], "run_on": node}, status=202,
                 headers={"Location": call.url(f"/tasks/{record['id']}")})


def _refuse_no_room(call: Call, pool: str, size: int) -> None:
    """400 when the OVA's disks do not fit the pool (or there is no such pool)."""
    try:
        free = call.api.plugins.call_first("pvc_api_volume_free", raising=True, api=call.api,
                                           pool=pool)
    except Exception as exc:
        raise ApiError(400, f"Invalid parameter 'pool': {exc}") from None
    if free is None:
        raise ApiError(400, "No storage plugin keeps volumes on this cluster")
    if size > free:
        gib = 1024 ** 3
        raise ApiError(400, f"Invalid OVA: its disks take {size / gib:.1f} GiB, pool {pool} "
                            f"has {free / gib:.1f} GiB free")


def remove_ova(call: Call) -> Reply:
    """Remove an OVA and its volumes (a task on the primary); 409 while a profile uses it."""
    from pvc_plugins.provisioner.ova_import import REMOVE

    name = call.args["ova"]
    existing(call, model.OVA, name, 400)
    using = model.users(read_kind(call, model.PROFILE), model.OVA, name)
    if using:
        raise ApiError(409, f"OVA '{name}' is used by profile(s) {', '.join(using)}: change "
                            "or remove them first.")
    (primary,) = zk.fetch(call.api.store, [zk.get("config.primary_node")], call.api.zk_timeout)
    if not primary or primary == "none":
        raise ApiError(503, "There is no primary node to remove the OVA's volumes; try again")
    record = tasks.create_task(call.api.store, REMOVE, primary, {"name": name})
    return Reply({"message": f"Removing OVA '{name}' and its volumes.",
                  "task_id": record["id"], "task_name": record["type"],
                  "run_on": f"{primary} (primary)"}, status=202,
                 headers={"Location": call.url(f"/tasks/{record['id']}")})
