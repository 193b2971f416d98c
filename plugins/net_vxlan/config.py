"""The plugin's section of ``pvcnoded.yaml`` (``plugins.net_vxlan``), declared in
``SETTINGS`` (``pvcnoded --help-config``, docs/config.md)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from pvc_kernel.sdk import Setting, Settings

NAME = "net_vxlan"
STATIC = "static"
EVPN = "evpn"
VXLAN_OVERHEAD = 50


def floating(entry: str) -> tuple[str, str]:
    """``"A.B.C.D/NN DEVICE"`` (or IPv6) as (address/prefix, device); ValueError if bad."""
    parts = str(entry).split()
    if len(parts) != 2:
        raise ValueError(f"{entry!r} is not 'ADDRESS/PREFIX DEVICE'")
    iface = ipaddress.ip_interface(parts[0])
    if "/" not in parts[0]:
        raise ValueError(f"{entry!r} has no prefix length")
    return f"{iface.ip}/{iface.network.prefixlen}", parts[1]


def _floating_ips(value: list) -> str | None:
    for entry in value:
        try:
            floating(entry)
        except ValueError as exc:
            return f"must be a list of 'ADDRESS/PREFIX DEVICE': {exc}"
    return None


def _ipv4(value: str) -> str | None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return "must be an IPv4 address"
    return None


SETTINGS = Settings(
    about="Managed networks: one VXLAN (UDP 4789) per network between the nodes' VTEPs,\n"
          "bridged into vmbr<vni>.",
    keys=(
        Setting("cluster_device", str, None,
                "the device VXLAN traffic leaves by (the cluster network). Unset: managed "
                "networks fail on this node"),
        Setting("vtep_address", str, None,
                "this node's VTEP address (default: the first IPv4 address of "
                "cluster_device)", check=_ipv4),
        Setting("cluster_mtu", int, 1500, "the MTU of cluster_device: a managed network may "
                "have at most this minus 50", minimum=626, maximum=65535),
        Setting("mode", str, STATIC,
                "static: flood to every other node's VTEP (head-end replication entries "
                "written by PVC); evpn: FRR (zebra + bgpd) on every node learns MACs and "
                "VTEPs by BGP EVPN (iBGP, coordinators as route reflectors)",
                choices=(STATIC, EVPN)),
        Setting("bgp_as", int, 65001, "evpn: the cluster's BGP AS number (every node the "
                "same)", minimum=1, maximum=4294967295),
        Setting("frr_dir", str, "/run/pvc/frr", "evpn: the directory of this node's FRR "
                "daemons (configs, pid files, sockets, logs; owned by user frr)"),
        # The primary's services of managed networks (services.py, dhcp.py, gateway.py).
        Setting("run_dir", str, "/run/pvc/net_vxlan", "where the primary keeps each "
                "network's dnsmasq files (pid, leases, reservations) and the lease socket, "
                "in <run_dir>/<node>; dnsmasq (user nobody) must be able to read them"),
        Setting("dhcp_lease_time", int, 172800, "DHCPv4 lease time in seconds (the "
                "original's 48 h)", minimum=120),
        Setting("retry_interval", float, 2.0, "seconds between tries to raise a managed "
                "network's services that could not be raised (bridge not built yet, dnsmasq "
                "failing)", minimum=0.2),
        Setting("handover_timeout", float, 30.0, "the longest becoming primary or secondary "
                "waits for the network services to be raised or dropped", minimum=1),
        Setting("floating_ips", list, [], "addresses only the primary holds, each "
                "'ADDRESS/PREFIX DEVICE' (e.g. '10.0.0.250/24 eth0'): the cluster's and the "
                "upstream floating IPs. They move with the primary (dropped by the old one "
                "first, then raised and announced by gratuitous ARP / unsolicited NA), so "
                "anything listening on every address (pvcapid with listen_address 0.0.0.0) "
                "answers on them", check=_floating_ips),
    ))


@dataclass(frozen=True)
class VxlanConfig:
    cluster_device: str | None = None
    vtep_address: str | None = None
    cluster_mtu: int = 1500
    mode: str = STATIC
    bgp_as: int = 65001
    frr_dir: str = "/run/pvc/frr"

    @property
    def max_mtu(self) -> int:
        return self.cluster_mtu - VXLAN_OVERHEAD


def load(config: Any) -> VxlanConfig:
    """The plugin's settings from a ``pvc_kernel.config.NodeConfig`` (validated at start)."""
    v = SETTINGS.values(config, NAME)
    return VxlanConfig(v["cluster_device"], v["vtep_address"], v["cluster_mtu"], v["mode"],
                       v["bgp_as"], v["frr_dir"])
