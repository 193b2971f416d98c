"""The network model: checking and completing a network's fields (pure functions).

A network is stored as a ``pvc_kernel.contracts.NetworkSpec`` (a dict). ``build`` makes one
from the fields of a create request, ``change`` applies the fields of a modify request to a
stored one; both check everything and raise ``ModelError`` naming the first bad field.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

VNI_MAX = 16777215
MTU_MIN, MTU_MAX = 576, 65535
FIELDS = ("description", "mtu", "domain", "name_servers", "ip4_network", "ip4_gateway",
          "dhcp4", "dhcp4_start", "dhcp4_end", "ip6_network", "ip6_gateway")
ADDRESSED = ("domain", "ip4_network", "ip4_gateway", "dhcp4_start", "dhcp4_end",
             "ip6_network", "ip6_gateway")
"""Fields only a network with PVC services (gateway, DHCP, DNS) can have."""
SERVICES_TYPE = "managed"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                     r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class ModelError(ValueError):
    """A bad field: ``field`` names it, the text says why."""

    def __init__(self, field: str, text: str) -> None:
        super().__init__(f"Invalid parameter '{field}': {text}")
        self.field = field


def build(vni: int, nettype: str, fields: dict[str, Any], types: list[str]) -> dict[str, Any]:
    """A complete, checked network from a create request (``fields``: FIELDS, None =
    not given); ``types``: the network types the loaded plugins declared."""
    if not 1 <= vni <= VNI_MAX:
        raise ModelError("vni", f"must be between 1 and {VNI_MAX}, not {vni}")
    if nettype not in types:
        raise ModelError("nettype", f"{nettype!r} is not one of {', '.join(sorted(types))}")
    if not fields.get("description"):
        raise ModelError("description", "is required")
    spec: dict[str, Any] = {"vni": vni, "nettype": nettype, "description": "", "mtu": None,
                            "domain": "", "name_servers": [], "ip4_network": None,
                            "ip4_gateway": None, "dhcp4": False, "dhcp4_start": None,
                            "dhcp4_end": None, "ip6_network": None, "ip6_gateway": None}
    return change(spec, fields)


def change(stored: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with the given ``fields`` (None = unchanged; "" clears an optional
    field), checked as a whole."""
    spec = dict(stored)
    for name in FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        if spec["nettype"] != SERVICES_TYPE and name in ADDRESSED and value not in ("", False):
            raise ModelError(name, f"a {spec['nettype']} network has no PVC gateway, DHCP or "
                                   "DNS: only managed networks take it")
        spec[name] = _field(name, value)
    if spec["nettype"] == SERVICES_TYPE and not spec["domain"]:
        spec["domain"] = f"{spec['description']}.local"
    _check_ip4(spec)
    _check_ip6(spec)
    return spec


def _field(name: str, value: Any) -> Any:
    if name == "description":
        if not _NAME.match(value) or not value.isascii():
            raise ModelError(name, "must be 1-64 letters, digits, '-', '_' or '.', starting "
                                   f"with a letter or digit, not {value!r}")
        if value.isdigit():
            raise ModelError(name, f"{value!r} holds only digits: it would read as a VNI")
        return value
    if name == "mtu":
        if value == "":
            return None
        try:
            mtu = int(value)
        except (TypeError, ValueError):
            raise ModelError(name, f"{value!r} is not an integer") from None
        if not MTU_MIN <= mtu <= MTU_MAX:
            raise ModelError(name, f"must be between {MTU_MIN} and {MTU_MAX}, not {mtu}")
        return mtu
    if name == "domain":
        if value and not _DOMAIN.match(value):
            raise ModelError(name, f"{value!r} is not a DNS domain name")
        return value
    if name == "name_servers":
        servers = [s.strip() for item in value for s in str(item).split(",") if s.strip()]
        for server in servers:
            try:
                ipaddress.ip_address(server)
            except ValueError:
                raise ModelError(name, f"{server!r} is not an IP address") from None
        return servers
    if name == "dhcp4":
        return bool(value)
    if value == "":
        return None
    if name in ("ip4_network", "ip6_network"):
        version = 4 if name == "ip4_network" else 6
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ModelError(name, f"{value!r} is not an IPv{version} network in CIDR "
                                   f"form ({exc})") from None
        if net.version != version:
            raise ModelError(name, f"{value!r} is not an IPv{version} network")
        return str(net)
    version = 6 if name == "ip6_gateway" else 4
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ModelError(name, f"{value!r} is not an IPv{version} address") from None
    if address.version != version:
        raise ModelError(name, f"{value!r} is not an IPv{version} address")
    return str(address)


