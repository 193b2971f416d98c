"""Client networks on the whole lab, driven with the `pvc` CLI: real bridges and VXLANs
built by every node's pvcnoded (net_bridged + net_vxlan in evpn mode: FRR on every node,
VXLANs over the lab's ``eth0``), and lab guests with a virtio NIC that ping each other
across nodes and through a live migration (each guest prints busybox ping's reply lines
on its serial console; a missing ``seq`` is a lost ping, 0.2 s apart).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess

import pytest

from pvc_lab.guest import ping_replies
from tests.lab.vmtools import BOOT, console, define, info, ok, pvc, start_booted

pytestmark = pytest.mark.lab

VNI, NET4 = 1001, "10.201.0"
PING_INTERVAL = 0.2


def mac() -> str:
    return "52:54:00:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


def network(lab, vni: int) -> dict:
    return json.loads(ok(lab, "network", "info", str(vni), "-f", "json"))


def up_everywhere(lab, vni: int) -> bool:
    nodes = network(lab, vni).get("nodes") or {}
    return all((nodes.get(n.name) or {}).get("state") == "up" for n in lab.spec.nodes)


@pytest.fixture
def netlab(vmlab):
    """The lab with managed network ``VNI`` up on every node; removed afterwards."""
    lab = vmlab
    ok(lab, "network", "add", str(VNI), "-d", "labnet", "-p", "managed", "-i",
       f"{NET4}.0/24", "-g", f"{NET4}.1", "--dhcp", "--dhcp-start", f"{NET4}.100",
       "--dhcp-end", f"{NET4}.199")
    lab.wait_for(lambda: up_everywhere(lab, VNI), 30, f"network {VNI} up on every node")
    yield lab
    for name in lab.vm_names:          # before the network: it refuses to go while used
        pvc(lab, "vm", "remove", name, "--yes")
    lab.vm_names = []
    pvc(lab, "network", "remove", str(VNI), "--yes", "--force")


def live_macs(lab, node: str, vm: str) -> list[str]:
    """The MACs of the running domain's NICs, from its node's libvirtd (live XML)."""
    import libvirt

    from pvc_lab.libvirt import Libvirtd

    conn = libvirt.open(Libvirtd().uri(lab.spec, lab.spec.node(node)))
    try:
        xml = conn.lookupByName(vm).XMLDesc(0)
    finally:
        conn.close()
    return [m.lower() for m in re.findall(r"<mac address='([0-9a-fA-F:]+)'", xml)]


def evpn_remote(lab, node: str, mac: str) -> str | None:
    """The VTEP ``node``'s zebra installed ``mac`` towards on ``vxlan<VNI>`` (an
    ``extern_learn`` fdb entry, from an EVPN type-2 route), or None."""
    out = lab.exec(node, ["bridge", "-j", "fdb", "show", "dev", f"vxlan{VNI}"],
                   capture_output=True, text=True, check=True).stdout
    for entry in json.loads(out or "[]"):
        if (entry.get("mac") == mac.lower() and entry.get("dst")
                and "extern_learn" in entry.get("flags", [])):
            return entry["dst"]
    return None


def evpn_mac(lab, node: str, mac: str) -> dict:
    """zebra's EVPN MAC entry of ``mac`` on ``node`` (``type`` local or remote)."""
    vty = os.path.join(lab.spec.node_dir(node), "frr", "vty")
    out = lab.exec(node, ["vtysh", "--vty_socket", vty, "-c",
                          f"show evpn mac vni {VNI} mac {mac.lower()} json"],
                   capture_output=True, text=True, check=True).stdout
    return json.loads(out or "{}").get(mac.lower(), {})


def replies_from(lab, vm: str, address: str) -> list[int]:
    return [seq for src, seq in ping_replies(console(lab, vm)) if src == address]


def largest_gap(seqs: list[int]) -> int:
    """The most pings lost in a row (ping restarts at seq 0 count as no gap)."""
    return max((b - a - 1 for a, b in zip(seqs, seqs[1:], strict=False) if b > a), default=0)


