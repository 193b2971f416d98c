"""The ``net_vxlan`` plugin (entry point ``net_vxlan`` in ``pvc.plugins`` names
``NetVxlanPlugin``): the ``managed`` network type, one VXLAN ``vxlan<vni>`` per network as
the port of its bridge (built by net_bridged, which stores the networks), flooding to the
other nodes' VTEPs (``devices``). pyroute2 is imported only on nodes.
"""

from __future__ import annotations

import logging
from typing import Any

from pvc_kernel.sdk import Settings, hookimpl
from pvc_plugins.net_vxlan import config

log = logging.getLogger("pvc_plugins.net_vxlan")
MANAGED = "managed"


class NetVxlanPlugin:
    def __init__(self) -> None:
        self.services: Any = None      # the primary's network services (pvcnoded only)

    @hookimpl
    def pvc_config_settings(self) -> Settings:
        """``plugins.net_vxlan`` (``pvc_plugins.net_vxlan.config.SETTINGS``)."""
        return config.SETTINGS

    @hookimpl
    def pvc_network_types(self) -> dict[str, str]:
        return {MANAGED: "a VXLAN between the nodes (UDP 4789 on cluster_device), bridged "
                         "into vmbr<vni>"}

    @hookimpl
    def pvc_node_static(self, daemon: Any) -> dict[str, Any]:
        """``vtep``: this node's VTEP address, which the other nodes flood to."""
        from pvc_plugins.net_vxlan import devices

        vtep = devices.vtep_address(config.load(daemon.config))
        return {"vtep": vtep} if vtep else {}

    @hookimpl
    def pvc_network_port(self, daemon: Any, network: dict[str, Any]) -> dict[str, Any] | None:
        """Managed networks: ``vxlan<vni>`` with a flood entry per other node's VTEP."""
        if network.get("nettype") != MANAGED:
            return None
        from pvc_plugins.net_vxlan import devices

        cfg = config.load(daemon.config)
        return devices.vxlan_port(cfg, network, devices.peer_vteps(daemon, cfg))

    @hookimpl
    def pvc_network_port_remove(self, daemon: Any, network: dict[str, Any]) -> bool | None:
        """Managed networks: remove ``vxlan<vni>``."""
        if network.get("nettype") != MANAGED:
            return None
        from pvc_plugins.net_vxlan import devices

        return devices.remove_vxlan_port(network)

    # -- the primary's services of managed networks (services.py) -------------------------
    @hookimpl
    def pvc_node_start(self, daemon: Any) -> None:
        """Start the network services' thread (it drops what a crashed pvcnoded left)."""
        from pvc_plugins.net_vxlan.services import Services

        self.services = Services(daemon)
        self.services.start()

    @hookimpl
    def pvc_node_stop(self, daemon: Any) -> None:
        services, self.services = self.services, None
        if services is not None:
            services.stop()

    @hookimpl
    def pvc_become_primary(self, daemon: Any) -> None:
        """Gateways, then dnsmasq, of every managed network; returns when they are up."""
        if self.services is not None:
            self.services.become_primary()

    @hookimpl
    def pvc_become_secondary(self, daemon: Any) -> None:
        """Drop them (reverse order); returns when they are gone."""
        if self.services is not None:
            self.services.become_secondary()

    @hookimpl
    def pvc_event(self, daemon: Any, event: Any) -> None:
        """Network changes (net_bridged's ``net:*`` watches) while primary."""
        if self.services is not None and event.obj.startswith("net:"):
            self.services.on_event(event)
