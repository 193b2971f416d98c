"""Is this node's libvirtd alive? A thread that asks it every poll interval, and what follows.

libvirtd not answering (dead: connection refused; hung: no answer within
``libvirt_timeout``) at once:

* raises the fault ``libvirt-<node>`` (health delta 50) and logs it;
* publishes ``libvirt: down`` in the node's hypervisor facts (``vm_kvm.node``), so no flush,
  recovery or placement chooses this node as a target;
* makes every libvirt call of the agent fail at once (``Hypervisor.down``) and holds the
  agent's VM reconciles (its guests keep running: QEMU does not need libvirtd).

After ``libvirtd_restart_after`` seconds without an answer, if ``libvirtd_restart`` (the
default), it runs ``libvirtd_restart_command`` (again at most every 30 s). Once libvirtd
answers again: the fault is cleared, ``libvirt: up`` published, and the agent reconnects
and reconciles every VM of the node.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from pvc_kernel.sdk import CheckResult, HealthCheck, faults

log = logging.getLogger("pvc_plugins.vm_kvm")
FAULT_DELTA = 50
RESTART_EVERY = 30.0     # s between two restart attempts of a libvirtd that stays down
RESTART_TIMEOUT = 60.0   # s the restart command may take


def fault_id(node: str) -> str:
    return f"libvirt-{node}"


class LibvirtHealth:
    """Watches ``agent.hv`` from its own thread; ``on_back`` runs when libvirtd answers
    again after being down."""

    def __init__(self, agent: Any, on_back: Callable[[], None]) -> None:
        self.agent = agent
        self.cfg = agent.cfg
        self.on_back = on_back
        self.down_since: float | None = None
        self.last_restart = 0.0
        self.restarts = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._loop, name="libvirt-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        stopping = self.agent.stopping
        while not stopping.wait(self.cfg.poll_interval):
            try:
                self.check()
            except Exception:
                log.exception("vm_kvm: libvirtd health check failed")

    def check(self) -> None:
        problem = self.agent.hv.probe(self.cfg.libvirt_timeout)
        if problem is None:
            if self.down_since is not None:
                self._back()
            return
        now = time.monotonic()
        if self.down_since is None:
            self._down(problem)
        elif problem != self.last_error:
            self.last_error = problem
            self.agent.hv.down = problem
        if (self.cfg.libvirtd_restart and now - self.down_since >= self.cfg.libvirtd_restart_after
                and now - self.last_restart >= RESTART_EVERY):
            self.restart()

    def _down(self, problem: str) -> None:
        agent = self.agent
        self.down_since = time.monotonic()
        self.last_error = problem
        agent.hv.down = problem
        agent.hv.drop()
        node = agent.node
        log.error("vm_kvm: libvirtd on %s is not answering (%s); this node takes no VMs until "
                  "it is back%s", node, problem,
                  f"; restarting it in {self.cfg.libvirtd_restart_after:g} s"
                  if self.cfg.libvirtd_restart else " (libvirtd_restart is off)")
        faults.report(agent.store, fault_id(node),
                      f"Node {node}: libvirtd does not answer ({problem}); its VMs cannot be "
                      "managed and it takes no new VMs", FAULT_DELTA)
        agent.publish_libvirt("down", problem)

    def _back(self) -> None:
        agent = self.agent
        down_for = time.monotonic() - (self.down_since or time.monotonic())
        self.down_since = None
        agent.hv.down = None
        log.warning("vm_kvm: libvirtd on %s answers again after %.1f s; reconciling its VMs",
                    agent.node, down_for)
        agent.publish_libvirt("up", "")
        faults.clear(agent.store, fault_id(agent.node))
        self.on_back()

    def restart(self) -> None:
        self.last_restart = time.monotonic()
        self.restarts += 1
        argv = shlex.split(self.cfg.libvirtd_restart_command)
        log.warning("vm_kvm: restarting libvirtd on %s: %s", self.agent.node, " ".join(argv))
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=RESTART_TIMEOUT,
                                 stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("vm_kvm: restarting libvirtd failed: %s", exc)
            return
        if out.returncode != 0:
            log.error("vm_kvm: restarting libvirtd failed (exit %d): %s", out.returncode,
                      (out.stderr or out.stdout).strip()[-500:])


class LibvirtCheck(HealthCheck):
    """Node health check ``libvirt``: takes FAULT_DELTA while ``LibvirtHealth`` finds libvirtd
    not answering (its fault ``libvirt-<node>`` stands for it); and STRAY_DELTA while a
    domain runs here that ZooKeeper assigns elsewhere for longer than a migration may take
    (``migrate_timeout`` + a minute): libvirt and ZooKeeper disagree."""

    name = "libvirt"
    STRAY_DELTA = 10

    def __init__(self, agent: Callable[[], Any]) -> None:
        self.agent = agent
        self.strays: dict[str, float] = {}      # uuid -> first seen running here, not ours

    def setup(self, daemon: Any) -> str | None:
        return None if self.agent() is not None else "the VM agent is not running"

    def run(self, daemon: Any) -> CheckResult:
        agent = self.agent()
        if agent is None:
            return CheckResult(0, "the VM agent is stopping")
        watch = agent.health
        domains, assigned = dict(agent.domains), dict(agent.assigned)
        data: dict[str, Any] = {"domains": len(domains), "libvirtd_restarts": watch.restarts}
        if watch.down_since is not None:
            down = time.monotonic() - watch.down_since
            return CheckResult(FAULT_DELTA, f"libvirtd does not answer ({watch.last_error}) "
                               f"for {down:.0f} s", data, fault=fault_id(agent.node))
        now, limit = time.monotonic(), float(agent.cfg.migrate_timeout) + 60.0
        current = {u for u in domains if assigned.get(u) != agent.node}
        self.strays = {u: self.strays.get(u, now) for u in current}
        lasting = sorted(domains[u].name for u, since in self.strays.items()
                         if now - since > limit)
        if lasting:
            data["not_assigned_here"] = lasting
            return CheckResult(self.STRAY_DELTA, f"running here but assigned elsewhere in "
                               f"ZooKeeper: {', '.join(lasting)}", data)
        return CheckResult(0, f"libvirtd answers; {len(domains)} domain(s), consistent with "
                           "ZooKeeper", data)
