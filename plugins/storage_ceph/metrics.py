"""Ceph's Prometheus metrics (group ``ceph``): OSDs from what the nodes and the primary
report in ZooKeeper, pools from the API's Ceph connection (left out when this node has
none)."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from pvc_api.sdk import Call
from pvc_plugins.storage_ceph.errors import StorageError

log = logging.getLogger(__name__)
HEALTH = {"HEALTH_OK": 0, "HEALTH_WARN": 1, "HEALTH_ERR": 2}
POOL_FIELDS = {"stored_bytes": "Bytes stored (before replication)",
               "used_bytes": "Raw bytes used (after replication)",
               "free_bytes": "Bytes that can still be stored",
               "num_objects": "Objects", "read_bytes": "Bytes read since creation",
               "write_bytes": "Bytes written since creation"}


def families(api: Any) -> list[Metric]:
    from pvc_plugins.storage_ceph import api as ceph_api
    from pvc_plugins.storage_ceph import osds, pools

    call = Call(api, None, {})
    records, stats, summary = ceph_api._osd_data(call)
    out: list[Metric] = [GaugeMetricFamily(
        "pvc_ceph_health", "Ceph's health: 0 OK, 1 WARN, 2 ERR (-1: not reported)",
        value=HEALTH.get(summary.get("health", ""), -1))]
    up = GaugeMetricFamily("pvc_ceph_osd_up", "1 if the OSD is up", labels=["osd", "node"])
    inn = GaugeMetricFamily("pvc_ceph_osd_in", "1 if the OSD is in", labels=["osd", "node"])
    size = GaugeMetricFamily("pvc_ceph_osd_size_bytes", "Size of the OSD",
                             labels=["osd", "node"])
    used = GaugeMetricFamily("pvc_ceph_osd_used_bytes", "Bytes used on the OSD",
                             labels=["osd", "node"])
    for osd in osds.build_list(records, stats, summary):
        labels, st = [osd["id"], osd["node"]], osd["stats"]
        up.add_metric(labels, int(st.get("up", 0)))
        inn.add_metric(labels, int(st.get("in", 0)))
        size.add_metric(labels, int(st.get("kb", 0)) * 1024)
        used.add_metric(labels, int(st.get("kb_used", 0)) * 1024)
    out += [up, inn, size, used]
    client = ceph_api.client(call)
    if not client.settings.enabled:
        return out
    try:
        found = pools.list_pools(client)
    except (StorageError, OSError, ImportError) as exc:
        log.warning("metrics: cannot list the Ceph pools: %s", exc)
        return out
    for field, doc in POOL_FIELDS.items():
        family = GaugeMetricFamily(f"pvc_ceph_pool_{field}", doc, labels=["pool"])
        for pool in found:
            family.add_metric([pool["name"]], int(pool["stats"].get(field, 0)))
        out.append(family)
    volumes = GaugeMetricFamily("pvc_ceph_pool_volumes", "RBD volumes", labels=["pool"])
    for pool in found:
        volumes.add_metric([pool["name"]], pool["volume_count"])
    return [*out, volumes]
