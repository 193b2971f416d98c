"""The primary's services of a managed network on real devices: node namespaces running the
real net_bridged and net_vxlan plugins against a real ZooKeeper, real dnsmasq, and "VMs"
(namespaces with a veth in ``vmbr<vni>``) that ask for addresses with busybox udhcpc.

What is checked: a secondary serves nothing; ``pvc_become_primary`` raises the gateways
(IPv4 and IPv6), then dnsmasq; a VM gets an address from the range, a VM with a reservation
(added through the API) the reserved address and host name; both leases reach ZooKeeper and
``GET /network/<vni>/lease``; the VMs ping the gateway, get SLAAC addresses from the router
advertisements and resolve names in the network's domain; a dnsmasq killed with SIGKILL is
restarted, a fault raised, the leases kept; a removed reservation leaves dnsmasq; a released
lease leaves ZooKeeper; ``pvc_become_secondary`` drops the gateways and stops dnsmasq; a
handover back is announced (a VM's stale neighbour entries name the bridge's MAC before the
VM sent anything). A planned handover between two nodes moves gateway, DHCP and leases, with
the VM on the other node's bridge. A secondary ends what a crashed primary left. dnsmasq
accepts the command line of every kind of network. The time from the handover to the
gateway answering a VM's ping is printed (the issue's goal: ≤ 2 s).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from pvc_api.app import create_app
from pvc_kernel import faults
from pvc_kernel.config import ApiConfig, NodeConfig
from pvc_kernel.sdk import hookimpl
from pvc_kernel.state import Store
from pvc_lab import netns
from pvc_plugins.net_bridged import model
from pvc_plugins.net_bridged.plugin import NetBridgedPlugin
from pvc_plugins.net_vxlan.plugin import NetVxlanPlugin
from tests.support.daemons import wait_for
from tests.support.netnode import Daemon, Node, addresses, ip, mac, neighbour, pings

pytestmark = pytest.mark.integration
KEY = "test-net-dhcp-key"
V1 = "/api/v1"
VNI = 100
SERVICE = "169.254.169.254/32"     # a plugin's service address on the gateway (metadata)
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew) ip addr flush dev "$interface" scope global
               ip addr add "$ip/${mask:-24}" dev "$interface" ;;
  deconfig) ip addr flush dev "$interface" scope global ;;
esac
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "dnsmasq", "busybox"):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    return None


class Vm:
    """A "VM": namespace ``ns`` whose eth0 (MAC ``mac``) is a veth peer of ``port`` in the
    node's ``vmbr<vni>``."""

    def __init__(self, node_ns: str, ns: str, port: str, mac_address: str, script: str) -> None:
        self.ns, self.mac, self.script = ns, mac_address, script
        netns.add(ns)
        ip(node_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip(node_ns, "link", "set", port, "master", f"vmbr{VNI}", "up")
        ip(ns, "link", "set", "eth0", "address", mac_address)
        ip(ns, "link", "set", "eth0", "up")

    def release(self, hostname: str) -> None:
        """A lease taken by a udhcpc that stays, then given back (udhcpc's -R on SIGTERM)."""
        ip(self.ns, "-4", "addr", "flush", "dev", "eth0")
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, "busybox", "udhcpc", "-i",
                                 "eth0", "-f", "-R", "-t", "5", "-T", "1", "-s", self.script,
                                 "-x", f"hostname:{hostname}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: [a for a in addresses(self.ns, "eth0") if ":" not in a], 10, 0.1,
                     "udhcpc's lease")
        finally:
            proc.terminate()
            proc.wait(10)

    def dhcp(self, hostname: str, tries: int = 5) -> str | None:
        """One DHCP exchange with busybox udhcpc; the address it got, if any."""
        proc = subprocess.run(["ip", "netns", "exec", self.ns, "busybox", "udhcpc", "-i",
                               "eth0", "-n", "-q", "-t", str(tries), "-T", "1", "-s",
                               self.script,
                               "-x", f"hostname:{hostname}"],
                              capture_output=True, text=True, timeout=30)
        got = [a.split("/")[0] for a in addresses(self.ns, "eth0") if ":" not in a]
        return got[0] if proc.returncode == 0 and got else None


