"""Node health checks of managed networks: ``frr`` (evpn mode: bgpd runs and its BGP
sessions are established) and ``dnsmasq`` (the primary: every managed network's gateway,
dnsmasq, firewall and the floating IPs are up)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pvc_kernel.sdk import CheckResult, HealthCheck
from pvc_plugins.net_vxlan import frrd
from pvc_plugins.net_vxlan.services import fault_id as dnsmasq_fault_id

DOWN_DELTA = 50       # bgpd is not running
SESSION_DELTA = 10    # per BGP session not established
SERVICE_DELTA = 10    # per primary service that is not up


def _peers(doc: Any) -> dict[str, str]:
    """Peer → state from ``show bgp ... summary json`` (the peers sit under one address
    family, or at the top)."""
    if not isinstance(doc, dict):
        return {}
    if isinstance(doc.get("peers"), dict):
        return {p: str(v.get("state", "")) for p, v in doc["peers"].items()
                if isinstance(v, dict)}
    found: dict[str, str] = {}
    for value in doc.values():
        found.update(_peers(value))
    return found


def _networks(daemon: Any) -> int:
    """How many client networks exist (one read; not each record every round on every
    node: FRR runs for them all in evpn mode)."""
    return sum(1 for c in daemon.store.children("networks") if c.isdigit())


class FrrCheck(HealthCheck):
    name = "frr"

    def __init__(self, supervisor: Callable[[], Any]) -> None:
        self.supervisor = supervisor

    def setup(self, daemon: Any) -> str | None:
        return None if self.supervisor() is not None else "static mode: no BGP EVPN here"

    def run(self, daemon: Any) -> CheckResult:
        sup = self.supervisor()
        if sup is None:
            return CheckResult(0, "FRR supervision is stopping")
        if not _networks(daemon):
            return CheckResult(0, "no networks")
        if frrd.running_pid(sup.files, "bgpd") is None:
            return CheckResult(DOWN_DELTA, "bgpd is not running", {},
                               fault=frrd.fault_id(daemon.node) if sup.faulted else None)
        text = frrd.vtysh(sup.files, "show bgp l2vpn evpn summary json")
        try:
            peers = _peers(json.loads(text or "{}"))
        except ValueError:
            peers = {}
        down = sorted(p for p, state in peers.items() if state != "Established")
        if down:
            return CheckResult(SESSION_DELTA * len(down), "BGP sessions not established: " +
                               ", ".join(f"{p} ({peers[p] or 'unknown'})" for p in down),
                               {"peers": peers})
        return CheckResult(0, f"{len(peers)} BGP EVPN session(s) established",
                           {"peers": peers})


class DnsmasqCheck(HealthCheck):
    name = "dnsmasq"

    def __init__(self, services: Callable[[], Any]) -> None:
        self.services = services

    def run(self, daemon: Any) -> CheckResult:
        svc = self.services()
        if svc is None or not svc.primary:
            return CheckResult(0, "not the primary")
        problems = [f"{'network ' + str(k) if isinstance(k, int) else k}: {text}"
                    for k, text in sorted(dict(svc.problems).items(), key=str)]
        stopped = sorted(v for v, server in dict(svc.dnsmasq).items() if not server.running())
        problems += [f"dnsmasq of network {v} is not running" for v in stopped]
        data = {"dnsmasq": sorted(svc.dnsmasq)}
        if problems:
            fault = dnsmasq_fault_id(stopped[0]) if len(problems) == 1 and stopped else None
            return CheckResult(SERVICE_DELTA * len(problems), "; ".join(problems), data,
                               fault=fault)
        return CheckResult(0, f"gateways and dnsmasq of {len(svc.dnsmasq)} managed "
                           "network(s) up", data)
