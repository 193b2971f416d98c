"""The route table of ``/network*`` (added to the API by ``pvc_api_routes``)."""

from __future__ import annotations

from typing import Any

from pvc_api.sdk import Param, Route, array_of, ref
from pvc_plugins.net_bridged import acl_api
from pvc_plugins.net_bridged import api as h

TAG = "network"
MSG = ref("Message")
NET = Param("vni", location="path", description="The network's VNI or description")
FIELDS = (
    Param("mtu", description="MTU (576-65535; empty: the largest the nodes allow)"),
    Param("domain", description="DNS domain (managed; default <description>.local)"),
    Param("name_servers", many=True,
          description="DNS servers handed out by DHCP (repeat the key, or comma-separated)"),
    Param("ip4_network", description="IPv4 network in CIDR form (managed)"),
    Param("ip4_gateway", description="IPv4 gateway address, in ip4_network (managed)"),
    Param("ip6_network", description="IPv6 network in CIDR form (managed)"),
    Param("ip6_gateway", description="IPv6 gateway (default: the network's first address)"),
    Param("dhcp4", "bool", description="Serve DHCPv4 (managed; needs dhcp4_start/end)"),
    Param("dhcp4_start", description="First address of the DHCPv4 range"),
    Param("dhcp4_end", description="Last address of the DHCPv4 range"),
)
DESCRIPTION = Param("description", description="A unique name (letters, digits, -_.)")
NEW_DESCRIPTION = Param("description", required=True,
                        description="A unique name (letters, digits, -_.)")
NETTYPE = Param("nettype", required=True, description="managed or bridged (the network "
                "types the installed plugins offer)")
NODE_REPORT = {"type": "object", "properties": {
    "state": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]},
    "bridge": {"type": ["string", "null"]}, "port": {"type": ["string", "null"]},
    "mtu": {"type": ["integer", "null"]}}}
SCHEMAS: dict[str, dict[str, Any]] = {
    "Network": {"type": "object",
                "required": ["vni", "description", "type", "mtu", "domain", "name_servers",
                             "ip4", "ip6"],
                "properties": {
                    "vni": {"type": "integer"}, "description": {"type": "string"},
                    "type": {"type": "string"}, "mtu": {"type": "string"},
                    "domain": {"type": "string"},
                    "name_servers": {"type": "array", "items": {"type": "string"}},
                    "ip4": {"type": "object"}, "ip6": {"type": "object"},
                    "nodes": {"type": "object", "additionalProperties": NODE_REPORT}}},
}


def _ok(what: str) -> dict:
    return {200: (what, MSG), 400: ("Refused (the message names the field)", MSG)}


ROUTES = [
    Route("GET", "/network", h.list_networks, "List networks", tag=TAG, params=(
        Param("limit", description="Regex on the VNI or description (fuzzy unless ^/$)"),),
        responses={200: ("The networks, by VNI", array_of("Network")),
                   404: ("None", MSG), 400: ("Bad filter", MSG)}),
    Route("POST", "/network", h.add_network, "Add a network", tag=TAG, params=(
        Param("vni", "int", required=True, description="The network's VNI (VLAN id for "
              "bridged networks)"), NEW_DESCRIPTION,
        NETTYPE, *FIELDS), responses=_ok("Added")),
    Route("GET", "/network/{vni}", h.get_network, "One network", tag=TAG, params=(NET,),
          responses={200: ("A one-element array", array_of("Network")),
                     404: ("No such network", MSG)}),
    Route("POST", "/network/{vni}", h.add_network, "Add a network with this VNI", tag=TAG,
          params=(NET, NEW_DESCRIPTION,
                  NETTYPE, *FIELDS), responses=_ok("Added")),
    Route("PUT", "/network/{vni}", h.modify_network, "Change a network (not its type)",
          tag=TAG, params=(NET, DESCRIPTION, *FIELDS), responses=_ok("Modified")),
    Route("DELETE", "/network/{vni}", h.remove_network, "Remove a network", tag=TAG,
          params=(NET, Param("force", "bool", description="Remove it even while VMs have "
                                                          "NICs on it")),
          responses={**_ok("Removed"), 409: ("VMs use it (not forced)", MSG)}),
]


def add_to(api: Any) -> None:
    from pvc_plugins.net_bridged import lease_routes

    for name, schema in {**SCHEMAS, **lease_routes.SCHEMAS}.items():
        api.add_schema(name, schema)
    for route in ROUTES + lease_routes.ROUTES:
        api.add_route(route)
    acl_api.add_to(api)
