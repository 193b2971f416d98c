"""The ``storage_ceph`` plugin (entry point ``storage_ceph`` in ``pvc.plugins`` names
``StorageCephPlugin``).

Per node: a bus timer collects this node's OSD statistics (handed to the keepalive) and, on
the primary, the cluster's status, health, utilization and summary. OSD add/remove and the
benchmark are task handlers. pvcapid gets the ``/storage/ceph`` routes and the storage part of
``GET /status``. Everything stays idle where no ceph.conf is configured.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pvc_kernel.sdk import Settings, TimerFired, hookimpl
from pvc_plugins.storage_ceph import (
    benchmark,
    keys,
    launcher,
    osd_db,
    osd_ops,
    osds,
    secrets,
    stats,
    vmdisks,
)
from pvc_plugins.storage_ceph import config as cephconfig
from pvc_plugins.storage_ceph.client import CephClient

log = logging.getLogger(__name__)
TIMER = "storage_ceph.stats"


class Runtime:
    """The plugin's node-side state in one pvcnoded: settings, Ceph connection, last
    statistics."""

    def __init__(self, config: Any) -> None:
        self.settings = cephconfig.from_config(config)
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


class StorageCephPlugin:
    """One per daemon: the node's Runtime (made at first use) in pvcnoded, the API's Ceph
    connection in pvcapid."""

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._api_client: CephClient | None = None
        self._lock = threading.Lock()

    def runtime(self, daemon: Any) -> Runtime:
        with self._lock:
            if self._runtime is None:
                self._runtime = Runtime(daemon.config)
            return self._runtime

    def api_client(self, config: Any) -> CephClient:
        """pvcapid's Ceph connection (made on first use)."""
        with self._lock:
            if self._api_client is None:
                self._api_client = CephClient(cephconfig.from_config(config))
            return self._api_client

    @hookimpl
    def pvc_config_settings(self) -> Settings:
        """``plugins.storage_ceph`` (``pvc_plugins.storage_ceph.config.SETTINGS``)."""
        return cephconfig.SETTINGS

    @hookimpl
    def pvc_schema_keys(self) -> list[Any]:
        return list(keys.KEYS)

    @hookimpl
    def pvc_health_checks(self, daemon: Any) -> list[Any]:
        """``ceph``: this node's OSDs and monitor (``health.CephCheck``)."""
        from pvc_plugins.storage_ceph.health import CephCheck

        return [CephCheck(lambda: self._runtime)]

    @hookimpl
    def pvc_node_start(self, daemon: Any) -> None:
        rt = self.runtime(daemon)
        if not rt.settings.enabled:
            log.info("storage_ceph: %s is not readable; Ceph storage is off on this node",
                     rt.settings.ceph_conf)
            return
        daemon.bus.every(rt.settings.stats_interval, TIMER, obj=TIMER)
        threading.Thread(target=_activate, args=(daemon, rt), name="ceph-activate",
                         daemon=True).start()

    @hookimpl
    def pvc_node_stop(self, daemon: Any) -> None:
        with self._lock:
            rt, self._runtime = self._runtime, None
        if rt is not None:
            rt.client.close()

    @hookimpl
    def pvc_node_static(self, daemon: Any) -> dict[str, Any]:
        """``storage_addresses``: this node's Ceph client addresses (what fencing cuts)."""
        rt = self.runtime(daemon)
        return {"storage_addresses": vmdisks.storage_addresses(rt.settings)} \
            if rt.settings.enabled else {}

    @hookimpl
    def pvc_hypervisor_secrets(self, daemon: Any) -> list[dict[str, str]] | None:
        """The cephx secret of the plugin's Ceph user, for RBD disks."""
        rt = self.runtime(daemon)
        if not rt.settings.enabled:
            return None
        secret = secrets.hypervisor_secret(rt.client, rt.settings)
        return [secret] if secret else []

    @hookimpl
    def pvc_vm_disk_prepare(self, daemon: Any, vm: dict[str, Any], disk: dict[str, Any],
                            purpose: str) -> dict[str, Any] | None:
        """RBD disks: the volume exists and no live client elsewhere holds its lock."""
        if disk.get("protocol") != "rbd":
            return None
        rt = self.runtime(daemon)
        if not rt.settings.enabled:
            return _no_ceph(rt, disk)
        return vmdisks.prepare_rbd(rt.client, rt.settings, disk, purpose)

    @hookimpl
    def pvc_vm_disk_unlock(self, daemon: Any, vm: dict[str, Any],
                           disk: dict[str, Any]) -> dict[str, Any] | None:
        """RBD disks: break every lock on the volume (each holder is blocklisted)."""
        if disk.get("protocol") != "rbd":
            return None
        rt = self.runtime(daemon)
        if not rt.settings.enabled:
            return {**_no_ceph(rt, disk), "removed": 0}
        return vmdisks.unlock_rbd(rt.client, disk)

    def _fence(self, daemon: Any, node: str, addresses: list[str],
               cut: bool) -> dict[str, Any] | None:
        rt = self.runtime(daemon)
        if not rt.settings.enabled:
            return None
        if not addresses:
            static = daemon.store.get_json("node.static", {}, node=node) or {}
            addresses = list(static.get("storage_addresses") or [])
        answer = vmdisks.fence(rt.client, addresses, cut)
        if cut and answer.get("ok"):
            answer["osds_down"] = vmdisks.mark_osds_down(
                rt.client, osds.ids_of_node(daemon.store, node))
        return answer

    @hookimpl
    def pvc_storage_fence(self, daemon: Any, node: str,
                          addresses: list[str]) -> dict[str, Any] | None:
        """Blocklist the node's storage addresses in Ceph."""
        return self._fence(daemon, node, addresses, True)

    @hookimpl
    def pvc_storage_fence_covers(self, daemon: Any, node: str,
                                 disk: dict[str, Any]) -> bool | None:
        """RBD disks: the blocklist of the node's addresses stops its librbd clients
        writing."""
        return True if disk.get("protocol") == "rbd" else None

    @hookimpl
    def pvc_storage_unfence(self, daemon: Any, node: str,
                            addresses: list[str]) -> dict[str, Any] | None:
        """Remove the node's addresses from Ceph's blocklist."""
        return self._fence(daemon, node, addresses, False)

    @hookimpl
    def pvc_keepalive_stats(self, daemon: Any) -> dict[str, dict[str, Any]]:
        rt = self.runtime(daemon)
        return {keys.STATS_NAMESPACE: rt.last} if rt.last else {}

    @hookimpl
    def pvc_become_primary(self, daemon: Any) -> None:
        rt = self.runtime(daemon)
        rt.primary.set()
        if rt.settings.enabled:
            daemon.bus.publish(TimerFired(obj=TIMER, name=TIMER))   # report at once

    @hookimpl
    def pvc_become_secondary(self, daemon: Any) -> None:
        self.runtime(daemon).primary.clear()

    @hookimpl
    def pvc_event(self, daemon: Any, event: Any) -> None:
        if isinstance(event, TimerFired) and event.name == TIMER:
            self.runtime(daemon).collect(daemon.store)

    def _task(self, fn: Any) -> Any:
        def handler(ctx: Any) -> Any:
            rt = self.runtime(ctx.daemon)
            return fn(ctx, rt.client, rt.settings, ctx.daemon.store)
        return handler

    @hookimpl
    def pvc_task_handlers(self) -> dict[str, Any]:
        return {"osd.add": self._task(osds.add_osd), "osd.remove": self._task(osds.remove_osd),
                "osd.replace": self._task(osd_ops.replace_osd),
                "osd.refresh": self._task(osd_ops.refresh_osd),
                "osd.add_db_vg": self._task(osd_db.add_db_vg),
                "storage.benchmark": self._task(benchmark.run)}

    @hookimpl
    def pvc_api_routes(self, api: Any) -> None:
        from pvc_plugins.storage_ceph import routes

        routes.install(api)

    @hookimpl
    def pvc_api_view_keys(self) -> list[str]:
        """The OSD records and the primary's summary: the OSD list, status and metrics."""
        return ["ceph.osds", "ceph.summary"]

    @hookimpl
    def pvc_api_metrics(self, api: Any, group: str) -> list[Any]:
        """``ceph``: ``pvc_ceph_*`` (``metrics.families``)."""
        if group != "ceph":
            return []
        from pvc_plugins.storage_ceph import metrics

        return metrics.families(api)

    @hookimpl
    def pvc_api_status(self, api: Any) -> dict[str, Any]:
        from pvc_plugins.storage_ceph import api as ceph_api

        return ceph_api.cluster_status(api)

    @hookimpl
    def pvc_api_volume_free(self, api: Any, pool: str) -> int | None:
        """pvcapid: the pool's free bytes through the API's Ceph connection."""
        from pvc_plugins.storage_ceph import provide

        settings = cephconfig.from_config(api.config)
        return provide.free(self.api_client(api.config), pool) if settings.enabled else None

    # -- volumes for other plugins (the provisioner), on the primary -------------------------
    def _enabled(self, daemon: Any) -> Any:
        rt = self.runtime(daemon)
        return rt if rt.settings.enabled else None

    @hookimpl
    def pvc_volume_facts(self, daemon: Any) -> dict[str, Any] | None:
        """RBD: monitors, port and the hypervisor secret's UUID."""
        from pvc_plugins.storage_ceph import provide

        rt = self._enabled(daemon)
        return provide.facts(rt.client, rt.settings) if rt else None

    @hookimpl
    def pvc_volume_free(self, daemon: Any, pool: str) -> int | None:
        from pvc_plugins.storage_ceph import provide

        rt = self._enabled(daemon)
        return provide.free(rt.client, pool) if rt else None

    @hookimpl
    def pvc_volume_create(self, daemon: Any, pool: str, name: str, size_bytes: int,
                          source: str | None) -> bool | None:
        from pvc_plugins.storage_ceph import provide

        rt = self._enabled(daemon)
        return provide.create(rt.client, pool, name, size_bytes, source) if rt else None

    @hookimpl
    def pvc_volume_remove(self, daemon: Any, pool: str, name: str) -> bool | None:
        from pvc_plugins.storage_ceph import provide

        rt = self._enabled(daemon)
        return provide.remove(rt.client, pool, name) if rt else None

    @hookimpl
    def pvc_volume_snapshot(self, daemon: Any, pool: str, name: str,
                            snapshot: str) -> bool | None:
        """An RBD snapshot of the image."""
        from pvc_plugins.storage_ceph import provide

        rt = self._enabled(daemon)
        return provide.snapshot(rt.client, pool, name, snapshot) if rt else None

    @hookimpl
    def pvc_volume_snapshot_remove(self, daemon: Any, pool: str, name: str,
                                   snapshot: str) -> bool | None:
        from pvc_plugins.storage_ceph import provide

        rt = self._enabled(daemon)
        return provide.snapshot_remove(rt.client, pool, name, snapshot) if rt else None

    @hookimpl
    def pvc_volume_rollback(self, daemon: Any, pool: str, name: str,
                            snapshot: str) -> bool | None:
        """Refused while a client holds a watch on the image (a running VM)."""
        from pvc_plugins.storage_ceph import provide

        rt = self._enabled(daemon)
        return provide.rollback(rt.client, pool, name, snapshot) if rt else None

    @hookimpl
    def pvc_volume_export(self, daemon: Any, pool: str, name: str, snapshot: str,
                          since: str | None, path: str) -> int | None:
        """``rbd export --export-format 2`` or ``rbd export-diff --from-snap``."""
        from pvc_plugins.storage_ceph import provide

        rt = self._enabled(daemon)
        return provide.export(rt.client, pool, name, snapshot, since, path) if rt else None

    @hookimpl
    def pvc_volume_import(self, daemon: Any, pool: str, name: str, path: str,
                          since: str | None, snapshot: str) -> bool | None:
        """``rbd import --export-format 2`` or ``rbd import-diff``."""
        from pvc_plugins.storage_ceph import provide

        rt = self._enabled(daemon)
        return provide.import_volume(rt.client, pool, name, path, since,
                                     snapshot) if rt else None

    @hookimpl
    def pvc_volume_blockdev(self, daemon: Any, pool: str, name: str) -> dict[str, Any] | None:
        """``raw`` over ``rbd`` with this node's ceph.conf and user."""
        from pvc_plugins.storage_ceph import provide

        rt = self._enabled(daemon)
        return provide.blockdev(rt.settings, pool, name) if rt else None


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


def _no_ceph(rt: Runtime, disk: dict[str, Any]) -> dict[str, Any]:
    return {"ok": False, "reason": f"disk {disk.get('target')}: Ceph is not configured "
                                   f"on node {rt.settings.node}"}

