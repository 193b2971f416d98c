"""pvcnoded: the per-node daemon — the kernel plus its plugins.

Start-up: read and validate the config, load plugins (and let them validate their
sections), connect to ZooKeeper, migrate the schema if needed, register the node
(state ``init``), start the bus, the task runner, the keepalive (state ``run``
after the first one) and, on coordinators, the election. SIGTERM: state
``shutdown``, give up the primary role, stop plugins, state ``stop``, exit — all
within ``SHUTDOWN_BUDGET`` seconds.

Liveness (see docs/fencing.md): the primary declares a running node ``dead`` when its
keepalive is older than ``keepalive_interval × fence_intervals`` (the fence delay), and never
before that node's own suicide delay plus one of its keepalive intervals (every node
publishes its settings in its static data, ``liveness``), and a fencing plugin fences it.
A node that could not write a keepalive for ``keepalive_interval × suicide_intervals``
(shorter, config validation enforces it) fences itself: plugins stop its workloads
(``pvc_node_self_fence``) and get no bus events until the node has rejoined. A node the
cluster gave up (state ``dead``/``fenced``, found at start or while running, or after a
self-fence) stops its workloads, then rejoins once every ``pvc_node_rejoin_wait`` says so:
state ``init`` → ``run``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

from pvc_kernel import __version__, nodeservice
from pvc_kernel import config as config_mod
from pvc_kernel.bus import Bus
from pvc_kernel.election import CLIENT, Election
from pvc_kernel.events import ConnectionChanged, Event, RoleChanged
from pvc_kernel.nodelog import ZooKeeperLogHandler
from pvc_kernel.plugins import PluginError, PluginHost, available
from pvc_kernel.state import migrations, schema
from pvc_kernel.state.store import Store
from pvc_kernel.tasks import TaskRunner, prune

log = logging.getLogger("pvcnoded")

SHUTDOWN_BUDGET = 5.0
EXIT_CONFIG, EXIT_PLUGIN, EXIT_SCHEMA, EXIT_ZOOKEEPER, EXIT_DUPLICATE = 2, 3, 4, 5, 6

INIT, RUN, SHUTDOWN, STOP = "init", "run", "shutdown", "stop"
DEAD, FENCED = "dead", "fenced"
GIVEN_UP = (DEAD, FENCED)
"""States the primary writes for a node it declared dead / fenced."""


class StartupError(Exception):
    """The daemon cannot start; carries the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class NodeDaemon:
    """One node's daemon. Plugins reach the node through this object."""

    def __init__(self, config: config_mod.NodeConfig, plugins: PluginHost) -> None:
        self.config = config
        self.node = config.node
        self.plugins = plugins
        self.log = log
        self.store = Store(config.zookeeper_hosts, timeout=config.zookeeper_session_timeout,
                           listener=self._on_connection, secret=config.zookeeper_secret)
        self.bus = Bus(self._dispatch)
        self.bus.store = self.store
        self.election: Election | None = None
        self.tasks: TaskRunner | None = None
        self.log_handler: ZooKeeperLogHandler | None = None
        self.api_process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.keepalive_count = 0
        self.keepalive_bytes = 0
        self.keepalive_ops = 0
        self._registered = threading.Event()
        self._running = False  # daemon_state is `run` (no need to read it per keepalive)
        self.in_service = threading.Event()  # closed: plugins get no bus events (self-fenced)
        self.in_service.set()
        self.last_keepalive = time.monotonic()  # when the last keepalive was written
        self.self_fenced = False
        self._rejoining = threading.Lock()
        self._keepalive_lock = threading.Lock()  # one keepalive attempt at a time
        self._kick = threading.Event()           # set: write a keepalive now, not at the tick
        self._state_version = -1                 # version of our daemon_state when `run`
        self.disconnected_since: float | None = None  # monotonic, while ZooKeeper is away
        self.keepalive_refused = False   # the last attempt reached ZooKeeper, which said no
        self.last_self_fence: dict[str, Any] | None = None
        self.stalled_at = -1e9                   # monotonic: when a stall was last seen

    # -- events ---------------------------------------------------------------------
    def _dispatch(self, event: Event) -> None:
        while not self.in_service.wait(0.5):  # self-fenced: hold the event until we rejoin
            if self.stopping.is_set():
                return
        self.plugins.call_each("pvc_event", obj=event.obj, daemon=self, event=event)
        nodeservice.on_event(self, event)

    def _on_connection(self, state: str) -> None:
        if state == "suspended":
            log.warning("ZooKeeper connection suspended; pausing keepalives")
            if self.disconnected_since is None:
                self.disconnected_since = time.monotonic()
        elif state == "lost":
            log.warning("ZooKeeper session lost; will re-register when reconnected")
            self._running = False  # others may have changed our state meanwhile: re-read it
            if self.disconnected_since is None:
                self.disconnected_since = time.monotonic()
        elif state == "connected":
            self.disconnected_since = None
            if self._registered.is_set():
                log.info("ZooKeeper connection restored")
                threading.Thread(target=self._reassert, name="reassert", daemon=True).start()
                self._kick.set()        # a keepalive at once, not after a whole interval
        self.bus.publish(ConnectionChanged(obj=f"node:{self.node}", state=state))

    def _reassert(self) -> None:
        """After a new session, recreate our ephemeral presence key."""
        try:
            self.store.create_ephemeral("alive.node", str(os.getpid()), node=self.node)
        except Exception:
            log.exception("could not re-create the alive key")

    # -- start-up ---------------------------------------------------------------------
    def connect(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        hosts = ",".join(self.config.zookeeper_hosts)
        while not self.stopping.is_set():
            try:
                self.store.start(timeout=min(10.0, max(1.0, deadline - time.monotonic())))
                return
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise StartupError(f"cannot reach ZooKeeper at {hosts}: {exc}",
                                       EXIT_ZOOKEEPER) from None
                log.warning("waiting for ZooKeeper at %s (%s)", hosts, exc)
        raise StartupError("stopped while waiting for ZooKeeper", 0)

    def migrate_schema(self) -> None:
        steps = {name: list(answer or [])
                 for name, answer in self.plugins.call_each("pvc_schema_migrations")}
        try:
            before = migrations.migrate(self.store, self.node,
                                        plugins={n: s for n, s in steps.items() if s})
        except migrations.SchemaTooNewError as exc:
            raise StartupError(str(exc), EXIT_SCHEMA) from None
        now = migrations.current_version(self.store)
        if before != now:
            log.info("ZooKeeper schema migrated from version %d to %d", before, now)
        cluster = self.store.get("config.cluster_name")
        if not cluster:
            self.store.update("config.cluster_name", lambda v: v or self.config.cluster)
        elif cluster != self.config.cluster:
            raise StartupError(f"this ZooKeeper holds cluster {cluster!r}, but the config says "
                               f"cluster {self.config.cluster!r}", EXIT_CONFIG)

    def static_data(self) -> dict[str, Any]:
        uname = platform.uname()
        data = {
            "cpu_count": os.cpu_count() or 1,
            "memory_total": psutil.virtual_memory().total // (1024 * 1024),
            "kernel": uname.release,
            "os": _os_name(),
            "arch": uname.machine,
            "pvc_version": __version__,
        }
        for _name, extra in self.plugins.call_each("pvc_node_static", daemon=self):
            data.update(extra or {})
        data[config_mod.LIVENESS] = self.config.liveness()   # what detection honours
        return data

    def register(self) -> None:
        """Claim this node's name and write its registration (state ``init``).

        A node the cluster gave up (state ``dead``/``fenced``) first waits until it may
        rejoin and stops what may still run here (``rejoin``)."""
        deadline = time.monotonic() + self.config.zookeeper_session_timeout * 1.5 + 1
        while True:
            try:
                self.store.client.create(schema.path("alive.node", node=self.node),
                                         str(os.getpid()).encode(), ephemeral=True,
                                         makepath=True)
                break
            except Exception as exc:
                if type(exc).__name__ != "NodeExistsError":
                    raise
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"another pvcnoded for node {self.node!r} is connected to ZooKeeper",
                        EXIT_DUPLICATE) from None
                log.info("an earlier session of %s is still registered; waiting for it to "
                         "expire", self.node)
                time.sleep(0.5)
        n = self.node
        if self.store.get("node.daemon_state", node=n) in GIVEN_UP:
            self.rejoin("the cluster declared this node dead while it was down", start=True)
        coord = "secondary" if self.config.coordinator else CLIENT
        txn = self.store.transaction()
        if not self.store.exists("node", node=n):
            txn.create(schema.path("node", node=n), b"")
            for key, value in (("node.domain_state", "ready"),
                               ("node.desired_domain_state", "ready"),
                               ("node.keepalive", "0"), ("node.stats", "{}"),
                               ("node.static", "{}"), ("node.daemon_state", INIT),
                               ("node.coordinator_state", coord)):
                txn.create(schema.path(key, node=n), value.encode())
        else:
            for key in ("node.domain_state", "node.desired_domain_state", "node.keepalive",
                        "node.stats", "node.static", "node.daemon_state",
                        "node.coordinator_state"):
                if not self.store.exists(key, node=n):
                    txn.create(schema.path(key, node=n), b"")
        self.store.commit(txn)
        self.store.set("node.static", self.static_data(), node=n)
        self.store.set("node.daemon_state", INIT, node=n)
        self.store.set("node.coordinator_state", coord, node=n)
        self.store.ensure("node.log", "", node=n)
        self._registered.set()

    def start(self) -> None:
        self.connect()
        self.migrate_schema()
        self.register()
        self.log_handler = ZooKeeperLogHandler(self.store, self.node,
                                               self.config.log_zookeeper_lines)
        self.log_handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        logging.getLogger().addHandler(self.log_handler)
        self.log_handler.start()
        log.info("node %s registered (PVC %s, coordinator: %s, plugins: %s)", self.node,
                 __version__, self.config.coordinator, ", ".join(self.plugins.names) or "none")

        handlers = nodeservice.task_handlers(self)
        for _name, extra in self.plugins.call_each("pvc_task_handlers"):
            handlers.update(extra or {})
        self.tasks = TaskRunner(self.store, self.node, handlers, daemon=self)
        self.tasks.recover()
        self.plugins.call_each("pvc_node_start", daemon=self)
        self.bus.watch_children("tasks", obj="tasks")
        nodeservice.start(self)
        self.keepalive()  # the first keepalive moves the node to `run`
        self.last_keepalive = time.monotonic()
        self.store.client.DataWatch(schema.path("node.daemon_state", node=self.node),
                                    self._on_own_state)
        threading.Thread(target=self._keepalive_loop, name="keepalive", daemon=True).start()
        threading.Thread(target=self._liveness_loop, name="liveness", daemon=True).start()
        if self.config.coordinator:
            self.election = Election(self.store, self.node, self._become_primary,
                                     self._become_secondary,
                                     session_timeout=self.config.zookeeper_session_timeout)
            self.election.start()
            if self.config.api.enabled:
                threading.Thread(target=self._supervise_api, name="api-supervisor",
                                 daemon=True).start()

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
    def _become_primary(self) -> None:
        self.bus.publish(RoleChanged(obj=f"node:{self.node}", role="primary"))
        self.plugins.call_each("pvc_become_primary", daemon=self)

    def _become_secondary(self) -> None:
        self.bus.publish(RoleChanged(obj=f"node:{self.node}", role="secondary"))
        self.plugins.call_each("pvc_become_secondary", daemon=self)

    # -- API supervision ------------------------------------------------------------
    def _supervise_api(self) -> None:
        """Run pvcapid with this node's config; restart it if it dies."""
        # pvcapid arranges itself to get SIGTERM when this process dies (--parent-pid): no
        # preexec_fn, which can deadlock the fork of a multi-threaded process
        argv = [sys.executable, "-m", "pvc_api.server", "--config", self.config.source,
                "--parent-pid", str(os.getpid())]
        backoff = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.api_process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
            except OSError as exc:
                log.error("cannot start pvcapid: %s", exc)
                self.stopping.wait(5)
                continue
            log.info("started pvcapid (pid %d)", self.api_process.pid)
            while self.api_process.poll() is None and not self.stopping.wait(0.5):
                pass
            if self.stopping.is_set():
                return
            log.warning("pvcapid exited with %s; restarting", self.api_process.returncode)
            backoff = 1.0 if time.monotonic() - started > 30 else min(backoff * 2, 30)
            self.stopping.wait(backoff)

    def _stop_api(self, timeout: float) -> None:
        proc = self.api_process
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()

    # -- shutdown -------------------------------------------------------------------
    def shutdown(self) -> None:
        """Graceful stop; bounded by SHUTDOWN_BUDGET."""
        started = time.monotonic()

        def left() -> float:
            return max(0.1, SHUTDOWN_BUDGET - 0.5 - (time.monotonic() - started))

        log.info("shutting down")
        self.stopping.set()
        if self.store.connected:
            self.store.set("node.daemon_state", SHUTDOWN, node=self.node)
        if self.election:
            self.election.stop(timeout=min(2.5, left()))
        self._stop_api(min(1.0, left()))
        if self.tasks:
            self.tasks.stop()
        self.plugins.call_each("pvc_node_stop", daemon=self)
        self.bus.stop(timeout=min(1.0, left()))
        if self.store.connected:
            self.store.set("node.daemon_state", STOP, node=self.node)
        log.info("stopped")
        if self.log_handler:
            logging.getLogger().removeHandler(self.log_handler)
            self.log_handler.close()
        self.store.stop()


