"""The plugin's ZooKeeper keys (registered through ``pvc_schema_keys``)::

    /ceph                          (root of the storage plugin's keys)
        status                     text of ``ceph status``     (written by the primary)
        util                       text of ``ceph df``         (written by the primary)
        health                     JSON ``ceph health detail`` (written by the primary)
        summary                    JSON counts, disk totals, OSD up/in, pool stats, time
                                   (written by the primary; read by GET /status)
        osds/<id>                  JSON {id, node, device, db_device, is_split, fsid}
                                   (written by the node holding the OSD)
        benchmarks/<job>           JSON Benchmark {id, job, test_format, benchmark_result}
        benchmark_seq              int: the last benchmark id given out

OSD statistics travel with the holding node's keepalive (``/nodes/<node>/stats`` namespace
``ceph``: ``{"osds": {<id>: {...}}, "time": epoch}``). Pools, volumes and snapshots live in
Ceph only: the API lists them through librados/librbd, so nothing can drift.
"""

from __future__ import annotations

from pvc_kernel.sdk import Key

OWNER = "storage_ceph"
STATS_NAMESPACE = "ceph"

KEYS = [
    Key("ceph", "/ceph", OWNER),
    Key("ceph.status", "/ceph/status", OWNER),
    Key("ceph.util", "/ceph/util", OWNER),
    Key("ceph.health", "/ceph/health", OWNER),
    Key("ceph.summary", "/ceph/summary", OWNER, volatile=True),  # every stats_interval
    Key("ceph.osds", "/ceph/osds", OWNER),
    Key("ceph.osd", "/ceph/osds/{osd}", OWNER),
    Key("ceph.benchmarks", "/ceph/benchmarks", OWNER),
    Key("ceph.benchmark", "/ceph/benchmarks/{job}", OWNER),
    Key("ceph.benchmark_seq", "/ceph/benchmark_seq", OWNER),
]
