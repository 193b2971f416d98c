"""EVPN mode on real devices and a real FRR: three "nodes" (network namespaces on one
underlay switch namespace) run the real net_bridged agent and the real net_vxlan plugin in
``evpn`` mode against a real ZooKeeper; each plugin starts its node's zebra + bgpd
(Debian's frr) inside the node's namespace. hv1 and hv2 are coordinators (route
reflectors), hv3 is not (it peers with them only). A "VM" is a namespace of its own whose
eth0 is a veth in a node's ``vmbr100``, so it can be moved to another node with its MAC.

What is checked: the VMs ping across nodes; remote MACs in ``vxlan100``'s fdb are
``extern_learn`` (zebra's) and the device is ``nolearning``, PVC having written no fdb
entry; a VM moved to another node (gratuitous ARP) has its EVPN MAC route local there and
remote, pointing at the new VTEP, elsewhere (MAC mobility); a node appearing and going,
or a node's coordinator state changing, changes bgpd's peers by vtysh with no bgpd restart
and no reset of the other sessions; a plugin restart adopts the running daemons; a killed
bgpd, or zebra, is restarted and a fault raised; switching static -> evpn -> static swaps
PVC's flood entries for zebra's and back. At the end the daemons are ended by pid and the
namespaces removed. The convergence times are printed (pytest -s).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pvc_kernel.config import NodeConfig
from pvc_kernel.sdk import faults
from pvc_kernel.state import Store
from pvc_lab import netns
from pvc_plugins.net_bridged.plugin import NetBridgedPlugin
from pvc_plugins.net_vxlan import frr, frrd
from pvc_plugins.net_vxlan.plugin import NetVxlanPlugin
from tests.support.daemons import wait_for
from tests.support.netnodes import PING, Daemon, Node, fdb, ip, link, pings

pytestmark = pytest.mark.integration

VNI = 100
ARPING = "/usr/bin/arping"
COORDINATORS = ("hv1", "hv2")
MACS = {1: "02:00:00:ee:00:01", 2: "02:00:00:ee:00:02", 3: "02:00:00:ee:00:03"}


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "bridge", PING, ARPING, frrd.VTYSH, *frrd.BINARIES.values()):
        if shutil.which(tool) is None:
            return f"{tool} is missing"
    return None


def vm_address(i: int) -> str:
    return f"10.232.0.{i}"


def attach(vm_ns: str, node: Node, i: int) -> None:
    """VM ``i`` (namespace ``vm_ns``): a new veth, eth0 in the VM, ``vm<i>p`` in vmbr100."""
    port = f"vm{i}p"
    ip(node.ns, "link", "add", port, "mtu", "1450", "type", "veth", "peer", "name", "eth0",
       "netns", vm_ns)
    ip(node.ns, "link", "set", port, "master", f"vmbr{VNI}", "up")
    ip(vm_ns, "link", "set", "eth0", "address", MACS[i], "mtu", "1450", "up")
    ip(vm_ns, "addr", "add", f"{vm_address(i)}/24", "dev", "eth0")


def vtysh(node: Node, command: str) -> Any:
    files = frrd.Files(node.daemon.config.plugin_sections["net_vxlan"]["frr_dir"])
    return json.loads(frrd.vtysh(files, command, daemon=None) or "{}")


def bgp_peers(node: Node) -> dict[str, Any]:
    return vtysh(node, "show bgp l2vpn evpn summary json").get("peers", {})


def established(node: Node, want: set[str]) -> bool:
    have = bgp_peers(node)
    return set(have) == want and all(p.get("state") == "Established" for p in have.values())


def sessions(node: Node) -> dict[str, tuple[int, int]]:
    """Per peer: how often its session was established and dropped (a reset counts)."""
    return {a: (p.get("connectionsEstablished"), p.get("connectionsDropped"))
            for a, p in vtysh(node, "show bgp neighbors json").items()}


def evpn_mac(node: Node, mac: str) -> dict[str, Any]:
    return vtysh(node, f"show evpn mac vni {VNI} mac {mac} json").get(mac, {})


def remote_vteps(node: Node) -> set[str]:
    """The VTEPs zebra learnt for the VNI (type-3 routes). FRR 8.4 prints their list under
    ``numRemoteVteps``; later versions under ``remoteVteps``."""
    answer = vtysh(node, f"show evpn vni {VNI} json")
    found = answer.get("remoteVteps") or answer.get("numRemoteVteps") or []
    return {v["ip"] if isinstance(v, dict) else v for v in found}


def bgpd_pid(node: Node) -> int | None:
    return frrd.running_pid(node.host.plugin("net_vxlan").frr.files, "bgpd")


def supervisor_state(node: Node) -> str:
    """What ``node``'s FRR supervisor knows and where its thread is (for a failure message)."""
    sup = node.host.plugin("net_vxlan").frr
    frame = sys._current_frames().get(sup.thread.ident) if sup.thread else None
    stack = "".join(traceback.format_stack(frame)[-6:]) if frame else "no thread"
    return (f"{node.name}: restarts={sup.restarts} faulted={sup.faulted} seen={sup._seen} "
            f"synced={sup.synced} bgpd={bgpd_pid(node)} alive="
            f"{sup.thread is not None and sup.thread.is_alive()}\n{stack}")


