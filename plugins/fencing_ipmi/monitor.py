"""The primary's fence monitor: detect dead nodes, run their fences, give storage back.

One thread on the primary, every half keepalive interval, under the cluster lock
``/locks/fence`` (one coordinator fences at a time; a dead coordinator's lock goes with its
session, and the next primary resumes every unfinished record):

1. declare dead the running nodes silent for longer than the fence delay (not in
   maintenance mode): daemon_state ``run`` → ``dead`` (version-checked) and a new fence
   record, in one transaction;
2. run every unfinished fence record to ``done`` (``fence.Fencer``);
3. give storage access back to fenced nodes that ask to rejoin (their workloads stopped,
   ``/fencing/rejoins/<node>`` written after the fence finished): ``pvc_storage_unfence``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import KazooException, LockTimeout

from pvc_kernel import faults
from pvc_kernel.state import schema
from pvc_plugins.fencing_ipmi import keys
from pvc_plugins.fencing_ipmi.config import FenceConfig
from pvc_plugins.fencing_ipmi.fence import DONE, Fencer, Policy, dead_nodes, new_record
from pvc_plugins.fencing_ipmi.ipmi import BmcAccess, BmcError, IpmiClient

log = logging.getLogger("pvc_plugins.fencing_ipmi")


def bmc_access(store: Any, node: str) -> BmcAccess:
    """The published BMC of ``node`` (BmcError if the node published none)."""
    info = store.get_json("fencing.bmc", None, node=node) or {}
    secret = store.get("fencing.secret", node=node)
    if not info.get("host") or secret is None:
        raise BmcError(f"node {node} has no BMC configured (plugins.fencing_ipmi.bmc)")
    return BmcAccess(info["host"], info.get("user") or "", secret, int(info.get("port") or 623))


class ZkEnv:
    """``fence.Env`` on ZooKeeper and the plugin hooks of the primary's daemon."""

    def __init__(self, daemon: Any, cfg: FenceConfig) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.cfg = cfg

    def _client(self, node: str) -> IpmiClient:
        return IpmiClient(bmc_access(self.store, node), timeout=self.cfg.ipmi_timeout)

    def bmc_power_off(self, node: str) -> None:
        self._client(node).power_off()

    def bmc_power_state(self, node: str) -> str:
        return self._client(node).power_state()

    def set_daemon_state(self, node: str, state: str) -> None:
        self.store.set("node.daemon_state", state, node=node)

    def storage_cut(self, node: str) -> dict[str, Any]:
        answers = [a for _n, a in self.daemon.plugins.call_each(
            "pvc_storage_fence", obj=f"node:{node}", daemon=self.daemon, node=node,
            addresses=[]) if a is not None]
        if not answers:
            return {"ok": None, "detail": "no shared storage to cut", "addresses": []}
        ok = all(a.get("ok") for a in answers)
        return {"ok": ok, "detail": "; ".join(a.get("reason") or "" for a in answers
                                              if a.get("reason")) or ("cut" if ok else "failed"),
                "addresses": sorted({x for a in answers for x in a.get("addresses") or []})}

    def recover(self, node: str, progress: Callable[[int, int, str], None]) -> dict[str, Any]:
        merged: dict[str, list] = {"recovered": [], "stopped": [], "failed": []}
        for _name, answer in self.daemon.plugins.call_each(
                "pvc_node_recover", obj=f"node:{node}", daemon=self.daemon, node=node,
                progress=progress):
            for key in merged:
                merged[key] += list((answer or {}).get(key) or [])
        return merged

    def set_domain_state(self, node: str, observed: str, desired: str | None) -> None:
        self.store.set("node.domain_state", observed, node=node)
        if desired is not None:
            self.store.set("node.desired_domain_state", desired, node=node)

    def save(self, record: dict[str, Any]) -> None:
        self.store.set("fencing.fence", json.dumps(record), node=record["node"])

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
        self.fencer = Fencer(ZkEnv(daemon, cfg),
                             Policy(cfg.successful_fence, cfg.failed_fence, cfg.power_timeout))

    def start(self) -> None:
        self.watching_since = time.time()
        self.store.add_listener(self._on_connection)
        self._thread = threading.Thread(target=self._loop, name="fence-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
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
        lock = self.store.lock(keys.FENCE_LOCK, self.node)
        try:
            if not lock.acquire(timeout=1.0):
                return
        except LockTimeout:
            return
        try:
            if self.store.get("config.maintenance") != "true":
                self.detect()
            for record in self.unfinished():
                if self._stop.is_set():
                    return
                self.fencer.run(record, by=self.node)
            self.give_back_storage()
        finally:
            try:
                lock.release()
            except KazooException:
                pass

    def node_views(self) -> dict[str, tuple[str | None, float | None, int]]:
        out = {}
        for name in self.store.children("nodes"):
            if name == self.node:
                continue
            state, version = self.store.get_versioned("node.daemon_state", node=name)
            try:
                keepalive = float(self.store.get("node.keepalive", node=name) or 0)
            except ValueError:
                keepalive = 0.0
            out[name] = (state, keepalive, version)
        return out

    def detect(self) -> None:
        views = self.node_views()
        found = dead_nodes({n: (s, k) for n, (s, k, _v) in views.items()}, time.time(),
                           self.fence_delay, self.watching_since)
        for name, silence in found:
            self.declare(name, silence, views[name][2])

    def declare(self, node: str, silence: float, state_version: int) -> bool:
        """``run`` → ``dead`` and a new fence record, atomically; False if the node changed."""
        record = new_record(node, self.node, silence)
        old, record_version = self.store.get_versioned("fencing.fence", node=node)
        if old and json.loads(old).get("step") != DONE:
            return False       # a fence of it is under way already
        txn = self.store.transaction()
        txn.set_data(schema.path("node.daemon_state", node=node), b"dead",
                     version=state_version)
        p = schema.path("fencing.fence", node=node)
        data = json.dumps(record).encode()
        if record_version < 0:
            self.store.client.ensure_path(schema.path("fencing.fences"))
            txn.create(p, data)
        else:
            txn.set_data(p, data, version=record_version)
        results = txn.commit()
        if any(isinstance(r, Exception) for r in results):
            return False
        log.warning("node %s is dead: no keepalive for %.1f s (fence delay %g s); fencing it",
                    node, silence, self.fence_delay)
        return True

    def records(self) -> list[dict[str, Any]]:
        out = []
        for name in self.store.children("fencing.fences"):
            rec = self.store.get_json("fencing.fence", None, node=name)
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def unfinished(self) -> list[dict[str, Any]]:
        return sorted((r for r in self.records() if r.get("step") != DONE),
                      key=lambda r: r.get("declared") or 0)

    def give_back_storage(self) -> None:
        for rec in self.records():
            if rec.get("step") != DONE or rec.get("unfenced") \
                    or not (rec.get("storage") or {}).get("ok"):
                continue
            node = rec["node"]
            try:
                asked = float(self.store.get("fencing.rejoin", node=node) or 0)
            except ValueError:
                asked = 0.0
            if asked <= (rec.get("finished") or 0):
                continue
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
            self.store.set("fencing.fence", json.dumps(rec), node=node)
            log.info("node %s asks to rejoin after its fence; storage access given back", node)