def test_guests_on_a_managed_network_ping_across_nodes_and_through_a_live_migration(netlab):
    """Two guests on different nodes get their addresses from the primary's dnsmasq (one
    reserved, one from the range), ping each other and the gateway, and keep pinging
    through a live migration; their NICs can be added and removed live."""
    lab = netlab
    a, b, gw = f"{NET4}.11", f"{NET4}.12", f"{NET4}.1"
    bridge = f"vmbr{VNI}"
    mac_a, mac_b = mac(), mac()
    ok(lab, "network", "dhcp", "add", str(VNI), a, "netvm1", mac_a)
    ok(lab, "network", "dhcp", "add", str(VNI), b, "netvm2", mac_b)
    for name, node, own_mac, other in (("netvm1", "hv1", mac_a, b), ("netvm2", "hv2", mac_b, a)):
        start_booted(lab, name, node, cmdline=f"dhcp=1 pingtarget={other},{gw}",
                     nics=((bridge, own_mac),))
    lab.wait_for(lambda: len(replies_from(lab, "netvm1", b)) >= 3, BOOT,
                 "netvm1 (hv1) to get replies from netvm2 (hv2) over VXLAN")
    lab.wait_for(lambda: len(replies_from(lab, "netvm2", a)) >= 3, 30,
                 "netvm2 to get replies from netvm1")
    for vm in ("netvm1", "netvm2"):
        lab.wait_for(lambda vm=vm: len(replies_from(lab, vm, gw)) >= 3, 30,
                     f"{vm} to get replies from the gateway")
    def live() -> set[tuple[str, str]]:
        leases = json.loads(ok(lab, "network", "dhcp", "list", str(VNI), "-f", "json"))
        return {(e["mac_address"], e["ip4_address"]) for e in leases
                if e["timestamp"] != "static"}

    assert "network labnet" in ok(lab, "vm", "info", "netvm1")

    mac2 = info(lab, "netvm2")["networks"][0]["mac"]
    lab.wait_for(lambda: evpn_remote(lab, "hv1", mac2) == lab.addresses["hv2"], 30,
                 "hv1's zebra to install netvm2's MAC towards hv2")
    before = len(replies_from(lab, "netvm1", b))
    ok(lab, "vm", "migrate", "netvm2", "--target", "hv3", "--wait")
    assert info(lab, "netvm2")["running_on"] == "hv3"
    lab.wait_for(lambda: len(replies_from(lab, "netvm1", b)) >= before + 10, 30,
                 "replies from netvm2 on hv3")
    seqs = replies_from(lab, "netvm1", b)[before - 1:]
    gap = largest_gap(seqs)
    print(f"\nping gap across the live migration of netvm2 hv2->hv3: {gap} lost "
          f"(~{gap * PING_INTERVAL:.1f} s at {PING_INTERVAL} s)")
    lab.wait_for(lambda: evpn_remote(lab, "hv1", mac2) == lab.addresses["hv3"], 30,
                 "netvm2's MAC route to move to hv3 (MAC mobility)")
    lab.wait_for(lambda: evpn_mac(lab, "hv3", mac2).get("type") == "local", 30,
                 "hv3's EVPN route of netvm2's MAC to be local")

    extra = mac()                       # a NIC plugged in and out of the running guest
    ok(lab, "vm", "network", "add", "netvm1", str(VNI), "--mac", extra, "--live")
    assert extra in live_macs(lab, "hv1", "netvm1")
    assert [n["mac"] for n in info(lab, "netvm1")["networks"]] == [mac_a, extra]
    ok(lab, "vm", "network", "remove", "netvm1", extra, "--live")
    assert extra not in live_macs(lab, "hv1", "netvm1")
    assert [n["mac"] for n in info(lab, "netvm1")["networks"]] == [mac_a]

    lab.wait_for(lambda: {(mac_a, a), (mac_b, b)} <= live(), 30,
                 "both live leases in pvc network dhcp list")
    nic = info(lab, "netvm1")["networks"][0]
    assert (nic["network"], nic["source"], nic["address"]) == ("labnet", bridge, a)


