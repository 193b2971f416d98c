"""Networks on real devices: two "nodes" as network namespaces joined by a veth underlay,
each running the real net_bridged agent (through the plugin's ``pvc_node_start``) with the
real net_vxlan plugin, against a real ZooKeeper.

How a node is simulated: pvcnoded's process is not started in the namespace (ZooKeeper
listens on the host's loopback). Instead each node is a ``PluginHost`` with both plugins,
its own ``Store`` session and its own ``Bus``, and the plugin's ``pvc_node_start`` is called
on a thread that entered the node's namespace: the agent's reconcile thread, which opens
every netlink socket (its own and the plugins' hooks'), lives there for good, while kazoo's
threads stay on the host and reach ZooKeeper over loopback. Traffic flows only between the
namespaces this module makes.

What is checked: managed network 100 (VXLAN with static flooding to the other node's VTEP)
carries a ping between two "VM" veths across the namespaces; the flood lists follow nodes
joining and leaving; a bridged network over a pre-made device named like the 802.1Q device
(``under0.200``, a veth: this kernel has no VLANs) carries a ping; an agent restart sends no
link change and keeps every ifindex; a network of a type nobody builds is reported as an
error without stopping the others; removing the records removes exactly what PVC made.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pvc_kernel.bus import Bus
from pvc_kernel.config import NodeConfig
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store
from pvc_lab import netns
from pvc_plugins.net_bridged.plugin import NetBridgedPlugin
from pvc_plugins.net_vxlan.plugin import NetVxlanPlugin
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration

PING = "/usr/bin/ping"


def _missing() -> str | None:
    import os
    import shutil

    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "bridge"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    if not os.path.exists(PING):
        return f"{PING} is missing (apt-get install iputils-ping)"
    return None


@dataclass
class Node:
    name: str
    ns: str
    address: str                      # underlay (VTEP)
    store: Store
    host: PluginHost = field(default_factory=PluginHost)
    bus: Bus | None = None
    daemon: Any = None

    @property
    def plugin(self) -> NetBridgedPlugin:
        return self.host.plugin("net_bridged")

    @property
    def agent(self) -> Any:
        return self.plugin.agent

    def start(self) -> None:
        """What pvcnoded does for the plugins, on a thread inside the node's namespace."""
        def handle(event: Any) -> None:
            self.host.call_each("pvc_event", obj=event.obj, daemon=self.daemon, event=event)

        self.bus = Bus(handle, workers=4)
        self.bus.store = self.store
        self.daemon.bus = self.bus
        static = netns.call_in(self.ns, self.host.call_each, "pvc_node_static",
                               daemon=self.daemon)
        self.store.set("node.static", {k: v for _n, extra in static for k, v in extra.items()},
                       node=self.name)
        netns.call_in(self.ns, self.host.call_each, "pvc_node_start", daemon=self.daemon)

    def stop(self) -> None:
        self.host.call_each("pvc_node_stop", daemon=self.daemon)
        if self.bus is not None:
            self.bus.stop()
            self.bus = None


class Daemon:
    """The parts of pvcnoded's daemon object the network plugins use."""

    def __init__(self, node: Node, config: NodeConfig) -> None:
        self.node = node.name
        self.store = node.store
        self.plugins = node.host
        self.config = config
        self.bus: Bus | None = None


def ip(ns: str, *args: str) -> str:
    return netns.ip("-n", ns, *args).stdout


def ifindex(ns: str, name: str) -> int | None:
    proc = netns.ip("-n", ns, "-j", "link", "show", name, check=False)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout)[0]["ifindex"]


def link(ns: str, name: str) -> dict[str, Any] | None:
    proc = netns.ip("-n", ns, "-j", "-d", "link", "show", name, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def flood(ns: str, dev: str) -> set[str]:
    out = subprocess.run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", dev],
                         capture_output=True, text=True, check=True).stdout
    return {e["dst"] for e in json.loads(out or "[]")
            if e.get("mac") == "00:00:00:00:00:00" and e.get("dst")}


def pings(ns: str, target: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, PING, "-n", "-c", "1", "-W", "1", target],
                          capture_output=True, timeout=10).returncode == 0


def add_vm(ns: str, bridge: str, name: str, address: str, mtu: int) -> None:
    """A "VM": a veth whose end ``name`` has ``address``, its peer in ``bridge``."""
    port = f"p{name}"
    ip(ns, "link", "add", name, "mtu", str(mtu), "type", "veth", "peer", "name", port,
       "mtu", str(mtu))
    ip(ns, "addr", "add", address, "dev", name)
    ip(ns, "link", "set", port, "master", bridge, "up")
    ip(ns, "link", "set", name, "up")