def configure(n: Node, mode: str, zk_hosts: str | None = None,
              frr_dir: str | None = None) -> None:
    """Give node ``n`` a config in ``mode`` (the rest as before); it applies at its start."""
    old = n.daemon.config
    frr_dir = frr_dir or old.plugin_sections["net_vxlan"]["frr_dir"]
    config = NodeConfig(node=n.name, cluster="evpntest",
                        zookeeper_hosts=[zk_hosts] if zk_hosts else old.zookeeper_hosts,
                        coordinator=n.name in COORDINATORS, plugin_sections={
                            "net_bridged": {"reconcile_interval": 5},
                            "net_vxlan": {"cluster_device": "under0", "mode": mode,
                                          "frr_dir": frr_dir}})
    assert n.host.config_problems(config) == []
    n.daemon.config = config


@pytest.fixture
def cluster(zk_hosts) -> Iterator[dict[str, Any]]:
    problem = _missing()
    if problem:
        pytest.skip(problem)
    tag = uuid.uuid4().hex[:6]
    sw = f"pvcev-{tag}-sw"
    node_ns = {f"hv{i}": f"pvcev-{tag}-{i}" for i in (1, 2, 3)}
    vm_ns = {i: f"pvcev-{tag}-v{i}" for i in (1, 2, 3)}
    made: list[str] = []
    nodes: dict[str, Node] = {}
    dirs: dict[str, str] = {}
    try:
        for ns in (sw, *node_ns.values(), *vm_ns.values()):
            netns.add(ns)
            made.append(ns)
        ip(sw, "link", "add", "sw0", "type", "bridge")
        ip(sw, "link", "set", "sw0", "up")
        for i, (name, ns) in enumerate(node_ns.items(), start=1):
            address = f"10.231.0.{i}"
            netns.add_port(sw, "sw0", f"p{i}", ns, address, 24, ifname="under0")
            dirs[name] = tempfile.mkdtemp(prefix=f"pvcev-{tag}-{name}-")
            os.chmod(dirs[name], 0o755)
            store = Store(zk_hosts, timeout=5)
            store.start()
            n = Node(name, ns, address, store)
            n.host.register(NetBridgedPlugin, "net_bridged")
            n.host.register(NetVxlanPlugin, "net_vxlan")
            n.daemon = Daemon(n, None)
            configure(n, "evpn", zk_hosts, dirs[name])
            # What pvcnoded's registration writes: the kernel's record of the role.
            store.set("node.coordinator_state",
                      "secondary" if name in COORDINATORS else "client", node=name)
            nodes[name] = n
        yield {"nodes": nodes, "vms": vm_ns}
    finally:
        for n in nodes.values():
            try:
                n.stop()
            finally:
                n.store.stop()
        for name, root in dirs.items():
            pids = frrd.terminate(root)                  # by pid, from our pid files
            print(f"{name}: ended FRR pids {pids}")
            assert frrd.running_pid(frrd.Files(root), "bgpd") is None
            assert frrd.running_pid(frrd.Files(root), "zebra") is None
            shutil.rmtree(root, ignore_errors=True)
        for ns in made:
            netns.delete(ns)
        assert not [ns for ns in made if netns.exists(ns)]


