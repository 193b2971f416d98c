"""The pure parts of the primary's network services (net_vxlan): dnsmasq's command line and
files, the lease hook's event and relay, the gateway announcements' packets."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from types import SimpleNamespace
from typing import Any

import pytest

from pvc_plugins.net_vxlan import dhcp, gateway, leasehook

SPEC = {"vni": 100, "description": "office", "domain": "office.local",
        "ip4_network": "10.100.0.0/24", "ip4_gateway": "10.100.0.1", "dhcp4": True,
        "dhcp4_start": "10.100.0.100", "dhcp4_end": "10.100.0.199",
        "ip6_network": "fd00:100::/64", "ip6_gateway": "fd00:100::1",
        "name_servers": ["10.0.0.53", "fd00::53"]}


def test_dnsmasq_serves_only_its_bridge_with_the_networks_settings(tmp_path):
    files = dhcp.Files(str(tmp_path), 100)
    args = dhcp.arguments(SPEC, files, 172800)
    assert args[0] == "dnsmasq" and "--keep-in-foreground" in args
    for arg in ("--conf-file=/dev/null", "--no-hosts", "--bind-interfaces",
                "--interface=vmbr100", "--except-interface=lo", f"--pid-file={files.pid}",
                f"--dhcp-hostsdir={files.hosts}", f"--dhcp-leasefile={files.leases}",
                f"--dhcp-script={files.hook}",
                "--dhcp-range=10.100.0.100,10.100.0.199,255.255.255.0,172800",
                "--dhcp-option=option:router,10.100.0.1", "--domain=office.local",
                "--local=/office.local/", "--enable-ra",
                "--dhcp-range=fd00:100::,ra-stateless,ra-names,64,172800",
                "--dhcp-option=option:dns-server,10.0.0.53",
                "--dhcp-option=option6:dns-server,[fd00::53]",
                "--auth-zone=office.local,10.100.0.0/24,fd00:100::/64",
                "--auth-server=office.local,vmbr100"):
        assert arg in args, arg


def test_ipv6_gets_slaac_on_a_64_and_stateful_dhcpv6_on_a_smaller_network(tmp_path):
    files = dhcp.Files(str(tmp_path), 100)

    def range6(net: str, gw: str) -> str:
        args = dhcp.arguments({**SPEC, "ip6_network": net, "ip6_gateway": gw}, files, 60)
        return [a for a in args if a.startswith("--dhcp-range=") and ":" in a][0]

    assert range6("fd00:1::/48", "fd00:1::1") == \
        "--dhcp-range=fd00:1::,ra-stateless,ra-names,64,60"
    assert range6("fd00:1::/112", "fd00:1::1") == "--dhcp-range=fd00:1::8000,fd00:1::fffe,112,60"
    assert range6("fd00:1::/112", "fd00:1::ff00") == "--dhcp-range=fd00:1::1,fd00:1::7fff,112,60"


def test_without_dhcp4_or_ipv6_there_is_no_range_or_ra(tmp_path):
    spec = {**SPEC, "dhcp4": False, "ip6_network": None, "name_servers": []}
    args = dhcp.arguments(spec, dhcp.Files(str(tmp_path), 100), 3600)
    assert not [a for a in args if a.startswith("--dhcp-range") or a == "--enable-ra"]
    assert not [a for a in args if "dns-server" in a]
    assert dhcp.serves(spec) and not dhcp.serves({"vni": 1})


def test_reservation_files_follow_the_reservations(tmp_path):
    files = dhcp.Files(str(tmp_path), 100)
    one = {"mac": "52:54:00:00:00:01", "ip4": "10.100.0.5", "hostname": "web"}
    two = {"mac": "52:54:00:00:00:02", "ip4": "10.100.0.6", "hostname": None}
    assert dhcp.sync_hosts(files, [one, two]) == (True, False)
    assert (files.hosts / "525400000001").read_text() == "52:54:00:00:00:01,10.100.0.5,web\n"
    assert (files.hosts / "525400000002").read_text() == "52:54:00:00:00:02,10.100.0.6\n"
    assert dhcp.sync_hosts(files, [one, two]) == (False, False)
    assert dhcp.sync_hosts(files, [one]) == (True, True)          # removal: SIGHUP needed
    assert dhcp.sync_hosts(files, [{**one, "ip4": "10.100.0.7"}]) == (True, True)
    assert [p.name for p in files.hosts.iterdir()] == ["525400000001"]


def test_the_lease_file_holds_unexpired_leases():
    text = dhcp.lease_lines([
        {"mac": "52:54:00:00:00:02", "ip4": "10.100.0.6", "hostname": None, "expiry": 2000,
         "client_id": "01:52:54:00:00:00:02"},
        {"mac": "52:54:00:00:00:01", "ip4": "10.100.0.5", "hostname": "web", "expiry": 0},
        {"mac": "52:54:00:00:00:03", "ip4": "10.100.0.7", "hostname": "old", "expiry": 500},
    ], now=1000)
    assert text == ("0 52:54:00:00:00:01 10.100.0.5 web *\n"
                    "2000 52:54:00:00:00:02 10.100.0.6 * 01:52:54:00:00:00:02\n")


def test_a_lease_file_reads_back_as_lease_events():
    text = ("0 52:54:00:00:00:01 10.100.0.5 web *\n"
            "2000 52:54:00:00:00:02 10.100.0.6 * 01:52:54:00:00:00:02\n"
            "duid 00:01:00:01:2c:aa:bb:cc\n")                    # IPv6 part: left out
    assert dhcp.read_leases(text, 100) == [
        {"vni": 100, "action": "old", "mac": "52:54:00:00:00:01", "ip4": "10.100.0.5",
         "hostname": "web", "expiry": 0, "client_id": None},
        {"vni": 100, "action": "old", "mac": "52:54:00:00:00:02", "ip4": "10.100.0.6",
         "hostname": None, "expiry": 2000, "client_id": "01:52:54:00:00:00:02"}]


def test_a_leftover_is_only_a_dnsmasq_of_this_pid_file(tmp_path):
    files = dhcp.Files(str(tmp_path), 100)
    assert dhcp.leftover(files) is None
    files.pid.write_text(f"{os.getpid()}\n")       # alive, but not a dnsmasq of this file
    assert dhcp.leftover(files) is None


def test_the_lease_hook_relays_dnsmasqs_event(tmp_path):
    path = str(tmp_path / "s")
    env = {"PVC_LEASE_SOCKET": path, "PVC_LEASE_VNI": "100", "DNSMASQ_LEASE_EXPIRES": "1900",
           "DNSMASQ_CLIENT_ID": "01:aa"}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        assert leasehook.main(["add", "52:54:00:AA:00:01", "10.100.0.5", "web"], env) == 0
        assert json.loads(server.recv(4096)) == {
            "vni": 100, "action": "add", "mac": "52:54:00:aa:00:01", "ip4": "10.100.0.5",
            "hostname": "web", "expiry": 1900, "client_id": "01:aa"}
        assert leasehook.main(["del", "52:54:00:aa:00:01", "10.100.0.5"], env) == 0
        assert json.loads(server.recv(4096))["hostname"] is None
    assert leasehook.main(["tftp", "1", "x"], env) == 0              # not a lease: ignored
    assert leasehook.event(["add", "x", "fd00::5"], {**env, "DNSMASQ_IAID": "1"}) is None
    assert leasehook.main(["add", "52:54:00:aa:00:01", "10.100.0.5"], env) == 1  # no socket
    assert leasehook.main(["add", "52:54:00:aa:00:01", "10.100.0.5"], {}) == 2


def test_gateways_and_their_announcements():
    assert gateway.wanted(SPEC) == ["10.100.0.1/24", "fd00:100::1/64"]
    assert gateway.wanted({"ip4_network": None, "ip6_network": None}) == []
    mac = bytes.fromhex("525400aabbcc")
    frame = gateway.arp_frame(mac, "10.100.0.1")
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    op, sha, spa, tha, tpa = struct.unpack("!6xH6s4s6s4s", frame[14:])
    assert (op, sha, tha) == (1, mac, b"\0" * 6)
    assert spa == tpa == socket.inet_aton("10.100.0.1")
    na = gateway.na_message(mac, "fd00:100::1")
    kind, code, _sum, flags = struct.unpack("!BBHI", na[:8])
    assert (kind, code, flags) == (136, 0, 0xA0000000)           # router + override
    assert na[8:24] == socket.inet_pton(socket.AF_INET6, "fd00:100::1")
    assert na[24:] == b"\x02\x01" + mac


class FakeDnsmasq:
    """Stands in for ``dhcp.Dnsmasq``: "runs" from ``start`` until ``crash`` or ``stop``."""

    made: list[FakeDnsmasq] = []

    def __init__(self, files: Any, vni: int, args: list[str], on_exit: Any = None) -> None:
        self.files, self.vni, self.args = files, vni, args
        self.alive = self.stopping = False
        self.reloads = 0
        self.started = time.monotonic()
        self.pid = 1000 + len(self.made)
        self.made.append(self)

    def start(self, leases: list[dict[str, Any]]) -> None:
        self.alive, self.leases = True, leases

    def running(self) -> bool:
        return self.alive

    def exit_message(self) -> str:
        return "killed by signal 9"

    def stop(self) -> None:
        self.stopping, self.alive = True, False

    def reload(self) -> None:
        self.reloads += 1


class ReservationStore:
    """What ``Services`` reads of ZooKeeper: a network's reservations (and no leases)."""

    def __init__(self) -> None:
        self.reservations: dict[str, dict[str, Any]] = {}

    def children(self, name: str, **kw: Any) -> list[str]:
        return sorted(self.reservations) if name == "network.reservations" else []

    def get_json(self, name: str, default: Any = None, **kw: Any) -> Any:
        return self.reservations.get(kw.get("mac", ""), default)

    def data_watch(self, *args: Any, **kw: Any) -> None:
        return None


