"""The route table of ``/network/{vni}/lease*`` (added by ``routes.add_to``)."""

from __future__ import annotations

from typing import Any

from pvc_api.sdk import Param, Route, array_of, ref
from pvc_plugins.net_bridged import lease_api as h

TAG = "network"
MSG = ref("Message")
NET = Param("vni", location="path", description="The network's VNI or description")
MAC = Param("mac", location="path", description="A MAC address (on DELETE also a host name "
            "or IPv4 address of a reservation or lease)")
IP = Param("ipaddress", required=True, description="The reserved IPv4 address, inside the "
           "network and not its gateway")
HOSTNAME = Param("hostname", description="The host name handed out with the address")
SCHEMAS: dict[str, dict[str, Any]] = {
    "Lease": {"type": "object",
              "required": ["hostname", "ip4_address", "mac_address", "timestamp"],
              "properties": {
                  "hostname": {"type": ["string", "null"]},
                  "ip4_address": {"type": "string"}, "mac_address": {"type": "string"},
                  "timestamp": {"type": "string", "description": "\"static\" for a "
                                "reservation, else the lease's expiry (epoch seconds)"}}},
}
LIST = {200: ("Reservations, then live leases", array_of("Lease")),
        404: ("None, or no such network", MSG), 400: ("Bad filter", MSG)}
WRITE = {200: ("Done", MSG), 400: ("Refused (the message names the field)", MSG),
         409: ("Changed meanwhile", MSG)}

ROUTES = [
    Route("GET", "/network/{vni}/lease", h.list_leases, "List DHCP reservations and leases",
          tag=TAG, params=(NET, Param("limit", description="Regex on the MAC address "
                                      "(fuzzy unless ^/$)"),
                           Param("static", "bool", description="Reservations only")),
          responses=LIST),
    Route("POST", "/network/{vni}/lease", h.add_reservation, "Add a DHCP reservation",
          tag=TAG, params=(NET, Param("macaddress", required=True, description="The "
                                      "client's MAC address (':' separated)"), IP, HOSTNAME),
          responses=WRITE),
    Route("GET", "/network/{vni}/lease/{mac}", h.get_lease, "The reservation and lease of "
          "one MAC address", tag=TAG, params=(NET, MAC), responses=LIST),
    Route("POST", "/network/{vni}/lease/{mac}", h.add_reservation, "Add a DHCP reservation "
          "for this MAC address", tag=TAG, params=(NET, MAC, IP, HOSTNAME), responses=WRITE),
    Route("DELETE", "/network/{vni}/lease/{mac}", h.remove_lease, "Remove a DHCP reservation "
          "or lease", tag=TAG, params=(NET, MAC), responses=WRITE),
]
