"""The health plugin's work on one node: a round of checks every interval, the node's
faults for its failing checks, and (on the primary) the cluster's dead-node faults.

Faults: a check whose delta is positive raises ``NODE_PLUGIN_<CHECK>_<node>`` with half its
delta (rounded up), unless the check names a fault its own plugin raises for the condition.
The fault stays acknowledged while the condition lasts (its message may carry figures).

On the primary, each round also syncs the cluster-level faults: ``DEAD_NODE_<node>`` and
what each plugin's ``pvc_cluster_faults`` answers (vm_kvm: failed VMs, memory
overprovisioning). In maintenance mode no new fault is raised; those that end are still
cleared.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

from pvc_kernel.sdk import faults
from pvc_plugins.health import checks
from pvc_plugins.health.config import HealthConfig
from pvc_plugins.health.runner import Runner, fault_delta, node_health

log = logging.getLogger("pvc_plugins.health")

NODE_PREFIX = "NODE_PLUGIN_"
DEAD_PREFIX = "DEAD_NODE_"
GIVEN_UP = ("dead", "fenced")


def node_fault_id(check: str, node: str) -> str:
    """``NODE_PLUGIN_<CHECK>_<node>`` (characters a fault ID cannot hold become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.:@+=-]", "_", f"{NODE_PREFIX}{check.upper()}_{node}")


class HealthAgent:
    """Runs the rounds in its own thread from the first keepalive on."""

    def __init__(self, daemon: Any, cfg: HealthConfig) -> None:
        self.daemon = daemon
        self.cfg = cfg
        self.store = daemon.store
        self.node = daemon.node
        self.primary = False
        self.runner: Runner | None = None
        self.latest: dict[str, Any] | None = None
        self.raised: set[str] | None = None       # our NODE_PLUGIN faults (None: not read)
        self.cluster_raised: set[str] | None = None   # cluster faults raised as primary
        self.prefixes: dict[str, list[str]] = {}       # plugin → its cluster fault prefixes
        self.started = threading.Event()           # the first keepalive went out
        self.rounds = 0
        self._thread = threading.Thread(target=self._loop, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.started.set()
        if self.runner is not None:
            self.runner.stop()

    def _checks(self) -> Runner:
        found = [("health", c) for c in checks.builtin(self.cfg)]
        for plugin, answer in self.daemon.plugins.call_each("pvc_health_checks",
                                                            daemon=self.daemon):
            if plugin != "health":
                found += [(plugin, c) for c in answer or []]
        runner = Runner(self.daemon, found, self.cfg.check_timeout, self.cfg.workers,
                        self.cfg.error_delta)
        log.info("health: %d checks on %s: %s", len(runner.entries), self.node,
                 ", ".join(runner.names()))
        return runner

    def _loop(self) -> None:
        stopping = self.daemon.stopping
        self.started.wait()
        while not stopping.is_set():
            began = time.monotonic()
            try:
                self.round()
            except Exception:
                log.exception("health: a round of checks failed")
            stopping.wait(max(self.cfg.interval - (time.monotonic() - began), 0.5))

    def round(self) -> dict[str, Any]:
        """Run every check once, publish the result and sync the faults."""
        if self.runner is None:
            self.runner = self._checks()
        entries = self.runner.round()
        self.latest = {"health": node_health(entries), "checks": entries,
                       "at": int(time.time())}
        self.rounds += 1
        maintenance = self.store.get("config.maintenance") == "true"
        self.sync_node_faults(entries, maintenance)
        if self.primary:
            self.sync_cluster_faults(maintenance)
        return self.latest

    def _sync(self, raised: set[str], want: dict[str, tuple[str, int] | None],
              maintenance: bool) -> None:
        """Report each wanted fault (None: leave it as it is), clear the raised ones not
        wanted any more."""
        for fid, found in want.items():
            if found is None:
                continue
            message, delta = found
            if maintenance and fid not in raised:
                continue                                     # no new faults in maintenance
            faults.report(self.store, fid, message, delta, sticky=True)
            raised.add(fid)
        for fid in sorted(raised - set(want)):
            faults.clear(self.store, fid)
            raised.discard(fid)

    def sync_node_faults(self, entries: list[dict[str, Any]], maintenance: bool) -> None:
        if self.raised is None:
            suffix = f"_{self.node}"
            self.raised = {f["id"] for f in faults.list_faults(self.store)
                           if f["id"].startswith(NODE_PREFIX) and f["id"].endswith(suffix)}
        want = {node_fault_id(e["name"], self.node):
                (f"Node {self.node} health check '{e['name']}': {e['message']}",
                 fault_delta(e["health_delta"]))
                for e in entries if e["health_delta"] > 0 and not e.get("fault")}
        self._sync(self.raised, want, maintenance)

    def dead_nodes(self) -> dict[str, tuple[str, int]]:
        """``DEAD_NODE_<node>`` for every dead or fenced node."""
        nodes = self.store.children("nodes")
        states = self.store.fetch([("get", "node.daemon_state", {"node": n}) for n in nodes])
        return {f"{DEAD_PREFIX}{n}": (f"Node {n} is {s}", self.cfg.dead_node_delta)
                for n, s in zip(nodes, states, strict=True) if s in GIVEN_UP}

    def sync_cluster_faults(self, maintenance: bool) -> None:
        """Primary: the dead-node faults and every plugin's ``pvc_cluster_faults``. A plugin
        whose hook failed keeps its faults as they are until it answers again."""
        want = self.dead_nodes()
        failures: list[tuple[str, Exception]] = []
        for plugin, answer in self.daemon.plugins.call_each(
                "pvc_cluster_faults", obj="health", failures=failures, daemon=self.daemon):
            if not isinstance(answer, dict):
                continue
            prefixes = [str(p) for p in answer.get("prefixes") or [] if p]
            self.prefixes[plugin] = prefixes
            for fid, (message, delta) in (answer.get("faults") or {}).items():
                if any(fid.startswith(p) for p in prefixes):
                    want[fid] = (str(message), int(delta))
                else:
                    log.error("health: plugin %s reports fault %s outside its prefixes %s",
                              plugin, fid, prefixes)
        prefixes = (DEAD_PREFIX, *(p for ps in self.prefixes.values() for p in ps))
        if self.cluster_raised is None:
            self.cluster_raised = {f["id"] for f in faults.list_faults(self.store)
                                   if f["id"].startswith(prefixes)}
        held = tuple(p for name, _exc in failures for p in self.prefixes.get(name, ()))
        keep = {fid for fid in self.cluster_raised if held and fid.startswith(held)}
        self._sync(self.cluster_raised, {**{k: None for k in keep}, **want}, maintenance)

    def become_primary(self) -> None:
        self.primary, self.cluster_raised = True, None

    def become_secondary(self) -> None:
        self.primary = False