def test_dnsmasq_is_restarted_with_a_fault_and_a_growing_delay(tmp_path, monkeypatch):
    from pvc_kernel.config import NodeConfig
    from pvc_plugins.net_vxlan import services

    reported: list[tuple[str, str]] = []
    monkeypatch.setattr(services.faults, "report",
                        lambda store, fid, message, delta: reported.append((fid, message)))
    monkeypatch.setattr(services.dhcp, "Dnsmasq", FakeDnsmasq)
    FakeDnsmasq.made = []
    daemon = SimpleNamespace(node="hv1", store=ReservationStore(), config=NodeConfig(
        node="hv1", cluster="c", zookeeper_hosts=["x"],
        plugin_sections={"net_vxlan": {"run_dir": str(tmp_path)}}))
    svc = services.Services(daemon)
    svc.raise_dhcp(100, SPEC)
    svc.raise_dhcp(100, SPEC)
    assert len(FakeDnsmasq.made) == 1 and reported == []          # nothing to change

    FakeDnsmasq.made[-1].alive = False                             # it died
    svc.raise_dhcp(100, SPEC)
    assert len(FakeDnsmasq.made) == 2 and FakeDnsmasq.made[-1].alive
    assert reported == [("net-dnsmasq-100", "Network 100: dnsmasq on hv1 ended unexpectedly "
                                            "(killed by signal 9); restarted")]
    FakeDnsmasq.made[-1].alive = False                             # and again, at once
    with pytest.raises(RuntimeError, match="restarting in"):
        svc.raise_dhcp(100, SPEC)
    assert len(FakeDnsmasq.made) == 2 and len(reported) == 1
    crashes, _when = svc.failures[100]
    svc.failures[100] = (crashes, time.monotonic() - 1)            # the delay is over
    svc.raise_dhcp(100, SPEC)
    assert len(FakeDnsmasq.made) == 3 and len(reported) == 2
    assert svc.failures[100][1] - time.monotonic() > 1             # 2 s now

    svc.raise_dhcp(100, {**SPEC, "dhcp4_end": "10.100.0.150"})   # new settings: a restart
    assert len(FakeDnsmasq.made) == 4 and len(reported) == 2
    assert FakeDnsmasq.made[2].stopping

    store = daemon.store
    store.reservations["52:54:00:00:00:01"] = {"mac": "52:54:00:00:00:01", "ip4": "10.100.0.5"}
    svc.raise_dhcp(100, {**SPEC, "dhcp4_end": "10.100.0.150"})
    assert FakeDnsmasq.made[-1].reloads == 0                       # hostsdir: read at once
    store.reservations.clear()
    svc.raise_dhcp(100, {**SPEC, "dhcp4_end": "10.100.0.150"})
    assert FakeDnsmasq.made[-1].reloads == 1 and len(FakeDnsmasq.made) == 4


