"""net_bridged's agent: the reconcile rules against a fake store, fake plugins and a fake
IPRoute (the real devices, ZooKeeper and both plugins: tests/integration/
test_net_devices.py)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from pvc_kernel.sdk import ChildrenChanged, ConflictError, DataChanged, TimerFired, schema
from pvc_plugins.net_bridged import agent as agent_mod
from pvc_plugins.net_bridged import devices, keys
from pvc_plugins.net_bridged.config import NetConfig
from tests.support.fake_netlink import FakeIPRoute

for _key in keys.KEYS:
    schema.register(_key)


class Txn:
    def __init__(self, store: FakeStore) -> None:
        self.store, self.ops = store, []

    def check(self, path: str, version: int) -> None:
        self.ops.append(("check", path, None))

    def create(self, path: str, data: bytes) -> None:
        self.ops.append(("create", path, data))

    def set_data(self, path: str, data: bytes) -> None:
        self.ops.append(("set", path, data))


class FakeStore:
    """Paths to text, as the Store reads and writes them by key name."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.writes: list[str] = []

    def put(self, name: str, value: Any, **kw: Any) -> None:
        self.data[schema.path(name, **kw)] = value if isinstance(value, str) else json.dumps(value)

    def children(self, name: str, **kw: Any) -> list[str]:
        p = schema.path(name, **kw) + "/"
        return sorted({k[len(p):].split("/")[0] for k in self.data if k.startswith(p)})

    def exists(self, name: str, **kw: Any) -> bool:
        p = schema.path(name, **kw)
        return any(k == p or k.startswith(p + "/") for k in self.data)

    def get_json(self, name: str, default: Any = None, **kw: Any) -> Any:
        text = self.data.get(schema.path(name, **kw))
        try:
            return json.loads(text) if text else default
        except ValueError:
            return default

    def transaction(self) -> Txn:
        return Txn(self)

    def commit(self, txn: Txn) -> None:
        for op, path, _data in txn.ops:
            if op == "check" and not any(k == path or k.startswith(path + "/")
                                         for k in self.data):
                raise ConflictError("NoNodeError")
        for op, path, data in txn.ops:
            if op in ("create", "set"):
                self.data[path] = data.decode()
                if data:
                    self.writes.append(path)


class FakePlugins:
    """Two network plugins: ``managed`` (port vxlan<vni>, max 1450) and ``bridged`` (port
    eth1.<vni>, max 9000), each building its port in the fake IPRoute."""

    def __init__(self, ipr: FakeIPRoute) -> None:
        self.ipr = ipr
        self.removed: list[tuple[int, str]] = []
        self.fail: dict[int, str] = {}

    def call_each(self, hook: str, **kw: Any) -> list[tuple[str, Any]]:
        assert hook == "pvc_network_types"
        return [("net_vxlan", {"managed": "..."}), ("net_bridged", {"bridged": "..."})]

    def call_first(self, hook: str, obj: str = "", **kw: Any) -> Any:
        network = kw["network"]
        vni, nettype = network["vni"], network.get("nettype")
        if hook == "pvc_network_port_remove":
            if nettype not in ("managed", "bridged"):
                return None
            self.removed.append((vni, nettype))
            return nettype == "managed"
        if nettype not in ("managed", "bridged"):
            return None
        if vni in self.fail:
            return {"error": self.fail[vni]}
        name, most = (f"vxlan{vni}", 1450) if nettype == "managed" else (f"eth1.{vni}", 9000)
        if self.ipr.by_name(name) is None:
            self.ipr.add_link(name, kind="vxlan" if nettype == "managed" else "vlan")
        return {"port": name, "max_mtu": most}


@pytest.fixture
def env(monkeypatch):
    ipr = FakeIPRoute()
    store = FakeStore()

    @contextmanager
    def netlink(given=None):
        yield ipr

    monkeypatch.setattr(devices, "netlink", netlink)
    plugins = FakePlugins(ipr)
    bus = SimpleNamespace(watched=[], timers=[])
    bus.watch_children = lambda key, obj, **a: bus.watched.append((key, obj, a))
    bus.watch_data = lambda key, obj, **a: bus.watched.append((key, obj, a))
    bus.every = lambda seconds, name, obj=None: bus.timers.append((seconds, name, obj))
    daemon = SimpleNamespace(node="hv1", store=store, plugins=plugins, bus=bus)
    agent = agent_mod.Agent(daemon, NetConfig(bridge_device="eth1"))
    return SimpleNamespace(ipr=ipr, store=store, plugins=plugins, agent=agent, bus=bus)


def net(env, vni: int, nettype: str, mtu: int | None = None) -> None:
    env.store.put("network", {"vni": vni, "description": f"n{vni}", "nettype": nettype,
                              "mtu": mtu}, vni=vni)


def reports(env) -> dict[int, dict[str, Any]]:
    return {int(v): env.store.get_json("network.node", vni=v, node="hv1")
            for v in env.store.children("networks")}


