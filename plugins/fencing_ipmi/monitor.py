"""The primary's fence monitor: detect dead nodes, run their fences, give storage back.

One thread on the primary, every half keepalive interval, under the cluster lock
``/locks/fence`` (one coordinator fences at a time; a dead coordinator's lock goes with its
session, and the next primary resumes every unfinished record):

1. declare dead the running nodes silent for longer than the fence delay (never before the
   node's own published suicide delay + one of its intervals; not in maintenance mode):
   daemon_state ``run`` → ``dead`` and a new fence record, in one transaction checked
   against the versions of the daemon state and of the keepalive that were judged;
2. run every unfinished fence record to ``done`` (``fence.Fencer``), as long as this
   coordinator holds the lock and the primary role and the monitor was not stopped (checked
   before every step; the record's writes are version-checked: a lost race stops it);
3. give storage access back to fenced nodes that ask to rejoin (their workloads stopped,
   ``/fencing/rejoins/<node>`` written after the fence finished): ``pvc_storage_unfence``.

Before step 2 it applies operators' power-off confirmations (``pvc node fence confirm``)
of failed fences: refused if the node is no longer ``dead`` or wrote a keepalive within its
fence delay; else, in one transaction checked against the judged keepalive, the daemon state
and the record, ``dead`` → ``fenced`` and the record reopened at ``storage``, logged and
recorded as an informational fault naming who confirmed it, and when.

Every round, lock or not, the fault of a fence that worked drops to health delta 0 once its
node is back in ``run`` (a failed fence's fault stays until acknowledged).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import KazooException, NoAuthError

from pvc_kernel.sdk import PRIMARY, TAKEOVER, HeldLock, faults, schema
from pvc_plugins.fencing_ipmi import keys
from pvc_plugins.fencing_ipmi.config import FenceConfig
from pvc_plugins.fencing_ipmi.fence import (
    DEAD,
    DONE,
    FAULT_DELTA_INFO,
    RUN,
    FenceLost,
    Fencer,
    Policy,
    alive_refusal,
    apply_confirm,
    confirm_fault_id,
    confirm_pending,
    dead_nodes,
    fault_id,
    new_record,
    reject_confirm,
    settle_message,
    worked,
)
from pvc_plugins.fencing_ipmi.ipmi import BmcAccess, BmcError, IpmiClient

log = logging.getLogger("pvc_plugins.fencing_ipmi")


def bmc_access(store: Any, node: str) -> BmcAccess:
    """The published BMC of ``node`` (BmcError if the node published none)."""
    info = store.get_json("fencing.bmc", None, node=node) or {}
    try:
        secret = store.get("fencing.secret", node=node)
    except NoAuthError:
        have = ("a different zookeeper.secret" if getattr(store, "authenticated", False)
                else "no zookeeper.secret")
        raise BmcError(f"ZooKeeper denies this coordinator the BMC password of {node}: it "
                       f"has {have}; set the same zookeeper.secret on every node") from None
    if not info.get("host") or secret is None:
        raise BmcError(f"node {node} has no BMC configured (plugins.fencing_ipmi.bmc)")
    return BmcAccess(info["host"], info.get("user") or "", secret, int(info.get("port") or 623))


class ZkEnv:
    """``fence.Env`` on ZooKeeper and the plugin hooks of the primary's daemon.

    The monitor gives it the fence lock it holds (``lock``) and its stop event; ``lost``
    checks both, the ZooKeeper session and the daemon's primary role. Fence records are
    read with ``load`` and written with ``save`` against the version last read or written.
    """

    def __init__(self, daemon: Any, cfg: FenceConfig,
                 stopped: threading.Event | None = None) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.cfg = cfg
        self.stopped = stopped or threading.Event()
        self.lock: HeldLock | None = None
        self.versions: dict[str, int] = {}

    def _client(self, node: str) -> IpmiClient:
        return IpmiClient(bmc_access(self.store, node), timeout=self.cfg.ipmi_timeout)

    def bmc_power_off(self, node: str) -> None:
        self._client(node).power_off()

    def bmc_power_state(self, node: str) -> str:
        return self._client(node).power_state()

    def set_daemon_state(self, node: str, state: str) -> None:
        """``dead`` → ``state``, version-checked: a node that meanwhile rejoined (or anything
        else changed) keeps its state."""
        current, version = self.store.get_versioned("node.daemon_state", node=node)
        if current != DEAD or not self.store.set_if_version("node.daemon_state", state,
                                                            version, node=node):
            log.warning("daemon state of %s not set to %s: it is %s now", node, state,
                        self.store.get("node.daemon_state", node=node))

    def storage_cut(self, node: str) -> dict[str, Any]:
        answers = [(n, a) for n, a in self.daemon.plugins.call_each(
            "pvc_storage_fence", obj=f"node:{node}", daemon=self.daemon, node=node,
            addresses=[]) if a is not None]
        if not answers:
            return {"ok": None, "detail": "no shared storage to cut", "addresses": [],
                    "cut_by": []}
        ok = all(a.get("ok") for _n, a in answers)
        return {"ok": ok, "detail": "; ".join(a.get("reason") or "" for _n, a in answers
                                              if a.get("reason")) or ("cut" if ok else "failed"),
                "addresses": sorted({x for _n, a in answers for x in a.get("addresses") or []}),
                "cut_by": [n for n, a in answers if a.get("ok")]}

    def recover(self, node: str, progress: Callable[[int, int, str], bool],
                fence: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, list] = {"recovered": [], "stopped": [], "failed": []}
        for _name, answer in self.daemon.plugins.call_each(
                "pvc_node_recover", obj=f"node:{node}", daemon=self.daemon, node=node,
                progress=progress, fence=fence):
            for key in merged:
                merged[key] += list((answer or {}).get(key) or [])
        return merged

    def set_domain_state(self, node: str, observed: str, desired: str | None) -> None:
        self.store.set("node.domain_state", observed, node=node)
        if desired is not None:
            self.store.set("node.desired_domain_state", desired, node=node)

    def lost(self) -> str | None:
        if self.stopped.is_set():
            return "the fence monitor was stopped"
        if not self.store.connected:
            return "no ZooKeeper connection"
        election = getattr(self.daemon, "election", None)
        if election is not None and getattr(election, "role", PRIMARY) not in (PRIMARY,
                                                                               TAKEOVER):
            return "this coordinator is no longer primary"
        lock = self.lock
        if lock is None or not lock.held:
            return "the fence lock is not held"
        try:
            ours = lock.still_ours()
        except KazooException as exc:
            return f"cannot check the fence lock: {exc or type(exc).__name__}"
        if not ours:
            return "the fence lock was lost with the ZooKeeper session"
        return None

    def load(self, node: str) -> dict[str, Any] | None:
        """The node's fence record (its version remembered for ``save``), or None."""
        text, version = self.store.get_versioned("fencing.fence", node=node)
        try:
            record = json.loads(text) if text else None
        except ValueError:
            log.warning("fence record of %s is not valid JSON", node)
            return None
        if not isinstance(record, dict):
            return None
        self.versions[node] = version
        return record

    def save(self, record: dict[str, Any]) -> None:
        node = record["node"]
        version = self.versions.get(node, -1)
        if not self.store.set_if_version("fencing.fence", json.dumps(record), version,
                                         node=node):
            self.versions.pop(node, None)
            raise FenceLost(f"the fence record of {node} was changed by someone else")
        self.versions[node] = version + 1

    def fault(self, fault_id: str, message: str, delta: int) -> None:
        faults.report(self.store, fault_id, message, delta)

    def log(self, message: str) -> None:
        log.warning(message)


