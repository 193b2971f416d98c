"""EVPN mode without FRR: the sessions each node gets (coordinators as route reflectors),
the rendered zebra/bgpd files, the vtysh commands that move a running bgpd to a new peer
set without touching the sessions that stay, and the nolearning VXLAN without PVC fdb
entries (against a fake IPRoute)."""

from __future__ import annotations

import pytest

from pvc_plugins.net_vxlan import devices as vx
from pvc_plugins.net_vxlan import frr, frrd
from pvc_plugins.net_vxlan.config import EVPN, SETTINGS, VxlanConfig
from tests.support.daemons import wait_for
from tests.support.fake_netlink import FakeIPRoute

C1 = frr.Peer("hv1", "10.0.0.1", True)
C2 = frr.Peer("hv2", "10.0.0.2", True)
N3 = frr.Peer("hv3", "10.0.0.3", False)
N4 = frr.Peer("hv4", "10.0.0.10", False)


def test_a_coordinator_peers_with_everyone_and_reflects_to_the_non_coordinators():
    assert frr.neighbors(True, [N4, N3, C2]) == {"10.0.0.2": False, "10.0.0.3": True,
                                                 "10.0.0.10": True}


def test_a_non_coordinator_peers_only_with_the_coordinators():
    assert frr.neighbors(False, [N4, C2, C1]) == {"10.0.0.1": False, "10.0.0.2": False}


def test_without_any_coordinator_the_nodes_form_a_full_mesh():
    assert frr.neighbors(False, [N4, N3]) == {"10.0.0.3": False, "10.0.0.10": False}
    assert frr.neighbors(True, []) == {}


def test_desired_leaves_out_a_peer_with_our_own_vtep():
    want = frr.desired(65001, "10.0.0.3", False, [C1, N3])
    assert want == frr.Bgp(65001, "10.0.0.3", {"10.0.0.1": False})


def test_bgpd_conf_of_a_route_reflector():
    text = frr.bgpd_conf("hv1", "/run/f/bgpd.log",
                         frr.Bgp(65001, "10.0.0.1", {"10.0.0.2": False, "10.0.0.3": True}))
    assert text.splitlines() == [
        "hostname hv1", "log file /run/f/bgpd.log informational",
        "router bgp 65001", " bgp router-id 10.0.0.1", " no bgp default ipv4-unicast",
        " timers bgp 3 9", " coalesce-time 100",
        " neighbor 10.0.0.2 remote-as 65001", " neighbor 10.0.0.2 timers connect 1",
        " neighbor 10.0.0.3 remote-as 65001", " neighbor 10.0.0.3 timers connect 1",
        " address-family l2vpn evpn",
        "  neighbor 10.0.0.2 activate",
        "  neighbor 10.0.0.3 activate", "  neighbor 10.0.0.3 route-reflector-client",
        "  advertise-all-vni", " exit-address-family", "exit"]
    assert frr.zebra_conf("hv1", "/x/zebra.log") == (
        "hostname hv1\nlog file /x/zebra.log informational\n")


# What FRR 8.4's ``show running-config`` prints for the file above (abridged).
RUNNING = """Building configuration...

Current configuration:
!
frr version 8.4.4
frr defaults traditional
hostname hv1
log file /run/f/bgpd.log informational
!
router bgp 65001
 bgp router-id 10.0.0.1
 no bgp default ipv4-unicast
 timers bgp 3 9
 coalesce-time 100
 neighbor 10.0.0.2 remote-as 65001
 neighbor 10.0.0.2 timers connect 1
 neighbor 10.0.0.3 remote-as 65001
 neighbor 10.0.0.3 timers connect 1
 !
 address-family l2vpn evpn
  neighbor 10.0.0.2 activate
  neighbor 10.0.0.3 activate
  neighbor 10.0.0.3 route-reflector-client
  advertise-all-vni
 exit-address-family
exit
!
end
"""


def test_parse_running():
    assert frr.parse_running(RUNNING) == frr.Running(
        65001, "10.0.0.1", frozenset({"10.0.0.2", "10.0.0.3"}),
        frozenset({"10.0.0.2", "10.0.0.3"}), frozenset({"10.0.0.3"}), True)
    assert frr.parse_running("") == frr.Running(None, None, frozenset(), frozenset(),
                                                frozenset(), False)


def test_no_change_sends_nothing():
    want = frr.Bgp(65001, "10.0.0.1", {"10.0.0.2": False, "10.0.0.3": True})
    running = frr.parse_running(RUNNING)
    assert not frr.needs_restart(running, want)
    assert frr.changes(running, want) == []