def test_nics_on_missing_or_unbuilt_networks_are_refused(netlab, tmp_path):
    lab = netlab
    out = define(lab, "netbad1", "hv1", nics=(("vmbr1999", mac()),))
    assert out.returncode != 0 and "vmbr1999" in out.stdout + out.stderr
    assert "no network has VNI 1999" in out.stdout + out.stderr

    ok(lab, "network", "add", "1002", "-d", "labbr", "-p", "bridged")   # no bridge_device
    try:
        lab.wait_for(lambda: all((r or {}).get("state") == "error" for r in
                                 (network(lab, 1002).get("nodes") or {}).values())
                     and len(network(lab, 1002).get("nodes") or {}) == len(lab.spec.nodes),
                     30, "network 1002 reported as failed by every node")
        out = define(lab, "netbad2", "hv1", nics=(("vmbr1002", mac()),))
        assert out.returncode != 0
        assert "does not have every network of VM 'netbad2' up" in out.stdout + out.stderr
    finally:
        pvc(lab, "network", "remove", "1002", "--yes")

    assert define(lab, "netvm3", "hv1", nics=((f"vmbr{VNI}", mac()),)).returncode == 0
    out = pvc(lab, "network", "remove", str(VNI), "--yes")
    assert out.returncode != 0 and "used by VM(s) netvm3" in out.stdout + out.stderr
    assert network(lab, VNI)["vni"] == VNI


def test_guests_on_a_bridged_network_talk_over_the_vlan_stand_in(vmlab):
    """VLAN 200 of the lab's switch (a veth named ``eth0.200`` on every node, as an
    administrator's pre-made VLAN device): net_bridged bridges it as it is."""
    lab = vmlab
    ok(lab, "network", "add", "200", "-d", "labvlan", "-p", "bridged")
    try:
        lab.wait_for(lambda: up_everywhere(lab, 200), 30, "network 200 up on every node")
        assert {r["port"] for r in network(lab, 200)["nodes"].values()} == {"eth0.200"}
        a, b = "10.202.0.11", "10.202.0.12"
        for name, node, own, other in (("vlanvm1", "hv1", a, b), ("vlanvm2", "hv4", b, a)):
            start_booted(lab, name, node, cmdline=f"guestip={own}/24 pingtarget={other}",
                         nics=(("vmbr200", mac()),))
        lab.wait_for(lambda: len(replies_from(lab, "vlanvm1", b)) >= 3, BOOT,
                     "vlanvm1 (hv1) to get replies from vlanvm2 (hv4) over VLAN 200")
        lab.wait_for(lambda: len(replies_from(lab, "vlanvm2", a)) >= 3, 30,
                     "vlanvm2 to get replies from vlanvm1")
        router = primary(lab)               # no PVC service on a bridged network
        assert {a for a in addresses_on(lab, router, "vmbr200") if not a.startswith("fe80")} \
            == set()
        assert subprocess.run(["pgrep", "-f", "interface=vmbr200"]).returncode == 1
    finally:
        for name in lab.vm_names:
            pvc(lab, "vm", "remove", name, "--yes")
        lab.vm_names = []
        pvc(lab, "network", "remove", "200", "--yes", "--force")


def ifindexes(lab, node: str, names: list[str]) -> dict[str, int]:
    out = lab.exec(node, ["ip", "-j", "link", "show"], capture_output=True, text=True,
                   check=True).stdout
    return {link["ifname"]: link["ifindex"] for link in json.loads(out)
            if link["ifname"] in names}


