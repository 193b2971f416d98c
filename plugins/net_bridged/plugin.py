"""The ``net_bridged`` plugin (entry point ``net_bridged`` in ``pvc.plugins`` names
``NetBridgedPlugin``): the network model every network plugin shares (``/networks``, the
``/network`` API routes, ``pvc network``), each node's bridges ``vmbr<vni>`` (``agent``),
and the ``bridged`` network type: the cluster's VLAN ``<bridge_device>.<vni>`` as the
bridge's port (``devices``). pyroute2 is imported only on nodes.
"""

from __future__ import annotations

from typing import Any

from pvc_kernel.sdk import Settings, hookimpl
from pvc_plugins.net_bridged import config, keys

BRIDGED = "bridged"


class NetBridgedPlugin:
    """One per daemon: ``agent`` reconciles this node's network devices (pvcnoded only)."""

    def __init__(self) -> None:
        self.agent: Any = None

    @hookimpl
    def pvc_config_settings(self) -> Settings:
        """``plugins.net_bridged`` (``pvc_plugins.net_bridged.config.SETTINGS``)."""
        return config.SETTINGS

    @hookimpl
    def pvc_schema_keys(self) -> list[Any]:
        return list(keys.KEYS)

    @hookimpl
    def pvc_network_types(self) -> dict[str, str]:
        return {BRIDGED: "a VLAN of the nodes' bridge_device, bridged into vmbr<vni>; no "
                         "PVC services on it"}

    @hookimpl
    def pvc_node_static(self, daemon: Any) -> dict[str, Any]:
        """``max_mtu_bridged``: the largest MTU a bridged network may have here (the API
        refuses more than the smallest of the nodes')."""
        return {f"max_mtu_{BRIDGED}": config.load(daemon.config).bridge_mtu}

    @hookimpl
    def pvc_health_checks(self, daemon: Any) -> list[Any]:
        """``network``: the networks built here and their devices up."""
        from pvc_plugins.net_bridged.health import NetworkCheck

        return [NetworkCheck(lambda: self.agent)]

    @hookimpl
    def pvc_node_start(self, daemon: Any) -> None:
        """Build this node's bridges for every network and keep them as ZooKeeper says."""
        from pvc_plugins.net_bridged.agent import Agent

        self.agent = Agent(daemon, config.load(daemon.config))
        self.agent.start()

    @hookimpl
    def pvc_node_stop(self, daemon: Any) -> None:
        """Stop watching; the devices stay (a restart must not flap a link)."""
        agent, self.agent = self.agent, None
        if agent is not None:
            agent.stop()

    @hookimpl
    def pvc_event(self, daemon: Any, event: Any) -> None:
        """Network and node changes (``net:*``) and the reconcile timer."""
        if self.agent is not None and event.obj.startswith("net:"):
            self.agent.on_event(event)

    @hookimpl
    def pvc_network_port(self, daemon: Any, network: dict[str, Any]) -> dict[str, Any] | None:
        """Bridged networks: ``<bridge_device>.<vni>``, made if missing."""
        if network.get("nettype") != BRIDGED:
            return None
        from pvc_plugins.net_bridged import devices

        return devices.bridged_port(config.load(daemon.config), network)

    @hookimpl
    def pvc_network_port_remove(self, daemon: Any, network: dict[str, Any]) -> bool | None:
        """Bridged networks: remove ``<bridge_device>.<vni>`` if PVC made it."""
        if network.get("nettype") != BRIDGED:
            return None
        from pvc_plugins.net_bridged import devices

        return devices.remove_bridged_port(config.load(daemon.config), network)

    @hookimpl
    def pvc_network_devices(self, store: Any, devices: list[str]) -> dict[str, Any]:
        """``vmbr<vni>``: its network and the nodes where it is up."""
        from pvc_plugins.net_bridged import attach

        return attach.describe(store, devices)

    @hookimpl
    def pvc_network_devices_stamp(self, store: Any) -> Any:
        """Every answer comes from the networks subtree: its generation in the view."""
        return store.generation("networks")

    @hookimpl
    def pvc_api_view_keys(self) -> list[str]:
        """Networks with their per-node state, reservations, leases and ACLs."""
        return ["networks"]

    @hookimpl
    def pvc_api_routes(self, api: Any) -> None:
        """``/network`` and ``/network/{vni}``."""
        from pvc_plugins.net_bridged import routes

        routes.add_to(api)

    @hookimpl
    def pvc_api_status(self, api: Any) -> dict[str, Any]:
        """``networks``: how many networks the cluster has."""
        from pvc_plugins.net_bridged import api as net_api

        return net_api.status(api)
