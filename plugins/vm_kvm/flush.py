"""Node flush and ready (``pvc_node_flush`` / ``pvc_node_unflush``), in bounded parallel.

Flush, on node N: every VM assigned to N in a running state gets a target chosen by its
selector and ``node_limit`` with a memory fit check (placements decided a moment ago
count, see ``placement``); it is migrated there (temporary: ``last_node`` = N, unless it
already was away from an earlier node, which is kept). A VM with no valid target is shut
down and marked ``node_autostart``. Ready, on N: autostart VMs on N start (autostart
cleared), and VMs whose ``last_node`` is N come back. At most ``flush_concurrency`` VMs
move at once; progress goes to the task; a cancelled task stops starting new moves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pvc_kernel.sdk import ConflictError
from pvc_plugins.vm_kvm import keys, nics, placement, records, vms
from pvc_plugins.vm_kvm.config import VmConfig
from pvc_plugins.vm_kvm.records import Record

log = logging.getLogger("pvc_plugins.vm_kvm")
MOVE_ATTEMPTS = 3
"""Targets a flush tries for one VM before it reports the VM as not moved."""


def settled_on(rec: Record, node: str) -> bool:
    """The VM runs on ``node`` and is not migrating away from it (``running_on`` also
    names a migration's source until the switch-over)."""
    return rec.observed.get("node") == node and rec.observed.get("state") == keys.RUNNING


class Mover:
    """One flush or ready run: decides, writes desired state, waits for the outcome."""

    def __init__(self, daemon: Any, cfg: VmConfig, ctx: Any) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.node: str = daemon.node
        self.cfg = cfg
        self.ctx = ctx
        self.place_lock = threading.Lock()
        self.done = 0
        self.total = 0
        self.failures: list[str] = []
        self.count_lock = threading.Lock()

    # -- running many ------------------------------------------------------------------
    def run(self, jobs: list[tuple[Record, Callable[[Record], str]]], verb: str) -> None:
        self.total = len(jobs)
        self.ctx.progress(0, max(self.total, 1), f"{verb} {self.total} VMs of {self.node}")
        if not jobs:
            return
        with ThreadPoolExecutor(self.cfg.flush_concurrency,
                                thread_name_prefix="vm-flush") as pool:
            futures = [pool.submit(self._one, rec, fn) for rec, fn in jobs]
            for f in futures:
                f.result()
        self.ctx.check()
        if self.failures:
            raise RuntimeError("; ".join(self.failures))

    def _one(self, rec: Record, fn: Callable[[Record], str]) -> None:
        if self.ctx.cancelled:
            return
        try:
            outcome = fn(rec)
        except Exception as exc:
            log.exception("VM %s: flush step failed", rec.name)
            outcome = f"VM {rec.name}: {exc}"
            with self.count_lock:
                self.failures.append(outcome)
        with self.count_lock:
            self.done += 1
            done = self.done
        self.ctx.progress(done, max(self.total, 1), outcome)

    # -- waiting -------------------------------------------------------------------------
    def wait(self, uuid: str, done: Callable[[Record], bool], timeout: float) -> Record | None:
        """Wait (on ZooKeeper watches) until ``done(record)``; None on timeout or cancel."""
        return vms.wait_for(self.store, uuid, done, timeout, stop=self)

    def is_set(self) -> bool:
        """The task was cancelled (makes the mover a ``stop`` flag for ``vms.wait_for``)."""
        return bool(self.ctx.cancelled)

    @property
    def move_timeout(self) -> float:
        return self.cfg.migrate_timeout + self.cfg.shutdown_timeout + 60

    # -- flush ---------------------------------------------------------------------------
    def flush(self) -> None:
        recs = [r for r in records.all_records(self.store)
                if r.node == self.node and r.state in keys.RUN_STATES]
        self.run([(r, self.evacuate) for r in sorted(recs, key=lambda r: r.name)], "Flushing")

    def evacuate(self, rec: Record) -> str:
        """Move one VM away; a target that fails it (e.g. dies mid-migration: the VM stays
        here, running) is skipped and the next best one tried, up to ``MOVE_ATTEMPTS``."""
        tried: list[str] = []
        reasons: list[str] = []
        for _attempt in range(MOVE_ATTEMPTS):
            outcome, target, final = self._evacuate_once(rec, tried)
            if outcome is not None:
                return outcome
            tried.append(target)
            why = (final.observed.get("failed_reason") if final else "") or "timed out"
            reasons.append(f"{target}: {why}")
            if final is None or final.node != self.node or not settled_on(final, self.node):
                break             # not back here, running: nothing more to try safely
            log.warning("VM %s: move to %s failed (%s); trying another node", rec.name,
                        target, why)
        raise RuntimeError(f"VM {rec.name} did not leave {self.node}: " + "; ".join(reasons))

    def _evacuate_once(self, rec: Record, tried: list[str]
                       ) -> tuple[str | None, str, Record | None]:
        """(outcome text if done, target tried, final record) of one placement + move."""
        decided: dict[str, str | None] = {}

        def change(r: Record) -> dict[str, Any] | None:
            if r.node != self.node or r.state not in keys.RUN_STATES:
                return None
            nodes = records.nodes(self.store)
            lacking = nics.nodes_without(self.daemon.plugins, self.store,
                                         nics.xml_devices(r.xml), [n.name for n in nodes])
            target = placement.choose(
                nodes, records.loads_of(records.all_records(self.store)),
                r.memory, r.vcpus, r.meta.get("node_selector"), r.meta.get("node_limit"),
                exclude=[self.node, *tried, *lacking], moving=r.uuid)
            decided["target"] = target
            if target is None:
                if tried:       # the nodes that could take it failed: leave it running here
                    return None
                return {"state": keys.SHUTDOWN, "meta": {**r.meta, "node_autostart": True},
                        "request": {"action": "shutdown", "by": "flush"}}
            return {"state": keys.MIGRATE, "node": target,
                    "last_node": r.last_node or self.node,
                    "request": {"action": "migrate", "by": "flush", "force_live": False}}

        with self.place_lock:   # one placement at a time, so parallel moves see each other
            if not self._update(rec.uuid, change):
                if tried and decided.get("target", "") is None:
                    raise RuntimeError(f"VM {rec.name}: no other node can take it (tried "
                                       f"{', '.join(tried)}); it keeps running on {self.node}")
                return f"VM {rec.name}: nothing to do", "", None
        target = decided["target"]
        if target is None:
            self.wait(rec.uuid, lambda r: r.running_on is None, self.move_timeout)
            return f"VM {rec.name}: no node can take it; shut down, will start on ready", "", \
                None
        final = self.wait(rec.uuid, lambda r: settled_on(r, target)
                          or (r.node != target) or r.display_state == keys.FAIL,
                          self.move_timeout)
        if final is not None and settled_on(final, target):
            return f"VM {rec.name}: moved to {target}", target, final
        return None, target, final

    # -- ready ---------------------------------------------------------------------------
    def unflush(self) -> None:
        jobs = []
        for r in sorted(records.all_records(self.store), key=lambda r: r.name):
            if r.node == self.node and r.meta.get("node_autostart") \
                    and r.state in (keys.STOP, keys.SHUTDOWN):
                jobs.append((r, self.autostart))
            elif r.last_node == self.node and r.node != self.node \
                    and r.state in keys.RUN_STATES:
                jobs.append((r, self.bring_back))
        self.run(jobs, "Restoring")

    def autostart(self, rec: Record) -> str:
        def change(r: Record) -> dict[str, Any] | None:
            if r.node != self.node or r.state not in (keys.STOP, keys.SHUTDOWN):
                return None
            return {"state": keys.START, "meta": {**r.meta, "node_autostart": False},
                    "request": {"action": "start", "by": "ready"}}

        if not self._update(rec.uuid, change):
            return f"VM {rec.name}: nothing to do"
        final = self.wait(rec.uuid, lambda r: settled_on(r, self.node)
                          or r.display_state == keys.FAIL, self.move_timeout)
        if final is None or not settled_on(final, self.node):
            raise RuntimeError(f"VM {rec.name} did not start on {self.node}")
        return f"VM {rec.name}: started"

    def bring_back(self, rec: Record) -> str:
        def change(r: Record) -> dict[str, Any] | None:
            if r.last_node != self.node or r.node == self.node or r.state not in keys.RUN_STATES:
                return None
            return {"state": keys.UNMIGRATE, "node": self.node, "last_node": "",
                    "request": {"action": "unmigrate", "by": "ready", "force_live": False}}

        if not self._update(rec.uuid, change):
            return f"VM {rec.name}: nothing to do"
        final = self.wait(rec.uuid, lambda r: settled_on(r, self.node)
                          or r.node != self.node or r.display_state == keys.FAIL,
                          self.move_timeout)
        if final is None or not settled_on(final, self.node):
            raise RuntimeError(f"VM {rec.name} did not come back to {self.node}")
        return f"VM {rec.name}: back on {self.node}"

    # -- writes ----------------------------------------------------------------------------
    def _update(self, uuid: str, change: Callable[[Record], dict[str, Any] | None],
                attempts: int = 10) -> bool:
        """Re-read, decide, write version-checked; retried when a node moved the VM's state
        on meanwhile (e.g. a migration of a cancelled flush finishing). False: no change."""
        for _ in range(attempts):
            rec = records.read(self.store, uuid)
            values = change(rec) if rec is not None else None
            if values is None:
                return False
            try:
                self._write(rec, **values)
                return True
            except ConflictError:
                time.sleep(0.2)
        raise RuntimeError(f"VM {uuid} kept changing; not moved")

    def _write(self, rec: Record, state: str, **values: Any) -> None:
        """Desired-state change, version-checked against ``rec`` (raises on a race)."""
        records.write_desired(self.store, rec, state, **values)