def _check_ip4(spec: dict[str, Any]) -> None:
    if not spec["ip4_network"]:
        for name in ("ip4_gateway", "dhcp4_start", "dhcp4_end"):
            if spec[name]:
                raise ModelError(name, "needs ip4_network")
        if spec["dhcp4"]:
            raise ModelError("dhcp4", "needs ip4_network")
        return
    net = ipaddress.IPv4Network(spec["ip4_network"])
    hosts = (net.network_address, net.broadcast_address) if net.prefixlen < 31 else ()
    if not spec["ip4_gateway"]:
        raise ModelError("ip4_gateway", "is required with ip4_network")
    gateway = ipaddress.IPv4Address(spec["ip4_gateway"])
    if gateway not in net or gateway in hosts:
        raise ModelError("ip4_gateway", f"{gateway} is not a host address of {net}")
    if not spec["dhcp4"]:
        spec["dhcp4_start"] = spec["dhcp4_end"] = None
        return
    bounds = []
    for name in ("dhcp4_start", "dhcp4_end"):
        if not spec[name]:
            raise ModelError(name, "is required when dhcp4 is on")
        address = ipaddress.IPv4Address(spec[name])
        if address not in net or address in hosts:
            raise ModelError(name, f"{address} is not a host address of {net}")
        bounds.append(address)
    if bounds[0] > bounds[1]:
        raise ModelError("dhcp4_end", f"{bounds[1]} is before dhcp4_start {bounds[0]}")
    if bounds[0] <= gateway <= bounds[1]:
        raise ModelError("ip4_gateway", f"{gateway} is inside the DHCP range "
                                        f"{bounds[0]}-{bounds[1]}")


def _check_ip6(spec: dict[str, Any]) -> None:
    if not spec["ip6_network"]:
        if spec["ip6_gateway"]:
            raise ModelError("ip6_gateway", "needs ip6_network")
        return
    net = ipaddress.IPv6Network(spec["ip6_network"])
    if not spec["ip6_gateway"]:
        spec["ip6_gateway"] = str(net.network_address + 1)
    gateway = ipaddress.IPv6Address(spec["ip6_gateway"])
    if gateway not in net or gateway == net.network_address:
        raise ModelError("ip6_gateway", f"{gateway} is not a host address of {net}")


def wire(spec: dict[str, Any]) -> dict[str, Any]:
    """The network as API v1 answers it (types as the original's clients expect)."""
    return {
        "vni": int(spec["vni"]),
        "description": spec["description"],
        "type": spec["nettype"],
        "mtu": "" if spec.get("mtu") is None else str(spec["mtu"]),
        "domain": spec.get("domain") or "",
        "name_servers": list(spec.get("name_servers") or []) or [""],
        "ip4": {"network": spec.get("ip4_network") or "None",
                "gateway": spec.get("ip4_gateway") or "None",
                "dhcp_flag": "True" if spec.get("dhcp4") else "False",
                "dhcp_start": spec.get("dhcp4_start") or "None",
                "dhcp_end": spec.get("dhcp4_end") or "None"},
        "ip6": {"network": spec.get("ip6_network") or "None",
                "gateway": spec.get("ip6_gateway") or "None",
                "dhcp_flag": "True" if spec.get("ip6_network") else "False"},
    }


def refuse_overlap(networks: list[dict[str, Any]], spec: dict[str, Any]) -> None:
    """ModelError naming ``ip4_network``/``ip6_network`` when another network's subnet
    overlaps this one's (one cluster routes them all)."""
    for field in ("ip4_network", "ip6_network"):
        mine = spec.get(field)
        if not mine:
            continue
        net = ipaddress.ip_network(mine)
        for other in networks:
            theirs = other.get(field)
            if other.get("vni") == spec.get("vni") or not theirs:
                continue
            if net.overlaps(ipaddress.ip_network(theirs)):
                raise ModelError(field, f"{mine} overlaps {theirs} of network "
                                        f"'{other.get('description')}'")


def refuse_mtu(spec: dict[str, Any], largest: int | None) -> None:
    """ModelError naming ``mtu`` when it is above ``largest``, the smallest maximum any node
    reported for the network's type (None: no node said)."""
    mtu = spec.get("mtu")
    if mtu is not None and largest is not None and mtu > largest:
        raise ModelError("mtu", f"{mtu} is above {largest}, the largest the nodes' devices "
                                f"allow for {spec.get('nettype')} networks")
