"""``/api/v1/storage/ceph/*`` in process (falcon TestClient) against a real Ceph and ZooKeeper:
wire shapes of the reference, clear 4xx on bad input, tasks for OSDs and the benchmark."""

from __future__ import annotations

import os
from types import SimpleNamespace

import falcon.testing
import pytest

from pvc_api.app import create_app
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store
from pvc_kernel.state.migrations import migrate
from pvc_plugins.storage_ceph import stats
from pvc_plugins.storage_ceph.plugin import StorageCephPlugin

plugin = StorageCephPlugin()  # one instance: one daemon's plugin state

pytestmark = pytest.mark.integration
KEY = "storage-test-key"
S = "/api/v1/storage/ceph"


@pytest.fixture(scope="module")
def env(ceph):
    """API + a stand-in node ``ceph1`` (primary) whose stats are collected once."""
    hosts = ceph.zk_hosts()
    with ceph.inside():
        plugins = PluginHost()
        plugins.register(plugin, "storage_ceph")
        store = Store(hosts, timeout=5)
        store.start()
        migrate(store)
        config = ceph.plugin_config("ceph1")
        config.api.keys = [KEY]
        for key, value in (("node.daemon_state", "run"), ("node.coordinator_state", "primary"),
                           ("node.domain_state", "ready"), ("node.static", "{}")):
            store.set(key, value, node="ceph1")
        store.set("config.primary_node", "ceph1")
        daemon = SimpleNamespace(config=config, store=store, node="ceph1")
        rt = plugin.runtime(daemon)
        rt.collect(store)
        store.set("node.stats", {"ceph": rt.last}, node="ceph1")
        stats.primary_collect(rt.client, store)
        api = create_app(store, config, plugins)
        client = falcon.testing.TestClient(api.app, headers={"X-Api-Key": KEY})
        yield SimpleNamespace(client=client, store=store, rt=rt, ceph=ceph)
        rt.client.close()
        store.stop()


@pytest.fixture
def http(env):
    with env.ceph.inside():
        yield env.client


def test_bad_input_is_a_clear_4xx(http):
    r = http.simulate_post(f"{S}/pool", params={"pool": "bad", "pgs": 8,
                                                 "replcfg": "copies=1,mincopies=2"})
    assert r.status_code == 400 and "copies (1) must be at least mincopies (2)" in r.json["message"]
    r = http.simulate_post(f"{S}/pool", params={"pool": "bad", "pgs": 8})
    assert r.status_code == 400 and "replcfg" in r.json["message"]
    r = http.simulate_post(f"{S}/pool", params={"pool": "apipool", "pgs": 8,
                                                 "replcfg": "copies=2,mincopies=1"})
    assert r.status_code == 200 and r.json == {"message": 'Created RBD pool "apipool" with 8 PGs'}
    r = http.simulate_post(f"{S}/volume", params={"pool": "apipool", "volume": "huge",
                                                   "size": "100T"})
    assert r.status_code == 400 and "larger than the free space" in r.json["message"]
    r = http.simulate_delete(f"{S}/pool/apipool")
    assert r.status_code == 400 and "yes-i-really-mean-it" in r.json["message"]
    assert http.simulate_get(f"{S}/pool/apipool").status_code == 200
    r = http.simulate_put(f"{S}/pool/apipool", params={"pgs": 12})
    assert r.status_code == 400 and "power of 2" in r.json["message"]