class ServiceAddress:
    """A plugin that serves something on every managed network's gateway (as the
    provisioner's metadata service does), on the node that is primary."""

    @hookimpl
    def pvc_network_gateway_addresses(self, network: dict) -> list[str]:
        return [SERVICE] if network.get("vni") == VNI else []


def _node(name: str, ns: str, zk_hosts: str, run: str, service: bool = False) -> Node:
    store = Store(zk_hosts, timeout=5)
    store.start()
    config = NodeConfig(node=name, cluster="dhcptest", zookeeper_hosts=[zk_hosts],
                        api=ApiConfig(keys=[KEY]), plugin_sections={
                            "net_bridged": {"reconcile_interval": 5},
                            "net_vxlan": {"cluster_device": "under0", "run_dir": run,
                                          "retry_interval": 0.5}})
    node = Node(name, ns, store)
    node.host.register(NetBridgedPlugin, "net_bridged")
    node.host.register(NetVxlanPlugin, "net_vxlan")
    if service:
        node.host.register(ServiceAddress(), "service")
    assert node.host.config_problems(config) == []
    node.daemon = Daemon(node, config)
    return node


@pytest.fixture
def site(zk_hosts, tmp_path) -> Iterator[dict[str, Any]]:
    """Two node namespaces hv1 and hv2 joined by an underlay veth (10.235.255.0/24), each
    with its own ZooKeeper session and plugins (started by the tests), the API in process on
    hv1's plugins, and a udhcpc script for the "VMs"."""
    problem = _missing()
    if problem:
        pytest.skip(problem)
    tag = uuid.uuid4().hex[:6]
    sub = random.randint(1, 250)          # the managed network: 10.235.<sub>.0/24
    names = {"hv1": f"pvcdh-{tag}-1", "hv2": f"pvcdh-{tag}-2"}
    created: list[str] = []
    run = f"/run/pvcdh-{tag}"             # dnsmasq (user nobody) reads its files there
    nodes: dict[str, Node] = {}
    app = None
    try:
        for ns in names.values():
            netns.add(ns)
            created.append(ns)
        ip(names["hv1"], "link", "add", "under0", "type", "veth", "peer", "name", "under0",
           "netns", names["hv2"])
        for i, (name, ns) in enumerate(names.items(), start=1):
            ip(ns, "addr", "add", f"10.235.255.{i}/24", "dev", "under0")
            ip(ns, "link", "set", "under0", "up")
            nodes[name] = _node(name, ns, zk_hosts, run, service=True)
        store = nodes["hv1"].store
        app = create_app(store, nodes["hv1"].daemon.config, nodes["hv1"].host)
        script = tmp_path / "udhcpc.sh"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        yield {"node": nodes["hv1"], "nodes": nodes, "store": store, "sub": sub, "tag": tag,
               "created": created, "script": str(script), "run": Path(run) / "hv1",
               "api": falcon.testing.TestClient(app.app, headers={"X-Api-Key": KEY})}
    finally:
        if app is not None:
            app.stopping.set()
        for node in nodes.values():
            try:
                node.stop()
            finally:
                node.store.stop()
        for ns in reversed(created):
            netns.delete(ns)
        shutil.rmtree(run, ignore_errors=True)


