"""Pure logic of the storage plugin and the lab's Ceph config: OSD stats and lists, the
cluster summary, settings, benchmark helpers, rbd info bits and the plugin when Ceph is off."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pvc_kernel.config import parse
from pvc_lab import ceph as labceph
from pvc_plugins.storage_ceph import benchmark, osds, rbdinfo, stats, vmdisks
from pvc_plugins.storage_ceph import config as settings
from pvc_plugins.storage_ceph.plugin import StorageCephPlugin

TREE = {"nodes": [
    {"id": -1, "name": "default", "type": "root", "children": [-2, -3]},
    {"id": -2, "name": "hv1", "type": "host", "children": [0, 2]},
    {"id": -3, "name": "hv2", "type": "host", "children": [1]},
    {"id": 0, "type": "osd"}, {"id": 1, "type": "osd"}, {"id": 2, "type": "osd"}]}
DUMP = {"osds": [
    {"osd": 0, "uuid": "u0", "up": 1, "in": 1, "primary_affinity": 1.0,
     "state": ["exists", "up"]},
    {"osd": 1, "uuid": "u1", "up": 0, "in": 1, "state": ["exists"]},
    {"osd": 2, "uuid": "u2", "up": 1, "in": 0, "state": ["exists", "up"]}]}
DF = {"nodes": [{"id": 0, "crush_weight": 0.004, "reweight": 1.0, "device_class": "hdd",
                 "kb": 4194304, "kb_used": 1024, "kb_avail": 4193280, "utilization": 0.02,
                 "var": 1.0, "pgs": 9}]}


def test_host_osds_and_hosts():
    assert osds.host_osds(TREE, "hv1") == [0, 2]
    assert osds.host_osds(TREE, "hv9") == []
    assert osds.osd_hosts(TREE) == {0: "hv1", 2: "hv1", 1: "hv2"}


def test_build_stats_merges_dump_df_and_status():
    st = osds.build_stats(0, "hv1", DUMP, DF, {0: {"used": "1M", "avail": "4G", "wr_ops": "3",
                                                   "wr_data": "1K", "rd_ops": "0",
                                                   "rd_data": "0", "state": "exists,up"}})
    assert st["uuid"] == "u0" and st["up"] == 1 and st["in"] == 1 and st["pgs"] == 9
    assert st["weight"] == 0.004 and st["class"] == "hdd" and st["state"] == "exists,up"
    assert st["used"] == "1M" and st["wr_ops"] == "3" and st["node"] == "hv1"
    empty = osds.build_stats(9, "hv1", DUMP, DF, {})
    assert empty["up"] == 0 and empty["kb"] == 0 and empty["used"] == "0"


def test_build_list_uses_records_node_stats_and_the_primarys_view():
    records = {"0": {"node": "hv1", "device": "/dev/sdb", "fsid": "u0"},
               "2": {"node": "hv1", "device": "/dev/sdc", "fsid": "u2"}}
    node_stats = {"hv1": {"osds": {"0": osds.build_stats(0, "hv1", DUMP, DF, {})}}}
    counts, states = stats.osd_summary(DUMP, osds.osd_hosts(TREE))
    assert counts == {"total": 3, "up,in": 1, "down,in": 1, "up,out": 1}
    found = osds.build_list(records, node_stats, {"osd_states": states})
    assert [o["id"] for o in found] == ["0", "1", "2"]
    assert found[0]["device"] == "/dev/sdb" and found[0]["stats"]["kb"] == 4194304
    assert found[1]["node"] == "hv2" and found[1]["device"] == "" and found[1]["stats"]["up"] == 0
    assert found[2]["stats"]["in"] == 0           # the summary's fresher view wins
    assert [o["id"] for o in osds.build_list(records, node_stats, {},
                                             match=lambda i: i == "2")] == ["2"]


def test_settings_validation_and_defaults():
    assert settings.problems({}) == []
    bad = settings.problems({"ceph_conf": 3, "osd_launcher": "cron", "stats_interval": 0,
                             "failure_domain": "rack", "nonsense": 1,
                             "benchmark": {"volume_size": "lots", "runtime": 0, "x": 1}})
    for key in ("ceph_conf", "osd_launcher", "stats_interval", "failure_domain", "nonsense",
                "benchmark.volume_size", "benchmark.runtime", "benchmark.x"):
        assert any(f"plugins.storage_ceph.{key}'" in p for p in bad), key
    cfg = parse({"node": "hv1", "cluster": "c", "zookeeper": {"hosts": ["z:2181"]},
                 "plugins": {"storage_ceph": {"ceph_conf": "/nonexistent/ceph.conf",
                                              "benchmark": {"volume_size": "1G"}}}})
    s = settings.from_config(cfg)
    assert s.crush_host == "hv1" and s.benchmark_volume_size == 2**30 and not s.enabled
    assert s.rados_id == "admin" and s.osd_launcher == "systemd"


def test_plugin_is_idle_without_ceph():
    cfg = parse({"node": "hv1", "cluster": "c", "zookeeper": {"hosts": ["z:2181"]},
                 "plugins": {"storage_ceph": {"ceph_conf": "/nonexistent/ceph.conf"}}})
    timers = []
    daemon = SimpleNamespace(config=cfg, bus=SimpleNamespace(every=lambda *a, **k:
                                                             timers.append(a)))
    plugin = StorageCephPlugin()
    plugin.pvc_node_start(daemon)
    assert timers == [] and plugin.pvc_keepalive_stats(daemon) == {}
    assert set(plugin.pvc_task_handlers()) == {"osd.add", "osd.remove", "osd.replace",
                                              "osd.refresh", "osd.add_db_vg",
                                              "storage.benchmark"}
    plugin.pvc_node_stop(daemon)


def test_benchmark_helpers():
    s = settings.CephConfig(node="hv1", ceph_conf="/etc/ceph/ceph.conf")
    argv = benchmark.fio_argv(s, "vms", "vol", "seq_read", "read", "4M", 64, 30)
    assert "--ioengine=rbd" in argv and "--pool=vms" in argv and "--runtime=30" in argv
    assert "--time_based" not in benchmark.fio_argv(s, "p", "v", "fill", "write", "4M", 16, None)
    assert benchmark.volume_name("2026-01-01T10:00:00_hv1") == \
        "pvcbenchmark_2026_01_01T10_00_00_hv1"
    assert benchmark.default_job("hv1", 0).endswith("_hv1")
    doc = {"jobs": [{"read": {"bw_bytes": 10, "iops": 2.5, "io_bytes": 100},
                     "write": {"bw_bytes": 0}}]}
    assert benchmark.summary(doc, "seq_read") == {"bw_bytes": 10, "iops": 2.5, "io_bytes": 100}
    assert benchmark.summary(doc, "seq_write")["bw_bytes"] == 0
    assert list(benchmark.TESTS) != list(benchmark.RESULT_ORDER)           # writes run first
    assert sorted(benchmark.TESTS) == sorted(benchmark.RESULT_ORDER)


def test_rbd_bits_and_empty_info():
    assert rbdinfo.bit_names(61, rbdinfo.FEATURES) == ["layering", "exclusive-lock",
                                                        "object-map", "fast-diff",
                                                        "deep-flatten"]
    assert set(rbdinfo.empty_info("x")) == set(rbdinfo.INFO_KEYS)


def test_lab_ceph_conf():
    text = labceph.conf_text("f-s-i-d", [("hv1", "10.0.0.1"), ("hv2", "10.0.0.2")], "10.0.0.3",
                             "10.0.0.0/24", "/srv/hv3/ceph", "hv3")
    assert "mon_host = [v2:10.0.0.1:3300,v1:10.0.0.1:6789],[v2:10.0.0.2:3300" in text
    assert "public_addr = 10.0.0.3" in text and "crush_location = root=default host=hv3" in text
    assert "osd_pool_default_size = 3" in text and "osd_pool_default_min_size = 2" in text
    assert "osd_crush_chooseleaf_type = 1" in text and "auth_client_required = cephx" in text
    assert "keyring = /srv/hv3/ceph/$cluster.$name.keyring" in text.split("[client]")[1]
    assert "keyring" not in text.split("[client]")[0]   # daemons keep theirs in their data dir
    assert "auth_cluster_required = none" in labceph.conf_text(
        "f", [("a", "1.2.3.4")], "1.2.3.4", "1.2.3.0/24", "/b", "a", cephx=False)
    assert "osd_heartbeat_grace" not in text and "mon_lease" not in text
    fast = labceph.conf_text("f", [("a", "1.2.3.4")], "1.2.3.4", "1.2.3.0/24", "/b", "a",
                             mon_failover=True).split("[client]")[0]   # every daemon too
    assert "mon_lease = 2" in fast and "mon_election_timeout = 2" in fast
    assert "mon_client_ping_timeout = 3" in fast
    assert "osd_crush_chooseleaf_type = 0" in labceph.conf_text(
        "f", [("a", "1.2.3.4")], "1.2.3.4", "1.2.3.0/24", "/b", "a", failure_domain="osd",
        fast_fail=True)
    with pytest.raises(ValueError):
        labceph.conf_text("f", [], "a", "n", "/b", "h", failure_domain="rack")
    assert "status" not in labceph.disabled_mgr_modules()
    assert "balancer" not in labceph.disabled_mgr_modules()


class _FakeImage:
    def __init__(self, lockers, watchers):
        self.lockers, self.watchers, self.broken = lockers, watchers, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def list_lockers(self):
        return {"lockers": self.lockers} if self.lockers else []

    def watchers_list(self):
        return [{"addr": a} for a in self.watchers]

    def break_lock(self, who, cookie):
        self.broken.append(who)


@pytest.mark.parametrize("locker_addr, watching, ok, broken", [
    ("10.9.9.9:0/111", True, False, []),           # a live client on another node: refuse
    ("10.9.9.9:0/111", False, True, ["client.7"]),  # that client is gone: break (blocklist)
    ("10.1.1.1:0/222", True, True, ["client.7"]),   # our own node: stale, break
])
def test_rbd_lock_rules(monkeypatch, locker_addr, watching, ok, broken):
    from contextlib import contextmanager

    import rbd

    image = _FakeImage([("client.7", "auto 1", locker_addr)],
                       [locker_addr] if watching else [])
    monkeypatch.setattr(rbd, "Image", lambda ioctx, name: image)
    monkeypatch.setattr(vmdisks, "local_addresses", lambda: {"10.1.1.1"})
    monkeypatch.setattr(vmdisks, "mon_hosts", lambda s: [])

    @contextmanager
    def ioctx(pool):
        yield object()

    client = SimpleNamespace(ioctx=ioctx)
    s = settings.CephConfig(node="hv1")
    answer = vmdisks.prepare_rbd(client, s, {"source": "vms/disk0", "target": "vda"}, "start")
    assert answer["ok"] is ok and image.broken == broken
    if not ok:
        assert "locked by a live client at 10.9.9.9" in answer["reason"]


def test_locker_ip_and_fence_without_addresses():
    assert vmdisks.locker_ip("10.0.0.1:0/12345") == "10.0.0.1"
    assert vmdisks.locker_ip("v1:10.0.0.2:6789/0") == "10.0.0.2"
    answer = vmdisks.fence(SimpleNamespace(), [], cut=True)
    assert answer["ok"] is False and "no storage addresses" in answer["reason"]


def test_health_checks_and_out_osds_become_faults():
    health = {"status": "HEALTH_ERR", "checks": {
        "OSD_DOWN": {"severity": "HEALTH_WARN", "summary": {"message": "1 osds down"}},
        "PG_AVAILABILITY": {"severity": "HEALTH_ERR",
                            "summary": {"message": "Reduced data availability"}},
        "ODD": {"severity": "HEALTH_OK"}}}
    states = {"0": {"up": 1, "in": 1, "host": "hv1"}, "2": {"up": 0, "in": 0, "host": "hv3"}}
    found = stats.health_faults(health, states)
    assert found == {
        "ceph-warn-osd_down": ("Ceph HEALTH_WARN OSD_DOWN: 1 osds down", 10),
        "ceph-err-pg_availability": ("Ceph HEALTH_ERR PG_AVAILABILITY: Reduced data "
                                     "availability", 50),
        "ceph-osd-out-2": ("Ceph OSD 2 on hv3 is out", 50)}
    assert stats.health_faults({"status": "HEALTH_OK"}, {"0": {"in": 1}}) == {}
