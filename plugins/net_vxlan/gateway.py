"""A managed network's gateway addresses on ``vmbr<vni>`` (the primary only), through
netlink, and the announcements that make guests follow a moved gateway at once.

``vmbr<vni>`` belongs to PVC, so its global addresses are exactly the network's gateways on
the primary and none elsewhere (link-local addresses are left alone). IPv6 gateways are
added without duplicate address detection (``IFA_F_NODAD``): the old primary dropped the
address before this one raises it, and a tentative address would neither answer nor be
usable as the source of the announcement.

Announcements: a gratuitous ARP request (sender = target = the gateway, from the bridge's
MAC, broadcast) per IPv4 gateway, and an unsolicited neighbour advertisement (router +
override flags, to all nodes) per IPv6 gateway, both from raw sockets: neighbours with an
entry for the gateway replace the old primary's MAC with ours.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from pathlib import Path
from typing import Any

from pvc_plugins.net_vxlan.devices import DeviceError, netlink

log = logging.getLogger("pvc_plugins.net_vxlan")

IFA_F_NODAD = 0x02
RT_SCOPE_UNIVERSE = 0
ETH_P_ARP = 0x0806
ND_NEIGHBOR_ADVERT = 136
NA_ROUTER_OVERRIDE = 0xA0000000
ND_OPT_TARGET_LLADDR = 2


FORWARDING = {4: "/proc/sys/net/ipv4/conf/all/forwarding",
              6: "/proc/sys/net/ipv6/conf/all/forwarding"}


def route(versions: set[int]) -> list[int]:
    """Turn on IP forwarding (this namespace's) for the IP versions the gateways use: the
    primary routes between the managed networks and out of them. Returns the versions it
    turned on (it never turns forwarding off: other things on the node may route too)."""
    turned = []
    for version in sorted(versions):
        path = Path(FORWARDING[version])
        if path.read_text().strip() != "1":
            path.write_text("1\n")
            turned.append(version)
    return turned


def wanted(spec: dict[str, Any]) -> list[str]:
    """The network's gateway addresses as ``address/prefix`` (IPv4 first)."""
    out = []
    for net, gw in (("ip4_network", "ip4_gateway"), ("ip6_network", "ip6_gateway")):
        if spec.get(net) and spec.get(gw):
            out.append(f"{spec[gw]}/{ipaddress.ip_network(spec[net]).prefixlen}")
    return out


def _index(ipr: Any, bridge: str) -> int:
    found = ipr.link_lookup(ifname=bridge)
    if not found:
        raise DeviceError(f"{bridge} does not exist (yet) on this node")
    return found[0]


def _present(ipr: Any, index: int) -> set[str]:
    """The global addresses of the device, as ``address/prefix``."""
    return {f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"
            for m in ipr.get_addr(index=index) if m["scope"] == RT_SCOPE_UNIVERSE}


def ensure(bridge: str, addresses: list[str], ipr: Any = None) -> tuple[list[str], list[str]]:
    """Make ``bridge``'s global addresses exactly ``addresses``; returns (added, removed)."""
    with netlink(ipr) as ipr:
        index = _index(ipr, bridge)
        have = _present(ipr, index)
        added = [a for a in addresses if a not in have]
        removed = sorted(have - set(addresses))
        for cidr in removed:
            address, prefix = cidr.split("/")
            ipr.addr("del", index=index, address=address, prefixlen=int(prefix))
        for cidr in added:
            address, prefix = cidr.split("/")
            flags = IFA_F_NODAD if ":" in address else 0
            ipr.addr("add", index=index, address=address, prefixlen=int(prefix), flags=flags)
    return added, removed


def hold(device: str, cidr: str, present: bool, ipr: Any = None) -> bool:
    """Add (``present``) or remove one address of ``device`` (a floating IP: the device's
    other addresses are left alone); True if that changed anything."""
    address, prefix = cidr.split("/")
    with netlink(ipr) as ipr:
        index = _index(ipr, device)
        has = cidr in _present(ipr, index)
        if has == present:
            return False
        if present:
            flags = IFA_F_NODAD if ":" in address else 0
            ipr.addr("add", index=index, address=address, prefixlen=int(prefix), flags=flags)
        else:
            ipr.addr("del", index=index, address=address, prefixlen=int(prefix))
    return True


SERVICE_DEVICE = "lo"
SERVICE_LABEL = "lo:pvcsvc"


def service_addresses(ipr: Any = None) -> set[str]:
    """The service addresses held here (IPv4 on ``lo``, labelled ``SERVICE_LABEL``)."""
    with netlink(ipr) as ipr:
        index = _index(ipr, SERVICE_DEVICE)
        return {f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"
                for m in ipr.get_addr(index=index)
                if m.get_attr("IFA_LABEL") == SERVICE_LABEL}


def hold_services(wanted: set[str], ipr: Any = None) -> tuple[list[str], list[str]]:
    """Make the held service addresses exactly ``wanted`` (IPv4 ``address/prefix``);
    (added, removed). They live on ``lo``, not on the bridges: a dnsmasq per network binds
    every address of its bridge, and two cannot bind one address. Guests reach them through
    their gateway (this node), and this node answers ARP for them on every bridge."""
    with netlink(ipr) as ipr:
        index = _index(ipr, SERVICE_DEVICE)
        have = service_addresses(ipr)
        added, removed = sorted(wanted - have), sorted(have - wanted)
        for cidr in removed:
            address, prefix = cidr.split("/")
            ipr.addr("del", index=index, address=address, prefixlen=int(prefix))
        for cidr in added:
            address, prefix = cidr.split("/")
            ipr.addr("add", index=index, address=address, prefixlen=int(prefix),
                     label=SERVICE_LABEL)
    return added, removed


def drop(bridge: str, ipr: Any = None) -> list[str]:
    """Remove every global address of ``bridge`` (absent bridge: nothing to do)."""
    with netlink(ipr) as ipr:
        if not ipr.link_lookup(ifname=bridge):
            return []
        return ensure(bridge, [], ipr)[1]


def quiet(bridge: str) -> bool:
    """Keep ``bridge`` from configuring itself from router advertisements (the primary's
    own, or those reaching a secondary over the VXLAN): its only global addresses are the
    gateways. False when the bridge does not exist (yet). Through /proc/sys, which answers
    for the calling thread's network namespace."""
    base = Path("/proc/sys/net/ipv6/conf") / bridge
    if not base.is_dir():
        return False
    for name in ("accept_ra", "autoconf"):
        path = base / name
        if path.read_text().strip() != "0":
            path.write_text("0\n")
    return True


def _mac(ipr: Any, bridge: str) -> bytes:
    link = ipr.get_links(_index(ipr, bridge))[0]
    return bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))


