"""``/storage/ceph/*`` handlers (PVC API v1 §3.8); the route table is in ``routes.py``.

Pools, volumes and snapshots are read and changed here through librados/librbd (no node has
to act); OSD add/remove and the benchmark are tasks on the node that must do the work.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from typing import Any

from pvc_api.sdk import ApiError, Call, Reply, params, zk
from pvc_kernel.sdk import schema, tasks
from pvc_plugins.storage_ceph import (
    benchmark,
    osd_db,
    osds,
    pools,
    snapshots,
    upload,
    volumes,
)
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.config import NAME, from_config
from pvc_plugins.storage_ceph.errors import StorageError
from pvc_plugins.storage_ceph.keys import STATS_NAMESPACE


def client(call: Call) -> CephClient:
    """The API process's Ceph connection (made on first use; kept by the plugin instance)."""
    return call.api.plugins.plugin(NAME).api_client(call.api.config)


def guarded(fn: Any) -> Any:
    """Turn StorageError into ``{"message"}`` answers with the error's status."""
    def handler(call: Call) -> Any:
        try:
            return fn(call)
        except StorageError as exc:
            raise ApiError(exc.status, exc.message) from None
    handler.__doc__ = fn.__doc__
    handler.__name__ = fn.__name__
    return handler


def single_quoted(fn: Callable[[Call], Any]) -> Callable[[Call], Any]:
    """Messages (answers and 4xx) with ``"`` turned into ``'``, as the original's API does for
    every storage change but a pool creation (``Removed RBD volume 'vms/disk0'.``)."""
    def handler(call: Call) -> Any:
        try:
            result = fn(call)
        except ApiError as exc:
            raise ApiError(exc.status, exc.message.replace('"', "'")) from None
        if isinstance(result, dict) and isinstance(result.get("message"), str):
            return {**result, "message": result["message"].replace('"', "'")}
        return result
    handler.__doc__ = fn.__doc__
    handler.__name__ = fn.__name__
    return handler


NOT_CONFIGURED = 400
"""The status of every storage route (but the stubs) while Ceph is not configured on the API's
node: a lasting condition, so not 503, which the original's client retries and then reports
as a time-out without the message."""


def _bindings_missing() -> bool:
    return "rados" not in sys.modules and importlib.util.find_spec("rados") is None


def requires_ceph(fn: Callable[[Call], Any]) -> Callable[[Call], Any]:
    """Answer 400 ``{"message"}`` at once when this node has no Ceph configuration (or no
    rados bindings), whether the route reads Ceph or the reports in ZooKeeper."""
    def handler(call: Call) -> Any:
        settings = client(call).settings
        if not settings.enabled:
            raise ApiError(NOT_CONFIGURED, f"Ceph storage is not configured on node "
                                           f"{settings.node} ({settings.ceph_conf} is not "
                                           f"readable).")
        if _bindings_missing():
            raise ApiError(NOT_CONFIGURED, f"Ceph storage is not usable on node "
                                           f"{settings.node}: the Python rados bindings are "
                                           f"missing (apt-get install python3-rados "
                                           f"python3-rbd).")
        return fn(call)
    handler.__doc__ = fn.__doc__
    handler.__name__ = fn.__name__
    return handler


def stub(call: Call) -> None:
    """A stub kept for compatibility: answers null."""
    return None


def _primary(call: Call) -> str:
    (primary,) = zk.fetch(call.api.store, [zk.get("config.primary_node")], call.api.zk_timeout)
    return primary or "none"


def _text(call: Call, key: str, kind: str) -> dict[str, str]:
    primary, text = zk.fetch(call.api.store, [zk.get("config.primary_node"), zk.get(key)],
                             call.api.zk_timeout)
    return {"type": kind, "primary_node": primary or "none", "ceph_data": text or ""}


def status(call: Call) -> dict[str, str]:
    """Text of ``ceph status``, as last reported by the primary."""
    return _text(call, "ceph.status", "status")


def utilization(call: Call) -> dict[str, str]:
    """Text of ``ceph df``, as last reported by the primary."""
    return _text(call, "ceph.util", "utilization")


def task_reply(call: Call, record: dict[str, Any], message: str, run_on: str) -> Reply:
    return Reply({"message": message, "task_id": record["id"], "task_name": record["type"],
                  "run_on": run_on}, status=202,
                 headers={"Location": call.url(f"/tasks/{record['id']}")})


# -- cluster options and OSDs ------------------------------------------------------------------

@single_quoted
@guarded
def set_option(call: Call) -> dict[str, str]:
    """Set or unset a cluster-wide OSD flag (``ceph osd set|unset``, e.g. noout)."""
    return {"message": osds.set_option(client(call), call.args["option"], call.args["action"])}


