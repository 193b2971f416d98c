"""The ``storage_ceph`` plugin's hook implementations (entry point ``pvc.plugins``).

Per node: a bus timer collects this node's OSD statistics (handed to the keepalive) and, on
the primary, the cluster's status, health, utilization and summary. OSD add/remove and the
benchmark are task handlers. pvcapid gets the ``/storage/ceph`` routes and the storage part of
``GET /status``. Everything stays idle where no ceph.conf is configured.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pvc_kernel.sdk import TimerFired, hookimpl
from pvc_plugins.storage_ceph import (
    benchmark,
    keys,
    launcher,
    osd_db,
    osd_ops,
    osds,
    settings,
    stats,
    vmdisks,
)
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.secrets import pvc_hypervisor_secrets  # noqa: F401  (a hook)

log = logging.getLogger(__name__)
TIMER = "storage_ceph.stats"


class Runtime:
    """The plugin's state in one pvcnoded process."""

    def __init__(self, config: Any) -> None:
        self.settings = settings.from_config(config)
        self.client = CephClient(self.settings)
        self.node_osds = osds.NodeOsds(self.client, self.settings)
        self.last: dict[str, Any] = {}
        self.primary = threading.Event()

    def collect(self, store: Any) -> None:
        try:
            self.last = stats.node_collect(self.node_osds, store)
        except Exception as exc:
            log.warning("Ceph OSD statistics: %s", exc)
        if self.primary.is_set():
            try:
                stats.primary_collect(self.client, store)
            except Exception as exc:
                log.warning("Ceph cluster statistics: %s", exc)


_runtimes: dict[int, Runtime] = {}
_lock = threading.Lock()


def runtime(daemon: Any) -> Runtime:
    with _lock:
        rt = _runtimes.get(id(daemon))
        if rt is None:
            rt = _runtimes[id(daemon)] = Runtime(daemon.config)
        return rt


@hookimpl
def pvc_config_validate(config: Any) -> list[str]:
    return settings.problems(config.plugin_section(settings.NAME))


@hookimpl
def pvc_schema_keys() -> list[Any]:
    return list(keys.KEYS)


@hookimpl
def pvc_node_start(daemon: Any) -> None:
    rt = runtime(daemon)
    if not rt.settings.enabled:
        log.info("storage_ceph: %s is not readable; Ceph storage is off on this node",
                 rt.settings.ceph_conf)
        return
    daemon.bus.every(rt.settings.stats_interval, TIMER, obj=TIMER)
    threading.Thread(target=_activate, args=(daemon, rt), name="ceph-activate",
                     daemon=True).start()


def _activate(daemon: Any, rt: Runtime) -> None:
    """Start the OSDs this node's plugin created (spawn launcher) that do not run."""
    if rt.settings.osd_launcher != "spawn":
        return
    for osd_id in daemon.store.children("ceph.osds"):
        rec = daemon.store.get_json("ceph.osd", {}, osd=osd_id) or {}
        if rec.get("node") == rt.settings.node and rec.get("managed"):
            try:
                launcher.start("spawn", rt.settings.ceph_conf, int(osd_id))
            except Exception as exc:
                log.warning("cannot start OSD %s: %s", osd_id, exc)


@hookimpl
def pvc_node_stop(daemon: Any) -> None:
    rt = _runtimes.pop(id(daemon), None)
    if rt is not None:
        rt.client.close()


@hookimpl
def pvc_node_static(daemon: Any) -> dict[str, Any]:
    """``storage_addresses``: this node's Ceph client addresses (what fencing cuts)."""
    rt = runtime(daemon)
    return {"storage_addresses": vmdisks.storage_addresses(rt.settings)} \
        if rt.settings.enabled else {}


