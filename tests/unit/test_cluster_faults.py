"""The primary's cluster faults: the VM plugin's judgement (failed VMs, memory
overprovisioning) and the health plugin's sync of every plugin's answer."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

from pvc_kernel.config import NodeConfig
from pvc_plugins.health import agent as agent_mod
from pvc_plugins.health import config
from pvc_plugins.vm_kvm import clusterfaults


class Keys:
    """children/fetch over a dict of (key name, node or fault id) → text."""

    def __init__(self, nodes, values):
        self.nodes, self.values = nodes, values

    def children(self, name):
        return list(self.nodes)

    def fetch(self, reads):
        return [self.values.get((name, kw.get("node") or kw.get("fault_id"))) for
                _kind, name, kw in reads]


def stats(total, allocated, failed=None):
    return json.dumps({"host": {"memory_total": total},
                       "vm": {"memory_allocated": allocated, "failed_domains": failed or {}}})


def test_memory_overprovisioned_when_the_vms_would_not_fit_without_the_largest_node():
    def judged(allocs, states=("run", "run", "run")):
        nodes = ["hv1", "hv2", "hv3"]
        values = {}
        for n, total, alloc, st in zip(nodes, (8192, 8192, 16384), allocs, states, strict=True):
            values[("node.daemon_state", n)] = st
            values[("node.stats", n)] = stats(total, alloc)
        return clusterfaults.judge(Keys(nodes, values))

    assert judged((4000, 4000, 8000))["faults"] == {}            # 16,000 < 16,384
    found = judged((4000, 4000, 8400))["faults"]                 # 16,400 >= 16,384
    assert found["MEMORY_OVERPROVISIONED"][1] == 50
    assert "16400 MiB" in found["MEMORY_OVERPROVISIONED"][0]
    # a dead node's last report does not count, nor its memory
    assert judged((4000, 4000, 8400), ("run", "run", "dead"))["faults"] == {}
    assert judged((0, 0, 0))["prefixes"] == ["VM_FAILED_", "MEMORY_OVERPROVISIONED"]


def test_a_failed_vm_is_a_fault_unless_its_crash_fault_stands_for_it():
    nodes = ["hv1", "hv2"]
    values = {("node.daemon_state", "hv1"): "run", ("node.daemon_state", "hv2"): "run",
              ("node.stats", "hv1"): stats(8192, 0, {"u1": ["web1", "start failed: no disk"]}),
              ("node.stats", "hv2"): stats(8192, 0, {"u2": ["db1", "crashed 5 times"]}),
              ("fault", "vm-crash-u2"): '{"id": "vm-crash-u2"}'}
    found = clusterfaults.judge(Keys(nodes, values))["faults"]
    assert found == {"VM_FAILED_web1": ("VM web1 is in state fail on hv1: start failed: no "
                                        "disk", 10)}


class FaultLog:
    def __init__(self, existing=()):
        self.faults = {f: ("old", 5) for f in existing}

    def report(self, store, fid, message, delta, sticky=False):
        self.faults[fid] = (message, delta)

    def clear(self, store, fid):
        self.faults.pop(fid, None)

    def list_faults(self, store):
        return [{"id": f} for f in self.faults]


class Plugins:
    def __init__(self):
        self.answers = {}

    def call_each(self, hook, obj="", failures=None, **kw):
        out = []
        for name, answer in self.answers.items():
            if isinstance(answer, Exception):
                failures.append((name, answer))
            else:
                out.append((name, answer))
        return out


def test_the_primary_syncs_each_plugins_cluster_faults(monkeypatch):
    log = FaultLog(existing=["VM_FAILED_gone", "DEAD_NODE_hv9", "NODE_PLUGIN_LOAD_hv1"])
    monkeypatch.setattr(agent_mod, "faults", log)
    states = {"hv1": "run", "hv2": "dead"}
    store = SimpleNamespace(children=lambda key: list(states),
                            fetch=lambda reads: [states[kw["node"]] for _k, _n, kw in reads])
    plugins = Plugins()
    daemon = SimpleNamespace(node="hv1", store=store, plugins=plugins,
                             stopping=threading.Event(),
                             config=NodeConfig(node="hv1", cluster="c", zookeeper_hosts=["x"]))
    health = agent_mod.HealthAgent(daemon, config.load(daemon.config))
    health.become_primary()
    plugins.answers["vm_kvm"] = {"prefixes": ["VM_FAILED_", "MEMORY_OVERPROVISIONED"],
                                 "faults": {"VM_FAILED_web1": ("web1 failed", 10),
                                            "ELSEWHERE": ("not its prefix", 10)}}
    health.sync_cluster_faults(maintenance=False)
    assert log.faults == {"VM_FAILED_web1": ("web1 failed", 10),
                          "DEAD_NODE_hv2": ("Node hv2 is dead", 50),
                          "NODE_PLUGIN_LOAD_hv1": ("old", 5)}     # not a cluster fault
    plugins.answers["vm_kvm"] = RuntimeError("plugin bug")      # its faults stay as they are
    states["hv2"] = "run"
    health.sync_cluster_faults(maintenance=False)
    assert set(log.faults) == {"VM_FAILED_web1", "NODE_PLUGIN_LOAD_hv1"}
    plugins.answers["vm_kvm"] = {"prefixes": ["VM_FAILED_"], "faults": {}}
    states["hv2"] = "fenced"                                     # new, but in maintenance
    health.sync_cluster_faults(maintenance=True)
    assert set(log.faults) == {"NODE_PLUGIN_LOAD_hv1"}


def test_network_checks_read_bgp_peers_and_the_primarys_services():
    from pvc_plugins.net_vxlan import health

    evpn = {"routerId": "10.0.0.1", "peers": {"10.0.0.2": {"state": "Established"},
                                              "10.0.0.3": {"state": "Active"}}}
    assert health._peers(evpn) == {"10.0.0.2": "Established", "10.0.0.3": "Active"}
    assert health._peers({"l2VpnEvpn": evpn}) == health._peers(evpn)
    assert health._peers([]) == {}

    class Server:
        def __init__(self, alive):
            self.alive = alive

        def running(self):
            return self.alive

    svc = SimpleNamespace(primary=False, problems={}, dnsmasq={})
    check = health.DnsmasqCheck(lambda: svc)
    assert check.run(None).message == "not the primary"
    svc.primary, svc.dnsmasq = True, {100: Server(True), 200: Server(False)}
    result = check.run(None)
    assert (result.delta, result.fault) == (10, "net-dnsmasq-200")
    assert result.message == "dnsmasq of network 200 is not running"
    svc.problems = {300: "bridge vmbr300 missing"}
    result = check.run(None)
    assert result.delta == 20 and result.fault is None
    svc.dnsmasq, svc.problems = {100: Server(True)}, {}
    assert check.run(None).delta == 0


def test_the_libvirt_check_flags_a_domain_that_zookeeper_places_elsewhere_for_long():
    from pvc_plugins.vm_kvm.health import LibvirtCheck

    agent = SimpleNamespace(node="hv1", domains={"u1": SimpleNamespace(name="web1"),
                                                 "u2": SimpleNamespace(name="db1")},
                            assigned={"u1": "hv1", "u2": "hv2"},
                            health=SimpleNamespace(down_since=None, restarts=0, last_error=""),
                            cfg=SimpleNamespace(migrate_timeout=0.0))
    check = LibvirtCheck(lambda: agent)
    first = check.run(None)
    assert first.delta == 0 and "consistent" in first.message        # maybe migrating
    check.strays["u2"] -= 61                                          # ... for too long
    late = check.run(None)
    assert late.delta == 10 and "db1" in late.message
    agent.assigned["u2"] = "hv1"
    assert check.run(None).delta == 0 and not check.strays


def test_the_agent_keeps_its_failed_vms_as_their_records_say():
    from pvc_plugins.vm_kvm import keys
    from pvc_plugins.vm_kvm.agent import Agent
    from pvc_plugins.vm_kvm.records import Record

    def rec(state, observed):
        return Record(uuid="u1", name="web1", xml="", state=state, state_version=3, node="hv1",
                      last_node="", meta={}, tags=[], request={}, observed=observed)

    agent = SimpleNamespace(node="hv1", failed={})
    failed = {"node": "hv1", "state": keys.FAILED, "fail_version": 3, "failed_reason": "no disk"}
    Agent._note_failed(agent, rec(keys.START, failed))
    assert agent.failed == {"u1": ("web1", "no disk")}
    Agent._note_failed(agent, rec(keys.START, {**failed, "fail_version": 2}))  # asked again
    assert agent.failed == {}
