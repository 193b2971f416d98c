"""Primary election among coordinators.

One exclusive lock (``/election``) makes a coordinator primary. A coordinator
contends only while it is eligible: no planned handover names another live
coordinator. The holder gives the role up when a handover names someone else,
when the daemon stops, or when its ZooKeeper session is lost (the lock's
ephemeral node is then gone and another coordinator may already hold it).

Nothing polls ZooKeeper in the steady state: a secondary waits inside the lock
queue, and a watch on ``config.desired_primary`` wakes both sides (cancelling a
queued attempt when a handover names someone else). One lock object is kept per
ZooKeeper session, so an attempt interrupted by a connection drop finds and
reuses its own queue entry instead of leaving an orphan that would block the
queue; entries of our session that are not ours any more are removed after a
reconnect.

States written to ``node.coordinator_state``: takeover → primary → relinquish →
secondary. ``config.primary_node`` names the primary while one holds the lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kazoo.exceptions import CancelledError, KazooException, LockTimeout
from kazoo.recipe.lock import Lock

from pvc_kernel.state.store import Store

log = logging.getLogger(__name__)

PRIMARY, SECONDARY, TAKEOVER, RELINQUISH, CLIENT = (
    "primary", "secondary", "takeover", "relinquish", "client")

CONTEND_TIMEOUT = 30.0  # a queued attempt is renewed this often (also bounds stop latency)
RECHECK = 5.0           # the primary re-asserts config.primary_node this often


class Election:
    """Runs in its own thread on a coordinator; calls back on role changes."""

    def __init__(self, store: Store, node: str,
                 on_primary: Callable[[], None], on_secondary: Callable[[], None],
                 session_timeout: float = 6.0, poll: float = 0.25) -> None:
        self.store = store
        self.node = node
        self.on_primary = on_primary
        self.on_secondary = on_secondary
        self.poll = poll
        self.session_timeout = session_timeout
        self.role = SECONDARY
        self._stop = threading.Event()
        self._changed = threading.Event()       # desired primary or connection changed
        self._session_lost = threading.Event()
        self._reconnected = threading.Event()
        self._lock: Lock | None = None
        self._lock_session: int | None = None
        self._thread = threading.Thread(target=self._run, name="election", daemon=True)
        store.add_listener(self._on_connection)

    # -- public --------------------------------------------------------------------
    def start(self) -> None:
        self.store.data_watch("config.desired_primary", self._on_desired)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Give up the primary role (if held) and stop contending."""
        self._stop.set()
        self._changed.set()
        lock = self._lock
        if lock is not None:
            lock.cancel()
        self._thread.join(timeout)

    @property
    def is_primary(self) -> bool:
        return self.role == PRIMARY

    # -- notifications (kazoo threads: never block here) ----------------------------
    def _on_connection(self, state: str) -> None:
        if state == "lost":
            self._session_lost.set()
        elif state == "connected":
            self._reconnected.set()
        self._changed.set()

    def _on_desired(self, data: bytes | None, _stat: object) -> bool:
        desired = data.decode() if data else ""
        self._changed.set()
        lock = self._lock
        if lock is not None and self.role != PRIMARY and desired not in ("", self.node):
            lock.cancel()  # stop queueing; the loop re-checks whether the named node is alive
        return not self._stop.is_set()

    # -- internals -------------------------------------------------------------
    def _set_role(self, role: str) -> None:
        self.role = role
        if self.store.connected:
            try:
                self.store.set("node.coordinator_state", role, node=self.node)
            except Exception:
                log.warning("could not record coordinator state %s", role)

    def _wanted(self) -> str:
        """The node a planned handover asks for, if it is a live coordinator; else ""."""
        desired = self.store.get("config.desired_primary") or ""
        if not desired or desired == self.node:
            return desired
        alive = self.store.exists("alive.node", node=desired)
        coordinator = self.store.get("node.coordinator_state", node=desired) not in (None, CLIENT)
        return desired if alive and coordinator else ""

    def _session_lock(self) -> Lock:
        """The lock object of the current session, created on first use per session."""
        session = self.store.session_id
        if self._lock is None or self._lock_session != session:
            self._lock = self.store.lock_at("election", self.node)
            self._lock_session = session
        if self._reconnected.is_set():
            self._reconnected.clear()
            self._drop_orphans(session)
        return self._lock

    def _drop_orphans(self, session: int | None) -> None:
        """Delete queue entries of this session that the current lock object does not own."""
        mine = self._lock.node if self._lock is not None else None
        try:
            self.store.drop_session_children("election", session, keep=mine)
        except KazooException:
            self._reconnected.set()  # try again next time

    def _run(self) -> None:
        self._set_role(SECONDARY)
        while not self._stop.is_set():
            try:
                if not self.store.connected or not self._eligible():
                    self._changed.clear()
                    self._changed.wait(self.poll * 4)
                    continue
                self._session_lost.clear()
                lock = self._session_lock()
                try:
                    if not lock.acquire(timeout=CONTEND_TIMEOUT):
                        continue
                except (LockTimeout, CancelledError):
                    continue
                try:
                    self._lead()
                finally:
                    try:
                        if self.store.connected and not self._session_lost.is_set():
                            lock.release()
                    except Exception:
                        log.debug("lock release failed", exc_info=True)
                    self._lock = None  # a fresh object for the next attempt
            except Exception:
                log.exception("election loop error; retrying")
                self._stop.wait(1.0)

    def _eligible(self) -> bool:
        return self._wanted() in ("", self.node)

    def _lead(self) -> None:
        started = time.monotonic()
        self._set_role(TAKEOVER)
        log.info("taking over as primary coordinator")
        try:
            self.on_primary()
        except Exception:
            log.exception("a become-primary duty failed")
        self.store.set("config.primary_node", self.node)
        if self.store.get("config.desired_primary") == self.node:
            self.store.update("config.desired_primary",
                              lambda v: "" if v == self.node else (v or ""))
        self._set_role(PRIMARY)
        log.info("now primary coordinator (takeover took %.2f s)", time.monotonic() - started)
        reason = self._hold()
        log.info("relinquishing primary coordinator: %s", reason)
        self._set_role(RELINQUISH)
        try:
            self.on_secondary()
        except Exception:
            log.exception("a become-secondary duty failed")
        if self.store.connected and not self._session_lost.is_set():
            try:
                self.store.update("config.primary_node",
                                  lambda v: "none" if v == self.node else (v or "none"))
            except Exception:
                log.warning("could not clear primary_node")
        self._set_role(SECONDARY)

    def _hold(self) -> str:
        """Stay primary until there is a reason not to; returns the reason.

        Cut off from ZooKeeper for longer than the session timeout, the session is surely
        expired server-side (another coordinator may be primary), so the role is given up
        without waiting for kazoo to reconnect and report it.
        """
        last_connected = time.monotonic()
        last_check = time.monotonic()
        while True:
            if self._stop.is_set():
                return "daemon stopping"
            if self._session_lost.is_set():
                return "ZooKeeper session lost"
            if not self.store.connected:
                if time.monotonic() - last_connected > self.session_timeout:
                    self._session_lost.set()
                self._stop.wait(self.poll)
                continue
            last_connected = time.monotonic()
            if self._changed.is_set() or time.monotonic() - last_check >= RECHECK:
                self._changed.clear()
                last_check = time.monotonic()
                try:
                    wanted = self._wanted()
                    if wanted not in ("", self.node):
                        return f"planned handover to {wanted}"
                    if self.store.get("config.primary_node") != self.node:
                        self.store.set("config.primary_node", self.node)
                except Exception:
                    log.debug("primary check failed", exc_info=True)
                    self._changed.set()
                    self._stop.wait(self.poll)
            self._changed.wait(self.poll * 4)