def _os_name() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kazoo").setLevel(logging.WARNING)


def build(config_path: str | None) -> NodeDaemon:
    """Config + plugins → a daemon ready to start (raises StartupError)."""
    try:
        cfg = config_mod.load(config_path)
    except config_mod.ConfigError as exc:
        raise StartupError(f"configuration error in {exc}", EXIT_CONFIG) from None
    _setup_logging(cfg.log_level)
    host = PluginHost()
    try:
        host.load(cfg.disabled_plugins, enabled=cfg.enabled_plugins)
    except PluginError as exc:
        raise StartupError(str(exc), EXIT_PLUGIN) from None
    problems = [p for _n, found in host.call_each("pvc_config_validate", config=cfg)
                for p in (found or [])]
    known = set(host.names) | set(cfg.disabled_plugins)
    if cfg.enabled_plugins is not None:     # sections of installed, not enabled plugins are fine
        known |= set(available())
    problems += [f"key 'plugins.{name}': no plugin named {name!r} is installed"
                 for name in cfg.plugin_sections if name not in known]
    if problems:
        raise StartupError(f"configuration error in {cfg.source}: " + "; ".join(problems),
                           EXIT_CONFIG)
    return NodeDaemon(cfg, host)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pvcnoded", description="PVC node daemon: registers this node in the cluster, "
        "keeps it alive, runs its plugins and, on coordinators, the primary election.",
        epilog="Liveness: a running node whose keepalive is older than keepalive_interval × "
        "fence_intervals (default 5 s × 4 = 20 s) is declared dead and fenced by the primary; "
        "a node that cannot write a keepalive for keepalive_interval × suicide_intervals "
        "(default 5 s × 2 = 10 s, must be shorter) stops its own VMs first. "
        "See docs/fencing.md.")
    parser.add_argument("-c", "--config", help=f"config file (default ${config_mod.CONFIG_ENV} "
                        f"or {config_mod.DEFAULT_PATH})")
    parser.add_argument("--version", action="version", version=f"pvcnoded {__version__}")
    args = parser.parse_args(argv)
    try:
        daemon = build(args.config)
    except StartupError as exc:
        print(f"pvcnoded: {exc}", file=sys.stderr)
        return exc.code

    def on_signal(signum: int, _frame: Any) -> None:
        daemon.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon.start()
    except StartupError as exc:
        print(f"pvcnoded: {exc}", file=sys.stderr)
        daemon.store.stop()
        return exc.code
    except Exception:
        log.exception("pvcnoded: unexpected error during start")
        daemon.store.stop()
        return 1
    while not daemon.stopping.wait(1.0):
        pass
    watchdog = threading.Timer(SHUTDOWN_BUDGET, lambda: os._exit(1))
    watchdog.daemon = True
    watchdog.start()
    daemon.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