def announce(bridge: str, addresses: list[str], ipr: Any = None) -> None:
    """A gratuitous ARP or unsolicited NA for each of ``addresses`` on ``bridge``; a send
    that fails is logged, never raised (the guests then learn at their next lookup)."""
    with netlink(ipr) as ipr:
        index = _index(ipr, bridge)
        mac = _mac(ipr, bridge)
    for cidr in addresses:
        address = cidr.split("/")[0]
        try:
            if ":" in address:
                _unsolicited_na(bridge, index, mac, address)
            else:
                _gratuitous_arp(bridge, mac, address)
        except OSError as exc:
            log.warning("net_vxlan: cannot announce gateway %s on %s: %s", address, bridge, exc)


def arp_frame(mac: bytes, address: str) -> bytes:
    """An Ethernet broadcast ARP request in which sender and target are ``address``."""
    ip = socket.inet_aton(address)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, b"\0" * 6, ip)
    return b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP) + arp


def na_message(mac: bytes, address: str) -> bytes:
    """An ICMPv6 neighbour advertisement for ``address`` with our link-layer address (the
    kernel fills in the checksum of a raw ICMPv6 socket)."""
    return (struct.pack("!BBHI16s", ND_NEIGHBOR_ADVERT, 0, 0, NA_ROUTER_OVERRIDE,
                        socket.inet_pton(socket.AF_INET6, address))
            + struct.pack("!BB6s", ND_OPT_TARGET_LLADDR, 1, mac))


def _gratuitous_arp(bridge: str, mac: bytes, address: str) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
        s.bind((bridge, ETH_P_ARP))
        s.send(arp_frame(mac, address))


def _unsolicited_na(bridge: str, index: int, mac: bytes, address: str) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        try:
            s.bind((address, 0, 0, index))
        except OSError:
            pass            # still tentative: the kernel picks the link-local source
        s.sendto(na_message(mac, address), ("ff02::1", 0, 0, index))