def test_evpn_on_real_frr(cluster):
    nodes, vms = cluster["nodes"], cluster["vms"]
    hv1, hv2, hv3 = nodes["hv1"], nodes["hv2"], nodes["hv3"]
    store = hv1.store
    store.set("network", {"vni": VNI, "description": "evpn", "nettype": "managed",
                          "mtu": None}, vni=VNI)
    started = time.monotonic()
    for n in nodes.values():
        n.start()

    def all_up() -> bool:
        return all((store.get_json("network.node", vni=VNI, node=n) or {}).get("state") == "up"
                   for n in nodes)
    wait_for(all_up, 30, 0.05, "network 100 up on every node")
    for i, n in enumerate(nodes.values(), start=1):
        attach(vms[i], n, i)

    others = {n.name: {m.address for m in nodes.values() if m is not n}
              for n in nodes.values()}
    wait_for(lambda: all(remote_vteps(n) == others[n.name] for n in nodes.values()), 60, 0.02,
             "every node's zebra to know the other VTEPs (type-3 routes)")
    evpn_ready = time.monotonic() - started

    # (a) The VMs ping across nodes.
    wait_for(lambda: pings(vms[1], vm_address(2), 0.2) and pings(vms[1], vm_address(3), 0.2),
             60, 0.05, "vm1 to ping vm2 and vm3")
    first_ping = time.monotonic() - started
    assert pings(vms[2], vm_address(3)) and pings(vms[3], vm_address(2))

    # Sessions as the roles say: coordinators reflect, hv3 peers with the coordinators.
    a1, a2, a3 = hv1.address, hv2.address, hv3.address
    for n, want in ((hv1, {a2, a3}), (hv2, {a1, a3}), (hv3, {a1, a2})):
        wait_for(lambda n=n, want=want: established(n, want), 30, 0.1,
                 f"{n.name}'s sessions with {want}")

    # (b) nolearning VXLAN; remote MACs installed by zebra (extern_learn); the flood list
    # is exactly the VTEPs zebra learnt by type-3 routes (PVC writes none in evpn mode).
    for me in nodes.values():
        data = link(me.ns, f"vxlan{VNI}")["linkinfo"]["info_data"]
        assert data["learning"] is False and data["local"] == me.address
    entries = fdb(hv1.ns, f"vxlan{VNI}")
    print(f"\nhv1 vxlan{VNI} fdb: {entries}")
    for i in (2, 3):
        mac = [e for e in entries if e["mac"] == MACS[i]]
        assert mac and all("extern_learn" in e.get("flags", []) for e in mac), entries
    flood = {e["dst"] for e in entries if e["mac"] == "00:00:00:00:00:00"}
    assert flood == remote_vteps(hv1) == {a2, a3}
    # Every entry of the VXLAN device itself (where PVC writes in static mode) is zebra's.
    own = [e for e in entries if e.get("dst")]
    assert all(e["mac"] == "00:00:00:00:00:00" or "extern_learn" in e["flags"] for e in own)

    # (c) MAC mobility: vm2 moves from hv2 to hv3 and announces itself.
    assert evpn_mac(hv1, MACS[2]).get("remoteVtep") == a2
    ip(hv2.ns, "link", "del", "vm2p")
    attach(vms[2], hv3, 2)
    moved = time.monotonic()
    # The guest announces itself, as QEMU does after a migration (arping lingers a second
    # after sending: it runs meanwhile).
    garp = subprocess.Popen(["ip", "netns", "exec", vms[2], ARPING, "-q", "-U", "-c", "1",
                             "-I", "eth0", vm_address(2)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    seen: dict[str, float] = {}

    def route_moved() -> bool:
        for n, ok in ((hv3, lambda r: r.get("type") == "local"),
                      (hv1, lambda r: r.get("remoteVtep") == a3),
                      (hv2, lambda r: r.get("remoteVtep") == a3)):
            if n.name not in seen and ok(evpn_mac(n, MACS[2])):
                seen[n.name] = time.monotonic() - moved
        return len(seen) == 3
    try:
        wait_for(lambda: pings(vms[1], vm_address(2), 0.1), 30, 0.01, "vm1 to reach vm2 again")
        ping_back = time.monotonic() - moved
        wait_for(route_moved, 30, 0.01, "vm2's MAC route to point at hv3")
    finally:
        garp.wait(10)
    route_time = max(seen.values())
    print(f"MAC route moved: {', '.join(f'{k} {v:.2f} s' for k, v in sorted(seen.items()))}")
    print(f"hv1 show evpn mac {MACS[2]}: {evpn_mac(hv1, MACS[2])}")
    assert any(e["mac"] == MACS[2] and e.get("dst") == a3 and "extern_learn" in e["flags"]
               for e in fdb(hv1.ns, f"vxlan{VNI}"))

    # A node appears (hv4's VTEP, a client) and goes: hv1's bgpd gets and loses the session
    # by vtysh, without a restart and without resetting the sessions that stay.
    pid = bgpd_pid(hv1)
    before = sessions(hv1)
    store.set("node.static", {"vtep": "10.231.0.9"}, node="hv4")
    store.set("node.coordinator_state", "client", node="hv4")
    wait_for(lambda: "10.231.0.9" in bgp_peers(hv1), 20, 0.05, "hv1 to peer with hv4")
    assert "10.231.0.9" not in bgp_peers(hv3)             # a client peers with reflectors only
    store.delete("node", node="hv4")
    wait_for(lambda: set(bgp_peers(hv1)) == {a2, a3}, 20, 0.05, "hv4 gone from hv1's peers")
    assert bgpd_pid(hv1) == pid
    assert sessions(hv1) == before

    # hv3's role as the kernel records it changes: hv1 stops and starts reflecting to it by
    # vtysh (FRR resets that one session for the change; the other stays).
    def clients(n: Node) -> frozenset[str]:
        return frr.parse_running(frrd.vtysh(n.host.plugin("net_vxlan").frr.files,
                                            "show running-config")).clients
    assert clients(hv1) == {a3}
    store.set("node.coordinator_state", "secondary", node="hv3")
    wait_for(lambda: clients(hv1) == frozenset(), 20, 0.05, "hv1 to stop reflecting to hv3")
    store.set("node.coordinator_state", "client", node="hv3")
    wait_for(lambda: clients(hv1) == {a3}, 20, 0.05, "hv1 to reflect to hv3 again")
    assert bgpd_pid(hv1) == pid and sessions(hv1)[a2] == before[a2]
    wait_for(lambda: established(hv1, {a2, a3}), 30, 0.05, "hv1's sessions after the change")
    wait_for(lambda: pings(vms[1], vm_address(2), 0.2), 30, 0.05, "vm1 to reach vm2")

    # A plugin (pvcnoded) restart adopts the running daemons: same pids, traffic flows.
    zebra = frrd.running_pid(hv1.host.plugin("net_vxlan").frr.files, "zebra")
    hv1.stop()
    hv1.start()
    sup = hv1.host.plugin("net_vxlan").frr
    wait_for(lambda: sup.synced >= 1, 20, 0.05, "the new supervisor's first check")
    assert (bgpd_pid(hv1), frrd.running_pid(sup.files, "zebra")) == (pid, zebra)
    assert sup.applied == []
    assert pings(vms[1], vm_address(2)) and pings(vms[1], vm_address(3))

    # A killed bgpd is started again and a fault raised.
    victim = bgpd_pid(hv3)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    try:
        wait_for(lambda: faults.get(store, frrd.fault_id("hv3")), 45, 0.05, "the FRR fault")
    except AssertionError as exc:   # seen once under a loaded CI run: say where it stood
        raise AssertionError(f"{exc}; bgpd {victim} killed; {supervisor_state(hv3)}") from None
    wait_for(lambda: bgpd_pid(hv3) not in (None, victim), 20, 0.05, "a new bgpd on hv3")
    wait_for(lambda: established(hv3, {a1, a2}), 30, 0.05, "hv3's sessions again")
    wait_for(lambda: pings(vms[1], vm_address(2), 0.2), 30, 0.05, "vm1 to reach vm2 on hv3")
    recovered = time.monotonic() - killed
    assert "bgpd" in faults.get(store, frrd.fault_id("hv3"))["message"]

    # A killed zebra: zebra and bgpd (whose EVPN state lived on it) start again.
    files = hv1.host.plugin("net_vxlan").frr.files
    victim = frrd.running_pid(files, "zebra")
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: faults.get(store, frrd.fault_id("hv1")), 20, 0.05, "hv1's FRR fault")
    wait_for(lambda: frrd.running_pid(files, "zebra") not in (None, victim), 20, 0.05,
             "a new zebra on hv1")
    wait_for(lambda: established(hv1, {a2, a3}), 30, 0.05, "hv1's sessions again")
    wait_for(lambda: pings(vms[1], vm_address(2), 0.2) and pings(vms[1], vm_address(3), 0.2),
             30, 0.05, "vm1 to reach vm2 and vm3 again")
    zebra_back = time.monotonic() - killed
    assert "zebra" in faults.get(store, frrd.fault_id("hv1"))["message"]

    print(f"EVPN figures: every VTEP known everywhere {evpn_ready:.2f} s and first cross-node "
          f"ping {first_ping:.2f} s after the plugins started; "
          f"MAC move: ping back {ping_back:.2f} s, MAC route on every node {route_time:.2f} s; "
          f"bgpd killed -> ping through the restarted bgpd {recovered:.2f} s, zebra killed -> "
          f"pings again {zebra_back:.2f} s")


def test_switching_between_static_and_evpn_mode(cluster):
    """static -> evpn: the VXLANs are made again nolearning, the flood entries PVC wrote go
    and zebra's come; evpn -> static: pvcnoded ends FRR (by pid) and writes its own again."""
    nodes, vms = cluster["nodes"], cluster["vms"]
    store = nodes["hv1"].store
    addresses = {n.address for n in nodes.values()}
    store.set("network", {"vni": VNI, "description": "evpn", "nettype": "managed",
                          "mtu": None}, vni=VNI)
    for n in nodes.values():
        configure(n, "static")
        n.start()
    wait_for(lambda: all((store.get_json("network.node", vni=VNI, node=n) or {}).get("state")
                         == "up" for n in nodes), 30, 0.05, "network 100 up on every node")
    for i, n in enumerate(nodes.values(), start=1):
        attach(vms[i], n, i)

    def floods(n: Node) -> set[str]:
        return {e["dst"] for e in fdb(n.ns, f"vxlan{VNI}")
                if e["mac"] == "00:00:00:00:00:00" and e.get("dst")}

    def in_mode(n: Node, learning: bool) -> bool:
        data = link(n.ns, f"vxlan{VNI}")["linkinfo"]["info_data"]
        return data["learning"] is learning and floods(n) == addresses - {n.address}

    def all_ping() -> bool:
        return all(pings(vms[a], vm_address(b), 0.2) for a, b in ((1, 2), (1, 3), (2, 3)))

    for n in nodes.values():
        wait_for(lambda n=n: in_mode(n, True), 20, 0.05, f"{n.name}'s static flood list")
        assert frrd.running_pid(frrd.Files(n.daemon.config.plugin_sections["net_vxlan"]
                                           ["frr_dir"]), "bgpd") is None
    wait_for(all_ping, 30, 0.05, "pings in static mode")

    for n in nodes.values():              # pvcnoded restarted with mode: evpn, one by one
        n.stop()
        configure(n, "evpn")
        n.start()
    for n in nodes.values():
        wait_for(lambda n=n: in_mode(n, False) and floods(n) == remote_vteps(n), 30, 0.05,
                 f"{n.name}: nolearning, flood list = zebra's remote VTEPs")
        assert all(e["mac"] == "00:00:00:00:00:00" or "extern_learn" in e["flags"]
                   for e in fdb(n.ns, f"vxlan{VNI}") if e.get("dst"))
    wait_for(all_ping, 30, 0.05, "pings in evpn mode")

    for n in nodes.values():              # and back to static
        files = n.host.plugin("net_vxlan").frr.files
        n.stop()
        configure(n, "static")
        n.start()
        assert frrd.running_pid(files, "bgpd") is None
        assert frrd.running_pid(files, "zebra") is None
    for n in nodes.values():
        wait_for(lambda n=n: in_mode(n, True), 30, 0.05, f"{n.name}'s static flood list again")
    wait_for(all_ping, 30, 0.05, "pings in static mode again")