class Monitor:
    """Runs on the primary between ``start`` and ``stop``."""

    def __init__(self, daemon: Any, cfg: FenceConfig) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.cfg = cfg
        self.node = daemon.node
        self.interval = max(0.25, daemon.config.keepalive_interval / 2)
        self.fence_delay = daemon.config.fence_delay
        self.watching_since = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unreleased: HeldLock | None = None
        self._settled: set[str] = set()
        """Fault IDs of fences that worked, already informational (or deleted)."""
        self.env = ZkEnv(daemon, cfg, self._stop)
        self.fencer = Fencer(self.env,
                             Policy(cfg.successful_fence, cfg.failed_fence, cfg.power_timeout))

    def start(self) -> None:
        # silence counts from this node's last (re)connection to ZooKeeper, not from the
        # takeover: a new primary has seen the keepalives all along, and a dead primary's
        # silence must not get a second fence delay on top of the election (issue 10)
        since = getattr(self.store, "connected_since", 0.0)
        self.watching_since = since if isinstance(since, float) and since > 0 else time.time()
        self.store.add_listener(self._on_connection)
        self._thread = threading.Thread(target=self._loop, name="fence-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the monitor; a fence under way stops before its next step (or recovery
        placement) and is resumed by the next primary."""
        self._stop.set()
        self.store.remove_listener(self._on_connection)

    def _on_connection(self, state: str) -> None:
        if state == "connected":
            self.watching_since = time.time()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except (KazooException, BmcError) as exc:
                log.warning("fence monitor: %s; retrying", exc or type(exc).__name__)
            except Exception:
                log.exception("fence monitor failed; retrying")

    # -- one round -----------------------------------------------------------------------
    def tick(self) -> None:
        if not self.store.connected or self._stop.is_set():
            return
        if self._unreleased is not None:     # a release that failed (connection loss)
            try:
                self._unreleased.release()
                self._unreleased = None
            except KazooException:
                return
        records = self.records()
        try:
            self.settle_faults(records)
        except Exception as exc:       # never in the way of a fence
            log.warning("fence monitor: settling fence faults failed: %s",
                        exc or type(exc).__name__)
        if not self.has_work(records):
            return
        lock = self.store.try_lock(keys.FENCE_LOCK, self.node, timeout=1.0)
        if lock is None:
            return
        self.env.lock = lock
        try:
            why = self.env.lost()
            if why:
                log.info("fence monitor: not fencing: %s", why)
                return
            if self.store.get("config.maintenance") != "true":
                self.detect()
            self.confirmations()
            for record in self.unfinished():
                self.fencer.run(record, by=self.node)
            self.give_back_storage()
        except FenceLost as exc:
            log.warning("fence monitor: stopped fencing: %s", exc)
        finally:
            self.env.lock = None
            try:
                lock.release()
            except KazooException:
                self._unreleased = lock

    def node_views(self) -> dict[str, tuple[str | None, float | None, int, int, float]]:
        """{node: (daemon_state, keepalive epoch, state version, keepalive version, the
        silence after which it is dead)} of every other node."""
        out = {}
        config = self.daemon.config
        names = [n for n in self.store.children("nodes") if n != self.node]
        reads = self.store.get_many([(key, {"node": n}) for n in names
                                     for key in ("node.daemon_state", "node.keepalive",
                                                 "node.static")])
        for i, name in enumerate(names):
            (state, version), (text, ka_version), (static, _) = reads[3 * i:3 * i + 3]
            try:
                keepalive = float(text or 0)
            except ValueError:
                keepalive = 0.0
            try:
                static_data = json.loads(static) if static else {}
            except ValueError:
                static_data = {}
            out[name] = (state, keepalive, version, ka_version,
                         config.fence_delay_for(static_data))
        return out

    def has_work(self, records: list[dict[str, Any]] | None = None) -> bool:
        """A look without the fence lock: is there a node to declare dead, a fence to finish,
        a confirmation to apply or storage to give back? Idle rounds then cost reads only, no
        lock writes."""
        if self.store.get("config.maintenance") != "true" and self.dead(self.node_views()):
            return True
        return any(r.get("step") != DONE or confirm_pending(r) or self.wants_storage_back(r)
                   for r in (self.records() if records is None else records))

    def dead(self, views: dict[str, tuple[str | None, float | None, int, int, float]]
             ) -> list[tuple[str, float]]:
        return dead_nodes({n: (v[0], v[1]) for n, v in views.items()}, time.time(),
                          self.fence_delay, self.watching_since,
                          delays={n: v[4] for n, v in views.items()})

    def detect(self) -> None:
        views = self.node_views()
        for name, silence in self.dead(views):
            _state, _ka, state_version, ka_version, delay = views[name]
            self.declare(name, silence, state_version, ka_version, delay)

    def declare(self, node: str, silence: float, state_version: int,
                keepalive_version: int | None = None, delay: float | None = None) -> bool:
        """``run`` → ``dead`` and a new fence record, atomically, only if neither the daemon
        state nor (when given) the keepalive changed since they were judged; False if not."""
        record = new_record(node, self.node, silence)
        old, record_version = self.store.get_versioned("fencing.fence", node=node)
        if old and json.loads(old).get("step") != DONE:
            return False       # a fence of it is under way already
        txn = self.store.transaction()
        if keepalive_version is not None:
            txn.check(schema.path("node.keepalive", node=node), keepalive_version)
        txn.set_data(schema.path("node.daemon_state", node=node), b"dead",
                     version=state_version)
        p = schema.path("fencing.fence", node=node)
        data = json.dumps(record).encode()
        if record_version < 0:
            self.store.ensure("fencing.fences")
            txn.create(p, data)
        else:
            txn.set_data(p, data, version=record_version)
        results = txn.commit()
        if any(isinstance(r, Exception) for r in results):
            return False
        self.env.versions[node] = 0 if record_version < 0 else record_version + 1
        try:
            previous = json.loads(old) if old else None
        except ValueError:
            previous = None
        if isinstance(previous, dict) and previous.get("id") and worked(previous):
            self.settle(previous)     # it was back in run: its last fence is over
        log.warning("node %s is dead: no keepalive for %.1f s (fence delay %g s); fencing it",
                    node, silence, delay if delay is not None else self.fence_delay)
        return True

    def records(self) -> list[dict[str, Any]]:
        out = []
        for name in self.store.children("fencing.fences"):
            rec = self.env.load(name)
            if rec is not None:
                out.append(rec)
        return out

    def unfinished(self) -> list[dict[str, Any]]:
        return sorted((r for r in self.records() if r.get("step") != DONE),
                      key=lambda r: r.get("declared") or 0)

    def wants_storage_back(self, rec: dict[str, Any]) -> bool:
        """A finished fence that cut the node's storage, and the node asked to rejoin since."""
        if rec.get("step") != DONE or rec.get("unfenced") \
                or not (rec.get("storage") or {}).get("ok"):
            return False
        try:
            asked = float(self.store.get("fencing.rejoin", node=rec["node"]) or 0)
        except ValueError:
            asked = 0.0
        return asked > (rec.get("finished") or 0)

    def give_back_storage(self) -> None:
        for rec in self.records():
            if not self.wants_storage_back(rec):
                continue
            node = rec["node"]
            why = self.env.lost()
            if why:
                raise FenceLost(why)
            answers = [a for _n, a in self.daemon.plugins.call_each(
                "pvc_storage_unfence", obj=f"node:{node}", daemon=self.daemon, node=node,
                addresses=rec["storage"].get("addresses") or []) if a is not None]
            if answers and not all(a.get("ok") for a in answers):
                log.warning("giving storage back to %s failed: %s", node,
                            "; ".join(a.get("reason") or "" for a in answers))
                continue
            now = round(time.time(), 3)
            rec["unfenced"] = now
            rec["history"].append([now, DONE, "asked to rejoin; storage access given back"])
            self.env.save(rec)
            log.info("node %s asks to rejoin after its fence; storage access given back", node)

    # -- faults whose cause is over ------------------------------------------------------
    def settle_faults(self, records: list[dict[str, Any]] | None = None) -> None:
        """Drop the fault of every fence that worked to informational (delta 0) once its
        node is back in ``run``; faults of failed fences stay until acknowledged."""
        todo = [r for r in (self.records() if records is None else records)
                if r.get("id") and isinstance(r.get("node"), str) and worked(r)
                and fault_id(r) not in self._settled]
        if not todo:
            return
        states = self.store.get_many([("node.daemon_state", {"node": r["node"]})
                                      for r in todo])
        for rec, (state, _version) in zip(todo, states, strict=True):
            if state == RUN:
                self.settle(rec)

    def settle(self, rec: dict[str, Any]) -> bool:
        """Make the fence's fault informational (version-checked; a deleted fault stays
        deleted). False if concurrent writers kept it from it (tried again next round)."""
        fid, node = fault_id(rec), rec["node"]
        for _ in range(5):
            text, version = self.store.get_versioned("fault", fault_id=fid)
            if version < 0:
                break
            try:
                stored = json.loads(text) if text else {}
            except ValueError:
                stored = {}
            fault = faults.normalise(fid, stored)
            if fault["health_delta"] == FAULT_DELTA_INFO:
                break
            now = faults.stamp()
            fault.update(health_delta=FAULT_DELTA_INFO, last_reported=now,
                         message=settle_message(fault["message"], node, now))
            if self.store.set_if_version("fault", json.dumps(fault), version, fault_id=fid):
                log.info("fault %s: node %s is back in the cluster; informational now", fid,
                         node)
                break
        else:
            return False
        self._settled.add(fid)
        return True

    # -- operator confirmations ----------------------------------------------------------
    def confirmations(self) -> None:
        """Apply (or refuse) every pending power-off confirmation; under the fence lock."""
        for rec in self.records():
            if confirm_pending(rec):
                why = self.env.lost()
                if why:
                    raise FenceLost(why)
                try:
                    self.confirm(rec)
                except (FenceLost, KazooException):
                    raise
                except Exception:
                    log.exception("fence of %s: applying the confirmation failed",
                                  rec.get("node"))

    def confirm(self, rec: dict[str, Any]) -> bool:
        """Accept an operator's confirmation that the dead node is off, if it still looks
        dead: daemon state ``fenced`` and the record reopened, in one transaction checked
        against the judged keepalive, daemon state and record. False if refused or raced."""
        node, confirm = rec["node"], rec["confirm"]
        version = self.env.versions.get(node, -1)
        (state, state_version), (ka_text, ka_version), (static, _) = self.store.get_many(
            [(key, {"node": node}) for key in ("node.daemon_state", "node.keepalive",
                                                "node.static")])
        try:
            keepalive = float(ka_text or 0)
        except ValueError:
            keepalive = 0.0
        try:
            static_data = json.loads(static) if static else {}
        except ValueError:
            static_data = {}
        now = time.time()
        why = alive_refusal(state, keepalive, now,
                            self.daemon.config.fence_delay_for(static_data))
        who = f"{confirm.get('by')} (from {confirm.get('source')})"
        if why:
            self.env.save(reject_confirm(rec, why, now))
            log.warning("fence of %s: power-off confirmation by %s refused: %s", node, who, why)
            return False
        new = apply_confirm(rec, now)
        txn = self.store.transaction()
        if ka_version >= 0:
            txn.check(schema.path("node.keepalive", node=node), ka_version)
        txn.set_data(schema.path("node.daemon_state", node=node), b"fenced",
                     version=state_version)
        txn.set_data(schema.path("fencing.fence", node=node), json.dumps(new).encode(),
                     version=version)
        if any(isinstance(r, Exception) for r in txn.commit()):
            self.env.versions.pop(node, None)
            log.info("fence of %s: the confirmation raced with a change; judged again", node)
            return False
        self.env.versions[node] = version + 1
        requested = faults.stamp(confirm.get("requested"))
        power = (rec.get("power") or {}).get("detail") or "no answer"
        log.warning("fence of %s: %s confirmed at %s that the node is powered off (its BMC "
                    "did not: %s); recovering it as if fenced", node, who, requested, power)
        faults.report(self.store, confirm_fault_id(rec),
                      f"Node {node}: {who} confirmed at {requested} that it is powered off "
                      f"(its BMC did not: {power}); its VMs are recovered as if it was fenced "
                      f"(fence {rec['id']}, accepted by {self.node})", FAULT_DELTA_INFO)
        return True
