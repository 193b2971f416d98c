"""Node health check ``network``: this node's client networks are built and their devices
up (each bridge ``vmbr<vni>``, its port, and the uplink ``bridge_device``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc_kernel.sdk import CheckResult, HealthCheck
from pvc_plugins.net_bridged import devices

DELTA = 10     # per network that is not built here, or device that is down


class NetworkCheck(HealthCheck):
    name = "network"

    def __init__(self, agent: Callable[[], Any]) -> None:
        self.agent = agent

    def setup(self, daemon: Any) -> str | None:
        return None if self.agent() is not None else "the network agent is not running"

    def run(self, daemon: Any) -> CheckResult:
        agent = self.agent()
        if agent is None:
            return CheckResult(0, "the network agent is stopping")
        vnis = sorted(int(c) for c in daemon.store.children("networks") if c.isdigit())
        if not vnis:
            return CheckResult(0, "no networks")
        problems = [f"network {vni}: {err}" for vni, err in sorted(dict(agent.problems).items())
                    if vni in vnis]
        data: dict[str, Any] = {}
        with devices.netlink() as ipr:
            uplink = agent.cfg.bridge_device
            link = devices.get_link(ipr, uplink) if uplink else None
            if link is not None:
                data[uplink] = "up" if link.up else "down"
                if not link.up:
                    problems.append(f"{uplink} is down")
            for vni in vnis:
                if vni in agent.problems:
                    continue
                bridge = devices.get_link(ipr, devices.bridge_name(vni))
                state = "missing" if bridge is None else "up" if bridge.up else "down"
                data[devices.bridge_name(vni)] = state
                if state != "up":
                    problems.append(f"{devices.bridge_name(vni)} is {state}")
        if problems:
            return CheckResult(DELTA * len(problems), "; ".join(problems), data)
        return CheckResult(0, f"{len(vnis)} network(s) up", data)
