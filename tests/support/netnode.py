"""A simulated PVC node for network tests: a network namespace in which the real network
plugins run (their ``pvc_node_start`` called on a thread that entered the namespace), with
its own ZooKeeper session, bus and plugin host (the pattern of
tests/integration/test_net_devices.py), and "VMs" as veths or namespaces on its bridges."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

from pvc_kernel.bus import Bus
from pvc_kernel.config import NodeConfig
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store
from pvc_lab import netns

PING = "/usr/bin/ping"


@dataclass
class Node:
    name: str
    ns: str
    store: Store
    host: PluginHost = field(default_factory=PluginHost)
    bus: Bus | None = None
    daemon: Any = None

    def plugin(self, name: str) -> Any:
        return self.host.plugin(name)

    def start(self) -> None:
        """What pvcnoded does for the plugins, on a thread inside the node's namespace."""
        def handle(event: Any) -> None:
            self.host.call_each("pvc_event", obj=event.obj, daemon=self.daemon, event=event)

        self.bus = Bus(handle, workers=4)
        self.bus.store = self.store
        self.daemon.bus = self.bus
        static = netns.call_in(self.ns, self.host.call_each, "pvc_node_static",
                               daemon=self.daemon)
        self.store.set("node.static", {k: v for _n, extra in static for k, v in extra.items()},
                       node=self.name)
        netns.call_in(self.ns, self.host.call_each, "pvc_node_start", daemon=self.daemon)

    def stop(self) -> None:
        self.host.call_each("pvc_node_stop", daemon=self.daemon)
        if self.bus is not None:
            self.bus.stop()
            self.bus = None


class Daemon:
    """The parts of pvcnoded's daemon object the network plugins use."""

    def __init__(self, node: Node, config: NodeConfig) -> None:
        self.node = node.name
        self.store = node.store
        self.plugins = node.host
        self.config = config
        self.bus: Bus | None = None


def ip(ns: str, *args: str, check: bool = True) -> str:
    return netns.ip("-n", ns, *args, check=check).stdout


def addresses(ns: str, dev: str) -> set[str]:
    """The global addresses of ``dev`` in ``ns`` as ``address/prefix``."""
    proc = netns.ip("-n", ns, "-j", "addr", "show", dev, check=False)
    if proc.returncode != 0:
        return set()
    return {f"{a['local']}/{a['prefixlen']}" for link in json.loads(proc.stdout)
            for a in link.get("addr_info", []) if a.get("scope") == "global"}


def mac(ns: str, dev: str) -> str:
    return json.loads(netns.ip("-n", ns, "-j", "link", "show", dev).stdout)[0]["address"]


def neighbour(ns: str, address: str) -> str | None:
    """The link-layer address ``ns`` has for ``address``, if any."""
    out = json.loads(netns.ip("-n", ns, "-j", "neigh", "show", address).stdout or "[]")
    return out[0].get("lladdr") if out else None


def pings(ns: str, target: str, wait: float = 1) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, PING, "-n", "-c", "1", "-W", str(wait),
                           target], capture_output=True, timeout=10).returncode == 0
