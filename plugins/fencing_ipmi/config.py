"""The plugin's section of ``pvcnoded.yaml`` (``plugins.fencing_ipmi``), declared in
``SETTINGS`` (``pvcnoded --help-config``, docs/config.md). The BMC password is published to
the coordinators through ZooKeeper only, readable by pvcnoded alone when
``zookeeper.secret`` is set; no problem or help text shows it.

When the node's keepalive is older than ``keepalive_interval × fence_intervals`` (the
kernel's fence delay; never less than the node's own published suicide delay + one of its
intervals) while it was ``run``, the primary fences it (see docs/fencing.md). After a failed
power off, ``failed_fence: migrate`` recovers only the VMs whose every disk the storage cut
covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pvc_kernel.sdk import Setting, Settings
from pvc_plugins.fencing_ipmi.ipmi import BmcAccess

NAME = "fencing_ipmi"
MIGRATE, NONE = "migrate", "none"


def _ipmi_password(value: str) -> str | None:
    return "IPMI 2.0 passwords have at most 20 bytes" if len(value.encode()) > 20 else None


def _not_empty(value: str) -> str | None:
    return None if value else "must not be empty"


SETTINGS = Settings(
    about="Fencing through each node's IPMI BMC: the primary powers off a dead node, then\n"
          "its VMs are recovered elsewhere (docs/fencing.md).",
    groups={"bmc": "THIS node's BMC, used by the coordinators to fence it (without it, a "
                   "fence of this node fails)"},
    keys=(
        Setting("bmc.host", str, None, "address of the BMC", required=True, check=_not_empty),
        Setting("bmc.port", int, 623, "IPMI port", minimum=1, maximum=65535),
        Setting("bmc.user", str, None, "IPMI user", required=True, check=_not_empty),
        Setting("bmc.password", str, None, "IPMI password", required=True, secret=True,
                check=_ipmi_password),
        Setting("successful_fence", str, MIGRATE, "after a verified power off",
                choices=(MIGRATE, NONE)),
        Setting("failed_fence", str, NONE,
                "after a failed one (migrate only happens if the node's storage access was "
                "cut)", choices=(NONE, MIGRATE)),
        Setting("power_timeout", float, 10.0,
                "seconds for the BMC to report the node off after power off", minimum=1),
        Setting("ipmi_timeout", float, 8.0, "seconds per IPMI request", minimum=1),
        Setting("check_interval", float, 300.0, "seconds between self-checks of this node's BMC",
                minimum=5),
    ))


@dataclass
class FenceConfig:
    bmc: BmcAccess | None = None
    successful_fence: str = MIGRATE
    failed_fence: str = NONE
    power_timeout: float = 10.0
    ipmi_timeout: float = 8.0
    check_interval: float = 300.0


def parse(section: dict[str, Any] | None) -> tuple[FenceConfig, list[str]]:
    """The section as a FenceConfig (defaults for bad values) and the problems found.

    Problems name the key; none of them shows the password.
    """
    v, problems = SETTINGS.validate(section, f"plugins.{NAME}")
    bmc = None
    if v["bmc"] and not any(p.startswith(f"key 'plugins.{NAME}.bmc") for p in problems):
        bmc = BmcAccess(v["bmc.host"], v["bmc.user"], v["bmc.password"], v["bmc.port"])
    return FenceConfig(bmc, v["successful_fence"], v["failed_fence"], v["power_timeout"],
                       v["ipmi_timeout"], v["check_interval"]), problems


def load(config: Any) -> FenceConfig:
    """The parsed section of a ``pvc_kernel.config.NodeConfig`` (already validated)."""
    return parse(config.plugin_section(NAME))[0]