def _osd_data(call: Call) -> tuple[dict, dict, dict]:
    store, t = call.api.store, call.api.zk_timeout
    (ids,) = zk.fetch(store, [zk.children("ceph.osds")], t)
    nodes, summary_text = zk.fetch(store, [zk.children("nodes"), zk.get("ceph.summary")], t)
    ids = [i for i in ids if schema.valid_segment(i)]
    nodes = [n for n in nodes if schema.valid_segment(n)]
    texts = zk.fetch(store, [zk.get("ceph.osd", osd=i) for i in ids]
                     + [zk.get("node.stats", node=n) for n in nodes], t)
    records = {i: zk.load_json(x, {}) for i, x in zip(ids, texts[:len(ids)], strict=True)}
    stats = {n: zk.load_json(x, {}).get(STATS_NAMESPACE, {})
             for n, x in zip(nodes, texts[len(ids):], strict=True)}
    return records, stats, zk.load_json(summary_text, {})


def list_osds(call: Call) -> list[dict[str, Any]]:
    """List OSDs (sorted by id) with their node, device and statistics."""
    found = osds.build_list(*_osd_data(call), match=params.name_filter(call.args["limit"]))
    if not found:
        raise ApiError(404, "OSD not found.")
    return found


def get_osd(call: Call) -> list[dict[str, Any]]:
    """One OSD as a one-element array (the id matches fuzzily, like the original)."""
    call.args["limit"] = call.args["osdid"]
    return list_osds(call)


def _osd_record(call: Call) -> dict[str, Any]:
    found = [o for o in osds.build_list(*_osd_data(call)) if o["id"] == call.args["osdid"]]
    if not found:
        raise ApiError(404, "OSD not found.")
    return found[0]


def _node(call: Call, node: str) -> str:
    if not schema.valid_segment(node) or not call.api.store.exists("node", node=node):
        raise StorageError(f'Node "{node}" not found.')
    return node


def _db_args(a: dict[str, Any]) -> dict[str, Any]:
    osd_db.check_args(a.get("ext_db_ratio"), a.get("ext_db_size"))
    return {"ext_db_ratio": a.get("ext_db_ratio"), "ext_db_size": a.get("ext_db_size") or None}


@guarded
def add_osd(call: Call) -> Reply:
    """Create an OSD on a node's device (task ``osd.add`` on that node), optionally with its
    bluestore DB on an LV of the node's ``osd-db`` volume group."""
    a = call.args
    if (a.get("osd_count") or 1) > 1:
        raise StorageError("Split OSDs (osd_count above 1) are not supported by this storage "
                           "plugin")
    db = _db_args(a)
    node = _node(call, a["node"])
    record = tasks.create_task(call.api.store, "osd.add", node,
                               {"device": a["device"], "weight": a["weight"], **db})
    return task_reply(call, record, f"Adding OSD on {node} device {a['device']}.", node)


@guarded
def add_db_vg(call: Call) -> Reply:
    """Create the OSD DB volume group ``osd-db`` on a node's device (task ``osd.add_db_vg``)."""
    node = _node(call, call.args["node"])
    device = call.args["device"]
    record = tasks.create_task(call.api.store, "osd.add_db_vg", node, {"device": device})
    return task_reply(call, record, f"Creating OSD DB volume group on {node} device {device}.",
                      node)


def _osd_task(call: Call, kind: str, args: dict[str, Any], what: str) -> Reply:
    """A task on the OSD's node; ``what`` is the reply's message with {id} and {node}."""
    osd = _osd_record(call)
    if not osd["node"]:
        raise StorageError(f"OSD {osd['id']} has no known node")
    record = tasks.create_task(call.api.store, kind, osd["node"], {"osd": osd["id"], **args})
    message = what.replace("{id}", osd["id"]).replace("{node}", osd["node"])
    return task_reply(call, record, message, osd["node"])


@guarded
def replace_osd(call: Call) -> Reply:
    """Replace an OSD's device, keeping its id (task ``osd.replace`` on its node)."""
    a = call.args
    args = {"new_device": a["new_device"], "old_device": a.get("old_device") or None,
            "weight": a.get("weight"), "force": bool(a.get("force")), **_db_args(a)}
    return _osd_task(call, "osd.replace", args,
                     "Replacing OSD {id} on {node} with device " + a["new_device"] + ".")


@guarded
def refresh_osd(call: Call) -> Reply:
    """Re-import an existing OSD from its device after a reinstall (task ``osd.refresh``)."""
    return _osd_task(call, "osd.refresh", {"device": call.args["device"]},
                     "Refreshing OSD {id} on {node} from device " + call.args["device"] + ".")


