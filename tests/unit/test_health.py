"""The health plugin's arithmetic, fault naming, maintenance rule and check time-outs."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from pvc_kernel.config import NodeConfig
from pvc_kernel.sdk import CheckResult, HealthCheck
from pvc_plugins.health import agent as agent_mod
from pvc_plugins.health import config, runner
from pvc_plugins.health.plugin import HealthPlugin


class Fixed(HealthCheck):
    def __init__(self, name, delta=0, boom=None, applies=None, setup_boom=False):
        self.name, self.delta, self.boom = name, delta, boom
        self.applies, self.setup_boom, self.runs = applies, setup_boom, 0

    def setup(self, daemon):
        if self.setup_boom:
            raise RuntimeError("no setup")
        return self.applies

    def run(self, daemon):
        self.runs += 1
        if self.boom:
            raise self.boom
        return CheckResult(self.delta, f"{self.name} at {self.delta}", {"n": self.runs})


class Hang(HealthCheck):
    name, timeout = "hang", 0.3

    def __init__(self):
        self.release, self.runs = threading.Event(), 0

    def run(self, daemon):
        self.runs += 1
        self.release.wait(30)
        return CheckResult(0, "back")


def test_health_is_100_minus_the_deltas_and_faults_take_half():
    assert runner.node_health([]) == 100
    assert runner.node_health([{"health_delta": 10}, {"health_delta": 25}]) == 65
    assert runner.node_health([{"health_delta": 80}, {"health_delta": 50}]) == 0
    assert [runner.fault_delta(d) for d in (0, 1, 10, 25, 50)] == [0, 1, 5, 13, 25]
    assert agent_mod.node_fault_id("load", "hv1") == "NODE_PLUGIN_LOAD_hv1"
    assert agent_mod.node_fault_id("my check", "hv1") == "NODE_PLUGIN_MY_CHECK_hv1"


def test_a_round_reports_each_check_whatever_the_others_do():
    hang = Hang()
    checks = [Fixed("ok"), Fixed("bad", 30), Fixed("raises", boom=ValueError("nope")),
              Fixed("absent", applies="no such hardware"), Fixed("broken", setup_boom=True),
              hang, Fixed("ok"), Fixed("")]
    run = runner.Runner(SimpleNamespace(node="hv1"), [("p", c) for c in checks], timeout=5,
                        workers=2, error_delta=10)
    assert run.names() == ["ok", "bad", "raises", "absent", "broken", "hang"]  # dup/unnamed out
    began = time.monotonic()
    first = {e["name"]: e for e in run.round()}
    assert time.monotonic() - began < 3                 # the hang's 0.3 s, not the 5 s default
    assert (first["ok"]["state"], first["ok"]["health_delta"]) == ("ok", 0)
    assert first["ok"]["data"] == {"n": 1} and first["ok"]["last_run"] > 0
    assert (first["bad"]["state"], first["bad"]["health_delta"]) == ("problem", 30)
    assert first["raises"]["state"] == "error" and first["raises"]["health_delta"] == 10
    assert "ValueError: nope" in first["raises"]["message"]
    assert first["absent"] == {"name": "absent", "state": "n/a", "health_delta": 0,
                               "message": "not applicable: no such hardware", "data": {},
                               "last_run": None, "fault": None}
    assert first["broken"]["state"] == "error" and "set-up failed" in first["broken"]["message"]
    assert first["hang"]["state"] == "timeout" and first["hang"]["health_delta"] == 10
    assert runner.node_health(list(first.values())) == 100 - 30 - 10 - 10 - 10
    second = {e["name"]: e for e in run.round()}
    assert hang.runs == 1                               # still running: not started again
    assert second["hang"]["state"] == "timeout" and second["ok"]["data"] == {"n": 2}
    assert checks[3].runs == 0                          # n/a: never run
    hang.release.set()
    deadline = time.monotonic() + 5
    while not run.entries[-1].future.done():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    hang.release.clear()
    third = {e["name"]: e for e in run.round()}
    assert hang.runs == 2 and third["hang"]["state"] == "timeout"   # hangs again
    hang.release.set()
    run.stop()


class FaultLog:
    def __init__(self):
        self.faults, self.maintenance = {}, "false"

    def report(self, store, fid, message, delta, sticky=False):
        self.faults[fid] = (message, delta)

    def clear(self, store, fid):
        self.faults.pop(fid, None)

    def list_faults(self, store):
        return [{"id": f} for f in self.faults]


def test_faults_follow_the_checks_and_maintenance_raises_none(monkeypatch):
    log = FaultLog()
    monkeypatch.setattr(agent_mod, "faults", log)
    log.faults["NODE_PLUGIN_OLD_hv1"] = ("left by a crash", 5)
    log.faults["NODE_PLUGIN_OLD_hv2"] = ("another node's", 5)
    store = SimpleNamespace(get=lambda key: log.maintenance)
    daemon = SimpleNamespace(node="hv1", store=store, stopping=threading.Event(),
                             config=NodeConfig(node="hv1", cluster="c", zookeeper_hosts=["x"]))
    health = agent_mod.HealthAgent(daemon, config.load(daemon.config))
    entry = {"name": "load", "health_delta": 50, "message": "too busy", "fault": None}
    own = {"name": "libvirt", "health_delta": 50, "message": "down", "fault": "libvirt-hv1"}
    health.sync_node_faults([entry, own], maintenance=False)
    assert log.faults == {"NODE_PLUGIN_LOAD_hv1": ("Node hv1 health check 'load': too busy", 25),
                          "NODE_PLUGIN_OLD_hv2": ("another node's", 5)}
    health.sync_node_faults([], maintenance=True)            # over: cleared even so
    assert list(log.faults) == ["NODE_PLUGIN_OLD_hv2"]
    health.sync_node_faults([entry], maintenance=True)       # new in maintenance: none
    assert list(log.faults) == ["NODE_PLUGIN_OLD_hv2"]
    health.sync_node_faults([entry], maintenance=False)
    assert "NODE_PLUGIN_LOAD_hv1" in log.faults
    health.sync_node_faults([{**entry, "message": "still"}], maintenance=True)  # refreshed
    assert log.faults["NODE_PLUGIN_LOAD_hv1"][0].endswith("still")


def test_the_node_object_shows_the_last_round():
    plugin = HealthPlugin()
    assert plugin.pvc_api_node({}) == {}
    stats = {"health": {"health": 90, "at": 1, "checks": [
        {"name": "load", "state": "problem", "health_delta": 10, "message": "busy",
         "data": {"load": 9}, "last_run": 5, "fault": None},
        {"name": "smart", "state": "n/a", "health_delta": 0, "message": "not applicable: x",
         "data": {}, "last_run": None, "fault": None}]}}
    assert plugin.pvc_api_node(stats) == {
        "health": 90, "health_plugins": ["load", "smart"],
        "health_details": [{"name": "load", "last_run": 5, "health_delta": 10,
                            "message": "busy", "data": {"load": 9}},
                           {"name": "smart", "last_run": None, "health_delta": 0,
                            "message": "not applicable: x", "data": {}}]}
