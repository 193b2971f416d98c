"""The node's liveness, a part of ``NodeDaemon``: keepalives, the self-fence and the rejoin.

The primary declares a running node ``dead`` when its keepalive is older than the fence
delay (``keepalive_interval × fence_intervals``), never before that node's own suicide delay
plus one of its keepalive intervals (every node publishes its settings in its static data,
``liveness``), and a fencing plugin fences it. A node that could not write a keepalive for
its suicide delay AND truly cannot reach ZooKeeper fences itself: plugins stop its
workloads (``pvc_node_self_fence``) and get no bus events until the node has rejoined. A
node the cluster gave up (``dead``/``fenced``, found at start or while running, or after a
self-fence) stops its workloads, then rejoins once every ``pvc_node_rejoin_wait`` says so:
state ``init`` → ``run``. See docs/fencing.md.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from pvc_kernel.state import schema
from pvc_kernel.tasks import prune

log = logging.getLogger("pvcnoded")

INIT, RUN, SHUTDOWN, STOP = "init", "run", "shutdown", "stop"
DEAD, FENCED = "dead", "fenced"
GIVEN_UP = (DEAD, FENCED)
"""States the primary writes for a node it declared dead / fenced."""


class Liveness:
    """Keepalive, liveness and rejoin methods of ``NodeDaemon`` (which holds their state:
    see its ``__init__``)."""

    config: Any
    node: str
    store: Any
    plugins: Any

    # -- keepalive ------------------------------------------------------------------
    def keepalive(self, timeout: float | None = None) -> bool:
        """One keepalive: timestamp + plugin stats (+ init→run) in ONE multi-op, checked
        against the version of our daemon state, so a keepalive never lands after the
        cluster declared this node dead. True if it was written; ``timeout`` bounds the wait
        for ZooKeeper's answer."""
        with self._keepalive_lock:
            return self._keepalive(timeout)

    def _keepalive(self, timeout: float | None) -> bool:
        if not self.store.connected:
            return False
        stats: dict[str, Any] = {}
        for _name, part in self.plugins.call_each("pvc_keepalive_stats", daemon=self):
            stats.update(part or {})
        if self.last_self_fence:
            stats["self_fence"] = self.last_self_fence
        n = self.node
        ops = [(schema.path("node.keepalive", node=n), f"{time.time():.3f}".encode()),
               (schema.path("node.stats", node=n), json.dumps(stats).encode())]
        if self._running and self._state_version >= 0:
            state, version = RUN, self._state_version
        else:
            state, version = self.store.get_versioned("node.daemon_state", node=n)
        given_up = state in GIVEN_UP
        if given_up:       # still say we are here (an operator must not think us off)
            self._start_rejoin(f"the cluster declared this node {state} while it runs")
        elif state not in (INIT, RUN):
            return False
        state_path = schema.path("node.daemon_state", node=n)
        txn = self.store.transaction()
        if state == INIT:
            txn.set_data(state_path, RUN.encode(), version=version)
        elif not given_up:
            txn.check(state_path, version)
        for p, data in ops:
            txn.set_data(p, data)
        try:
            results = txn.commit_async().get(timeout=timeout)
        except Exception as exc:   # connection loss, or no answer within `timeout`
            self.keepalive_refused = False
            log.warning("keepalive not written: %s", str(exc) or type(exc).__name__)
            return False
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            self.keepalive_refused = True
            log.warning("keepalive transaction failed: %r", failed[0])
            self._running = False    # re-read our state (and its version) next time
            return False
        if given_up:
            self._running = False
            return False     # written, but this node is out of service until it rejoins
        self.last_keepalive = time.monotonic()
        self.keepalive_count += 1
        self.keepalive_ops += 1
        self.keepalive_bytes += sum(len(d) for _, d in ops)
        if state == INIT:
            log.info("node %s is running", n)
        self._state_version = version + 1 if state == INIT else version
        self._running = True
        return True

    def _keepalive_loop(self) -> None:
        interval = self.config.keepalive_interval
        next_at = time.monotonic() + interval
        while not self.stopping.is_set():
            kicked = self._kick.wait(max(0.0, next_at - time.monotonic()))
            if self.stopping.is_set():
                return
            self._kick.clear()
            now = time.monotonic()
            next_at = now + interval if kicked or now > next_at + interval else next_at + interval
            try:
                self.keepalive(timeout=max(1.0, interval))
                if self.election and self.election.is_primary:
                    prune(self.store, self.config.task_retention)
            except Exception as exc:
                log.warning("keepalive failed: %s", exc)

    # -- liveness: self-fence and rejoin ------------------------------------------------
    def _liveness_loop(self) -> None:
        """Self-fence when no keepalive was written for ``suicide_delay`` AND ZooKeeper
        cannot be reached now (see ``reachable``); rejoin after a self-fence."""
        delay = self.config.suicide_delay
        period = min(0.5, self.config.keepalive_interval / 4)
        last_tick = time.monotonic()
        while not self.stopping.wait(period):
            now = time.monotonic()
            gap, last_tick = now - last_tick, now
            if gap > period + 1.0:      # this process was stalled (paused, swapping, ...)
                log.warning("pvcnoded did not run for %.1f s; writing a keepalive at once", gap)
                self.stalled_at = now
                self._kick.set()
            silent = now - self.last_keepalive
            if not self.self_fenced and silent > delay:
                why = self.reachable()
                if why is None:
                    log.warning("keepalive %.1f s late (suicide delay %g s), but ZooKeeper "
                                "took it now: this node stays in service", silent, delay)
                    continue
                self.self_fence(f"no keepalive written for {silent:.1f} s (suicide delay "
                                f"{delay:g} s = keepalive_interval × suicide_intervals) and "
                                f"{why}")
            elif self.self_fenced and silent < self.config.keepalive_interval * 2:
                self._start_rejoin("ZooKeeper is reachable again after a self-fence")

    def reachable(self) -> str | None:
        """Try a keepalive now; None if it was written, else why not.

        Right after a stall of this process (kazoo may be reconnecting, maybe with a new
        session) the attempt may take up to one keepalive interval (at most 2 s); otherwise
        (cut off, or the keepalive thread stuck) half a second. A keepalive that lands proves
        the cluster did not give this node up: it is checked against the version of our
        daemon state, and a declaration of death is checked against the keepalive it
        judged, so it fails."""
        grace = min(2.0, self.config.keepalive_interval)
        stalled = time.monotonic() - self.stalled_at < grace
        deadline = time.monotonic() + (grace if stalled else 0.5)
        tried = False
        while True:
            left = deadline - time.monotonic()
            if self.store.connected and left > 0:
                tried = True
                self.keepalive_refused = False
                if not self._keepalive_lock.acquire(timeout=left):
                    return "the keepalive thread is stuck"
                try:
                    if self._keepalive(max(0.2, deadline - time.monotonic())):
                        return None
                finally:
                    self._keepalive_lock.release()
                if self.keepalive_refused:     # ZooKeeper answered: not as we were
                    return "ZooKeeper refused the keepalive (our daemon state changed)"
            if time.monotonic() >= deadline:
                if tried:
                    return "a keepalive attempt failed"
                since = self.disconnected_since
                return ("ZooKeeper is not reachable" if since is None else
                        f"ZooKeeper has not been reachable for "
                        f"{time.monotonic() - since:.1f} s")
            time.sleep(0.05)

    def self_fence_deadline(self) -> float:
        """When the cluster may start this node's workloads elsewhere (monotonic): the
        primary waits at least our suicide delay + one keepalive interval of silence after
        our last keepalive; a quarter interval is kept as margin, and the plugins get at
        least one second even when that moment has passed (after a stall)."""
        interval = self.config.keepalive_interval
        earliest = self.last_keepalive + self.config.suicide_delay + interval * 0.75
        return max(earliest, time.monotonic() + 1.0)

    def self_fence(self, reason: str) -> None:
        """Stop this node's workloads now and hold plugin events until it rejoins; what each
        plugin did is logged and kept in ``last_self_fence`` (published in the stats)."""
        self.in_service.clear()
        self.self_fenced = True
        started, at = time.monotonic(), time.time()
        deadline = self.self_fence_deadline()
        log.error("self-fence: %s; stopping this node's workloads within %.1f s", reason,
                  deadline - started)
        done = {name: answer for name, answer in self.plugins.call_each(
            "pvc_node_self_fence", obj=f"node:{self.node}", daemon=self, reason=reason,
            deadline=deadline) if answer}
        seconds = time.monotonic() - started
        left = [f"{name}: {x}" for name, answer in done.items()
                for x in (answer.get("left") or [] if isinstance(answer, dict) else [])]
        self.last_self_fence = {"at": round(at, 3), "reason": reason,
                                "seconds": round(seconds, 2), "plugins": done}
        (log.error if left or time.monotonic() > deadline else log.warning)(
            "self-fence done in %.2f s (budget %.2f s)%s", seconds, deadline - started,
            f"; STILL RUNNING: {', '.join(left)}" if left else "")

    def _on_own_state(self, data: bytes | None, _stat: Any) -> bool:
        state = data.decode() if data else ""
        if state in GIVEN_UP and self._registered.is_set() and not self.stopping.is_set():
            self._start_rejoin(f"the cluster declared this node {state} while it runs")
        return not self.stopping.is_set()

    def _start_rejoin(self, reason: str) -> None:
        if self._rejoining.locked():
            return
        threading.Thread(target=self.rejoin, args=(reason,), name="rejoin",
                         daemon=True).start()

    def rejoin(self, reason: str, start: bool = False) -> None:
        """Stop this node's workloads, wait until every plugin lets it rejoin, then return to
        ``init`` (the next keepalive moves it to ``run``) and resume plugin events."""
        with self._rejoining:
            if not start and not self.self_fenced and \
                    self.store.get("node.daemon_state", node=self.node) not in GIVEN_UP:
                return      # another rejoin just finished
            self.in_service.clear()
            log.warning("rejoining the cluster: %s", reason)
            self.self_fence("rejoining after the cluster gave this node up")
            said = None
            while not self.stopping.is_set():
                try:
                    waits = [w for _n, w in self.plugins.call_each(
                        "pvc_node_rejoin_wait", obj=f"node:{self.node}", daemon=self) if w]
                except Exception as exc:  # ZooKeeper gone again
                    waits = [str(exc)]
                if not self.store.connected:
                    waits.append("no ZooKeeper connection")
                if not waits:
                    break
                if waits != said:
                    log.info("waiting to rejoin: %s", "; ".join(waits))
                    said = waits
                self.stopping.wait(1.0)
            if self.stopping.is_set():
                return
            if not start:
                state, version = self.store.get_versioned("node.daemon_state", node=self.node)
                if state in GIVEN_UP:
                    self.store.set_if_version("node.daemon_state", INIT, version,
                                              node=self.node)
                self._running = False   # the next keepalive reads the state: init → run
            self.last_keepalive = time.monotonic()   # a whole suicide delay from here
            self.self_fenced = False
            self.in_service.set()
            log.info("rejoined the cluster")

    # -- roles ----------------------------------------------------------------------