@guarded
def remove_osd(call: Call) -> Reply:
    """Remove an OSD (task ``osd.remove`` on its node): out, wait until safe unless force."""
    return _osd_task(call, "osd.remove", {"force": bool(call.args["force"])},
                     "Removing OSD {id} from {node}.")


@guarded
def get_osd_state(call: Call) -> dict[str, Any]:
    """The OSD's up/in flags from the OSD map."""
    return osds.osd_state(client(call), call.args["osdid"])


@single_quoted
@guarded
def set_osd_state(call: Call) -> dict[str, str]:
    """Mark the OSD in (online) or out (offline)."""
    return {"message": osds.set_osd_state(client(call), call.args["osdid"], call.args["state"])}


# -- pools --------------------------------------------------------------------------------------

@guarded
def list_pools(call: Call) -> list[dict[str, Any]]:
    """List RBD pools with their usage."""
    found = pools.list_pools(client(call), params.name_filter(call.args["limit"]))
    if not found:
        raise ApiError(404, "Pool not found.")
    return found


@guarded
def get_pool(call: Call) -> list[dict[str, Any]]:
    """One pool (exact name) as a one-element array."""
    return [pools.get_pool(client(call), call.args["pool"])]


@guarded
def add_pool(call: Call) -> dict[str, str]:
    """Create an RBD pool: PGs, ``copies=N,mincopies=M``, tier."""
    a = call.args
    settings = from_config(call.api.config)
    return {"message": pools.add_pool(client(call), a["pool"], a["pgs"], a["replcfg"],
                                      a.get("tier"), settings.failure_domain)}


@single_quoted
@guarded
def set_pool_pgs(call: Call) -> dict[str, str]:
    """Change a pool's PG count (a non-zero power of 2)."""
    return {"message": pools.set_pgs(client(call), call.args["pool"], call.args["pgs"])}


@single_quoted
@guarded
def remove_pool(call: Call) -> dict[str, str]:
    """Remove a pool and every volume in it (needs yes-i-really-mean-it)."""
    return {"message": pools.remove_pool(client(call), call.args["pool"])}


# -- volumes ------------------------------------------------------------------------------------

@guarded
def list_volumes(call: Call) -> list[dict[str, Any]]:
    """List volumes (``limit``: regex on the name; ``pool``: only this pool)."""
    found = volumes.list_volumes(client(call), call.args.get("pool"),
                                 params.name_filter(call.args["limit"]))
    if not found:
        raise ApiError(404, "Volume not found.")
    return found


@guarded
def get_volume(call: Call) -> list[dict[str, Any]]:
    """One volume as a one-element array; 404 if it does not exist."""
    return [volumes.get_volume(client(call), call.args["pool"], call.args["volume"])]


@single_quoted
@guarded
def add_volume(call: Call) -> dict[str, str]:
    """Create a volume; sizes beyond the pool's free space need force."""
    a = call.args
    return {"message": volumes.add_volume(client(call), a["pool"], a["volume"], a["size"],
                                          bool(a.get("force")))}


@single_quoted
@guarded
def modify_volume(call: Call) -> dict[str, str]:
    """Grow (new_size) or rename (new_name) a volume; one modification at a time."""
    a = call.args
    if a.get("new_size") and a.get("new_name"):
        raise StorageError("Can only perform one modification at once")
    if a.get("new_size"):
        return {"message": volumes.resize_volume(client(call), a["pool"], a["volume"],
                                                 a["new_size"], bool(a.get("force")))}
    if a.get("new_name"):
        return {"message": volumes.rename_volume(client(call), a["pool"], a["volume"],
                                                 a["new_name"])}
    raise StorageError("At least one modification must be specified")


@single_quoted
@guarded
def remove_volume(call: Call) -> dict[str, str]:
    """Remove a volume (refused while it has snapshots or is in use)."""
    return {"message": volumes.remove_volume(client(call), call.args["pool"],
                                             call.args["volume"])}


@single_quoted
@guarded
def scan_volume(call: Call) -> dict[str, str]:
    """Kept for compatibility: volumes are read from Ceph directly, so this only checks it."""
    volumes.get_volume(client(call), call.args["pool"], call.args["volume"])
    return {"message": f'Volume "{call.args["pool"]}/{call.args["volume"]}" is up to date.'}


@single_quoted
@guarded
def clone_volume(call: Call) -> dict[str, str]:
    """Copy a volume to a new one in the same pool (``snapshot``: copy-on-write clone)."""
    a = call.args
    return {"message": volumes.clone_volume(client(call), a["pool"], a["volume"],
                                            a["new_volume"], bool(a.get("force")),
                                            a.get("snapshot") or None)}


