"""Fence faults that settle once their cause is over, and an operator's power-off
confirmation (``POST /node/{node}/fence/confirm``), against a real ZooKeeper: the API in
process (falcon TestClient) and the fence monitor of a primary in this process, with the
recording storage/recovery plugins of ``test_fencing_monitor``. Dead nodes are a real
pvcnoded frozen then killed (whose BMC does not answer) or registered-looking nodes without
a daemon (and so without a BMC)."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from types import SimpleNamespace
from typing import Any

import falcon.testing
import pytest

from pvc_api.app import create_app
from pvc_kernel import config as kconfig
from pvc_kernel import faults
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store, schema
from pvc_plugins.fencing_ipmi import api as fence_api
from pvc_plugins.fencing_ipmi.agent import rejoin_wait
from pvc_plugins.fencing_ipmi.fence import DONE
from pvc_plugins.fencing_ipmi.ipmi import BmcError
from pvc_plugins.fencing_ipmi.plugin import FencingIpmiPlugin as fencing_plugin
from tests.integration import test_fencing_monitor as fm
from tests.integration.test_fencing_monitor import (
    BMC_ADDRESS,
    FENCE,
    KA,
    SUICIDE,
    Recorder,
    _free_udp_port,
    fake_node,
    record,
)
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration
KEY = "test-api-key-fence"
URL = "/api/v1/node/{}/fence/confirm"
cluster = fm.cluster       # the fixture: (victim, bmc, primary) factories


@pytest.fixture
def api(store, zk_hosts):
    """The API with the fencing plugin's routes, on the cluster's liveness settings."""
    config = kconfig.NodeConfig(node="hv1", cluster="test", zookeeper_hosts=[zk_hosts],
                                keepalive_interval=KA, fence_intervals=FENCE,
                                suicide_intervals=SUICIDE,
                                api=kconfig.ApiConfig(keys=[KEY]))
    plugins = PluginHost()
    plugins.register(fencing_plugin, "fencing_ipmi")
    app = create_app(store, config, plugins)
    return falcon.testing.TestClient(app.app, headers={"X-Api-Key": KEY})


def confirm(api: Any, node: str, operator: str = "alice@ws1") -> Any:
    return api.simulate_post(URL.format(node), params={"operator": operator})


def fault(store: Store, record_: dict[str, Any], suffix: str = "") -> dict[str, Any] | None:
    return store.get_json("fault", None, fault_id=f"fence-{record_['node']}-{record_['id']}"
                                                   f"{suffix}")


def health(api: Any) -> int:
    return api.simulate_get("/api/v1/status").json["cluster_health"]["health"]


def back(store: Store, node: str) -> None:
    """The node rejoined: running and speaking again."""
    store.set("node.keepalive", f"{time.time():.3f}", node=node)
    store.set("node.daemon_state", "run", node=node)


def bmc_off_for(monitor: Any, node: str) -> None:
    """``node``'s BMC reports power off (the others have none: their fences fail)."""
    def state(n: str) -> str:
        if n != node:
            raise BmcError(f"node {n} has no BMC configured")
        return "off"

    monitor.env.bmc_power_state = state


def fenced(primary: Any, *nodes: str) -> dict[str, dict[str, Any]]:
    mon = primary.monitor
    mon.watching_since = time.time() - 60
    mon.tick()
    return {n: record(primary.store, n) for n in nodes}


# -- A: faults whose cause is over -----------------------------------------------------------

def test_a_fence_that_worked_turns_informational_when_its_node_is_back(store, cluster, api):
    """hv2's fence worked (the BMC reports off), hv3's failed (no BMC): 40 % health. Once both
    are back in `run`, hv2's fault drops to delta 0 (kept, saying so), hv3's stays until it
    is acknowledged."""
    _victim, _bmc, primary = cluster
    fake_node(store, "hv2", time.time() - 60)
    fake_node(store, "hv3", time.time() - 60)
    p = primary(Recorder())
    bmc_off_for(p.monitor, "hv2")
    recs = fenced(p, "hv2", "hv3")
    assert recs["hv2"]["outcome"] == "fenced,recovered"
    assert recs["hv3"]["outcome"] == "fence-failed,not-recovered"
    assert fault(store, recs["hv2"])["health_delta"] == 10
    assert fault(store, recs["hv3"])["health_delta"] == 50
    assert health(api) == 40

    p.monitor.tick()                        # not back yet: nothing changes
    assert fault(store, recs["hv2"])["health_delta"] == 10

    back(store, "hv2")
    back(store, "hv3")
    p.monitor.tick()
    settled = fault(store, recs["hv2"])
    assert settled["health_delta"] == 0 and settled["status"] == "new"
    assert "powered off" in settled["message"]
    assert "[Resolved: node hv2 rejoined the cluster at" in settled["message"]
    assert fault(store, recs["hv3"])["health_delta"] == 50           # until acknowledged
    assert health(api) == 50
    faults.acknowledge(store, f"fence-hv3-{recs['hv3']['id']}")
    assert health(api) == 100

    p.monitor.tick()                        # settled once: not rewritten
    assert fault(store, recs["hv2"]) == settled
    # a fault an administrator deleted stays deleted, even for a new primary
    faults.delete(store, f"fence-hv2-{recs['hv2']['id']}")
    primary(Recorder(), node="hv4").monitor.tick()
    assert fault(store, recs["hv2"]) is None