class LinkMonitor:
    """``ip monitor link`` in a namespace: ``seen`` holds the link events between entering
    and leaving the block. A marker veth made on entry (and deleted on exit) proves that
    the monitor listens before the block runs and has printed everything after it."""

    MARK = "pvctmon0"

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.lines: list[str] = []
        self.seen: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.start = 0

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def _mark(self, after: int, deleted: bool) -> int | None:
        """The index after the first marker line (added or deleted) from ``after`` on."""
        for i in range(after, len(self.lines)):
            line = self.lines[i]
            if f": {self.MARK}@" in line and line.startswith("Deleted") == deleted:
                return i + 1
        return None

    def __enter__(self) -> LinkMonitor:
        self.proc = subprocess.Popen(["ip", "-n", self.ns, "-o", "monitor", "link"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(self._mark_added, 10, 0.1, "ip monitor to listen")
        return self

    def _mark_added(self) -> bool:
        """Add the marker; if the monitor missed it (not listening yet), take it away."""
        after = len(self.lines)
        ip(self.ns, "link", "add", self.MARK, "type", "veth", "peer", "name", self.MARK + "p")
        try:
            self.start = wait_for(lambda: self._mark(after, False), 1, 0.05)
        except AssertionError:
            ip(self.ns, "link", "del", self.MARK)
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        try:
            ip(self.ns, "link", "del", self.MARK)
            end = wait_for(lambda: self._mark(self.start, True), 10, 0.05,
                           "the monitor to see the marker go")
            self.seen = [line for line in self.lines[self.start:end - 1]
                         if self.MARK not in line]
        finally:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def cluster(zk_hosts) -> Iterator[dict[str, Node]]:
    problem = _missing()
    if problem:
        pytest.skip(problem)
    tag = uuid.uuid4().hex[:6]
    net = random.randint(1, 250)
    names = {"hv1": f"pvct-net-{tag}-1", "hv2": f"pvct-net-{tag}-2"}
    nodes: dict[str, Node] = {}
    try:
        for ns in names.values():
            netns.add(ns)
        a, b = names["hv1"], names["hv2"]
        ip(a, "link", "add", "under0", "type", "veth", "peer", "name", "under0", "netns", b)
        # What an administrator would have made: the VLAN of network 200 on under0.
        ip(a, "link", "add", "under0.200", "type", "veth", "peer", "name", "under0.200",
           "netns", b)
        for i, (node, ns) in enumerate(names.items(), start=1):
            address = f"10.249.{net}.{i}"
            ip(ns, "addr", "add", f"{address}/24", "dev", "under0")
            for dev in ("under0", "under0.200"):
                ip(ns, "link", "set", dev, "up")
            store = Store(zk_hosts, timeout=5)
            store.start()
            n = Node(node, ns, address, store)
            n.host.register(NetBridgedPlugin, "net_bridged")
            n.host.register(NetVxlanPlugin, "net_vxlan")
            config = NodeConfig(node=node, cluster="nettest", zookeeper_hosts=[zk_hosts],
                                plugin_sections={
                                    "net_bridged": {"bridge_device": "under0",
                                                    "reconcile_interval": 5},
                                    "net_vxlan": {"cluster_device": "under0"}})
            assert n.host.config_problems(config) == []
            n.daemon = Daemon(n, config)
            nodes[node] = n
        yield nodes
    finally:
        for n in nodes.values():
            try:
                n.stop()
            finally:
                n.store.stop()
        for ns in names.values():
            netns.delete(ns)


def report(store: Store, vni: int, node: str) -> dict[str, Any] | None:
    return store.get_json("network.node", vni=vni, node=node)


def wait_reports(store: Store, vni: int, nodes: list[str], **want: Any) -> None:
    def ok() -> bool:
        for node in nodes:
            r = report(store, vni, node) or {}
            if any(r.get(k) != v for k, v in want.items()):
                return False
        return True
    try:
        wait_for(ok, 20, 0.1, f"network {vni} reports {want}")
    except AssertionError:
        raise AssertionError(f"{[report(store, vni, n) for n in nodes]}") from None


def test_networks_on_real_devices(cluster):
    hv1, hv2 = cluster["hv1"], cluster["hv2"]
    store = hv1.store
    net = hv1.address.rsplit(".", 2)[1]
    store.set("network", {"vni": 100, "description": "overlay", "nettype": "managed",
                          "mtu": None}, vni=100)
    for n in (hv1, hv2):
        n.start()
    assert store.get_json("node.static", node="hv1")["vtep"] == hv1.address

    # Managed network 100: bridge + VXLAN with the other node as its flood list.
    wait_reports(store, 100, ["hv1", "hv2"], state="up", mtu=1450, port="vxlan100",
                 bridge="vmbr100")
    for me, peer in ((hv1, hv2), (hv2, hv1)):
        vx = link(me.ns, "vxlan100")
        data = vx["linkinfo"]["info_data"]
        assert (data["id"], data["port"], data["local"]) == (100, 4789, me.address)
        assert data["learning"] is True
        assert vx["master"] == "vmbr100" and vx["mtu"] == 1450 and vx["ifalias"] == "pvc"
        assert link(me.ns, "vmbr100")["mtu"] == 1450
        assert flood(me.ns, "vxlan100") == {peer.address}
    add_vm(hv1.ns, "vmbr100", "vm1", f"10.251.{net}.1/24", 1450)
    add_vm(hv2.ns, "vmbr100", "vm1", f"10.251.{net}.2/24", 1450)
    wait_for(lambda: pings(hv1.ns, f"10.251.{net}.2"), 20, 0.2, "a ping across network 100")

    # The flood lists follow the nodes: hv3 appears with a VTEP, then goes.
    store.set("node.static", {"vtep": "10.249.0.3"}, node="hv3")
    for n in (hv1, hv2):
        wait_for(lambda n=n: "10.249.0.3" in flood(n.ns, "vxlan100"), 20, 0.1, "hv3's VTEP")
    store.delete("node", node="hv3")
    for n, peer in ((hv1, hv2), (hv2, hv1)):
        wait_for(lambda n=n, peer=peer: flood(n.ns, "vxlan100") == {peer.address}, 20, 0.1,
                 "hv3's VTEP gone")

    # Bridged network 200 on the pre-made "VLAN device" under0.200, and a network of a type
    # no plugin builds, which must not stop the others.
    store.set("network", {"vni": 200, "description": "vlan", "nettype": "bridged",
                          "mtu": 1400}, vni=200)
    store.set("network", {"vni": 300, "description": "odd", "nettype": "evpn", "mtu": None},
              vni=300)
    wait_reports(store, 200, ["hv1", "hv2"], state="up", mtu=1400, port="under0.200")
    wait_reports(store, 300, ["hv1", "hv2"], state="error",
                 error="no plugin builds networks of type 'evpn' on this node")
    assert ifindex(hv1.ns, "vmbr300") is None
    add_vm(hv1.ns, "vmbr200", "vm2", f"10.252.{net}.1/24", 1400)
    add_vm(hv2.ns, "vmbr200", "vm2", f"10.252.{net}.2/24", 1400)
    wait_for(lambda: pings(hv2.ns, f"10.252.{net}.1"), 20, 0.2, "a ping across network 200")
    assert link(hv1.ns, "under0.200").get("ifalias") is None    # used as it is
    assert pings(hv1.ns, f"10.251.{net}.2")

    # No flap: restart hv1's agent; it reconciles and sends no link change at all.
    devices = ("vmbr100", "vxlan100", "vmbr200", "under0.200")
    before = {d: ifindex(hv1.ns, d) for d in devices}
    with LinkMonitor(hv1.ns) as monitor:
        hv1.stop()
        hv1.start()
        assert hv1.agent.wait(1)
        hv1.agent.request()
        assert hv1.agent.wait(2)
    assert monitor.seen == []
    assert {d: ifindex(hv1.ns, d) for d in devices} == before
    assert pings(hv1.ns, f"10.251.{net}.2")

    # Removing the records removes what PVC made, and only that.
    for vni in (100, 200, 300):
        store.delete("network", vni=vni)
    for n in (hv1, hv2):
        wait_for(lambda n=n: all(ifindex(n.ns, d) is None
                                 for d in ("vmbr100", "vxlan100", "vmbr200")),
                 20, 0.1, f"the devices of removed networks gone on {n.name}")
        assert ifindex(n.ns, "under0.200") is not None
        assert link(n.ns, "pvm1").get("master") is None      # a VM's port is let go
    assert store.children("networks") == []