@single_quoted
@guarded
def upload_volume(call: Call) -> dict[str, str]:
    """Write a disk image into an existing volume (raw, or converted with qemu-img).

    The body is the image itself (``application/octet-stream``) or, where the API hands
    uploaded parts to handlers, a multipart part named ``file``.
    """
    a, req = call.args, call.req
    files = getattr(req.context, "files", None) or {}
    stream = files.get("file") or next(iter(files.values()), None)
    if stream is None:
        media = (req.content_type or "").split(";")[0].strip().lower()
        if media.startswith(("multipart/", "application/json",
                             "application/x-www-form-urlencoded")) or not req.content_length:
            raise StorageError("Send the image as the request body with Content-Type "
                               "application/octet-stream")
        stream = req.bounded_stream
    return {"message": upload.upload(client(call), a["pool"], a["volume"], stream,
                                     a["image_format"], a.get("file_size"))}


# -- snapshots ----------------------------------------------------------------------------------

@guarded
def list_snapshots(call: Call) -> list[dict[str, Any]]:
    """List snapshots (``pool``, ``volume``, ``limit`` on the snapshot name)."""
    a = call.args
    found = snapshots.list_snapshots(client(call), a.get("pool"), a.get("volume"),
                                     params.name_filter(a["limit"]))
    if not found:
        raise ApiError(404, "Volume snapshot not found.")
    return found


@guarded
def get_snapshot(call: Call) -> list[dict[str, Any]]:
    """One snapshot as a one-element array."""
    a = call.args
    return [snapshots.get_snapshot(client(call), a["pool"], a["volume"], a["snapshot"])]


def _on_snapshot(call: Call, action: Callable[..., str], *extra: str) -> dict[str, str]:
    """Answer the message of action(ceph, pool, volume, snapshot, *the args named extra)."""
    a = call.args
    return {"message": action(client(call), a["pool"], a["volume"], a["snapshot"],
                              *(a[key] for key in extra))}


@single_quoted
@guarded
def add_snapshot(call: Call) -> dict[str, str]:
    """Snapshot a volume."""
    return _on_snapshot(call, snapshots.add_snapshot)


@single_quoted
@guarded
def rename_snapshot(call: Call) -> dict[str, str]:
    """Rename a snapshot."""
    return _on_snapshot(call, snapshots.rename_snapshot, "new_name")


@single_quoted
@guarded
def remove_snapshot(call: Call) -> dict[str, str]:
    """Remove a snapshot (refused while clones depend on it)."""
    return _on_snapshot(call, snapshots.remove_snapshot)


@single_quoted
@guarded
def rollback_snapshot(call: Call) -> dict[str, str]:
    """Roll a volume back to a snapshot (refused while the volume is in use)."""
    return _on_snapshot(call, snapshots.rollback_snapshot)


# -- benchmark ----------------------------------------------------------------------------------

def list_benchmarks(call: Call) -> list[dict[str, Any]]:
    """Benchmark results, newest first (``job``: only that one)."""
    found = benchmark.list_benchmarks(call.api.store, call.args.get("job"))
    if not found:
        raise ApiError(404, "No benchmark found.")
    return found


@guarded
def run_benchmark(call: Call) -> Reply:
    """Run the storage benchmark on a pool (task ``storage.benchmark`` on the primary)."""
    pool = call.args["pool"]
    if not client(call).pool_exists(pool):
        raise StorageError(f'Pool "{pool}" is not valid.')
    primary = _primary(call)
    if primary == "none":
        raise StorageError("There is no primary node to run the benchmark", 503)
    job = call.args.get("name") or benchmark.default_job(primary)
    txn = call.api.store.transaction()
    benchmark.create_record(call.api.store, job, txn)
    record = tasks.create_task(call.api.store, "storage.benchmark", primary,
                               {"pool": pool, "job": job}, txn=txn)
    call.api.store.commit(txn)
    return task_reply(call, record, f"Storage benchmark {job} started on pool {pool}.",
                      f"{primary} (primary)")


def cluster_status(api: Any) -> dict[str, Any]:
    """The storage part of ``GET /status`` (from the primary's ``ceph.summary``)."""
    (text,) = zk.fetch(api.store, [zk.get("ceph.summary")], api.zk_timeout)
    summary = zk.load_json(text, {})
    if not summary:
        return {}
    detail = [{"id": i, "up": "up" if s.get("up") else "down",
               "in": "in" if s.get("in") else "out"}
              for i, s in sorted(summary.get("osd_states", {}).items(), key=lambda x: int(x[0]))]
    return {"osds": summary.get("osds", {"total": 0}), "pools": summary.get("pools", 0),
            "volumes": summary.get("volumes", 0), "snapshots": summary.get("snapshots", 0),
            "resources": {"disk": summary.get("disk", {})}, "detail": {"osd": detail}}
