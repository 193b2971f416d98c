"""A fenced node's VMs start elsewhere (``pvc_node_recover``); a node stops its own VMs when
the cluster may restart them elsewhere (``pvc_node_self_fence``).

Recovery runs on the primary, called by the fencing plugin only once the dead node is
powered off or its storage is cut. Per VM, under the VM's lock:

* ``observed`` saying it runs (or migrates) on the dead node becomes ``stopped`` there, so
  the node it is assigned to may start it (vm_kvm starts a VM only when ``observed`` says it
  runs nowhere else);
* a VM assigned to the dead node in a running state gets a target chosen like a flush
  (``placement.choose``: selector, ``node_limit``, memory fit; placements decided a moment
  ago count) and is assigned there with state ``start`` and ``last_node`` = the dead node,
  so ``pvc node ready`` brings it back; with no valid target it is set ``stop`` with
  ``node_autostart``, so it starts when its node is ready again;
* a VM that was migrating TO the dead node and still runs on its source stays there.

When the power off was NOT confirmed (``fence["powered_off"]`` false: the node may still
run, only its storage was cut), a VM that may run there or would be started elsewhere is
recovered only if every one of its disks (CD-ROMs aside) is covered by the cut of a storage
plugin whose cut succeeded (``pvc_storage_fence_covers``); any other VM (a file-backed disk,
no disk at all) is left alone there (its ``observed`` untouched) and set ``stop`` with
``node_autostart``, with the reason in the result's ``stopped`` list.

At most ``recover_concurrency`` VMs are placed and awaited at once (more than a flush's: they
are down, not moving; placements stay one at a time); the call returns when each
runs on its target, failed, or timed out; it places nothing more once ``progress`` returns
true (the caller lost the fence). Everything is re-read under the lock, so a second run (the
next primary resuming) only waits for what the first one did.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kazoo.exceptions import KazooException

from pvc_kernel.sdk import ConflictError, LockBusy
from pvc_plugins.vm_kvm import config as vmconfig
from pvc_plugins.vm_kvm import domxml, keys, nics, placement, qemu, records, vms
from pvc_plugins.vm_kvm.records import Record

log = logging.getLogger("pvc_plugins.vm_kvm")
LOCK_WAIT = 15.0
RETRY_FOR = 45.0        # s a VM's reassignment is retried through ZooKeeper trouble
BY = "fence"
GONE = ("dead", "fenced", "shutdown", "stop")
SELF_FENCE_BUDGET = 4.0  # s a self-fence may take when the kernel gives no deadline
SELF_FENCE_GRACE = 1.0   # s libvirt gets to destroy the guests before SIGKILL by PID
GONE_CHECK = 1.0         # s between looks at whether a recovery's target died meanwhile


def _concerned(rec: Record, node: str) -> bool:
    by_fence = rec.last_node == node and rec.request.get("by") == BY
    return rec.node == node or rec.running_on == node or by_fence


class Recovery:
    """The recovery of one fenced node's VMs; ``fence`` as ``pvc_node_recover`` gets it."""

    def __init__(self, daemon: Any, node: str, progress: Callable[[int, int, str], Any],
                 fence: dict[str, Any]) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.node = node
        self.cfg = vmconfig.load(daemon.config)
        self.progress = progress
        self.powered_off = bool(fence.get("powered_off"))
        self.storage_cut = set(fence.get("storage_cut") or [])
        self.place_lock = threading.Lock()
        self.count_lock = threading.Lock()
        self.done = 0
        self.cancelled = False
        self.result: dict[str, list[str]] = {"recovered": [], "stopped": [], "failed": []}

    def run(self) -> dict[str, list[str]]:
        recs = sorted((r for r in records.all_records(self.store) if _concerned(r, self.node)),
                      key=lambda r: r.name)
        self.progress(0, max(len(recs), 1), f"recovering {len(recs)} VMs of {self.node}")
        with ThreadPoolExecutor(self.cfg.recover_concurrency,
                                thread_name_prefix="vm-recover") as pool:
            for f in [pool.submit(self.one, r) for r in recs]:
                f.result()
        return self.result

    def one(self, rec: Record) -> None:
        if self.cancelled:
            return
        try:
            kind, text = self.recover_one(rec.uuid)
        except Exception as exc:
            log.exception("VM %s: recovery failed", rec.name)
            kind, text = "failed", f"VM {rec.name}: {exc}"
        with self.count_lock:
            if kind in self.result:
                self.result[kind].append(text)
            self.done += 1
            done = self.done
        if self.progress(done, done, text):
            self.cancelled = True       # the caller lost the fence: place nothing more

    def recover_one(self, uuid: str) -> tuple[str, str]:
        deadline = time.monotonic() + RETRY_FOR
        while True:
            try:
                with self.place_lock:    # one placement at a time: each sees the previous ones
                    target, text = self.reassign(uuid)
                break
            except (KazooException, ConflictError, LockBusy) as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("VM %s: recovery step failed (%s); retrying", uuid,
                            exc or type(exc).__name__)
                time.sleep(1.0)
        if target is None:
            return text
        final = self.wait(uuid, target)
        name = final.name if final else uuid
        if final is not None and final.running_on == target:
            return "recovered", f"VM {name}: running on {target}"
        if self.gone(target):
            return "failed", (f"VM {name}: its target {target} died too; the fence of "
                              f"{target} recovers it")
        reason = (final.observed.get("failed_reason") if final else "") or "did not start"
        return "failed", f"VM {name}: on {target}: {reason}"

    def gone(self, node: str) -> bool:
        """The node stopped, was declared dead, or has been silent for a fence delay."""
        try:
            if self.store.get("node.daemon_state", node=node) in GONE:
                return True
            keepalive = float(self.store.get("node.keepalive", node=node) or 0)
        except (KazooException, ValueError):
            return False
        return time.time() - keepalive > self.daemon.config.fence_delay

    def unprotected(self, rec: Record) -> str | None:
        """Why the storage cut does not protect ``rec`` (a disk no cutting plugin covers, or
        no disk at all), or None if every disk is covered."""
        try:
            found = domxml.disks(domxml.parse_root(rec.xml))
        except domxml.XmlError as exc:
            return f"its domain XML cannot be read ({exc})"
        found = [d for d in found if d.get("device") != "cdrom"]
        if not found:
            return "it has no disk on storage whose cut was confirmed (no disks)"
        for disk in found:
            answers = [a for name, a in self.daemon.plugins.call_each(
                "pvc_storage_fence_covers", obj=f"vm:{rec.uuid}", daemon=self.daemon,
                node=self.node, disk=disk) if name in self.storage_cut]
            if True not in answers:
                return (f"disk {disk.get('target') or '?'} ({disk.get('type')} "
                        f"{disk.get('source') or 'without source'}) is not on storage whose "
                        "cut was confirmed")
        return None

    def reassign(self, uuid: str) -> tuple[str | None, tuple[str, str]]:
        """Under the VM lock: release the dead node's claim and assign a target.
        Returns (node to wait for or None, (kind, text))."""
        with self.store.locked(keys.lock_name(uuid), self.daemon.node, LOCK_WAIT, f"VM {uuid}"):
            rec = records.read(self.store, uuid)
            if rec is None:
                return None, ("skipped", f"VM {uuid}: removed")
            obs = rec.observed
            may_run_there = obs.get("node") == self.node and obs.get("state") in keys.LIVE
            to_place = rec.node == self.node and rec.state in keys.RUN_STATES and \
                rec.running_on in (None, self.node)
            why = None if self.powered_off or not (may_run_there or to_place) \
                else self.unprotected(rec)
            if why:
                if rec.state in keys.RUN_STATES:
                    self._write(rec, keys.STOP, meta={**rec.meta, "node_autostart": True})
                log.warning("VM %s of %s (not confirmed off): not recovered: %s", rec.name,
                            self.node, why)
                return None, ("stopped", f"VM {rec.name}: not recovered, {why} and {self.node} "
                                         f"was not confirmed off; stopped, starts when "
                                         f"{self.node} is ready")
            if may_run_there:
                records.write_observed(self.store, uuid, self.node, keys.STOPPED,
                                       libvirt_state="shutoff",
                                       failed_reason=f"node {self.node} was fenced")
                rec = records.read(self.store, uuid) or rec
            if rec.node != self.node:
                if rec.state in keys.RUN_STATES:
                    return rec.node, ("recovered", "")
                return None, ("skipped", f"VM {rec.name}: not running")
            elsewhere = rec.running_on
            if elsewhere and elsewhere != self.node:     # was migrating to the dead node
                self._write(rec, keys.START, node=elsewhere)
                return elsewhere, ("recovered", "")
            if rec.state not in keys.RUN_STATES:
                return None, ("skipped", f"VM {rec.name}: {rec.state}, left on {self.node}")
            nodes = records.nodes(self.store)
            lacking = nics.nodes_without(self.daemon.plugins, self.store,
                                         nics.xml_devices(rec.xml), [n.name for n in nodes])
            target = placement.choose(
                nodes, records.loads_of(records.all_records(self.store)),
                rec.memory, rec.vcpus, rec.meta.get("node_selector"), rec.meta.get("node_limit"),
                exclude=[self.node, *lacking], moving=uuid)
            if target is None:
                self._write(rec, keys.STOP, meta={**rec.meta, "node_autostart": True})
                return None, ("stopped", f"VM {rec.name}: no node can take it; stopped, "
                                         f"starts when {self.node} is ready")
            self._write(rec, keys.START, node=target, last_node=self.node)
            log.info("VM %s of fenced node %s: starting on %s", rec.name, self.node, target)
            return target, ("recovered", "")

    def _write(self, rec: Record, state: str, node: str | None = None,
               last_node: str | None = None, meta: dict[str, Any] | None = None) -> None:
        records.write_desired(self.store, rec, state, node=node, last_node=last_node,
                              meta=meta, request={"action": state, "by": BY, "node": self.node})

    def wait(self, uuid: str, target: str) -> Record | None:
        """Wait (on ZooKeeper watches, through ZooKeeper trouble) until the VM runs on
        ``target``, was reassigned, failed or removed, or ``target`` is gone (checked every
        ``GONE_CHECK`` s, the first time after as long); the last record read (None if
        removed)."""
        checked = [time.monotonic()]

        def settled(rec: Record) -> bool:
            if rec.running_on == target or rec.node != target \
                    or rec.display_state == keys.FAIL:
                return True
            if time.monotonic() - checked[0] < GONE_CHECK:
                return False
            checked[0] = time.monotonic()
            return self.gone(target)

        rec = vms.wait_for(self.store, uuid, settled, self.cfg.migrate_timeout + 60,
                           also=[("node.daemon_state", {"node": target})], recheck=GONE_CHECK,
                           errors=(KazooException,))
        if rec is None:         # timed out (or removed): what it looks like now
            try:
                rec = records.read(self.store, uuid)
            except KazooException:
                pass
        return rec


