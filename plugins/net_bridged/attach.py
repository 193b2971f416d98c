"""What VM NICs attach to: the bridge ``vmbr<vni>`` of each network (hook
``pvc_network_devices``), and the removal check that asks which VMs use a network (hook
``pvc_network_users``)."""

from __future__ import annotations

import re
from typing import Any

from pvc_kernel.sdk import contracts
from pvc_plugins.net_bridged import keys

BRIDGE = re.compile(r"vmbr(\d+)")


def describe(store: Any, devices: list[str]) -> dict[str, contracts.NetworkDevice]:
    """Every ``vmbr<vni>`` among ``devices``: its network, or an error when there is none,
    the nodes that report the bridge up, and its live DHCP leases."""
    out: dict[str, contracts.NetworkDevice] = {}
    for dev in devices:
        m = BRIDGE.fullmatch(dev)
        if m is None:
            continue
        vni = int(m.group(1))
        spec = store.get_json("network", vni=vni)
        if not isinstance(spec, dict) or not spec.get("description"):
            out[dev] = {"network": None, "vni": vni, "nettype": None, "nodes": [],
                        "leases": {}, "error": f"no network has VNI {vni} (pvc network list)"}
            continue
        up = [node for node in store.children("network.nodes", vni=vni)
              if (store.get_json("network.node", vni=vni, node=node) or {}).get("state")
              == keys.UP]
        out[dev] = {"network": spec["description"], "vni": vni,
                    "nettype": spec.get("nettype"), "nodes": up, "leases": leases(store, vni),
                    "error": None}
    return out


def leases(store: Any, vni: int) -> dict[str, str]:
    """MAC -> IPv4 address of the network's live DHCP leases (``network.lease``)."""
    out = {}
    for mac in store.children("network.leases", vni=vni):
        record = store.get_json("network.lease", vni=vni, mac=mac)
        if isinstance(record, dict) and record.get("ip4"):
            out[mac.lower()] = str(record["ip4"])
    return out


def users(plugins: Any, store: Any, vni: int) -> list[str]:
    """The VMs (any plugin's) with a NIC on network ``vni``'s bridge."""
    if plugins is None:
        return []
    bridge = keys.bridge_name(vni)
    names: set[str] = set()
    for _name, answer in plugins.call_each("pvc_network_users", obj=f"network:{vni}",
                                           store=store, devices=[bridge]):
        if isinstance(answer, dict):
            names.update(answer.get(bridge) or [])
    return sorted(names)