def test_a_new_fence_of_the_node_settles_its_previous_one(store, cluster):
    """Declared dead again before a round saw it back: the old fence's fault is settled."""
    _victim, _bmc, primary = cluster
    fake_node(store, "hv2", time.time() - 60)
    p = primary(Recorder())
    bmc_off_for(p.monitor, "hv2")
    first = fenced(p, "hv2")["hv2"]
    back(store, "hv2")
    store.set("node.keepalive", f"{time.time() - 60:.3f}", node="hv2")   # and died again
    p.monitor.detect()
    assert record(store, "hv2")["id"] != first["id"]
    assert fault(store, first)["health_delta"] == 0


# -- B: an operator's confirmation ----------------------------------------------------------

def test_confirmation_refusals(store, cluster, api):
    _victim, _bmc, primary = cluster
    fake_node(store, "hv2", time.time() - 60)
    fake_node(store, "hv5", time.time())
    p = primary(Recorder())
    failed = fenced(p, "hv2")["hv2"]
    assert failed["outcome"] == "fence-failed,not-recovered"

    r = confirm(api, "nosuchnode")
    assert r.status_code == 404 and r.json == {"message": "Node not found."}
    r = confirm(api, "hv5")
    assert r.status_code == 409 and "its daemon state is run, not dead" in r.json["message"]
    r = confirm(api, "hv2", operator="x;rm -rf /")
    assert r.status_code == 400 and "operator" in r.json["message"]
    store.set("node.keepalive", f"{time.time() - 0.5:.3f}", node="hv2")   # it spoke
    r = confirm(api, "hv2")
    assert r.status_code == 409
    assert "its last keepalive is only" in r.json["message"] and "it is alive" in \
        r.json["message"]
    assert record(store, "hv2") == failed
    p.monitor.tick()
    assert store.get("node.daemon_state", node="hv2") == "dead"
    # documented in the OpenAPI document
    doc = api.simulate_get("/api/v1/openapi.json").json
    assert "post" in doc["paths"]["/node/{node}/fence/confirm"]


def test_confirmed_power_off_of_a_dead_node_recovers_its_vms(store, cluster, api, caplog):
    """A real pvcnoded whose BMC does not answer freezes: its fence fails, nothing is
    recovered (default policy). The operator pulls its plug and confirms: the primary
    recovers it as if fenced, logs and records who confirmed it; when the node is back, the
    fence fault turns informational."""
    caplog.set_level(logging.INFO, logger="pvc_plugins.fencing_ipmi")
    victim, _bmc, primary = cluster
    v = victim()
    store.set("fencing.bmc", {"host": BMC_ADDRESS, "port": _free_udp_port(), "user": "admin"},
              node="hv2")
    store.set("fencing.secret", "nobody-listens", node="hv2")
    r = confirm(api, "hv2")                       # alive: refused
    assert r.status_code == 409 and "not dead" in r.json["message"]

    rec = Recorder()
    p = primary(rec)
    p.monitor.start()
    os.kill(v.proc.pid, signal.SIGSTOP)
    failed = wait_for(lambda: (x := record(store, "hv2")).get("step") == DONE and x,
                      timeout=40, what="the failed fence")
    assert failed["outcome"] == "fence-failed,not-recovered" and rec.names() == ["cut"]
    assert fault(store, failed)["health_delta"] == 50

    os.kill(v.proc.pid, signal.SIGKILL)           # the operator powers it off
    v.proc.wait(5)
    r = confirm(api, "hv2")
    assert r.status_code == 202, r.json
    assert "confirmed by alice@ws1" in r.json["message"]
    done = wait_for(lambda: (x := record(store, "hv2")).get("outcome") ==
                    "confirmed-off,recovered" and x, timeout=30, what="the recovery")
    assert rec.names() == ["cut", "recover"]      # storage not cut again
    assert rec.fences[-1] == {"powered_off": True, "storage_cut": ["recorder"]}
    assert done["id"] == failed["id"] and done["confirm"]["by"] == "alice@ws1"
    assert done["confirm"]["source"] and done["confirm"]["applied"]
    assert store.get("node.daemon_state", node="hv2") == "fenced"
    assert store.get("node.domain_state", node="hv2") == "flushed"
    audit = fault(store, done, "-confirm")
    assert audit["health_delta"] == 0
    assert "alice@ws1" in audit["message"] and "confirmed at" in audit["message"]
    assert faults.stamp(done["confirm"]["requested"]) in audit["message"]
    assert "confirmed at" in caplog.text and "alice@ws1" in caplog.text
    fence_fault = fault(store, done)
    assert fence_fault["health_delta"] == 10 and fence_fault["status"] == "new"
    assert "alice@ws1 confirmed it was off" in fence_fault["message"]
    assert "nobody-listens" not in json.dumps(done) + json.dumps(audit)
    r = confirm(api, "hv2")                       # once is enough
    assert r.status_code == 409 and "fenced, not dead" in r.json["message"]

    node_side = SimpleNamespace(store=store, node="hv2")
    assert "storage access" in rejoin_wait(node_side)
    wait_for(lambda: record(store, "hv2").get("unfenced"), timeout=20, what="storage back")
    v.start()                                     # fenced -> init -> run
    wait_for(lambda: store.get("node.daemon_state", node="hv2") == "run", timeout=20,
             what="the node to rejoin")
    wait_for(lambda: fault(store, done)["health_delta"] == 0, timeout=10,
             what="the fence fault to turn informational")
    assert fault(store, done, "-confirm")["health_delta"] == 0


