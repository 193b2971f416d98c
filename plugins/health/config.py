"""The plugin's section of ``pvcnoded.yaml`` (``plugins.health``), declared in ``SETTINGS``
(``pvcnoded --help-config``, docs/config.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pvc_kernel.sdk import Setting, Settings

NAME = "health"


def _paths(value: list) -> str | None:
    if not all(isinstance(p, str) and p.startswith("/") for p in value):
        return "each entry must be an absolute path"
    return None


SETTINGS = Settings(
    about="Node health: every plugin's health checks (pvc_health_checks) run on every node\n"
          "each interval; node health is 100 minus the sum of their deltas.",
    keys=(
        Setting("interval", float, 15.0, "seconds between two rounds of health checks",
                minimum=1),
        Setting("check_timeout", float, 10.0, "seconds one check may run before it is "
                "reported as timed out (a check may set its own)", minimum=0.1),
        Setting("workers", int, 4, "threads that run checks; a hung check holds one until "
                "it returns and is not started again meanwhile", minimum=1, maximum=64),
        Setting("error_delta", int, 10, "health delta of a check that raised or timed out",
                minimum=0, maximum=100),
        Setting("load_delta", int, 50, "load check: delta when the 1-minute load exceeds the "
                "CPU count", minimum=0, maximum=100),
        Setting("disk_paths", list, ["/", "/var/lib/libvirt", "/var/lib/ceph",
                                     "/var/lib/zookeeper"],
                "disk check: the node's data paths (those that do not exist are skipped)",
                check=_paths),
        Setting("disk_warn_percent", float, 90.0, "disk check: a path this full (used "
                "space or inodes) takes disk_warn_delta", minimum=1, maximum=100),
        Setting("disk_warn_delta", int, 10, "disk check: delta per path past "
                "disk_warn_percent", minimum=0, maximum=100),
        Setting("disk_full_percent", float, 98.0, "disk check: a path this full takes "
                "disk_full_delta instead", minimum=1, maximum=100),
        Setting("disk_full_delta", int, 50, "disk check: delta per path past "
                "disk_full_percent", minimum=0, maximum=100),
        Setting("zookeeper_delta", int, 50, "zookeeper check (coordinators): delta when "
                "this node's ZooKeeper server does not answer ruok or serves no requests",
                minimum=0, maximum=100),
        Setting("dead_node_delta", int, 50, "cluster fault DEAD_NODE_<node> (raised by the "
                "primary for a dead or fenced node)", minimum=0, maximum=100),
    ))


@dataclass(frozen=True)
class HealthConfig:
    interval: float = 15.0
    check_timeout: float = 10.0
    workers: int = 4
    error_delta: int = 10
    load_delta: int = 50
    disk_paths: tuple[str, ...] = ()
    disk_warn_percent: float = 90.0
    disk_warn_delta: int = 10
    disk_full_percent: float = 98.0
    disk_full_delta: int = 50
    zookeeper_delta: int = 50
    dead_node_delta: int = 50


def load(config: Any) -> HealthConfig:
    """The plugin's settings from a ``pvc_kernel.config.NodeConfig`` (validated at start)."""
    v = SETTINGS.values(config, NAME)
    return HealthConfig(**{**v, "disk_paths": tuple(v["disk_paths"])})