def test_every_network_gets_its_bridge_with_the_clamped_mtu(env):
    net(env, 100, "managed")              # no MTU: the port's maximum
    net(env, 101, "managed", 9000)        # more than the maximum: clamped
    net(env, 200, "bridged", 1400)
    env.agent.reconcile()
    assert reports(env) == {
        100: {"bridge": "vmbr100", "port": "vxlan100", "mtu": 1450, "state": "up",
              "error": None},
        101: {"bridge": "vmbr101", "port": "vxlan101", "mtu": 1450, "state": "up",
              "error": None},
        200: {"bridge": "vmbr200", "port": "eth1.200", "mtu": 1400, "state": "up",
              "error": None}}
    for bridge, port, mtu in (("vmbr100", "vxlan100", 1450), ("vmbr200", "eth1.200", 1400)):
        br, p = env.ipr.by_name(bridge), env.ipr.by_name(port)
        assert (br["mtu"], br["flags"] & 1, br["ifalias"]) == (mtu, 1, "pvc")
        assert (p["mtu"], p["master"], p["flags"] & 1) == (mtu, br["index"], 1)
    # The second pass changes nothing and writes nothing.
    env.ipr.clear()
    writes = len(env.store.writes)
    env.agent.reconcile()
    assert env.ipr.changes == [] and len(env.store.writes) == writes


def test_a_broken_network_is_reported_and_never_stops_the_others(env):
    net(env, 100, "managed")
    net(env, 150, "evpn")
    net(env, 160, "managed")
    net(env, 170, "bridged")
    net(env, 200, "bridged")
    env.plugins.fail[160] = "cluster_device eth0 does not exist"
    env.ipr.add_link("vmbr170", kind="veth")             # the name is taken by a non-bridge
    env.agent.reconcile()
    r = reports(env)
    assert r[150] == {"bridge": "vmbr150", "port": None, "mtu": None, "state": "error",
                      "error": "no plugin builds networks of type 'evpn' on this node"}
    assert r[160]["error"] == "cluster_device eth0 does not exist"
    assert r[170]["state"] == "error" and "not a bridge" in r[170]["error"]
    assert r[100]["state"] == r[200]["state"] == "up"
    assert env.ipr.by_name("vmbr150") is None and env.ipr.by_name("vmbr160") is None
    # Fixed: the next pass reports it up.
    del env.plugins.fail[160]
    env.agent.reconcile()
    assert reports(env)[160]["state"] == "up"


def test_bridges_of_removed_networks_go_with_their_ports_and_only_pvcs(env):
    net(env, 100, "managed")
    env.agent.reconcile()
    devices.ensure_bridge(env.ipr, "vmbr55", 1500)      # PVC's, network gone
    env.ipr.add_link("vmbr66", kind="bridge")           # an administrator's
    env.store.put("network", "", vni=77)                # being written: keep its bridge
    devices.ensure_bridge(env.ipr, "vmbr77", 1500)
    env.agent.reconcile()
    assert env.ipr.by_name("vmbr55") is None
    assert env.plugins.removed == [(55, "bridged"), (55, "managed")]
    assert all(env.ipr.by_name(n) is not None for n in ("vmbr66", "vmbr77", "vmbr100"))
    env.store.data = {k: v for k, v in env.store.data.items() if "/networks/100" not in k}
    env.agent.reconcile()
    assert env.ipr.by_name("vmbr100") is None
    assert (100, "managed") in env.plugins.removed


def test_a_report_never_brings_back_a_removed_network(env):
    env.agent.report(100, {"state": "up"})
    assert env.store.data == {}
    net(env, 100, "managed")
    env.agent.report(100, {"state": "up"})
    assert env.store.get_json("network.node", vni=100, node="hv1") == {"state": "up"}


def test_events_watch_networks_and_nodes_and_fold_into_one_reconcile(env, monkeypatch):
    runs = []
    monkeypatch.setattr(env.agent, "reconcile", lambda: runs.append(1))
    env.agent.start()
    try:
        assert env.agent.wait(1, 5)
        assert ("networks", "net:networks", {}) in env.bus.watched
        assert ("nodes", "net:nodes", {}) in env.bus.watched
        assert env.bus.timers == [(60.0, agent_mod.TIMER, "net:reconcile")]
        env.agent.on_event(ChildrenChanged(obj="net:networks", key="networks",
                                           children=("100", "200")))
        env.agent.on_event(ChildrenChanged(obj="net:networks", key="networks",
                                           children=("100",)))
        env.agent.on_event(ChildrenChanged(obj="net:nodes", key="nodes", children=("hv2",)))
        env.agent.on_event(DataChanged(obj="net:node:hv2", key="node.static"))
        env.agent.on_event(TimerFired(obj="net:reconcile", name=agent_mod.TIMER))
        assert env.agent.wait(2, 5)
        assert [w for w in env.bus.watched if w[0] != "networks" and w[0] != "nodes"] == [
            ("network", "net:network:100", {"vni": "100"}),
            ("network", "net:network:200", {"vni": "200"}),
            ("node.static", "net:node:hv2", {"node": "hv2"})]
    finally:
        env.agent.stop()
    assert not env.agent.thread.is_alive()
    assert len(runs) <= 6
