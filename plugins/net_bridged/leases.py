"""DHCP reservations and leases of a managed network (pure functions).

A reservation (desired, ``/networks/<vni>/reservations/<mac>``) is
``{"mac", "ip4", "hostname"}``; a lease (observed, ``/networks/<vni>/leases/<mac>``,
written by the node serving DHCP) is ``{"mac", "ip4", "hostname", "expiry", "client_id",
"node"}``. ``reservation`` checks a new one against its network and the others and raises
``model.ModelError`` naming the first bad field; ``wire`` gives the API v1 Lease shape.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pvc_plugins.net_bridged.model import SERVICES_TYPE, ModelError

_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
STATIC = "static"


def mac_address(value: str, field: str = "macaddress") -> str:
    """``value`` as a lower-case, colon-separated MAC; ModelError naming ``field`` if not."""
    mac = str(value or "").strip().lower()
    if not _MAC.match(mac):
        raise ModelError(field, f"{value!r} is not a MAC address (six hex pairs separated "
                                "by ':')")
    return mac


def reservation(network: dict[str, Any], existing: list[dict[str, Any]], mac: str,
                ip4: str, hostname: str | None) -> dict[str, Any]:
    """A checked new reservation of ``mac`` → ``ip4`` on ``network`` (a stored
    ``NetworkSpec``), given the network's ``existing`` reservations."""
    if network.get("nettype") != SERVICES_TYPE or not network.get("ip4_network"):
        raise ModelError("vni", f"network {network.get('vni')} is not a managed network with "
                                "an IPv4 network: PVC serves no DHCP on it")
    mac = mac_address(mac)
    try:
        address = ipaddress.IPv4Address(str(ip4 or "").strip())
    except ValueError:
        raise ModelError("ipaddress", f"{ip4!r} is not an IPv4 address") from None
    net = ipaddress.IPv4Network(network["ip4_network"])
    ends = (net.network_address, net.broadcast_address) if net.prefixlen < 31 else ()
    if address not in net or address in ends:
        raise ModelError("ipaddress", f"{address} is not a host address of {net}")
    if str(address) == network.get("ip4_gateway"):
        raise ModelError("ipaddress", f"{address} is the network's gateway")
    if hostname in ("", None):
        hostname = None
    elif not _HOSTNAME.match(hostname):
        raise ModelError("hostname", f"{hostname!r} is not a host name (letters, digits and "
                                     "'-', at most 63)")
    for other in existing:
        if other.get("mac") == mac:
            raise ModelError("macaddress", f"{mac} already has a reservation "
                                           f"({other.get('ip4')})")
        if other.get("ip4") == str(address):
            raise ModelError("ipaddress", f"{address} is already reserved for "
                                          f"{other.get('mac')}")
    return {"mac": mac, "ip4": str(address), "hostname": hostname}


def wire(record: dict[str, Any], static: bool) -> dict[str, Any]:
    """A reservation (``static``) or a lease as API v1 answers it."""
    return {"hostname": record.get("hostname") or None,
            "ip4_address": record.get("ip4") or "",
            "mac_address": record.get("mac") or "",
            "timestamp": STATIC if static else str(int(record.get("expiry") or 0))}


def listing(reservations: list[dict[str, Any]], leases: list[dict[str, Any]],
            match: Any = None, static_only: bool = False) -> list[dict[str, Any]]:
    """Reservations (by MAC) then dynamic leases (by MAC) in the wire shape; ``match``
    filters on the MAC; a lease of a reserved MAC is listed as well (it is the live one)."""
    keep = match or (lambda _mac: True)
    out = [wire(r, True) for r in sorted(reservations, key=lambda r: r.get("mac", ""))
           if keep(r.get("mac", ""))]
    if not static_only:
        out += [wire(x, False) for x in sorted(leases, key=lambda x: x.get("mac", ""))
                if keep(x.get("mac", ""))]
    return out


def named(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The records whose MAC (any case), host name or IPv4 address is ``name``."""
    low = name.strip().lower()
    return [r for r in records
            if low in (str(r.get("mac") or "").lower(), str(r.get("ip4") or ""))
            or (r.get("hostname") and r["hostname"] == name)]
