"""The network plugins' device functions against a fake IPRoute: the exact netlink
requests, the no-flap rule (a device that is right gets no request), and removal of only
what PVC made."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pvc_plugins.net_bridged import devices as br
from pvc_plugins.net_bridged.config import NetConfig
from pvc_plugins.net_vxlan import devices as vx
from pvc_plugins.net_vxlan.config import VxlanConfig
from tests.support.fake_netlink import FakeIPRoute

ZERO = "00:00:00:00:00:00"


@pytest.fixture
def ipr() -> FakeIPRoute:
    return FakeIPRoute()


# -- bridges -------------------------------------------------------------------------------

def test_ensure_bridge_creates_marks_sets_mtu_and_up_then_sends_nothing(ipr):
    assert br.ensure_bridge(ipr, "vmbr100", 1450) == ["created", "mtu 1500->1450", "up"]
    assert [(c, {k: v for k, v in kw.items() if k != "index"}) for _, c, kw in ipr.changes] == [
        ("add", {"ifname": "vmbr100", "kind": "bridge"}),
        ("set", {"ifalias": "pvc"}),
        ("set", {"mtu": 1450}),
        ("set", {"state": "up"}),
    ]
    link = ipr.by_name("vmbr100")
    assert (link["mtu"], link["flags"] & 1, link["ifalias"]) == (1450, 1, "pvc")
    ipr.clear()
    assert br.ensure_bridge(ipr, "vmbr100", 1450) == []
    assert ipr.changes == []


def test_ensure_bridge_keeps_an_existing_bridge_and_changes_only_what_differs(ipr):
    index = ipr.add_link("vmbr7", kind="bridge", mtu=9000, up=True)
    assert br.ensure_bridge(ipr, "vmbr7", 1500) == ["mtu 9000->1500"]
    assert ipr.changes == [("link", "set", {"index": index, "mtu": 1500})]
    assert ipr.by_name("vmbr7")["index"] == index
    ipr.add_link("vmbr8", kind="veth")
    with pytest.raises(br.DeviceError, match="not a bridge"):
        br.ensure_bridge(ipr, "vmbr8", 1500)


def test_enslave_sets_mtu_master_and_up_once(ipr):
    br.ensure_bridge(ipr, "vmbr100", 1450)
    port = ipr.add_link("vxlan100", kind="vxlan", mtu=1500)
    ipr.clear()
    assert br.enslave(ipr, "vmbr100", "vxlan100", 1450) == ["mtu 1500->1450", "into vmbr100",
                                                            "up"]
    assert ipr.links[port]["master"] == ipr.by_name("vmbr100")["index"]
    ipr.clear()
    assert br.enslave(ipr, "vmbr100", "vxlan100", 1450) == []
    assert ipr.changes == []
    with pytest.raises(br.DeviceError, match="port nope"):
        br.enslave(ipr, "vmbr100", "nope", 1450)


def test_only_bridges_pvc_made_are_listed_and_removed(ipr):
    br.ensure_bridge(ipr, "vmbr100", 1500)
    ipr.add_link("vmbr200", kind="bridge")                 # an administrator's
    ipr.add_link("vmbrx", kind="bridge", alias="pvc")      # not a network's name
    assert br.pvc_bridges(ipr) == {100: "vmbr100"}
    assert br.remove_bridge(ipr, "vmbr200") is False
    assert br.remove_bridge(ipr, "vmbr100") is True
    assert br.remove_bridge(ipr, "vmbr100") is False
    assert ipr.by_name("vmbr200") is not None and ipr.by_name("vmbr100") is None


# -- the bridged type ----------------------------------------------------------------------

CFG = NetConfig(bridge_device="eth1", bridge_mtu=9000)


def test_bridged_port_asks_for_an_8021q_device_on_bridge_device():
    ipr = FakeIPRoute(unsupported=())
    eth1 = ipr.add_link("eth1", up=True)
    assert br.bridged_port(CFG, {"vni": 100, "nettype": "bridged"}, ipr) == {
        "port": "eth1.100", "max_mtu": 9000}
    add = [r for r in ipr.changes if r[1] == "add"]
    assert add == [("link", "add", {"ifname": "eth1.100", "kind": "vlan", "link": eth1,
                                    "vlan_id": 100})]
    assert ipr.by_name("eth1.100")["ifalias"] == "pvc"
    ipr.clear()
    assert br.bridged_port(CFG, {"vni": 100}, ipr)["port"] == "eth1.100"
    assert ipr.changes == []
    assert br.remove_bridged_port(CFG, {"vni": 100}, ipr) is True
    assert ipr.by_name("eth1.100") is None


def test_bridged_port_fails_cleanly_where_vlans_cannot_be_made(ipr):
    ipr.add_link("eth1", up=True)
    answer = br.bridged_port(CFG, {"vni": 100}, ipr)
    assert answer == {"error": "cannot make eth1.100: Operation not supported (errno 95)"}
    assert ipr.by_name("eth1.100") is None
    assert br.bridged_port(NetConfig(), {"vni": 100}, ipr) == {
        "error": "bridge_device is not set in plugins.net_bridged on this node"}
    assert "does not exist" in br.bridged_port(NetConfig(bridge_device="eth9"),
                                               {"vni": 100}, ipr)["error"]
    assert "1-4094" in br.bridged_port(CFG, {"vni": 5000}, ipr)["error"]
    long = NetConfig(bridge_device="enp1s0f0np0")
    assert "longer than 15" in br.bridged_port(long, {"vni": 1000}, ipr)["error"]


def test_an_administrators_vlan_device_is_used_as_it_is_and_kept(ipr):
    ipr.add_link("eth1", up=True)
    ipr.add_link("eth1.100", kind="vlan", mtu=9000, up=True)
    assert br.bridged_port(CFG, {"vni": 100}, ipr) == {"port": "eth1.100", "max_mtu": 9000}
    assert ipr.changes == []
    assert br.remove_bridged_port(CFG, {"vni": 100}, ipr) is False
    assert ipr.by_name("eth1.100") is not None
    assert br.remove_bridged_port(NetConfig(), {"vni": 100}, ipr) is False


# -- the managed type (VXLAN) -------------------------------------------------------------

VCFG = VxlanConfig(cluster_device="eth0", cluster_mtu=1500)


@pytest.fixture
def under(ipr) -> int:
    index = ipr.add_link("eth0", up=True)
    ipr.addrs.append((index, "10.0.0.1"))
    return index


def test_vtep_address_is_configured_or_the_first_ipv4_of_cluster_device(ipr, under):
    assert vx.vtep_address(VxlanConfig(vtep_address="192.0.2.1"), ipr) == "192.0.2.1"
    ipr.addrs.append((under, "10.0.0.9"))
    assert vx.vtep_address(VCFG, ipr) == "10.0.0.1"
    assert vx.vtep_address(VxlanConfig(cluster_device="eth7"), ipr) is None
    assert vx.vtep_address(VxlanConfig(), ipr) is None


def test_vxlan_port_request_and_flood_list_then_nothing(ipr, under):
    answer = vx.vxlan_port(VCFG, {"vni": 100, "nettype": "managed"}, ["10.0.0.2", "10.0.0.3"],
                           ipr)
    assert answer == {"port": "vxlan100", "max_mtu": 1450}
    assert [r for r in ipr.changes if r[1] == "add"][0] == (
        "link", "add", {"ifname": "vxlan100", "kind": "vxlan", "vxlan_id": 100,
                        "vxlan_port": 4789, "vxlan_local": "10.0.0.1", "vxlan_link": under,
                        "vxlan_learning": 1})
    index = ipr.by_name("vxlan100")["index"]
    assert ipr.by_name("vxlan100")["ifalias"] == "pvc"
    assert sorted(ipr.fdbs) == [(index, ZERO, "10.0.0.2"), (index, ZERO, "10.0.0.3")]
    ipr.clear()
    assert vx.vxlan_port(VCFG, {"vni": 100}, ["10.0.0.3", "10.0.0.2"], ipr)["port"] == "vxlan100"
    assert ipr.changes == []


def test_flood_list_follows_peers_exactly(ipr, under):
    vx.vxlan_port(VCFG, {"vni": 100}, ["10.0.0.2", "10.0.0.3"], ipr)
    index = ipr.by_name("vxlan100")["index"]
    ipr.fdbs.append((index, "52:54:00:00:00:01", "10.0.0.3"))    # learnt: not ours to touch
    ipr.clear()
    vx.vxlan_port(VCFG, {"vni": 100}, ["10.0.0.3", "10.0.0.4"], ipr)
    assert ipr.changes == [
        ("fdb", "append", {"ifindex": index, "lladdr": ZERO, "dst": "10.0.0.4"}),
        ("fdb", "del", {"ifindex": index, "lladdr": ZERO, "dst": "10.0.0.2"})]
    vx.vxlan_port(VCFG, {"vni": 100}, [], ipr)
    assert ipr.fdbs == [(index, "52:54:00:00:00:01", "10.0.0.3")]


def test_vxlan_port_errors(ipr, under):
    assert vx.vxlan_port(VxlanConfig(), {"vni": 1}, [], ipr) == {
        "error": "cluster_device is not set in plugins.net_vxlan on this node"}
    assert vx.vxlan_port(VxlanConfig(cluster_device="eth9"), {"vni": 1}, [], ipr) == {
        "error": "cluster_device eth9 does not exist"}
    ipr.add_link("eth2")
    assert "no VTEP address" in vx.vxlan_port(VxlanConfig(cluster_device="eth2"), {"vni": 1},
                                              [], ipr)["error"]
    ipr.add_link("vxlan5", kind="vxlan", data={"IFLA_VXLAN_ID": 6})   # someone else's
    assert "was not made by PVC" in vx.vxlan_port(VCFG, {"vni": 5}, [], ipr)["error"]
    assert vx.remove_vxlan_port({"vni": 5}, ipr) is False


def test_a_pvc_vxlan_with_an_old_vtep_is_made_again_and_removed(ipr, under):
    vx.vxlan_port(VCFG, {"vni": 100}, [], ipr)
    old = ipr.by_name("vxlan100")["index"]
    moved = VxlanConfig(cluster_device="eth0", vtep_address="10.0.0.7")
    vx.vxlan_port(moved, {"vni": 100}, [], ipr)
    link = ipr.by_name("vxlan100")
    assert link["index"] != old and link["data"]["IFLA_VXLAN_LOCAL"] == "10.0.0.7"
    assert vx.remove_vxlan_port({"vni": 100}, ipr) is True
    assert vx.remove_vxlan_port({"vni": 100}, ipr) is False


class FakeStore:
    def __init__(self, static: dict[str, object]) -> None:
        self.static = static

    def children(self, name: str) -> list[str]:
        assert name == "nodes"
        return sorted(self.static)

    def get_json(self, name: str, default=None, node: str = "") -> object:
        assert name == "node.static"
        return self.static.get(node, default)


def test_peer_vteps_are_the_other_nodes_published_vteps():
    store = FakeStore({"hv1": {"vtep": "10.0.0.1"}, "hv2": {"vtep": "10.0.0.10"},
                       "hv3": {"vtep": "10.0.0.9"}, "hv4": {}, "hv5": "junk", "hv6": None})
    daemon = SimpleNamespace(node="hv1", store=store)
    assert vx.peer_vteps(daemon, VCFG) == ["10.0.0.9", "10.0.0.10"]
