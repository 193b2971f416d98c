"""The node side: reconcile each VM's desired state with this node's libvirtd.

Events for one VM (``vm:<uuid>``) arrive in order on one bus worker at a time: changes
of its desired ``state``/``node``, of its ``observed`` record, and a periodic check. The
rules, on node N for VM v (desired node D, domain running here R):

* D == N, state start/migrate/unmigrate, not R → start here, unless ``observed`` says it
  still runs on another node (a migration or shutdown there is not finished: wait);
* D != N, R, a running state → migrate to D (live, falling back to a shutdown migration
  unless live was forced; the target then starts it);
* stop → hard stop; shutdown/disable → ACPI power button, hard stop after the timeout;
  restart → shutdown + start; then the desired state moves on (version-checked).

Safety: every transition of ``observed`` between "may run on X" and "runs nowhere / on
Y", and every start, happens under the VM's ZooKeeper lock, and a node starts a VM only
when ``observed`` says it runs nowhere else and no QEMU process of it runs on this node
(a libvirtd that lost its state must not lead to a second one). A migration holds the lock
from start to end; a live migration that fails leaves the VM running where it is unless the
target is verifiably alive (only then the shutdown fallback).

A VM that ended here without PVC asking is handled by ``crashes`` (record, fault, back
off, ``fail`` after a crash loop); a dead or hung libvirtd by ``health``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kazoo.exceptions import KazooException

from pvc_kernel.sdk import (
    ChildrenChanged,
    DataChanged,
    Event,
    HeldLock,
    TimerFired,
    faults,
    schema,
)
from pvc_plugins.vm_kvm import console, crashes, domxml, keys, probe, qemu, records
from pvc_plugins.vm_kvm.config import VmConfig, crash_policy
from pvc_plugins.vm_kvm.health import LibvirtHealth
from pvc_plugins.vm_kvm.hypervisor import Hypervisor, message, start_event_loop
from pvc_plugins.vm_kvm.records import Record

log = logging.getLogger("pvc_plugins.vm_kvm")

LOCK_WAIT = 3.0          # s a reconcile waits for a busy VM lock before retrying later
POWER_BUTTON_EVERY = 5.0  # s between presses while waiting for an ACPI shutdown
SECRETS_REFRESH = 300.0  # s between storage secret syncs to libvirtd (at polls)
SECRETS_AT_START = 60.0  # a VM start re-syncs them when the last sync is older than this
CHECK = "vm_kvm.check"
REPORT = "vm_kvm.report"


class Agent:
    """vm_kvm on one node (``daemon``): watches, reconciles, reports."""

    def __init__(self, daemon: Any, cfg: VmConfig) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.node: str = daemon.node
        self.cfg = cfg
        self.hv = Hypervisor(cfg.libvirt_uri, keepalive=(cfg.libvirt_keepalive, 3),
                             on_stop=self._on_stop)
        self.run_dir = qemu.run_dir(cfg.libvirt_uri)
        self.policy = crash_policy(cfg)
        self.stops: dict[str, tuple[float, int]] = {}     # uuid -> (time, stop detail)
        self.intentional: dict[str, float] = {}          # uuid -> when PVC ended it here
        self.hold_until: dict[str, float] = {}           # uuid -> no start before (monotonic)
        self.crash_faults: dict[str, float] = {}         # uuid -> last crash (epoch)
        self.known_guests: dict[str, qemu.Guest] = {}    # uuid -> its QEMU process here
        self.health = LibvirtHealth(self, self._libvirt_back)
        self.virt_type = "qemu"
        self.watched: set[str] = set()
        self.assigned: dict[str, str] = {}      # uuid -> desired node (from watches)
        self.observed_here: set[str] = set()    # uuids whose observed node is us
        self.desired: dict[str, str] = {}       # uuid -> desired state (from watches)
        self.observed: dict[str, dict[str, Any]] = {}   # uuid -> observed (from watches)
        self.reported: dict[str, float] = {}    # uuid -> monotonic time of its last report
        self.console_paths: dict[str, str | None] = {}  # uuid -> its console log (from XML)
        self.console_tails: dict[str, str] = {}  # uuid -> the tail last written
        self.last_sweep = 0.0                   # monotonic time of the last full check
        self.domains: dict[str, Any] = {}       # last poll: uuid -> DomInfo
        self.memory: dict[str, int] = {}        # uuid -> MiB (from its XML)
        self.failed: dict[str, tuple[str, str]] = {}   # uuid -> (name, reason): in fail here
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ready = False
        self.last_problem = ""
        self.secrets_synced = 0.0               # monotonic time of the last secrets sync

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Connect now if libvirtd answers, else keep trying at every poll (no VM is
        placed on this node until it has published its facts); watch libvirtd's health."""
        start_event_loop()
        self.daemon.bus.every(self.cfg.poll_interval, "vm_kvm.poll", obj="vm_kvm:poll")
        self.connect()
        self.health.start()

    def connect(self) -> bool:
        if self.ready:
            return True
        try:
            verdict = probe.decide(self.hv.conn(), self.cfg.virt_type, self.cfg.probe_cache,
                                   self.cfg.probe_kernel, self.cfg.probe_initrd,
                                   self.cfg.probe_timeout)
            self.virt_type = verdict.virt_type
            self.publish(verdict)
        except Exception as exc:
            problem = message(exc)
            if problem != self.last_problem:
                log.warning("vm_kvm: libvirt at %s is not usable (%s); retrying every %g s",
                            self.cfg.libvirt_uri, problem, self.cfg.poll_interval)
                self.last_problem = problem
            return False
        log.info("vm_kvm: libvirt %s, virt type %s (%s)", self.cfg.libvirt_uri,
                 verdict.virt_type, verdict.reason)
        self.ready = True
        self.sync_secrets()
        self.poll()
        self.daemon.bus.watch_children("vms", obj="vm_kvm:vms")
        return True

    def publish(self, verdict: probe.Verdict) -> None:
        conn = self.hv.conn()
        address = self.cfg.migration_address or self.node
        self.store.set("vm_kvm.node", {
            "virt_type": verdict.virt_type, "virt_reason": verdict.reason,
            "migration_uri": f"qemu+tcp://{address}/system",
            "libvirt_version": conn.getLibVersion(), "memory_total": self.cfg.memory_total,
            "started": round(time.time(), 3), "libvirt": "down" if self.hv.down else "up",
            "libvirt_error": self.hv.down or ""}, node=self.node)

    def publish_libvirt(self, state: str, error: str) -> None:
        """Say in the node's facts whether libvirtd answers (placement skips ``down``)."""
        def change(text: str | None) -> Any:
            facts = keys.loads(text, None)
            if not isinstance(facts, dict):
                return text or ""     # never published (libvirtd was never up): nothing
            return {**facts, "libvirt": state, "libvirt_error": error}
        try:
            self.store.update("vm_kvm.node", change, node=self.node)
        except Exception as exc:
            log.warning("vm_kvm: cannot publish libvirt %s: %s", state, exc)

    def _libvirt_back(self) -> None:
        """libvirtd answers again: reconnect, then look at every VM of this node."""
        self.hv.close()
        if self.ready:
            self.sync_secrets()
            self.daemon.bus.publish(TimerFired(obj="vm_kvm:poll", name="vm_kvm.poll"))

    def stop(self) -> None:
        self.stopping.set()
        self.hv.close()

    # -- events ------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        if self.stopping.is_set():
            return
        if isinstance(event, ChildrenChanged) and event.key == "vms":
            self._watch(event.children)
        elif isinstance(event, TimerFired) and event.obj == "vm_kvm:poll":
            if not self.hv.down and self.connect():
                self.poll()
        elif event.obj.startswith("vm:") and self.ready:
            uuid = event.obj[3:]
            if isinstance(event, DataChanged):
                self._note(uuid, event)
                if self._unconcerned(uuid):
                    return            # another node's VM that never touched this one
            if self.hv.down:          # libvirtd down: the poll after its return catches up
                return
            if isinstance(event, TimerFired) and event.name == REPORT:
                self.report_running(uuid)
            else:
                self.reconcile(uuid, report=isinstance(event, TimerFired))

    def _on_stop(self, uuid: str, name: str, detail: int) -> None:
        """libvirt says a domain stopped (event loop thread): remember why, look at it."""
        self.stops[uuid] = (time.time(), detail)
        self.daemon.bus.publish(TimerFired(obj=f"vm:{uuid}", name=CHECK))

    def _watch(self, children: tuple[str, ...]) -> None:
        bus = self.daemon.bus
        for uuid in children:
            if uuid in self.watched:
                continue
            self.watched.add(uuid)
            for key in ("vm.node", "vm.state", "vm.observed"):
                bus.watch_data(key, obj=f"vm:{uuid}", uuid=uuid)
        gone = set(self.watched) - set(children)
        for uuid in set(self.assigned) - set(children):
            self.assigned.pop(uuid, None)
        for uuid in gone:
            for kept in (self.reported, self.console_paths, self.console_tails):
                kept.pop(uuid, None)

    def _note(self, uuid: str, event: DataChanged) -> None:
        with self.lock:
            if event.key == "vm.state":
                if event.value is None:
                    self.desired.pop(uuid, None)
                else:
                    self.desired[uuid] = event.value
            elif event.key == "vm.node":
                if event.value is None:
                    self.assigned.pop(uuid, None)
                else:
                    self.assigned[uuid] = event.value
            elif event.key == "vm.observed":
                obs = keys.loads(event.value, {})
                if event.value is None:
                    self.observed.pop(uuid, None)
                else:
                    self.observed[uuid] = obs if isinstance(obs, dict) else {}
                if obs.get("node") == self.node:
                    self.observed_here.add(uuid)
                else:
                    self.observed_here.discard(uuid)

    def sync_secrets(self, max_age: float = 0.0) -> None:
        """Hand storage secrets to libvirtd unless done less than ``max_age`` s ago."""
        from pvc_plugins.vm_kvm import disks

        now = time.monotonic()
        if self.secrets_synced and now - self.secrets_synced < max_age:
            return
        self.secrets_synced = now
        disks.sync_secrets(self.daemon, self.hv)

    def poll(self) -> None:
        """Look at libvirt; queue a check of every VM that concerns this node."""
        if not self.ready:
            return
        self.sync_secrets(SECRETS_REFRESH)
        try:
            self.domains = self.hv.domains()
        except Exception as exc:
            log.warning("vm_kvm: cannot list domains of %s: %s", self.cfg.libvirt_uri,
                        message(exc))
            return
        self._note_guests()
        with self.lock:
            mine = {u for u, n in self.assigned.items() if n == self.node}
            mine |= self.observed_here
        now = time.monotonic()
        sweep = now - self.last_sweep >= self.cfg.resync_interval
        if sweep:
            self.last_sweep = now
        for uuid in mine | set(self.domains):
            if sweep or not self._settled(uuid):
                self.daemon.bus.publish(TimerFired(obj=f"vm:{uuid}", name=CHECK))
            elif (uuid in self.domains
                  and now - self.reported.get(uuid, 0.0) >= self.cfg.stats_interval):
                self.daemon.bus.publish(TimerFired(obj=f"vm:{uuid}", name=REPORT))

    def _settled(self, uuid: str) -> bool:
        """True if this poll has nothing to check about the VM (no ZooKeeper read): what
        libvirt shows here agrees with its watched desired state and observed record, and
        nothing about it is pending (a stop event, a crash, a held start, a stray QEMU)."""
        with self.lock:
            desired, node = self.desired.get(uuid), self.assigned.get(uuid)
            obs = self.observed.get(uuid)
        if (desired is None or obs is None or uuid in self.stops or uuid in self.crash_faults
                or uuid in self.hold_until or uuid in self.intentional):
            return False
        info = self.domains.get(uuid)
        if info is None:            # not running here: fine if it should not, and never did
            return (desired in (keys.STOP, keys.DISABLE) and uuid not in self.known_guests
                    and not (obs.get("node") == self.node and obs.get("state") in keys.LIVE))
        return (desired == keys.START and node == self.node and not info.incoming
                and obs.get("node") == self.node and obs.get("state") == keys.RUNNING
                and obs.get("libvirt_state") == info.state_name)

    def _unconcerned(self, uuid: str) -> bool:
        """True if a change of the VM's keys cannot concern this node: it is neither assigned
        here nor observed here, and neither libvirt nor a QEMU process runs it here."""
        with self.lock:
            node, obs = self.assigned.get(uuid), self.observed.get(uuid)
        return (node is not None and node != self.node and obs is not None
                and obs.get("node") != self.node and uuid not in self.domains
                and uuid not in self.known_guests and uuid not in self.stops)

    def _note_guests(self) -> None:
        """Remember the QEMU process of every guest here (a self-fence kills them by PID
        even if libvirtd hangs or lost its state)."""
        try:
            found = {g.uuid: g for g in qemu.guests(self.run_dir)}
        except Exception as exc:
            log.debug("vm_kvm: cannot list QEMU processes: %s", exc)
            return
        for uuid, g in list(self.known_guests.items()):
            if uuid not in found and qemu.alive(g):
                found[uuid] = g
        self.known_guests = found

    def orphans(self, uuid: str) -> list[qemu.Guest]:
        """QEMU processes of ``uuid`` on this node that libvirtd does not run as a domain."""
        if self.hv.info(uuid) is not None:
            return []
        known = self.known_guests.get(uuid)
        found = [g for g in qemu.guests(self.run_dir) if g.uuid == uuid]
        if known is not None and known not in found and qemu.alive(known):
            found.append(known)
        return found

    # -- reconcile ---------------------------------------------------------------------
    def reconcile(self, uuid: str, report: bool = False) -> None:
        rec = records.read(self.store, uuid)
        info = self.hv.info(uuid)
        if rec is None:
            if info is not None and uuid in self.watched:
                log.warning("VM %s was removed while running here; stopping it", info.name)
                self.hv.destroy(uuid)
            return
        if info is not None and info.incoming:
            return      # a migration towards us is in progress; its source reports the end
        running = info is not None
        here = rec.node == self.node
        self.memory[uuid] = rec.memory
        self._note_failed(rec)
        if running and report:
            self.report(rec, info)
        if here:
            self._reconcile_here(rec, running)
        elif running:
            if rec.state in keys.RUN_STATES:
                self.migrate_away(rec)
            else:
                self.stop_here(rec, graceful=rec.state != keys.STOP)
        elif rec.observed.get("node") == self.node and rec.observed.get("state") in keys.LIVE:
            self._mark_stopped(rec)

    def _reconcile_here(self, rec: Record, running: bool) -> None:
        state = rec.state
        if state in (keys.START, keys.MIGRATE, keys.UNMIGRATE):
            if running:
                self._mark_running(rec)
            elif not self._ended_here(rec):
                self.start_here(rec)
        elif state == keys.RESTART:
            if running and not self.stop_here(rec, graceful=True):
                return
            if self.start_here(rec):
                records.set_state_if(self.store, rec, keys.START)
        elif state in (keys.SHUTDOWN, keys.DISABLE):
            force = state == keys.DISABLE and bool(rec.request.get("force"))
            done = self.stop_here(rec, graceful=not force) if running else True
            if done and state == keys.SHUTDOWN:
                records.set_state_if(self.store, rec, keys.STOP)
            if not running:
                self._end_unmanaged(rec)
                self._mark_stopped(rec)
        elif state == keys.STOP:
            if running:
                self.stop_here(rec, graceful=False)
            else:
                self._end_unmanaged(rec)
                self._mark_stopped(rec)

    # -- guests that ended without PVC asking -------------------------------------------
    def _ended_here(self, rec: Record) -> bool:
        """The VM should run here, does not, and ``observed`` says it ran here: it ended
        without PVC asking. Record why; a crash is counted, faulted and backed off (or puts
        the VM in ``fail``). True if it must not be started now."""
        obs = rec.observed
        if not (obs.get("node") == self.node and obs.get("state") == keys.RUNNING):
            return False
        if self.orphans(rec.uuid):
            return False          # its QEMU still runs: start_here refuses a second one
        stopped = self.stops.pop(rec.uuid, None)
        ended_by_us = self.intentional.pop(rec.uuid, None)
        if ended_by_us is not None or not self.in_service():
            return False          # a self-fence ended it; the normal start path decides
        is_crash, what = crashes.why(stopped[1] if stopped else None)
        if not is_crash:
            log.warning("VM %s ended on %s (%s); starting it again (its state is %s)",
                        rec.name, self.node, what, rec.state)
            self._mark_stopped(rec, reason=f"ended on {self.node}: {what}")
            return False
        return self._crashed(rec, what)

    def _crashed(self, rec: Record, what: str) -> bool:
        now = time.time()
        old = keys.loads(self.store.get("vm.crashes", uuid=rec.uuid), {})
        new, delay = crashes.add(old, now, self.node, what, self.policy)
        self.store.set("vm.crashes", new, uuid=rec.uuid)
        self.crash_faults[rec.uuid] = now
        recent = len(old.get("recent") or []) + 1 if delay is None else len(new["recent"])
        window = crashes.describe_window(self.policy.window)
        if delay is None:
            reason = (f"crashed {recent} times within {window} on {self.node} (last: {what}); "
                      "not restarted")
            log.error("VM %s %s", rec.name, reason)
            faults.report(self.store, crashes.fault_id(rec.uuid),
                          f"VM {rec.name} {reason}: it is in state fail until it is started "
                          "again", crashes.FAULT_DELTA_FAILED)
            self._fail(rec, reason.capitalize())
            return True
        log.error("VM %s crashed on %s: %s (crash %d within %s, %d in all); starting it again "
                  "in %g s", rec.name, self.node, what, recent, window, new["count"], delay)
        faults.report(self.store, crashes.fault_id(rec.uuid),
                      f"VM {rec.name} crashed on {self.node} ({what}); {recent} crash(es) "
                      f"within {window}, restarted after {delay:g} s", crashes.FAULT_DELTA)
        self._mark_stopped(rec, reason=f"crashed on {self.node}: {what}")
        self.hold_until[rec.uuid] = time.monotonic() + delay
        if delay > 0:
            timer = threading.Timer(delay, self.daemon.bus.publish,
                                    (TimerFired(obj=f"vm:{rec.uuid}", name=CHECK),))
            timer.daemon = True
            timer.start()
            return True
        return False

    def _forget_crashes(self, rec: Record) -> None:
        """A VM that has run here a whole crash window since its last crash: its fault is
        over (its crash record stays in the VM's info)."""
        last = self.crash_faults.get(rec.uuid)
        if last is not None and time.time() - last > self.policy.window:
            self.crash_faults.pop(rec.uuid, None)
            faults.clear(self.store, crashes.fault_id(rec.uuid))
            log.info("VM %s: no crash for %s; its crash fault is cleared", rec.name,
                     crashes.describe_window(self.policy.window))

    # -- observed transitions (under the VM lock) ---------------------------------------
    def _locked(self, uuid: str, wait: float = LOCK_WAIT) -> HeldLock | None:
        """The VM's lock, or None if it stayed busy for ``wait`` seconds or ZooKeeper
        failed (the caller skips its work)."""
        try:
            return self.store.try_lock(keys.lock_name(uuid), self.node, wait)
        except KazooException:
            return None

    def _mark_running(self, rec: Record) -> None:
        obs = rec.observed
        if obs.get("node") == self.node and obs.get("state") == keys.RUNNING:
            if rec.state in (keys.MIGRATE, keys.UNMIGRATE):
                records.set_state_if(self.store, rec, keys.START)
            return
        lock = self._locked(rec.uuid)
        if lock is None:
            return
        try:
            fresh = records.read(self.store, rec.uuid)
            if fresh and self.hv.info(rec.uuid) is not None:
                records.write_observed(self.store, rec.uuid, self.node, keys.RUNNING,
                                       libvirt_state="running")
                if fresh.state in (keys.MIGRATE, keys.UNMIGRATE):
                    records.set_state_if(self.store, fresh, keys.START)
        finally:
            lock.release()

    def _mark_stopped(self, rec: Record, reason: str = "") -> None:
        obs = rec.observed
        if obs.get("node") not in (None, self.node) and obs.get("state") in keys.LIVE:
            return      # it runs elsewhere; not ours to report
        if obs.get("state") in (keys.STOPPED, keys.FAILED) and obs.get("node") in (None,
                                                                                 self.node):
            return
        lock = self._locked(rec.uuid)
        if lock is None:
            return
        try:
            fresh = records.read(self.store, rec.uuid)
            fobs = fresh.observed if fresh else {}
            mine = fobs.get("node") in (None, self.node) or fobs.get("state") not in keys.LIVE
            if fresh and mine and self.hv.info(rec.uuid) is None and \
                    not self.orphans(rec.uuid):
                records.write_observed(self.store, rec.uuid, self.node, keys.STOPPED,
                                       libvirt_state="shutoff", failed_reason=reason)
        finally:
            lock.release()

    def _fail(self, rec: Record, reason: str) -> None:
        log.error("VM %s failed on %s: %s", rec.name, self.node, reason)
        records.write_observed(self.store, rec.uuid, self.node, keys.FAILED,
                               libvirt_state="shutoff", failed_reason=reason,
                               fail_version=rec.state_version)
        self.failed[rec.uuid] = (rec.name, reason)

    def _note_failed(self, rec: Record) -> None:
        """Keep ``failed`` (what the keepalive reports) as the VM's record says."""
        if rec.display_state == keys.FAIL and rec.observed.get("node") == self.node:
            self.failed[rec.uuid] = (rec.name, str(rec.observed.get("failed_reason") or ""))
        else:
            self.failed.pop(rec.uuid, None)

    # -- actions ------------------------------------------------------------------------
    def in_service(self) -> bool:
        """False while the node is self-fenced or rejoining: nothing may start here."""
        gate = getattr(self.daemon, "in_service", None)
        return gate is None or gate.is_set()

    def start_here(self, rec: Record) -> bool:
        """Start the VM on this node; True if it runs here afterwards."""
        lock = self._locked(rec.uuid)
        if lock is None:
            return False
        try:
            fresh = records.read(self.store, rec.uuid)
            if fresh is None or fresh.node != self.node or fresh.state not in keys.RUN_STATES:
                return False
            if self.hv.info(rec.uuid) is not None:
                records.write_observed(self.store, rec.uuid, self.node, keys.RUNNING,
                                       libvirt_state="running")
                return True
            obs = fresh.observed
            if obs.get("state") in keys.LIVE and obs.get("node") != self.node:
                log.info("VM %s: waiting for %s to release it before starting here",
                         fresh.name, obs.get("node"))
                return False
            if (obs.get("state") == keys.FAILED and obs.get("node") == self.node
                    and obs.get("fail_version") == fresh.state_version):
                return False    # failed for this request; a new request retries
            if time.monotonic() < self.hold_until.get(rec.uuid, 0.0):
                return False    # backing off after a crash
            self.hold_until.pop(rec.uuid, None)
            orphans = self.orphans(rec.uuid)
            if orphans:
                self._orphaned(fresh, orphans)
                return False
            problem, access = self.daemon_disk_access(fresh, "start")
            if problem:
                self._fail(fresh, problem)
                return False
            if not self.in_service():
                # self-fenced meanwhile: the cluster may be restarting this VM elsewhere
                log.warning("VM %s: not starting, %s is out of service (self-fenced)",
                            fresh.name, self.node)
                return False
            try:
                self.sync_secrets(SECRETS_AT_START)
                self.hv.create(domxml.with_disk_access(
                    domxml.for_host(fresh.xml, self.virt_type), access))
            except Exception as exc:
                self._fail(fresh, f"Failed to start VM: {message(exc)}")
                return False
            log.info("VM %s started on %s", fresh.name, self.node)
            records.write_observed(self.store, rec.uuid, self.node, keys.RUNNING,
                                   libvirt_state="running")
            if fresh.state in (keys.MIGRATE, keys.UNMIGRATE):
                records.set_state_if(self.store, fresh, keys.START)
            return True
        finally:
            lock.release()

    def _orphaned(self, rec: Record, found: list[qemu.Guest]) -> None:
        """A QEMU of the VM runs here but libvirtd does not know it (libvirtd lost its state):
        never start a second one; say so (``pvc vm stop`` ends that process)."""
        pids = ", ".join(str(g.pid) for g in found)
        text = (f"VM {rec.name}: a QEMU process of it (pid {pids}) runs on {self.node} without "
                "libvirtd knowing it (libvirtd lost its state?); PVC will not start a second "
                "copy. `pvc vm stop` ends that process; start the VM again afterwards")
        obs = rec.observed
        if obs.get("node") == self.node and obs.get("libvirt_state") == "unmanaged":
            return                # said already
        log.error(text)
        faults.report(self.store, f"vm-orphan-{rec.uuid}", text, crashes.FAULT_DELTA_FAILED)
        records.write_observed(self.store, rec.uuid, self.node, keys.RUNNING,
                               libvirt_state="unmanaged", failed_reason=text)

    def stop_here(self, rec: Record, graceful: bool) -> bool:
        """Stop the VM here (ACPI first if ``graceful``); False if a newer request
        interrupted the shutdown. A QEMU process of it that libvirtd does not know is
        killed."""
        if graceful:
            outcome = self.shutdown(rec, watch=True)
            if outcome is None:
                return False
        else:
            self.intentional[rec.uuid] = time.time()
            self.hv.destroy(rec.uuid)
            log.info("VM %s stopped on %s", rec.name, self.node)
        self._end_orphans(rec)
        self._mark_stopped(records.read(self.store, rec.uuid) or rec)
        return True

    def _end_unmanaged(self, rec: Record) -> None:
        """A stop of a VM whose QEMU libvirtd does not know (``unmanaged``): kill it."""
        obs = rec.observed
        if obs.get("node") == self.node and obs.get("libvirt_state") == "unmanaged":
            self.intentional[rec.uuid] = time.time()
            self._end_orphans(rec)

    def _end_orphans(self, rec: Record) -> None:
        found = self.orphans(rec.uuid)
        if not found:
            return
        left = qemu.kill(found, 10.0)
        log.warning("VM %s: killed its QEMU process(es) %s that libvirtd did not know%s",
                    rec.name, ", ".join(str(g.pid) for g in found),
                    f"; {len(left)} survive SIGKILL" if left else "")
        if not left:
            faults.clear(self.store, f"vm-orphan-{rec.uuid}")

    def shutdown(self, rec: Record, watch: bool, timeout: float | None = None) -> bool | None:
        """ACPI shutdown, hard stop after ``timeout``. True: the guest powered off; False:
        it was stopped hard; None: a newer request for the VM came in (``watch``)."""
        timeout = self.cfg.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pressed = 0.0
        while time.monotonic() < deadline:
            if self.hv.info(rec.uuid) is None:
                log.info("VM %s shut down on %s", rec.name, self.node)
                return True
            if watch:
                _, version = self.store.get_versioned("vm.state", uuid=rec.uuid)
                if version != rec.state_version:
                    log.info("VM %s: shutdown interrupted by a newer request", rec.name)
                    return None
            if time.monotonic() - pressed >= POWER_BUTTON_EVERY:
                self.intentional[rec.uuid] = time.time()
                self.hv.press_power_button(rec.uuid)
                pressed = time.monotonic()
            if self.stopping.wait(0.2):
                return None
        log.warning("VM %s did not shut down within %g s; stopping it", rec.name, timeout)
        self.intentional[rec.uuid] = time.time()
        self.hv.destroy(rec.uuid)
        return False

    def migrate_away(self, rec: Record) -> None:
        """Move the running VM to its desired node (the lock is held throughout)."""
        lock = self._locked(rec.uuid, wait=30.0)
        if lock is None:
            return
        try:
            fresh = records.read(self.store, rec.uuid)
            if (fresh is None or fresh.node == self.node or fresh.state not in keys.RUN_STATES
                    or self.hv.info(rec.uuid) is None):
                return
            self._migrate_locked(fresh)
        finally:
            lock.release()

    def _migrate_locked(self, rec: Record) -> None:
        target = rec.node
        method = rec.meta.get("migration_method") or "live"
        force_live = bool(rec.request.get("force_live"))
        problem = self.target_problem(target)
        if problem:     # never stop a VM for a move to a node that cannot take it
            self._revert(rec, f"Not migrated to {target}: it {problem}")
            return
        error = ""
        if method != "shutdown" or force_live:
            target_info = keys.loads(self.store.get("vm_kvm.node", node=target), {})
            records.write_observed(self.store, rec.uuid, self.node, keys.MIGRATING,
                                   target=target, libvirt_state="running")
            disk_problem = self.daemon_disks(rec, "migrate")
            if disk_problem:
                error = disk_problem
            else:
                try:
                    seconds = self.hv.migrate(rec.uuid, target_info["migration_uri"],
                                              int(rec.meta.get("migration_max_downtime")
                                                  or keys.DEFAULT_MAX_DOWNTIME),
                                              self.cfg.migrate_timeout,
                                              self.cfg.unsafe_migration)
                except Exception as exc:
                    error = message(exc)
                else:
                    self.intentional[rec.uuid] = time.time()
                    log.info("VM %s live-migrated %s -> %s in %.2f s", rec.name, self.node,
                             target, seconds)
                    records.write_observed(self.store, rec.uuid, target, keys.RUNNING,
                                           libvirt_state="running", migrated_in=round(seconds, 3))
                    records.set_state_if(self.store, rec, keys.START)
                    return
                if self.hv.info(rec.uuid) is None:
                    # gone from here: the switch-over happened before the error (or it
                    # ended); the target runs it or, if it died, its fence recovers it
                    log.warning("VM %s: live migration to %s reported %s, but the VM left "
                                "%s; %s owns it now", rec.name, target, error, self.node,
                                target)
                    self.intentional[rec.uuid] = time.time()
                    records.write_observed(self.store, rec.uuid, target, keys.RUNNING,
                                           libvirt_state="running",
                                           failed_reason=f"Live migration ended with: {error}")
                    return
            log.warning("VM %s: live migration to %s failed: %s", rec.name, target, error)
            problem = self.target_problem(target, alive_since=time.time())
            if force_live or problem:
                why = f"Live migration to {target} failed: {error}"
                self._revert(rec, f"{why}; {target} {problem}" if problem else why)
                return
        # shutdown migration: stop here; the target (alive, checked just now) starts it
        # once observed says stopped
        self.shutdown(rec, watch=False)
        records.write_observed(self.store, rec.uuid, self.node, keys.STOPPED,
                               libvirt_state="shutoff",
                               failed_reason=f"Live migration failed: {error}" if error else "")
        log.info("VM %s shut down on %s for a move to %s", rec.name, self.node, target)

    def target_problem(self, target: str, alive_since: float | None = None) -> str | None:
        """Why ``target`` cannot take a VM now (it runs no hypervisor, is not running, has
        been silent, its libvirtd is down), or None. With ``alive_since`` (epoch, e.g. when
        a migration to it failed), it must also write a keepalive after that moment within
        two keepalive intervals: a node that just died still looks alive for a while."""
        interval = self.daemon.config.keepalive_interval
        deadline = time.monotonic() + 2 * interval + 1
        while True:
            info = keys.loads(self.store.get("vm_kvm.node", node=target), None)
            if not isinstance(info, dict) or not info.get("migration_uri"):
                return "runs no hypervisor"
            if info.get("libvirt") == "down":
                return f"has no working libvirtd ({info.get('libvirt_error') or 'down'})"
            (state, _), (text, _) = self.store.get_many(
                [("node.daemon_state", {"node": target}), ("node.keepalive", {"node": target})])
            if state != "run":
                return f"is not running (daemon state {state or 'unknown'})"
            try:
                keepalive = float(text or 0)
            except ValueError:
                keepalive = 0.0
            silent = time.time() - keepalive
            if silent > 2 * interval + 1:
                return f"has been silent for {silent:.0f} s"
            if alive_since is None or keepalive > alive_since:
                return None
            if time.monotonic() > deadline:
                return f"has written no keepalive since the failure ({silent:.0f} s)"
            if self.stopping.wait(0.25):
                return "this node is stopping"

    def _revert(self, rec: Record, reason: str) -> None:
        log.error("VM %s: %s; it stays on %s", rec.name, reason, self.node)
        txn = self.store.transaction()
        txn.set_data(schema.path("vm.node", uuid=rec.uuid), self.node.encode(),
                     version=rec.node_version)
        txn.set_data(schema.path("vm.state", uuid=rec.uuid), keys.START.encode(),
                     version=rec.state_version)
        txn.set_data(schema.path("vm.last_node", uuid=rec.uuid), b"")
        try:
            self.store.commit(txn)
        except Exception as exc:
            log.warning("VM %s: could not revert the migration request: %s", rec.name, exc)
        records.write_observed(self.store, rec.uuid, self.node, keys.RUNNING,
                               libvirt_state="running", failed_reason=reason)

    # -- disks and reports -------------------------------------------------------------
    def daemon_disks(self, rec: Record, purpose: str) -> str:
        """Ask the disk hook about every disk; the first problem, or ""."""
        return self.daemon_disk_access(rec, purpose)[0]

    def daemon_disk_access(self, rec: Record, purpose: str) -> tuple[str, dict[str, Any]]:
        """The first disk problem (or "") and what libvirt needs per network disk."""
        from pvc_plugins.vm_kvm import disks

        return disks.prepare(self.daemon, rec, purpose)

    def report_running(self, uuid: str) -> None:
        """A settled running VM's stats and console tail, without reading its record."""
        if uuid not in self.console_paths or self.hv.info(uuid) is None:
            self.reconcile(uuid, report=True)      # not known well enough: a full check
            return
        self._write_report(uuid, uuid, self.console_paths[uuid])

    def _write_report(self, uuid: str, name: str, path: str | None) -> None:
        self.reported[uuid] = time.monotonic()
        try:
            self.store.set("vm.stats", self.hv.stats(uuid), uuid=uuid)
        except Exception as exc:
            log.debug("stats of %s: %s", name, message(exc))
        if path:
            tail = console.tail(path, self.cfg.console_lines)
            if tail is not None and tail != self.console_tails.get(uuid):
                self.store.set("vm.console", tail, uuid=uuid)
                self.console_tails[uuid] = tail

    def report(self, rec: Record, info: Any) -> None:
        """Write the running VM's stats and console tail (only the node running it), at
        most every ``stats_interval``; note its libvirt state in ``observed``."""
        try:
            path = domxml.parse_cached(rec.xml).console_log
        except domxml.XmlError:
            path = None
        self.console_paths[rec.uuid] = path
        if time.monotonic() - self.reported.get(rec.uuid, 0.0) >= self.cfg.stats_interval:
            self._write_report(rec.uuid, rec.name, path)
        obs = rec.observed
        if obs.get("node") == self.node and obs.get("libvirt_state") != info.state_name \
                and obs.get("state") == keys.RUNNING:
            records.write_observed(self.store, rec.uuid, self.node, keys.RUNNING,
                                   libvirt_state=info.state_name)
        if rec.uuid in self.crash_faults:
            self._forget_crashes(rec)

    def node_stats(self) -> dict[str, Any]:
        """This node's VM figures for the keepalive (from the last poll; no libvirt call)."""
        doms = dict(self.domains)
        with self.lock:
            assigned = [u for u, n in self.assigned.items() if n == self.node]
        failed = {u: list(v) for u, v in dict(self.failed).items() if u in assigned}
        return {"virt_type": self.virt_type, "domains_count": len(assigned),
                "failed_domains": failed,
                "memory_provisioned": sum(self.memory.get(u, 0) for u in assigned),
                "running_domains": sorted(d.name for d in doms.values()),
                "memory_allocated": sum(d.memory_mib for d in doms.values()),
                "vcpu_allocated": sum(d.vcpus for d in doms.values())}