def test_restarting_every_pvcnoded_flaps_no_link_and_loses_no_ping(netlab):
    """Three networks (managed 1001 and 1003, bridged 200) and two guests pinging each other
    over 1001 while each node's pvcnoded is stopped (SIGTERM) and started in turn."""
    lab = netlab
    ok(lab, "network", "add", "1003", "-d", "labnet3", "-p", "managed")
    ok(lab, "network", "add", "200", "-d", "labvlan", "-p", "bridged")
    try:
        lab.wait_for(lambda: up_everywhere(lab, 1003) and up_everywhere(lab, 200), 30,
                     "networks 1003 and 200 up on every node")
        a, b = f"{NET4}.21", f"{NET4}.22"
        for name, node, own, other in (("rsvm1", "hv1", a, b), ("rsvm2", "hv3", b, a)):
            start_booted(lab, name, node, cmdline=f"guestip={own}/24 pingtarget={other}",
                         nics=((f"vmbr{VNI}", mac()),))
        lab.wait_for(lambda: len(replies_from(lab, "rsvm1", b)) >= 3, BOOT, "rsvm1 replies")
        links = [f"vmbr{VNI}", f"vxlan{VNI}", "vmbr1003", "vxlan1003", "vmbr200", "eth0.200"]
        before = {n.name: ifindexes(lab, n.name, links) for n in lab.spec.nodes}
        assert all(len(found) == len(links) for found in before.values()), before
        first = len(replies_from(lab, "rsvm1", b))
        for n in lab.spec.nodes:
            lab.stop_service(n.name, "pvcnoded", signal.SIGTERM)
            lab.start(n.name, only="pvcnoded")
        lab.wait_for(lambda: len(replies_from(lab, "rsvm1", b)) >= first + 5, 30,
                     "replies after the restarts")
        assert {n.name: ifindexes(lab, n.name, links) for n in lab.spec.nodes} == before
        seqs = replies_from(lab, "rsvm1", b)[first - 1:]
        assert largest_gap(seqs) == 0, f"pings lost while pvcnoded restarted: {seqs}"
        assert all(up_everywhere(lab, v) for v in (VNI, 1003, 200))
    finally:
        for name in lab.vm_names:
            pvc(lab, "vm", "remove", name, "--yes")
        lab.vm_names = []
        for vni in ("1003", "200"):
            pvc(lab, "network", "remove", vni, "--yes", "--force")


def primary(lab) -> str:
    name = lab.primary()
    assert name, "no primary"
    return name


def chain_packets(lab, node: str, chain: str) -> int:
    """Packets counted by the first rule (``counter``) of a chain of the firewall table."""
    out = lab.exec(node, ["nft", "-j", "list", "chain", "inet", "pvc", chain],
                   capture_output=True, text=True, check=True).stdout
    for item in json.loads(out)["nftables"]:
        for expr in (item.get("rule") or {}).get("expr", []):
            if "counter" in expr:
                return int(expr["counter"]["packets"])
    return 0


