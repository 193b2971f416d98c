"""The ``net_vxlan`` plugin (entry point ``net_vxlan`` in ``pvc.plugins`` names
``NetVxlanPlugin``): the ``managed`` network type, one VXLAN ``vxlan<vni>`` per network as
the port of its bridge (built by net_bridged, which stores the networks), flooding to the
other nodes' VTEPs (``devices``), or in ``evpn`` mode learning them from FRR's BGP EVPN
(``frrd`` supervises zebra + bgpd, ``frr`` renders their configuration). pyroute2 is
imported only on nodes.
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
        self.frr: Any = None                 # frrd.Supervisor in evpn mode (pvcnoded only)
        self.watched: set[str] = set()
        self.services: Any = None            # the primary's network services (pvcnoded only)

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
        """``vtep``: this node's VTEP address, which the other nodes flood to;
        ``max_mtu_managed``: the largest MTU of a managed network here."""
        from pvc_plugins.net_vxlan import devices

        cfg = config.load(daemon.config)
        vtep = devices.vtep_address(cfg)
        return {f"max_mtu_{MANAGED}": cfg.max_mtu, **({"vtep": vtep} if vtep else {})}

    @hookimpl
    def pvc_network_port(self, daemon: Any, network: dict[str, Any]) -> dict[str, Any] | None:
        """Managed networks: ``vxlan<vni>`` with a flood entry per other node's VTEP."""
        if network.get("nettype") != MANAGED:
            return None
        from pvc_plugins.net_vxlan import devices

        cfg = config.load(daemon.config)
        peers = None if cfg.mode == config.EVPN else devices.peer_vteps(daemon, cfg)
        return devices.vxlan_port(cfg, network, peers)

    @hookimpl
    def pvc_network_port_remove(self, daemon: Any, network: dict[str, Any]) -> bool | None:
        """Managed networks: remove ``vxlan<vni>``."""
        if network.get("nettype") != MANAGED:
            return None
        from pvc_plugins.net_vxlan import devices

        return devices.remove_vxlan_port(network)

    @hookimpl
    def pvc_health_checks(self, daemon: Any) -> list[Any]:
        """``frr`` (BGP EVPN sessions) and ``dnsmasq`` (the primary's network services)."""
        from pvc_plugins.net_vxlan.health import DnsmasqCheck, FrrCheck

        return [FrrCheck(lambda: self.frr), DnsmasqCheck(lambda: self.services)]

    @hookimpl
    def pvc_node_start(self, daemon: Any) -> None:
        """Start the primary's network services' thread (it drops what a crashed pvcnoded
        left); evpn: start (or adopt) FRR in this thread's namespace; static: end an FRR of
        ours left from evpn mode."""
        from pvc_plugins.net_vxlan import devices, frrd
        from pvc_plugins.net_vxlan.services import Services

        self.services = Services(daemon)
        self.services.start()
        cfg = config.load(daemon.config)
        self.watched = set()                 # watches of an earlier bus are gone with it
        if cfg.mode != config.EVPN:
            ended = frrd.terminate(cfg.frr_dir)
            if ended:
                log.info("net_vxlan: static mode: ended FRR of evpn mode (pids %s)", ended)
            return
        self.frr = frrd.Supervisor(daemon, cfg, lambda: devices.vtep_address(cfg))
        self.frr.start()

    @hookimpl
    def pvc_node_stop(self, daemon: Any) -> None:
        """Stop the services (dropped if primary) and FRR's supervision; FRR keeps running
        so that a restart drops no EVPN route."""
        services, self.services = self.services, None
        if services is not None:
            services.stop()
        supervisor, self.frr = self.frr, None
        if supervisor is not None:
            supervisor.stop()

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
        """Network changes (net_bridged's ``net:*`` watches) for the primary's services;
        evpn: the nodes (net_bridged watches them and their static data), their coordinator
        states (watched here) and the reconcile timer: check bgpd's peers."""
        obj = event.obj
        if self.services is not None and obj.startswith("net:"):
            self.services.on_event(event)
        if self.frr is None:
            return
        if obj == "net:nodes":
            for node in getattr(event, "children", ()):
                if node not in self.watched:
                    self.watched.add(node)
                    daemon.bus.watch_data("node.coordinator_state", obj=f"vxlan:coord:{node}",
                                          node=node)
        if obj in ("net:nodes", "net:reconcile") or obj.startswith(("net:node:",
                                                                     "vxlan:coord:")):
            self.frr.request()
