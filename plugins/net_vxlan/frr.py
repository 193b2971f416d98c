"""FRR's configuration for BGP EVPN mode, as text and as the commands that change a running
bgpd into it (pure: no processes, no files).

One iBGP AS for the cluster, every session between VTEP addresses. Coordinators are the
route reflectors: a coordinator peers with every other node and has the non-coordinators
as its route-reflector clients (other coordinators are plain iBGP peers, so the reflectors
form a full mesh among themselves); a non-coordinator peers only with the coordinators. A
cluster where no node with a VTEP is a coordinator falls back to a full mesh. The only
address family is ``l2vpn evpn`` with ``advertise-all-vni``: zebra finds every VXLAN device
and bgpd advertises its VNI (type 3) and the MACs behind it (type 2).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

CONNECT_RETRY = 1        # s between attempts to reach a peer (FRR's default is 120)
KEEPALIVE, HOLD = 3, 9   # s: a dead peer's routes go within HOLD
COALESCE_MS = 100        # FRR's default 1000 ms delays the first updates by a second


@dataclass(frozen=True)
class Peer:
    """Another node as this node's bgpd sees it."""

    node: str
    vtep: str
    coordinator: bool


@dataclass(frozen=True)
class Bgp:
    """What this node's bgpd is to be: its identity and its sessions (address -> whether the
    peer is a route-reflector client of this node)."""

    asn: int
    router_id: str
    neighbors: dict[str, bool]


def _key(address: str) -> tuple[int, str]:
    try:
        return int(ipaddress.ip_address(address)), address
    except ValueError:
        return -1, address


def neighbors(coordinator: bool, peers: list[Peer]) -> dict[str, bool]:
    """The sessions of a node (``coordinator`` or not) among ``peers`` (the other nodes
    with a VTEP): {VTEP: route-reflector client?}, in address order."""
    mesh = not coordinator and not any(p.coordinator for p in peers)
    found: dict[str, bool] = {}
    for peer in sorted(peers, key=lambda p: _key(p.vtep)):
        if coordinator:
            found[peer.vtep] = not peer.coordinator
        elif peer.coordinator or mesh:
            found[peer.vtep] = False
    return found


def desired(asn: int, vtep: str, coordinator: bool, peers: list[Peer]) -> Bgp:
    return Bgp(asn, vtep, neighbors(coordinator, [p for p in peers if p.vtep != vtep]))


def zebra_conf(hostname: str, log_file: str) -> str:
    return f"hostname {hostname}\nlog file {log_file} informational\n"


def bgpd_conf(hostname: str, log_file: str, bgp: Bgp) -> str:
    """bgpd's whole configuration file."""
    lines = [f"hostname {hostname}", f"log file {log_file} informational",
             f"router bgp {bgp.asn}", f" bgp router-id {bgp.router_id}",
             " no bgp default ipv4-unicast", f" timers bgp {KEEPALIVE} {HOLD}",
             f" coalesce-time {COALESCE_MS}"]
    for address in bgp.neighbors:
        lines += _neighbor(address, bgp.asn, " ")
    lines.append(" address-family l2vpn evpn")
    for address, client in bgp.neighbors.items():
        lines += _activate(address, client, "  ")
    lines += ["  advertise-all-vni", " exit-address-family", "exit", ""]
    return "\n".join(lines)


def _neighbor(address: str, asn: int, indent: str = "") -> list[str]:
    return [f"{indent}neighbor {address} remote-as {asn}",
            f"{indent}neighbor {address} timers connect {CONNECT_RETRY}"]


def _activate(address: str, client: bool, indent: str = "") -> list[str]:
    lines = [f"{indent}neighbor {address} activate"]
    if client:
        lines.append(f"{indent}neighbor {address} route-reflector-client")
    return lines


@dataclass(frozen=True)
class Running:
    """What matters of a running bgpd's configuration (``show running-config``)."""

    asn: int | None
    router_id: str | None
    neighbors: frozenset[str]
    activated: frozenset[str]
    clients: frozenset[str]
    advertise_all_vni: bool


def parse_running(text: str) -> Running:
    """The parts of ``show running-config`` that ``changes`` compares."""
    asn = router_id = None
    neighbors: set[str] = set()
    activated: set[str] = set()
    clients: set[str] = set()
    advertise = in_evpn = False
    for raw in text.splitlines():
        words = raw.split()
        if not words:
            continue
        if words[:2] == ["router", "bgp"] and len(words) >= 3 and words[2].isdigit():
            asn = int(words[2])
        elif words[:2] == ["bgp", "router-id"] and len(words) == 3:
            router_id = words[2]
        elif words == ["address-family", "l2vpn", "evpn"]:
            in_evpn = True
        elif words[0] in ("exit-address-family", "exit"):
            in_evpn = False
        elif words[0] == "neighbor" and len(words) >= 3:
            if words[2] == "remote-as":
                neighbors.add(words[1])
            elif in_evpn and words[2] == "activate":
                activated.add(words[1])
            elif in_evpn and words[2] == "route-reflector-client":
                clients.add(words[1])
        elif in_evpn and words == ["advertise-all-vni"]:
            advertise = True
    return Running(asn, router_id, frozenset(neighbors), frozenset(activated),
                   frozenset(clients), advertise)


def needs_restart(running: Running, want: Bgp) -> bool:
    """True if bgpd must be started again with a new file: another AS or router id (a
    running bgpd cannot take a second ``router bgp``)."""
    return running.asn != want.asn or running.router_id != want.router_id


def changes(running: Running, want: Bgp) -> list[str]:
    """The vtysh commands (for ``configure terminal``) that turn ``running`` into ``want``
    without touching the sessions that stay; [] if it is right. Only for the same AS and
    router id (see ``needs_restart``)."""
    gone = sorted(running.neighbors - set(want.neighbors), key=_key)
    added = [a for a in want.neighbors if a not in running.neighbors]
    evpn: list[str] = []
    for address, client in want.neighbors.items():
        if address not in running.activated or address in added:
            evpn.append(f"neighbor {address} activate")
        if client and address not in running.clients:
            evpn.append(f"neighbor {address} route-reflector-client")
        elif not client and address in running.clients:
            evpn.append(f"no neighbor {address} route-reflector-client")
    if not running.advertise_all_vni:
        evpn.append("advertise-all-vni")
    body = [f"no neighbor {a}" for a in gone]
    for address in added:
        body += _neighbor(address, want.asn)
    if evpn:
        body += ["address-family l2vpn evpn", *evpn, "exit-address-family"]
    return [f"router bgp {want.asn}", *body, "exit"] if body else []