def test_dhcp_gateways_and_acls_between_two_managed_networks(vmlab):
    """Networks 1011 and 1012 with DHCP on the primary; guest A (1011) pings guest B (1012)
    through the primary's routing, B pings its gateway. The firewall keeps A out of B until
    an ACL lets A in, and again once the ACL is removed."""
    lab = vmlab
    nets = {1011: "10.211.0", 1012: "10.212.0"}
    for vni, net in nets.items():
        ok(lab, "network", "add", str(vni), "-d", f"acl{vni}", "-p", "managed", "-i",
           f"{net}.0/24", "-g", f"{net}.1", "--dhcp", "--dhcp-start", f"{net}.100",
           "--dhcp-end", f"{net}.199")
    try:
        lab.wait_for(lambda: all(up_everywhere(lab, v) for v in nets), 30, "both networks up")
        mac_a, mac_b = mac(), mac()
        b = f"{nets[1012]}.50"
        ok(lab, "network", "dhcp", "add", "1012", b, "guestb", mac_b)
        start_booted(lab, "aclvm1", "hv1", cmdline=f"dhcp=1 pingtarget={b}",
                     nics=(("vmbr1011", mac_a),))
        start_booted(lab, "aclvm2", "hv2", cmdline=f"dhcp=1 pingtarget={nets[1012]}.1",
                     nics=(("vmbr1012", mac_b),))
        lab.wait_for(lambda: len(replies_from(lab, "aclvm2", f"{nets[1012]}.1")) >= 3, BOOT,
                     "guest B to get its reserved lease and ping its gateway")
        lab.wait_for(lambda: f"DHCP-bound {nets[1011]}." in console(lab, "aclvm1"), 60,
                     "guest A's lease")
        leases = json.loads(ok(lab, "network", "dhcp", "list", "1012", "-f", "json"))
        assert any(entry["mac_address"] == mac_b and entry["ip4_address"] == b
                   for entry in leases), leases
        lab.wait_for(lambda: info(lab, "aclvm2")["networks"][0]["address"] == b, 30,
                     "pvc vm info to show guest B's lease")

        router = primary(lab)
        seen = chain_packets(lab, router, "vxlan1012-in")
        lab.wait_for(lambda: chain_packets(lab, router, "vxlan1012-in") >= seen + 10, 30,
                     "A's pings to reach B's network's firewall chain")
        assert replies_from(lab, "aclvm1", b) == [], "A reached B without an ACL"

        ok(lab, "network", "acl", "add", "1012", "--in", "-d", "from-a", "-r",
           f"ip saddr {nets[1011]}.0/24 accept")
        lab.wait_for(lambda: len(replies_from(lab, "aclvm1", b)) >= 3, 30,
                     "A to reach B through the ACL")

        ok(lab, "network", "acl", "remove", "1012", "from-a", "--yes")
        lab.wait_for(lambda: "from-a" not in lab.exec(
            router, ["nft", "list", "chain", "inet", "pvc", "vxlan1012-in"],
            capture_output=True, text=True).stdout, 30, "the ACL to leave the firewall")
        got = len(replies_from(lab, "aclvm1", b))
        seen = chain_packets(lab, router, "vxlan1012-in")
        lab.wait_for(lambda: chain_packets(lab, router, "vxlan1012-in") >= seen + 10, 30,
                     "more of A's pings at B's chain")
        assert len(replies_from(lab, "aclvm1", b)) <= got + 1, "A still reaches B"
    finally:
        for name in lab.vm_names:
            pvc(lab, "vm", "remove", name, "--yes")
        lab.vm_names = []
        for vni in nets:
            pvc(lab, "network", "remove", str(vni), "--yes", "--force")


def addresses_on(lab, node: str, device: str) -> set[str]:
    proc = lab.exec(node, ["ip", "-j", "addr", "show", "dev", device], capture_output=True,
                    text=True)
    if proc.returncode != 0:
        return set()
    return {a["local"] for link in json.loads(proc.stdout or "[]")
            for a in link.get("addr_info", [])}


def api_on(lab, address: str) -> int | None:
    """The status of a keyed API request to ``address`` from the admin namespace."""
    import http.client

    from pvc_lab import netns
    from pvc_lab.spec import API_PORT

    def ask() -> int | None:
        conn = http.client.HTTPConnection(address, API_PORT, timeout=3)
        try:
            conn.request("GET", "/api/v1/status/primary_node",
                         headers={"X-Api-Key": lab.spec.api_key})
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    return netns.call_in(lab.spec.admin_netns, ask)


