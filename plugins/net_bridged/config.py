"""The plugin's section of ``pvcnoded.yaml`` (``plugins.net_bridged``), declared in
``SETTINGS`` (``pvcnoded --help-config``, docs/config.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pvc_kernel.sdk import Setting, Settings

NAME = "net_bridged"

SETTINGS = Settings(
    about="Client networks: the network model, each node's bridges vmbr<vni>, and bridged\n"
          "networks on the VLANs of bridge_device (<bridge_device>.<vni>).",
    keys=(
        Setting("bridge_device", str, None,
                "the device that carries the cluster's client VLANs; a bridged network "
                "uses <bridge_device>.<vni> (made if missing; an existing one is used as it "
                "is). Unset: bridged networks fail on this node"),
        Setting("bridge_mtu", int, 1500, "the MTU of bridge_device: the largest a bridged "
                "network may have", minimum=576, maximum=65535),
        Setting("reconcile_interval", float, 60.0,
                "seconds between full checks of this node's network devices "
                "(changes in ZooKeeper are acted on at once)", minimum=5),
    ))


@dataclass(frozen=True)
class NetConfig:
    bridge_device: str | None = None
    bridge_mtu: int = 1500
    reconcile_interval: float = 60.0


def load(config: Any) -> NetConfig:
    """The plugin's settings from a ``pvc_kernel.config.NodeConfig`` (validated at start)."""
    v = SETTINGS.values(config, NAME)
    return NetConfig(v["bridge_device"], v["bridge_mtu"], v["reconcile_interval"])