def test_a_removed_or_taken_lease_socket_is_bound_again(tmp_path):
    """A second daemon under the same node name and run_dir (two labs' hv1) took the lease
    socket and removed it on its way out: the relay binds it again and gets events again."""
    from pvc_kernel.config import NodeConfig
    from pvc_plugins.net_vxlan import services

    daemon = SimpleNamespace(node="hv1", store=ReservationStore(), config=NodeConfig(
        node="hv1", cluster="c", zookeeper_hosts=["x"],
        plugin_sections={"net_vxlan": {"run_dir": str(tmp_path)}}))
    svc = services.Services(daemon)
    svc.run_dir.mkdir(parents=True)
    svc._bind_relay()
    path = str(dhcp.Files(str(svc.run_dir), 0).socket)
    env = {"PVC_LEASE_SOCKET": path, "PVC_LEASE_VNI": "100"}

    def relayed() -> bool:
        assert leasehook.main(["add", "52:54:00:aa:00:01", "10.100.0.5"], env) == 0
        return json.loads(svc.relay.recv(4096))["ip4"] == "10.100.0.5"

    assert relayed()
    svc._check_relay()                                  # intact: nothing changes
    assert relayed()
    os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(path)                                # the other daemon's socket
        svc._check_relay()
        assert relayed()
    os.unlink(path)                                     # ... removed when it stopped
    svc._check_relay()
    assert relayed()
    svc.stopping.set()
    svc.stop()
    assert not os.path.exists(path)