def dnsmasq_pid(node: Node) -> int | None:
    services = node.plugin("net_vxlan").services
    proc = services.dnsmasq.get(VNI) if services is not None else None
    return proc.pid if proc is not None and proc.running() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_primary_serves_gateways_dhcp_and_leases(site):
    node, store, api, sub = site["node"], site["store"], site["api"], site["sub"]
    net4, net6 = f"10.235.{sub}", f"fd35:{sub:x}::"
    spec = model.build(VNI, "managed", {
        "description": "office", "ip4_network": f"{net4}.0/24", "ip4_gateway": f"{net4}.1",
        "dhcp4": True, "dhcp4_start": f"{net4}.100", "dhcp4_end": f"{net4}.199",
        "ip6_network": f"{net6}/64"}, ["managed"])
    store.set("network", spec, vni=VNI)
    node.start()
    wait_for(lambda: (store.get_json("network.node", vni=VNI, node="hv1") or {}).get("state")
             == "up", 20, 0.1, "vmbr100 built")
    vm1 = Vm(node.ns, f"pvcdh-{site['tag']}-vm1", "pvm1", "52:54:00:35:00:01", site["script"])
    site["created"].append(vm1.ns)
    vm2 = Vm(node.ns, f"pvcdh-{site['tag']}-vm2", "pvm2", "52:54:00:35:00:02", site["script"])
    site["created"].append(vm2.ns)

    # A secondary serves nothing.
    assert addresses(node.ns, "vmbr100") == set() and dnsmasq_pid(node) is None
    assert vm1.dhcp("vm1", tries=2) is None

    # A reservation through the API, then the node becomes primary.
    r = api.simulate_post(f"{V1}/network/office/lease", params={
        "macaddress": vm1.mac, "ipaddress": f"{net4}.50", "hostname": "web1"})
    assert r.status_code == 200, r.text
    assert node.host.call_each("pvc_become_primary", daemon=node.daemon)
    assert addresses(node.ns, "vmbr100") == {f"{net4}.1/24", f"{net6}1/64"}
    assert SERVICE in addresses(node.ns, "lo")          # a plugin's service address
    pid = dnsmasq_pid(node)
    assert pid is not None

    assert vm1.dhcp("vm1") == f"{net4}.50"
    got = vm2.dhcp("vm2")
    assert got is not None and 100 <= int(got.rsplit(".", 1)[1]) <= 199
    for vm in (vm1, vm2):
        assert pings(vm.ns, f"{net4}.1")
    # DNS for the network's domain: the reserved and the dynamic host by name.
    for name, address in (("web1", f"{net4}.50"), ("vm2", got)):
        answer = subprocess.run(["ip", "netns", "exec", vm1.ns, "busybox", "nslookup", "-type=a",
                                 f"{name}.office.local", f"{net4}.1"],
                                capture_output=True, text=True, timeout=10).stdout
        assert f"Address: {address}" in answer, answer
    lease = wait_for(lambda: store.get_json("network.lease", vni=VNI, mac=vm2.mac), 10, 0.1,
                     "vm2's lease in ZooKeeper")
    assert (lease["ip4"], lease["hostname"], lease["node"]) == (got, "vm2", "hv1")
    assert lease["expiry"] > time.time() + 172000
    wait_for(lambda: store.exists("network.lease", vni=VNI, mac=vm1.mac), 10, 0.1,
             "vm1's lease")
    listed = api.simulate_get(f"{V1}/network/{VNI}/lease").json
    assert [(x["mac_address"], x["ip4_address"], x["hostname"], x["timestamp"] == "static")
            for x in listed] == [(vm1.mac, f"{net4}.50", "web1", True),
                                 (vm1.mac, f"{net4}.50", "web1", False),
                                 (vm2.mac, got, "vm2", False)]
    # Router advertisements: the VMs made SLAAC addresses in the network's prefix.
    wait_for(lambda: any(a.startswith(net6) for a in addresses(vm2.ns, "eth0")), 20, 0.2,
             "a SLAAC address from our RA")

    # dnsmasq killed: restarted, a fault raised, the leases kept.
    os.kill(pid, signal.SIGKILL)
    new = wait_for(lambda: (p := dnsmasq_pid(node)) and p != pid and p, 20, 0.1,
                   "dnsmasq restarted")
    fault = wait_for(lambda: faults.get(store, "net-dnsmasq-100"), 10, 0.1, "the fault")
    assert "dnsmasq on hv1 ended unexpectedly (killed by signal 9)" in fault["message"]
    assert vm2.dhcp("vm2") == got

    # The reservation removed: dnsmasq lets it go (vm1 now gets an address of the range).
    assert api.simulate_delete(f"{V1}/network/{VNI}/lease/web1").status_code == 200
    wait_for(lambda: not any((site["run"] / "dnsmasq-100.hosts").iterdir()), 10, 0.1,
             "the reservation file gone")
    again = wait_for(lambda: vm1.dhcp("vm1"), 10, 0.5, "vm1's new lease")
    assert 100 <= int(again.rsplit(".", 1)[1]) <= 199 and dnsmasq_pid(node) == new

    # A released lease leaves ZooKeeper (dnsmasq's "del").
    vm1.release("vm1")
    wait_for(lambda: not store.exists("network.lease", vni=VNI, mac=vm1.mac), 10, 0.1,
             "vm1's released lease gone")
    assert store.exists("network.lease", vni=VNI, mac=vm2.mac)

    # Secondary: no gateway, no dnsmasq, no answer.
    assert node.host.call_each("pvc_become_secondary", daemon=node.daemon)
    assert addresses(node.ns, "vmbr100") == set()
    assert not alive(new) and dnsmasq_pid(node) is None
    assert not pings(vm2.ns, f"{net4}.1")

    # A handover back: announced at once (stale entries in the VM follow without a probe),
    # and the time until the gateway answers.
    bridge_mac, bogus = mac(node.ns, "vmbr100"), "02:00:00:00:00:99"
    ip(vm2.ns, "neigh", "replace", f"{net4}.1", "lladdr", bogus, "dev", "eth0", "nud", "stale")
    ip(vm2.ns, "neigh", "replace", f"{net6}1", "lladdr", bogus, "dev", "eth0", "nud", "stale")
    started = time.monotonic()
    node.host.call_each("pvc_become_primary", daemon=node.daemon)
    raised = time.monotonic() - started
    assert neighbour(vm2.ns, f"{net4}.1") == bridge_mac
    assert neighbour(vm2.ns, f"{net6}1") == bridge_mac
    wait_for(lambda: pings(vm2.ns, f"{net4}.1", wait=0.2), 10, 0.01, "the gateway")
    answered = time.monotonic() - started
    print(f"\nhandover: pvc_become_primary returned after {raised * 1000:.0f} ms; the gateway "
          f"answered a VM's ping {answered * 1000:.0f} ms after the call")