def test_volume_and_snapshot_routes(http):
    r = http.simulate_post(f"{S}/volume", params={"pool": "apipool", "volume": "disk0",
                                                   "size": "32M"})
    # the original's quoting: ' in the messages of every storage change but a pool creation
    assert r.status_code == 200, r.json
    assert r.json == {"message": "Created RBD volume 'apipool/disk0' of size '32M'."}
    r = http.simulate_post(f"{S}/volume", params={"pool": "apipool", "volume": "disk0",
                                                   "size": "32M"})
    assert r.status_code == 400 and r.json == {"message": "Volume 'apipool/disk0' already "
                                                          "exists."}
    (vol,) = http.simulate_get(f"{S}/volume/apipool/disk0").json
    assert vol["name"] == "disk0" and vol["pool"] == "apipool" and vol["stats"]["size"] == "32M"
    assert http.simulate_get(f"{S}/volume/apipool/nope").status_code == 404
    assert http.simulate_get(f"{S}/volume", params={"limit": "^zz"}).status_code == 404
    r = http.simulate_put(f"{S}/volume/apipool/disk0", params={"new_size": "64M",
                                                               "new_name": "x"})
    assert r.status_code == 400 and r.json["message"] == "Can only perform one modification at once"
    data = os.urandom(65536)
    r = http.simulate_post(f"{S}/volume/apipool/disk0/upload", params={"image_format": "raw"},
                           body=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200 and r.json["message"].startswith("Wrote"), r.json
    r = http.simulate_post(f"{S}/snapshot", params={"pool": "apipool", "volume": "disk0",
                                                     "snapshot": "s1"})
    assert r.status_code == 200, r.json
    (snap,) = http.simulate_get(f"{S}/snapshot/apipool/disk0/s1").json
    assert snap == {"pool": "apipool", "volume": "disk0", "snapshot": "s1",
                    "stats": snap["stats"]} and snap["stats"]["size"] == 32 * 2**20
    assert http.simulate_post(f"{S}/snapshot/apipool/disk0/s1/rollback").status_code == 200
    r = http.simulate_post(f"{S}/volume/apipool/disk0/clone", params={"new_volume": "disk1"})
    assert r.status_code == 200, r.json
    names = [v["name"] for v in http.simulate_get(f"{S}/volume", params={"pool": "apipool"}).json]
    assert names == ["disk0", "disk1"]
    assert http.simulate_delete(f"{S}/volume/apipool/disk0").status_code == 400  # has a snapshot
    r = http.simulate_delete(f"{S}/snapshot/apipool/disk0/s1")
    assert r.status_code == 200 and "'s1'" in r.json["message"] and '"' not in r.json["message"]
    for v in ("disk0", "disk1"):
        assert http.simulate_delete(f"{S}/volume/apipool/{v}").status_code == 200


def test_status_utilization_and_cluster_status(http):
    r = http.simulate_get(f"{S}/status")
    assert r.json["type"] == "status" and r.json["primary_node"] == "ceph1"
    assert "HEALTH_" in r.json["ceph_data"]
    assert "RAW STORAGE" in http.simulate_get(f"{S}/utilization").json["ceph_data"]
    st = http.simulate_get("/api/v1/status").json
    assert st["osds"]["total"] == 2 and st["resources"]["disk"]["total"] > 0
    assert [o["up"] for o in st["detail"]["osd"]] == ["up", "up"]
    assert http.simulate_get("/api/v1/storage").json is None


def test_osd_routes(http, env):
    osds = http.simulate_get(f"{S}/osd").json
    assert [o["id"] for o in osds] == ["0", "1"]
    assert osds[0]["node"] == "ceph1" and osds[0]["stats"]["kb"] > 0
    assert http.simulate_get(f"{S}/osd/0/state").json == {"id": "0", "in": 1, "up": 1}
    assert http.simulate_get(f"{S}/osd/7").status_code == 404
    r = http.simulate_post(f"{S}/osd/0/state", params={"state": "sideways"})
    assert r.status_code == 400
    r = http.simulate_post(f"{S}/option", params={"option": "noout", "action": "set"})
    assert r.status_code == 200 and r.json == {"message": "Set OSD property noout."}
    http.simulate_post(f"{S}/option", params={"option": "noout", "action": "unset"})
    r = http.simulate_post(f"{S}/osd", params={"node": "nowhere", "device": "/dev/x",
                                                "weight": 1})
    assert r.status_code == 400 and "not found" in r.json["message"]
    r = http.simulate_post(f"{S}/osd", params={"node": "ceph1", "device": "/dev/x",
                                                "weight": 1})
    assert r.status_code == 202 and r.json["task_name"] == "osd.add"
    assert r.json["run_on"] == "ceph1" and r.headers["location"].endswith(r.json["task_id"])
    r = http.simulate_delete(f"{S}/osd/1")
    assert r.status_code == 400 and "yes-i-really-mean-it" in r.json["message"]
    r = http.simulate_delete(f"{S}/osd/1", params={"yes-i-really-mean-it": "yes"})
    assert r.status_code == 202 and r.json["task_name"] == "osd.remove"
    # nobody runs these tasks here: withdraw them
    for t in env.store.children("tasks"):
        env.store.delete("task", task_id=t)


def test_benchmark_routes(http, env):
    assert http.simulate_get(f"{S}/benchmark").status_code == 404
    r = http.simulate_post(f"{S}/benchmark", params={"pool": "nopool"})
    assert r.status_code == 400 and r.json["message"] == 'Pool "nopool" is not valid.'
    r = http.simulate_post(f"{S}/benchmark", params={"pool": "apipool", "name": "b1"})
    assert r.status_code == 202 and r.json["run_on"] == "ceph1 (primary)"
    (rec,) = http.simulate_get(f"{S}/benchmark", params={"job": "b1"}).json
    assert rec["benchmark_result"] == "Running" and rec["id"] == 1
    assert http.simulate_post(f"{S}/benchmark", params={"pool": "apipool",
                                                         "name": "b1"}).status_code == 400
    for t in env.store.children("tasks"):
        env.store.delete("task", task_id=t)


def test_pool_removal_with_confirmation(http):
    r = http.simulate_delete(f"{S}/pool/apipool", params={"yes-i-really-mean-it": "yes"})
    assert r.status_code == 200 and r.json == {"message": "Removed RBD pool 'apipool' and all "
                                                          "volumes."}
    assert http.simulate_get(f"{S}/pool/apipool").status_code == 404