def test_the_primary_refuses_a_confirmation_when_the_node_spoke_since(store, cluster, api):
    _victim, _bmc, primary = cluster
    fake_node(store, "hv2", time.time() - 60)
    rec = Recorder()
    p = primary(rec)
    fenced(p, "hv2")
    assert confirm(api, "hv2").status_code == 202
    store.set("node.keepalive", f"{time.time():.3f}", node="hv2")    # it was not off
    p.monitor.tick()
    r = record(store, "hv2")
    assert "its last keepalive is only" in r["confirm"]["rejected"]
    assert r["outcome"] == "fence-failed,not-recovered" and rec.names() == ["cut"]
    assert store.get("node.daemon_state", node="hv2") == "dead"
    assert fault(store, r, "-confirm") is None
    p.monitor.tick()
    assert record(store, "hv2") == r               # refused once, left alone


def test_confirmation_writes_are_version_checked(store, cluster, api, monkeypatch):
    """A keepalive written between the judgement and the write cancels the confirmation,
    in the API (409) and in the primary (judged again next round)."""
    _victim, _bmc, primary = cluster
    fake_node(store, "hv2", time.time() - 60)
    rec = Recorder()
    p = primary(rec)
    failed = fenced(p, "hv2")["hv2"]
    stale = store.get("node.keepalive", node="hv2")
    real_fetch = fence_api.zk.fetch

    def fetch_then_speak(*args: Any, **kw: Any) -> Any:
        out = real_fetch(*args, **kw)
        store.set("node.keepalive", stale, node="hv2")       # a new version, same value
        return out

    monkeypatch.setattr(fence_api.zk, "fetch", fetch_then_speak)
    r = confirm(api, "hv2")
    assert r.status_code == 409 and "changed while" in r.json["message"]
    assert record(store, "hv2") == failed
    monkeypatch.undo()
    assert confirm(api, "hv2").status_code == 202

    mon = p.monitor
    real_many = mon.store.get_many
    raced = []

    def many_then_speak(keys: Any, *args: Any, **kw: Any) -> Any:
        out = real_many(keys, *args, **kw)
        if not raced and ("node.keepalive", {"node": "hv2"}) in list(keys):
            raced.append(True)
            store.set("node.keepalive", stale, node="hv2")
        return out

    monkeypatch.setattr(mon.store, "get_many", many_then_speak)
    pending = mon.env.load("hv2")
    assert mon.confirm(pending) is False
    assert store.get("node.daemon_state", node="hv2") == "dead"
    assert record(store, "hv2")["step"] == DONE and rec.names() == ["cut"]
    mon.tick()                                     # judged again: still silent
    assert record(store, "hv2")["outcome"] == "confirmed-off,recovered"
    assert store.get("node.daemon_state", node="hv2") == "fenced"
    assert schema.path("fencing.fence", node="hv2").endswith("/fencing/fences/hv2")