def test_a_secondary_drops_what_a_crashed_primary_left(site):
    """A pvcnoded that died while primary left a gateway address, a service address and its
    dnsmasq; the next start of the plugin (as a secondary) removes them (the dnsmasq found
    by its pid file)."""
    node, store, sub = site["node"], site["store"], site["sub"]
    spec = model.build(VNI, "managed", {"description": "office", "ip4_network":
                                        f"10.235.{sub}.0/24", "ip4_gateway":
                                        f"10.235.{sub}.1"}, ["managed"])
    store.set("network", spec, vni=VNI)
    node.start()
    wait_for(lambda: (store.get_json("network.node", vni=VNI, node="hv1") or {}).get("state")
             == "up", 20, 0.1, "vmbr100 built")
    node.stop()
    ip(node.ns, "addr", "add", f"10.235.{sub}.1/24", "dev", "vmbr100")
    ip(node.ns, "addr", "add", SERVICE, "dev", "lo", "label", "lo:pvcsvc")
    pid_file = site["run"] / "dnsmasq-100.pid"
    subprocess.run(["ip", "netns", "exec", node.ns, "dnsmasq", "--conf-file=/dev/null",
                    f"--pid-file={pid_file}", "--bind-interfaces", "--interface=vmbr100",
                    "--except-interface=lo", "--port=0"], check=True, timeout=10)
    pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 10, 0.05,
                       "the leftover's pid file"))
    try:
        assert alive(pid)
        node.start()
        wait_for(lambda: not alive(pid), 10, 0.05, "the leftover dnsmasq gone")
        wait_for(lambda: addresses(node.ns, "vmbr100") == set(), 10, 0.05,
                 "the leftover gateway gone")
        wait_for(lambda: SERVICE not in addresses(node.ns, "lo"), 10, 0.05,
                 "the leftover service address gone")
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)


