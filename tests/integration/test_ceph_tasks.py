"""Node-side work of the storage plugin against a real Ceph and ZooKeeper: OSD statistics and
records, the primary's cluster reports, and the osd.add / osd.remove / storage.benchmark
tasks run by a real TaskRunner (the test plays the node daemon)."""

from __future__ import annotations

import os

import pytest

from pvc_plugins.storage_ceph import benchmark, pools, stats
from tests.support.ceph import run_task, task_node
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration
NODE = "ceph1"


@pytest.fixture
def node(ceph):
    """A stand-in node daemon: config, store and a task runner with the plugin's handlers."""
    with task_node(ceph, NODE, stats_interval=1,
                   benchmark={"volume_size": "64M", "runtime": 1}) as daemon:
        yield daemon


def test_node_stats_and_records(ceph, node):
    rt = node.plugin.runtime(node)
    first = str(ceph.cluster.osd_ids[0])

    def collected():  # usage figures appear once the OSD has reported to the manager
        rt.collect(node.store)
        osd = rt.last["osds"].get(first)
        return osd if osd and osd["kb"] > 0 else None

    one = wait_for(collected, 60, what="OSD usage in the collected stats")
    found = rt.last["osds"]
    assert sorted(found) == sorted(str(i) for i in ceph.cluster.osd_ids)
    assert one["up"] == 1 and one["in"] == 1 and one["node"] == NODE and one["kb"] > 0
    assert one["state"] == "exists,up" and one["class"] == "hdd"
    assert node.plugin.pvc_keepalive_stats(node) == {"ceph": rt.last}
    rec = node.store.get_json("ceph.osd", osd=str(ceph.cluster.osd_ids[0]))
    assert rec["node"] == NODE and rec["device"].endswith("osd0.img") and not rec["managed"]


def test_primary_reports_cluster_status(ceph, node):
    rt = node.plugin.runtime(node)
    summary = stats.primary_collect(rt.client, node.store)
    assert summary["health"] == "HEALTH_OK"
    assert summary["osds"]["total"] == summary["osds"]["up,in"] == len(ceph.cluster.osd_ids)
    assert summary["disk"]["total"] > 0
    assert "HEALTH_OK" in node.store.get("ceph.status")
    assert "RAW STORAGE" in node.store.get("ceph.util")
    assert node.store.get_json("ceph.health")["status"] == "HEALTH_OK"


def test_osd_add_and_safe_remove_as_tasks(ceph, node):
    pools.add_pool(node.plugin.runtime(node).client, "osdpool", 8, "copies=2,mincopies=1", None,
                   "osd")
    device = os.path.join(ceph.cluster.site.dir, "extra.img")
    with open(device, "wb") as fh:
        fh.truncate(4 * 2**30)
    try:
        added = run_task(node, "osd.add", {"device": device, "weight": 0.004})
        assert added["state"] == "SUCCESS", added["status"]
        new_id = added["status"].split()[4]
        rec = node.store.get_json("ceph.osd", osd=new_id)
        assert rec["managed"] and rec["device"] == os.path.realpath(device)
        again = run_task(node, "osd.add", {"device": device, "weight": 0.004})
        assert again["state"] == "FAILURE" and "already holds OSD" in again["status"]
        ceph.cluster.wait_healthy(120)

        removed = run_task(node, "osd.remove", {"osd": new_id, "force": False})
        assert removed["state"] == "SUCCESS", removed["status"]
        dump = node.plugin.runtime(node).client.mon("osd dump")
        assert int(new_id) not in [o["osd"] for o in dump["osds"]]
        assert not node.store.exists("ceph.osd", osd=new_id)
        with open(device, "rb") as fh:
            assert fh.read(4096) == bytes(4096)          # the bluestore label is gone
        ceph.cluster.wait_healthy(120)
    finally:
        pools.remove_pool(node.plugin.runtime(node).client, "osdpool")
        os.unlink(device)


def test_benchmark_task_stores_results(ceph, node):
    client = node.plugin.runtime(node).client
    pools.add_pool(client, "benchpool", 8, "copies=2,mincopies=1", None, "osd")
    try:
        benchmark.create_record(node.store, "bench1")
        final = run_task(node, "storage.benchmark", {"pool": "benchpool", "job": "bench1"})
        assert final["state"] == "SUCCESS", final["status"]
        (rec,) = benchmark.list_benchmarks(node.store, "bench1")
        result = rec["benchmark_result"]
        assert rec["test_format"] == 1 and list(result) == list(benchmark.RESULT_ORDER)
        figures = {t: benchmark.summary(result[t], t) for t in result}
        assert all(f["iops"] > 0 and f["bw_bytes"] > 0 for f in figures.values()), figures
        print("\nbenchmark (1 s per test):", {t: (round(f["bw_bytes"] / 2**20, 1),
                                                  round(f["iops"])) for t, f in figures.items()})
        import rbd
        with client.ioctx("benchpool") as ioctx:
            assert rbd.RBD().list(ioctx) == []            # the test volume is gone
    finally:
        pools.remove_pool(client, "benchpool")