def test_gateway_dhcp_and_floating_ip_follow_the_primary(vmlab):
    """A guest on client node hv4 pings its managed network's gateway every 0.2 s through a
    planned handover and a crash of the primary (its whole node killed); the gateway, DHCP
    and the cluster's floating IP come back on the new primary. The gaps are printed."""
    lab = vmlab
    net, vni, bridge = "10.221.0", 1021, "vmbr1021"
    gw, floating = f"{net}.1", lab.spec.floating_address
    ok(lab, "network", "add", str(vni), "-d", "hanet", "-p", "managed", "-i", f"{net}.0/24",
       "-g", gw, "--dhcp", "--dhcp-start", f"{net}.100", "--dhcp-end", f"{net}.199")
    try:
        lab.wait_for(lambda: up_everywhere(lab, vni), 30, "network 1021 up")
        start_booted(lab, "havm1", "hv4", cmdline=f"dhcp=1 pingtarget={gw}",
                     nics=((bridge, mac()),))
        lab.wait_for(lambda: len(replies_from(lab, "havm1", gw)) >= 3, BOOT,
                     "the guest's DHCP lease and replies from its gateway")
        old = primary(lab)
        holders = lambda addr, dev: {n for n in lab.nodes if addr in addresses_on(lab, n, dev)}  # noqa: E731
        assert holders(gw, bridge) == {old} and holders(floating, "eth0") == {old}
        assert api_on(lab, floating) == 200

        new = next(c for c in lab.coordinators if c != old)
        before = len(replies_from(lab, "havm1", gw))
        ok(lab, "node", "primary", new, "--wait")
        lab.wait_for(lambda: len(replies_from(lab, "havm1", gw)) >= before + 10, 30,
                     "replies from the gateway on the new primary")
        gap = largest_gap(replies_from(lab, "havm1", gw)[before - 1:])
        print(f"\nplanned handover {old}->{new}: {gap} gateway pings lost "
              f"(~{gap * PING_INTERVAL:.1f} s)")
        assert holders(gw, bridge) == {new} and holders(floating, "eth0") == {new}
        assert api_on(lab, floating) == 200
        start_booted(lab, "havm2", "hv4", cmdline=f"dhcp=1 pingtarget={gw}",
                     nics=((bridge, mac()),))
        lab.wait_for(lambda: f"DHCP-bound {net}." in console(lab, "havm2"), 60,
                     "a lease from the new primary's dnsmasq")

        before = len(replies_from(lab, "havm1", gw))
        lab.kill(new)
        lab.wait_for(lambda: lab.primary() not in (None, new), 60, "a new primary")
        lab.wait_for(lambda: len(replies_from(lab, "havm1", gw)) >= before + 10, 60,
                     "replies from the gateway after the primary crashed")
        gap = largest_gap(replies_from(lab, "havm1", gw)[before - 1:])
        third = primary(lab)
        print(f"primary {new} killed, {third} took over: {gap} gateway pings lost "
              f"(~{gap * PING_INTERVAL:.1f} s)")
        assert gw in addresses_on(lab, third, bridge)
        assert floating in addresses_on(lab, third, "eth0")
        lab.wait_for(lambda: api_on(lab, floating) == 200, 30, "the API on the floating IP")
    finally:
        for name in lab.vm_names:
            pvc(lab, "vm", "remove", name, "--yes")
        lab.vm_names = []
        pvc(lab, "network", "remove", str(vni), "--yes", "--force")


def node_checks(lab, node: str) -> tuple[int, dict[str, dict]]:
    found = json.loads(ok(lab, "node", "info", node, "-f", "json"))
    found = found[0] if isinstance(found, list) else found
    return found["health"], {d["name"]: d for d in found["health_details"]}


def test_network_health_checks_see_bridges_sessions_and_the_primarys_services(netlab):
    """With a managed network: every node's ``network`` and ``frr`` checks are healthy (its
    bridge up, its BGP EVPN sessions established) and the primary's ``dnsmasq`` check sees
    its services up; a bridge set down takes 10 off its node until pvcnoded brings it up."""
    lab = netlab
    for n in lab.spec.nodes:
        def healthy(n=n):
            _health, found = node_checks(lab, n.name)
            return all(found.get(c, {}).get("health_delta") == 0 and "no " not in
                       found.get(c, {}).get("message", "no ") for c in ("network", "frr"))
        lab.wait_for(healthy, 60, f"{n.name}'s network and frr checks healthy")
        _health, found = node_checks(lab, n.name)
        assert "established" in found["frr"]["message"]
        assert found["network"]["data"][f"vmbr{VNI}"] == "up"
    _health, found = node_checks(lab, primary(lab))
    assert found["dnsmasq"]["health_delta"] == 0 and "up" in found["dnsmasq"]["message"]

    base, _found = node_checks(lab, "hv3")
    lab.exec("hv3", ["ip", "link", "set", f"vmbr{VNI}", "down"], check=True)

    def bridge_down():
        health, found = node_checks(lab, "hv3")
        net = found["network"]
        return (health, net) if net["health_delta"] == 10 else None
    health, net = lab.wait_for(bridge_down, 60, "hv3's network check to see the bridge down")
    assert health == base - 10 and f"vmbr{VNI} is down" in net["message"]
    ok(lab, "network", "modify", str(VNI), "-d", "labnet2")   # a change: every node reconciles
    lab.wait_for(lambda: node_checks(lab, "hv3")[0] == base, 60, "hv3's health back")
