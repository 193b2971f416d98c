"""Nodes simulated as network namespaces for the network plugins' integration tests (the
pattern of tests/integration/test_net_devices.py): each node is a ``PluginHost`` with its
own ``Store`` session and ``Bus``; ``pvc_node_start`` runs on a thread that entered the
node's namespace, so the threads the plugins start there (and the processes those fork)
live in it, while kazoo's threads stay on the host and reach ZooKeeper over loopback."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Any

from pvc_kernel.bus import Bus
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store
from pvc_lab import netns

PING = "/usr/bin/ping"


@dataclass
class Node:
    name: str
    ns: str
    address: str                      # underlay (VTEP)
    store: Store
    host: PluginHost = field(default_factory=PluginHost)
    bus: Bus | None = None
    daemon: Any = None

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

    def __init__(self, node: Node, config: Any) -> None:
        self.node = node.name
        self.store = node.store
        self.plugins = node.host
        self.config = config
        self.bus: Bus | None = None


def ip(ns: str, *args: str) -> str:
    return netns.ip("-n", ns, *args).stdout


def link(ns: str, name: str) -> dict[str, Any] | None:
    proc = netns.ip("-n", ns, "-j", "-d", "link", "show", name, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def fdb(ns: str, dev: str) -> list[dict[str, Any]]:
    out = subprocess.run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", dev],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


def pings(ns: str, target: str, wait: float = 1) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, PING, "-n", "-c", "1", "-W", str(wait),
                           target], capture_output=True, timeout=10).returncode == 0
