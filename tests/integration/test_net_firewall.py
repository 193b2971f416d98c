"""The managed networks' firewall with the real nft in a "router" network namespace.

Topology (made here, removed at the end): a router namespace with bridges ``vmbr<A>`` and
``vmbr<B>`` holding the gateways of two managed networks and forwarding between them, and
one "VM" namespace per network (a veth into the bridge, the default route via the gateway).
Listeners are sockets made inside the namespaces (no processes). The firewall is applied
with ``firewall.apply`` on a thread inside the router namespace, as the primary would.

What is proved: without the table the VMs reach each other (so the table is what blocks);
with it VM A cannot reach VM B (ping, TCP) nor B A, a VM pings its gateway and reaches its
DNS port but not TCP 22 of the router; an ``in`` ACL on B for A's network lets A reach B
(but not B reach A); an unchanged reload is a no-op (counters kept), a forced one keeps an
established connection; removing the ACL blocks A again; ``remove`` deletes the table.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pvc_lab import netns
from pvc_plugins.net_vxlan import firewall

pytestmark = pytest.mark.integration
PING = "/usr/bin/ping"
DNS, SSH, APP = 53, 22, 8080


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    if not os.path.exists(PING):
        return f"{PING} is missing"
    return None


def ip(ns: str, *args: str) -> None:
    netns.ip("-n", ns, *args)


def pings(ns: str, target: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, PING, "-n", "-c", "1", "-W", "1", target],
                          capture_output=True, timeout=10).returncode == 0


def _connect(address: str, port: int) -> socket.socket | None:
    try:
        return socket.create_connection((address, port), timeout=1)
    except OSError:
        return None


def connects(ns: str, address: str, port: int) -> bool:
    sock = netns.call_in(ns, _connect, address, port)
    if sock is None:
        return False
    sock.close()
    return True


class Echo:
    """Listening TCP sockets made inside a namespace; each connection echoes what it gets."""

    def __init__(self, ns: str, address: str, ports: list[int]) -> None:
        self.socks = [netns.call_in(ns, self._listen, address, p) for p in ports]
        self.stop = threading.Event()
        for s in self.socks:
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    @staticmethod
    def _listen(address: str, port: int) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(8)
        s.settimeout(0.2)
        return s

    def _serve(self, s: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = s.accept()
            except OSError:
                continue
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                while data := conn.recv(100):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        for s in self.socks:
            s.close()


@pytest.fixture
def lab() -> Iterator[dict[str, Any]]:
    problem = _missing()
    if problem:
        pytest.skip(problem)
    tag = uuid.uuid4().hex[:6]
    third = random.randrange(0, 254, 2)           # A: 10.233.<n>.0/24, B: 10.233.<n+1>.0/24
    vni_a = random.randint(1000, 9000)
    vni_b = vni_a + 1
    router, vm_a, vm_b = (f"pvcac-{tag}-{n}" for n in ("r", "a", "b"))
    made: list[str] = []
    echoes: list[Echo] = []
    nets = {}
    try:
        for ns in (router, vm_a, vm_b):
            netns.add(ns)
            made.append(ns)
        netns.ip("netns", "exec", router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for vni, vm, n in ((vni_a, vm_a, third), (vni_b, vm_b, third + 1)):
            gateway, address = f"10.233.{n}.1", f"10.233.{n}.10"
            netns.add_bridge(router, firewall.bridge(vni), gateway, 24)
            ip(router, "link", "add", f"p{vni}", "type", "veth", "peer", "name", "eth0",
               "netns", vm)
            ip(router, "link", "set", f"p{vni}", "master", firewall.bridge(vni), "up")
            ip(vm, "addr", "add", f"{address}/24", "dev", "eth0")
            ip(vm, "link", "set", "eth0", "up")
            ip(vm, "route", "add", "default", "via", gateway)
            nets[vni] = {"vni": vni, "nettype": "managed", "ip4_network": f"10.233.{n}.0/24",
                         "ip4_gateway": gateway, "ip6_network": None, "address": address,
                         "vm": vm}
        a, b = nets[vni_a], nets[vni_b]
        echoes.append(Echo(router, "0.0.0.0", [DNS, SSH]))
        echoes.append(Echo(vm_b, b["address"], [APP]))
        echoes.append(Echo(vm_a, a["address"], [APP]))
        yield {"router": router, "a": a, "b": b, "nets": [a, b]}
    finally:
        for echo in echoes:
            echo.close()
        for ns in made:
            netns.delete(ns)


def _apply(lab: dict[str, Any], acls: dict, force: bool = False) -> firewall.Applied:
    return netns.call_in(lab["router"], firewall.apply, lab["nets"], acls, force)


def _counter(router: str, chain: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", router, "nft", "-j", "list", "chain", "inet",
                          "pvc", chain], capture_output=True, text=True, check=True).stdout
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if rule and len(rule["expr"]) == 1 and "counter" in rule["expr"][0]:
            return rule["expr"][0]["counter"]["packets"]
    raise AssertionError(f"no counter rule in {chain}")


def _tables(router: str) -> str:
    return subprocess.run(["ip", "netns", "exec", router, "nft", "list", "tables"],
                          capture_output=True, text=True, check=True).stdout


def test_acls_govern_routed_traffic_and_the_router_serves_only_its_ports(lab):
    a, b, router = lab["a"], lab["b"], lab["router"]
    gw_a = a["ip4_gateway"]
    # no firewall yet: routing works, so whatever blocks later is the table
    assert pings(a["vm"], b["address"]) and connects(a["vm"], b["address"], APP)
    assert connects(a["vm"], gw_a, SSH)

    assert _apply(lab, {}).changed
    assert "table inet pvc" in _tables(router)
    assert not pings(a["vm"], b["address"]) and not connects(a["vm"], b["address"], APP)
    assert not pings(b["vm"], a["address"])
    assert pings(a["vm"], gw_a) and pings(b["vm"], b["ip4_gateway"])
    assert connects(a["vm"], gw_a, DNS)
    assert not connects(a["vm"], gw_a, SSH)
    assert not connects(a["vm"], b["ip4_gateway"], SSH)     # any router address

    # an ACL into B for A's network: A reaches B, B still cannot open anything to A
    acls = {b["vni"]: {"in": [{"description": "from-a",
                               "rule": f"ip saddr {a['ip4_network']} accept"}], "out": []}}
    assert _apply(lab, acls).changed
    assert pings(a["vm"], b["address"])
    assert not pings(b["vm"], a["address"])
    flow = netns.call_in(a["vm"], _connect, b["address"], APP)
    assert flow is not None
    try:
        flow.sendall(b"one")
        assert flow.recv(10) == b"one"
        counted = _counter(router, firewall.chain(b["vni"], "in"))
        assert counted > 0
        # an unchanged reload is a no-op: the counters stay
        assert not _apply(lab, acls).changed
        assert _counter(router, firewall.chain(b["vni"], "in")) >= counted
        # a forced reload swaps the table in one transaction: the connection goes on
        assert _apply(lab, acls, force=True).changed
        flow.sendall(b"two")
        assert flow.recv(10) == b"two"
    finally:
        flow.close()

    # the ACL removed: A is blocked again
    assert _apply(lab, {}).changed
    assert not pings(a["vm"], b["address"]) and not connects(a["vm"], b["address"], APP)

    netns.call_in(router, firewall.remove)
    assert "inet pvc" not in _tables(router)
    assert pings(a["vm"], b["address"])
    netns.call_in(router, firewall.remove)                 # absent: no error


def test_a_rule_this_node_refuses_is_left_out_and_the_rest_applies(lab):
    a, b = lab["a"], lab["b"]
    acls = {b["vni"]: {"in": [{"description": "nat", "rule": "masquerade"},
                              {"description": "from-a",
                               "rule": f"ip saddr {a['ip4_network']} accept"}]}}
    applied = _apply(lab, acls)
    assert applied.changed
    assert [(s[0], s[1], s[2]) for s in applied.skipped] == [(b["vni"], "in", "nat")]
    assert "Operation not supported" in applied.skipped[0][3]
    assert pings(a["vm"], b["address"])
    netns.call_in(lab["router"], firewall.remove)