def test_changes_add_remove_and_role_changes_touch_only_those_peers():
    # hv2 went, hv4 came (a client), hv3 became a coordinator (no longer a client).
    want = frr.Bgp(65001, "10.0.0.1", {"10.0.0.3": False, "10.0.0.10": True})
    assert frr.changes(frr.parse_running(RUNNING), want) == [
        "router bgp 65001",
        "no neighbor 10.0.0.2",
        "neighbor 10.0.0.10 remote-as 65001", "neighbor 10.0.0.10 timers connect 1",
        "address-family l2vpn evpn",
        "no neighbor 10.0.0.3 route-reflector-client",
        "neighbor 10.0.0.10 activate", "neighbor 10.0.0.10 route-reflector-client",
        "exit-address-family",
        "exit"]


def test_a_new_as_or_router_id_needs_a_restart():
    running = frr.parse_running(RUNNING)
    assert frr.needs_restart(running, frr.Bgp(65002, "10.0.0.1", {}))
    assert frr.needs_restart(running, frr.Bgp(65001, "10.0.0.9", {}))
    assert frr.needs_restart(frr.parse_running(""), frr.Bgp(65001, "10.0.0.1", {}))


def test_config_offers_evpn_with_as_and_frr_dir():
    mode = next(s for s in SETTINGS.keys if s.key == "mode")
    assert mode.default == "static" and EVPN in mode.choices
    defaults = SETTINGS.defaults()
    assert (defaults["bgp_as"], defaults["frr_dir"]) == (65001, "/run/pvc/frr")


# -- devices in evpn mode --------------------------------------------------------------------

@pytest.fixture
def ipr() -> FakeIPRoute:
    fake = FakeIPRoute()
    index = fake.add_link("under0", mtu=1500, up=True)
    fake.addrs.append((index, "10.0.0.1"))
    return fake


CFG = VxlanConfig(cluster_device="under0", mode=EVPN)


def test_evpn_vxlan_is_nolearning_and_gets_no_fdb_entry(ipr):
    assert vx.vxlan_port(CFG, {"vni": 100}, None, ipr) == {"port": "vxlan100", "max_mtu": 1450}
    add = [kw for kind, cmd, kw in ipr.changes if (kind, cmd) == ("link", "add")]
    assert add[0]["vxlan_learning"] == 0
    assert not [r for r in ipr.changes if r[0] == "fdb"]
    ipr.clear()
    vx.vxlan_port(CFG, {"vni": 100}, None, ipr)
    assert ipr.changes == []


def test_switching_static_to_evpn_makes_the_device_again_without_our_flood_entries(ipr):
    vx.vxlan_port(CFG, {"vni": 100}, ["10.0.0.2"], ipr)       # static mode's device
    old = ipr.by_name("vxlan100")["index"]
    assert ipr.fdbs == [(old, "00:00:00:00:00:00", "10.0.0.2")]
    vx.vxlan_port(CFG, {"vni": 100}, None, ipr)
    new = ipr.by_name("vxlan100")
    assert new["index"] != old and new["data"]["IFLA_VXLAN_LEARNING"] == 0
    assert ipr.fdbs == []


def test_under_systemd_the_daemons_get_a_scope_of_their_own():
    assert frrd.launcher(False) == []
    argv = frrd.launcher(True)
    assert argv[:2] == ["/usr/bin/systemd-run", "--scope"] and "--collect" in argv


# -- pid files ---------------------------------------------------------------------------------

def test_a_pid_is_ours_only_if_its_command_line_names_our_config_and_terminate_ends_it(
        tmp_path):
    import os
    import subprocess
    import sys

    files = frrd.Files(str(tmp_path))
    assert frrd.running_pid(files, "bgpd") is None                   # no pid file
    (tmp_path / "bgpd.pid").write_text(f"{os.getpid()}\n")           # a pid not ours
    assert frrd.running_pid(files, "bgpd") is None
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             files.conf("bgpd")])
    try:
        (tmp_path / "bgpd.pid").write_text(f"{proc.pid}\n")
        # /proc/<pid>/cmdline shows the new program only once its exec is through
        wait_for(lambda: frrd.running_pid(files, "bgpd") == proc.pid, 10, 0.01, "the exec")
        assert frrd.terminate(str(tmp_path)) == [proc.pid]
        assert proc.wait(5) == -15
        assert frrd.running_pid(files, "bgpd") is None
        assert frrd.terminate(str(tmp_path)) == []
    finally:
        proc.kill()
        proc.wait()
