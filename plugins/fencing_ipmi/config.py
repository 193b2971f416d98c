"""The plugin's section of ``pvcnoded.yaml``::

    plugins:
      fencing_ipmi:
        bmc:                          # THIS node's BMC, used by the coordinators to fence it
          host: 10.0.1.1              # (without it, a fence of this node fails)
          port: 623
          user: admin
          password: secret            # published to the coordinators through ZooKeeper only,
                                      # readable by pvcnoded alone when zookeeper.secret is set
        successful_fence: migrate     # after a verified power off: migrate | none
        failed_fence: none            # after a failed one: none | migrate (migrate only
                                      # happens if the node's storage access was cut)
        power_timeout: 10             # s for the BMC to report the node off after power off
        ipmi_timeout: 8               # s per IPMI request
        check_interval: 300           # s between self-checks of this node's BMC

When the node's keepalive is older than ``keepalive_interval × fence_intervals`` (the
kernel's fence delay; never less than the node's own published suicide delay + one of its
intervals) while it was ``run``, the primary fences it (see docs/fencing.md). After a failed
power off, ``failed_fence: migrate`` recovers only the VMs whose every disk the storage cut
covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pvc_plugins.fencing_ipmi.ipmi import BmcAccess

NAME = "fencing_ipmi"
MIGRATE, NONE = "migrate", "none"


@dataclass
class FenceConfig:
    bmc: BmcAccess | None = None
    successful_fence: str = MIGRATE
    failed_fence: str = NONE
    power_timeout: float = 10.0
    ipmi_timeout: float = 8.0
    check_interval: float = 300.0


_KEYS = {"bmc", "successful_fence", "failed_fence", "power_timeout", "ipmi_timeout",
         "check_interval"}
_BMC_KEYS = {"host", "port", "user", "password"}


def parse(section: dict[str, Any] | None) -> tuple[FenceConfig, list[str]]:
    """The section as a FenceConfig (defaults for bad values) and the problems found.

    Problems name the key; none of them shows the password.
    """
    section = section or {}
    problems: list[str] = []
    cfg = FenceConfig()

    def where(key: str) -> str:
        return f"key 'plugins.{NAME}.{key}'"

    for key in section:
        if key not in _KEYS:
            problems.append(f"{where(key)}: is not a known setting")
    for key, choices in (("successful_fence", (MIGRATE, NONE)), ("failed_fence", (NONE, MIGRATE))):
        value = section.get(key)
        if value is None:
            continue
        if value not in choices:
            problems.append(f"{where(key)}: must be one of {', '.join(choices)}, not {value!r}")
        else:
            setattr(cfg, key, value)
    for key, low in (("power_timeout", 1), ("ipmi_timeout", 1), ("check_interval", 5)):
        value = section.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            problems.append(f"{where(key)}: must be a number of seconds of at least {low}, "
                            f"not {value!r}")
        else:
            setattr(cfg, key, float(value))
    bmc = section.get("bmc")
    if bmc is not None:
        cfg.bmc, found = _bmc(bmc, where)
        problems += found
    return cfg, problems


def _bmc(data: Any, where: Any) -> tuple[BmcAccess | None, list[str]]:
    if not isinstance(data, dict):
        return None, [f"{where('bmc')}: must be a mapping with host, user and password"]
    problems = [f"{where('bmc.' + k)}: is not a known setting" for k in data if k not in _BMC_KEYS]
    for key in ("host", "user", "password"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            problems.append(f"{where('bmc.' + key)}: is required (a non-empty string)")
    password = data.get("password")
    if isinstance(password, str) and len(password.encode()) > 20:
        problems.append(f"{where('bmc.password')}: IPMI 2.0 passwords have at most 20 bytes")
    port = data.get("port", 623)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        problems.append(f"{where('bmc.port')}: must be a port number, not {port!r}")
    if problems:
        return None, problems
    return BmcAccess(data["host"], data["user"], data["password"], port), []


def load(config: Any) -> FenceConfig:
    """The parsed section of a ``pvc_kernel.config.NodeConfig`` (already validated)."""
    return parse(config.plugin_section(NAME))[0]