@hookimpl
def pvc_vm_disk_prepare(daemon: Any, vm: dict[str, Any], disk: dict[str, Any],
                        purpose: str) -> dict[str, Any] | None:
    """RBD disks: the volume exists and no live client elsewhere holds its lock."""
    if disk.get("protocol") != "rbd":
        return None
    rt = runtime(daemon)
    if not rt.settings.enabled:
        return _no_ceph(rt, disk)
    return vmdisks.prepare_rbd(rt.client, rt.settings, disk, purpose)


@hookimpl
def pvc_vm_disk_unlock(daemon: Any, vm: dict[str, Any],
                       disk: dict[str, Any]) -> dict[str, Any] | None:
    """RBD disks: break every lock on the volume (each holder is blocklisted)."""
    if disk.get("protocol") != "rbd":
        return None
    rt = runtime(daemon)
    if not rt.settings.enabled:
        return {**_no_ceph(rt, disk), "removed": 0}
    return vmdisks.unlock_rbd(rt.client, disk)


def _no_ceph(rt: Runtime, disk: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "reason": f"disk {disk.get('target')}: Ceph is not configured "
                                   f"on node {rt.settings.node}"}


def _fence(daemon: Any, node: str, addresses: list[str], cut: bool) -> dict[str, Any] | None:
    rt = runtime(daemon)
    if not rt.settings.enabled:
        return None
    if not addresses:
        static = daemon.store.get_json("node.static", {}, node=node) or {}
        addresses = list(static.get("storage_addresses") or [])
    answer = vmdisks.fence(rt.client, addresses, cut)
    if cut and answer.get("ok"):
        answer["osds_down"] = vmdisks.mark_osds_down(rt.client, osds.ids_of_node(daemon.store,
                                                                              node))
    return answer


@hookimpl
def pvc_storage_fence(daemon: Any, node: str, addresses: list[str]) -> dict[str, Any] | None:
    """Blocklist the node's storage addresses in Ceph."""
    return _fence(daemon, node, addresses, True)


@hookimpl
def pvc_storage_fence_covers(daemon: Any, node: str, disk: dict[str, Any]) -> bool | None:
    """RBD disks: the blocklist of the node's addresses stops its librbd clients writing."""
    return True if disk.get("protocol") == "rbd" else None


@hookimpl
def pvc_storage_unfence(daemon: Any, node: str, addresses: list[str]) -> dict[str, Any] | None:
    """Remove the node's addresses from Ceph's blocklist."""
    return _fence(daemon, node, addresses, False)


@hookimpl
def pvc_keepalive_stats(daemon: Any) -> dict[str, dict[str, Any]]:
    rt = runtime(daemon)
    return {keys.STATS_NAMESPACE: rt.last} if rt.last else {}


@hookimpl
def pvc_become_primary(daemon: Any) -> None:
    rt = runtime(daemon)
    rt.primary.set()
    if rt.settings.enabled:
        daemon.bus.publish(TimerFired(obj=TIMER, name=TIMER))   # report at once


@hookimpl
def pvc_become_secondary(daemon: Any) -> None:
    runtime(daemon).primary.clear()


@hookimpl
def pvc_event(daemon: Any, event: Any) -> None:
    if isinstance(event, TimerFired) and event.name == TIMER:
        runtime(daemon).collect(daemon.store)


def _task(fn: Any) -> Any:
    def handler(ctx: Any) -> Any:
        rt = runtime(ctx.daemon)
        return fn(ctx, rt.client, rt.settings, ctx.daemon.store)
    return handler


@hookimpl
def pvc_task_handlers() -> dict[str, Any]:
    return {"osd.add": _task(osds.add_osd), "osd.remove": _task(osds.remove_osd),
            "osd.replace": _task(osd_ops.replace_osd), "osd.refresh": _task(osd_ops.refresh_osd),
            "osd.add_db_vg": _task(osd_db.add_db_vg), "storage.benchmark": _task(benchmark.run)}


@hookimpl
def pvc_api_routes(api: Any) -> None:
    from pvc_plugins.storage_ceph import routes

    routes.install(api)


@hookimpl
def pvc_api_status(api: Any) -> dict[str, Any]:
    from pvc_api.sdk import zk

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