def recover(daemon: Any, node: str, progress: Callable[[int, int, str], bool],
            fence: dict[str, Any]) -> dict[str, Any] | None:
    """Start the fenced node's VMs on other nodes (see the module docstring)."""
    return Recovery(daemon, node, progress, fence).run()


def self_fence(daemon: Any, agent: Any, reason: str, deadline: float | None = None
               ) -> dict[str, Any]:
    """End every guest of this node before ``deadline`` (monotonic), whatever libvirt does:
    libvirt destroys them; the QEMU processes still alive after a short grace (libvirtd
    hung, e.g. on stalled storage) are SIGKILLed by PID. No ZooKeeper needed."""
    cfg = vmconfig.load(daemon.config)
    started = time.monotonic()
    if deadline is None:
        deadline = started + SELF_FENCE_BUDGET
    grace = max(0.2, min(SELF_FENCE_GRACE, (deadline - started) / 3))
    run_dir = qemu.run_dir(cfg.libvirt_uri)
    known = list(agent.known_guests.values()) if agent is not None else []
    before = {*qemu.guests(run_dir), *(g for g in known if qemu.alive(g))}
    if agent is not None:
        agent.intentional.update({g.uuid: time.time() for g in before})
    box: dict[str, Any] = {}

    def work() -> None:
        import libvirt

        conn = libvirt.open(cfg.libvirt_uri)
        try:
            names = []
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                try:
                    if agent is not None:
                        agent.intentional[dom.UUIDString()] = time.time()
                    dom.destroy()
                    names.append(dom.name())
                except libvirt.libvirtError as exc:
                    box.setdefault("errors", []).append(f"{dom.name()}: {exc}")
            box["names"] = names
        finally:
            conn.close()

    t = threading.Thread(target=work, name="vm-self-fence", daemon=True)
    t.start()
    t.join(grace)
    survivors = [g for g in {*before, *qemu.guests(run_dir)} if qemu.alive(g)]
    left = qemu.kill(survivors, max(0.5, deadline - time.monotonic())) if survivors else []
    killed = sorted(f"{g.name} (pid {g.pid})" for g in survivors if g not in left)
    result = {"destroyed": sorted(box.get("names") or []), "killed": killed,
              "left": sorted(f"{g.name} (pid {g.pid})" for g in left),
              "libvirt": "answered" if not t.is_alive() else
                         f"did not answer within {grace:.1f} s",
              "errors": box.get("errors") or [],
              "seconds": round(time.monotonic() - started, 2)}
    if left:
        log.error("self-fence (%s): QEMU processes survive SIGKILL: %s", reason,
                  ", ".join(result["left"]))
    if before or result["destroyed"] or killed:
        log.warning("self-fence (%s): %d guests ended in %.2f s: destroyed by libvirt: %s; "
                    "killed by signal: %s (libvirt %s)", reason, len(before),
                    result["seconds"], ", ".join(result["destroyed"]) or "none",
                    ", ".join(killed) or "none", result["libvirt"])
    return result