def test_a_planned_handover_moves_the_services_between_nodes(site):
    """hv1 serves, a VM on hv2's bridge gets its lease across the VXLAN; hv1 becomes
    secondary and hv2 primary, as the election calls them: the VM's gateway entry follows
    to hv2's MAC without a probe, its lease is known to hv2's dnsmasq, and the time without
    a gateway is printed."""
    hv1, hv2 = site["nodes"]["hv1"], site["nodes"]["hv2"]
    store, sub = site["store"], site["sub"]
    net4 = f"10.235.{sub}"
    spec = model.build(VNI, "managed", {
        "description": "office", "ip4_network": f"{net4}.0/24", "ip4_gateway": f"{net4}.1",
        "dhcp4": True, "dhcp4_start": f"{net4}.100", "dhcp4_end": f"{net4}.199"},
        ["managed"])
    store.set("network", spec, vni=VNI)
    for n in (hv1, hv2):
        n.start()
    for n in (hv1, hv2):
        wait_for(lambda n=n: (store.get_json("network.node", vni=VNI, node=n.name) or {})
                 .get("state") == "up", 20, 0.1, f"vmbr100 on {n.name}")
    vm = Vm(hv2.ns, f"pvcdh-{site['tag']}-vm", "pvm1", "52:54:00:35:00:03", site["script"])
    site["created"].append(vm.ns)

    assert hv1.host.call_each("pvc_become_primary", daemon=hv1.daemon)
    got = wait_for(lambda: vm.dhcp("vm"), 20, 0.2, "a lease from hv1 across the VXLAN")
    assert pings(vm.ns, f"{net4}.1")
    assert neighbour(vm.ns, f"{net4}.1") == mac(hv1.ns, "vmbr100")
    wait_for(lambda: (store.get_json("network.lease", vni=VNI, mac=vm.mac) or {})
             .get("node") == "hv1", 10, 0.1, "the lease recorded by hv1")

    started = time.monotonic()
    assert hv1.host.call_each("pvc_become_secondary", daemon=hv1.daemon)
    dropped = time.monotonic() - started
    assert hv2.host.call_each("pvc_become_primary", daemon=hv2.daemon)
    raised = time.monotonic() - started
    assert addresses(hv1.ns, "vmbr100") == set() and dnsmasq_pid(hv1) is None
    assert addresses(hv2.ns, "vmbr100") == {f"{net4}.1/24"}
    assert SERVICE not in addresses(hv1.ns, "lo") and SERVICE in addresses(hv2.ns, "lo")
    assert neighbour(vm.ns, f"{net4}.1") == mac(hv2.ns, "vmbr100")      # the GARP
    wait_for(lambda: pings(vm.ns, f"{net4}.1", wait=0.2), 10, 0.01, "the gateway on hv2")
    answered = time.monotonic() - started
    print(f"\nplanned handover hv1 -> hv2: dropped in {dropped * 1000:.0f} ms, raised "
          f"{raised * 1000:.0f} ms after the start; the gateway answered the VM "
          f"{answered * 1000:.0f} ms after the start")
    # hv2's dnsmasq got the lease from ZooKeeper: it reports it and renews it as it was.
    wait_for(lambda: (store.get_json("network.lease", vni=VNI, mac=vm.mac) or {})
             .get("node") == "hv2", 10, 0.1, "the lease reported by hv2")
    assert vm.dhcp("vm") == got


@pytest.mark.parametrize("fields", [
    {"ip4_network": "10.235.1.0/24", "ip4_gateway": "10.235.1.1", "dhcp4": True,
     "dhcp4_start": "10.235.1.100", "dhcp4_end": "10.235.1.199", "ip6_network": "fd35:1::/64",
     "name_servers": ["10.0.0.53", "fd35::53"], "domain": "a.example"},
    {"ip4_network": "10.235.1.0/24", "ip4_gateway": "10.235.1.1"},
    {"ip6_network": "fd35:1::/48"},
    {"ip6_network": "fd35:1::/112", "ip6_gateway": "fd35:1::ff00"},
])
def test_dnsmasq_accepts_the_command_line_of_every_kind_of_network(fields, tmp_path):
    """The real dnsmasq's syntax check of what dhcp.arguments makes."""
    from pvc_plugins.net_vxlan import dhcp

    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is missing")
    spec = model.build(VNI, "managed", {"description": "office", **fields}, ["managed"])
    args = dhcp.arguments(spec, dhcp.Files(str(tmp_path), VNI), 3600)
    proc = subprocess.run([*args, "--test"], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0 and "syntax check OK" in proc.stderr, proc.stderr
