"""Periodic Ceph statistics: every node its OSDs, the primary the cluster.

Both run from the node's bus timer (``storage_ceph.stats``), never in the keepalive itself:
the keepalive only hands over the last collection, so a slow Ceph never delays it.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from pvc_kernel.sdk import faults
from pvc_plugins.storage_ceph import osds, pools
from pvc_plugins.storage_ceph.client import CephClient

log = logging.getLogger(__name__)


def osd_summary(dump: dict[str, Any], hosts: dict[int, str]) -> tuple[dict[str, int],
                                                                        dict[str, Any]]:
    """({"total": n, "up,in": k, ...}, {id: {up, in, host}}) from ``osd dump``."""
    counts: dict[str, int] = {"total": 0}
    states: dict[str, Any] = {}
    for o in dump.get("osds", []):
        up, inn = int(o.get("up", 0)), int(o.get("in", 0))
        key = f"{'up' if up else 'down'},{'in' if inn else 'out'}"
        counts["total"] += 1
        counts[key] = counts.get(key, 0) + 1
        states[str(o["osd"])] = {"up": up, "in": inn, "host": hosts.get(o["osd"], "")}
    return counts, states


def count_images(client: CephClient, names: list[str]) -> tuple[int, int]:
    """(volumes, snapshots) in the given pools."""
    import rbd

    volumes = snapshots = 0
    for name in names:
        with client.ioctx(name) as ioctx:
            for image_name in rbd.RBD().list(ioctx):
                volumes += 1
                try:
                    with rbd.Image(ioctx, image_name, read_only=True) as image:
                        snapshots += len(list(image.list_snaps()))
                except rbd.ImageNotFound:
                    continue
    return volumes, snapshots


def cluster_summary(client: CephClient) -> dict[str, Any]:
    dump = client.mon("osd dump") or {}
    tree = client.mon("osd tree") or {}
    counts, states = osd_summary(dump, osds.osd_hosts(tree))
    df = client.mon("df") or {}
    st = df.get("stats", {})
    total = int(st.get("total_bytes", 0)) // 1024
    used = int(st.get("total_used_raw_bytes", 0)) // 1024
    names = [p["pool_name"] for p in pools.pool_details(client)]
    volumes, snapshots = count_images(client, names)
    health = client.mon("health") or {}
    return {
        "time": time.time(),
        "health": health.get("status", ""),
        "osds": counts,
        "osd_states": states,
        "pools": len(names),
        "volumes": volumes,
        "snapshots": snapshots,
        "disk": {"total": total, "used": used, "free": max(0, total - used),
                 "utilization": round(100.0 * used / total, 2) if total else 0.0},
    }


FAULT_PREFIX = "ceph-"
SEVERITY = {"HEALTH_WARN": ("warn", 10), "HEALTH_ERR": ("err", 50)}   # the original's deltas
OSD_OUT_DELTA = 50


def health_faults(health: dict[str, Any], osd_states: dict[str, Any]) -> dict[str, tuple[str,
                                                                                       int]]:
    """Fault ID → (message, health delta) for Ceph's failing health checks and OUT OSDs.

    ``ceph-warn-<check>`` (10) / ``ceph-err-<check>`` (50) per check of ``health detail``,
    ``ceph-osd-out-<id>`` (50) per OSD marked out.
    """
    found: dict[str, tuple[str, int]] = {}
    for check, doc in sorted((health.get("checks") or {}).items()):
        severity = str((doc or {}).get("severity", ""))
        if severity not in SEVERITY:
            continue
        level, delta = SEVERITY[severity]
        summary = ((doc or {}).get("summary") or {}).get("message") or check
        name = re.sub(r"[^a-z0-9_.-]+", "_", str(check).lower())
        found[f"{FAULT_PREFIX}{level}-{name}"] = (f"Ceph {severity} {check}: {summary}", delta)
    for osd_id, state in sorted(osd_states.items()):
        if not state.get("in"):
            where = f" on {state['host']}" if state.get("host") else ""
            found[f"{FAULT_PREFIX}osd-out-{osd_id}"] = (f"Ceph OSD {osd_id}{where} is out",
                                                        OSD_OUT_DELTA)
    return found


def primary_collect(client: CephClient, store: Any) -> dict[str, Any]:
    """Write status, utilization, health and the summary; raise and clear the Ceph faults
    (left as they are in maintenance mode); drop records of purged OSDs."""
    summary = cluster_summary(client)
    health = client.mon("health", detail="detail") or {}
    store.set("ceph.status", client.mon_text("status"))
    store.set("ceph.util", client.mon_text("df"))
    store.set("ceph.health", health)
    store.set("ceph.summary", summary)
    if store.get("config.maintenance") != "true":
        faults.sync(store, FAULT_PREFIX, health_faults(health, summary["osd_states"]),
                    sticky=True)
    for osd_id in store.children("ceph.osds"):
        if osd_id not in summary["osd_states"]:
            store.delete("ceph.osd", osd=osd_id)
    return summary


def node_collect(node_osds: osds.NodeOsds, store: Any) -> dict[str, Any]:
    """This node's OSD statistics (and their records kept current)."""
    found = node_osds.collect()
    node_osds.sync_records(store, found)
    return {"osds": found, "time": round(time.time(), 3)}
