"""pvcnoded: the per-node daemon — the kernel plus its plugins.

Start-up: read and validate the config, load plugins (and let them validate their
sections), connect to ZooKeeper, migrate the schema if needed, register the node
(state ``init``), start the bus, the task runner, the keepalive (state ``run``
after the first one) and, on coordinators, the election. SIGTERM: state
``shutdown``, give up the primary role, stop plugins, state ``stop``, exit — all
within ``SHUTDOWN_BUDGET`` seconds.

Liveness (keepalives, self-fence, rejoin) is in ``pvc_kernel.liveness``, pvcapid's
supervision in ``pvc_kernel.apisupervisor``; both are parts of ``NodeDaemon``.
"""

from __future__ import annotations

import argparse
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
from pvc_kernel.apisupervisor import ApiSupervisor
from pvc_kernel.bus import Bus
from pvc_kernel.election import CLIENT, Election
from pvc_kernel.events import ConnectionChanged, Event, RoleChanged
from pvc_kernel.liveness import GIVEN_UP, INIT, SHUTDOWN, STOP, Liveness
from pvc_kernel.nodelog import ZooKeeperLogHandler
from pvc_kernel.plugins import PluginError, PluginHost, available
from pvc_kernel.state import migrations, schema
from pvc_kernel.state.store import Store
from pvc_kernel.tasks import TaskRunner

log = logging.getLogger("pvcnoded")

SHUTDOWN_BUDGET = 5.0
EXIT_CONFIG, EXIT_PLUGIN, EXIT_SCHEMA, EXIT_ZOOKEEPER, EXIT_DUPLICATE = 2, 3, 4, 5, 6



class StartupError(Exception):
    """The daemon cannot start; carries the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class NodeDaemon(Liveness, ApiSupervisor):
    """One node's daemon. Plugins reach the node through this object. Its liveness
    (``pvc_kernel.liveness``) and pvcapid supervision (``pvc_kernel.apisupervisor``) live
    in modules of their own."""

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
                self.store.create("alive.node", str(os.getpid()), ephemeral=True,
                                  node=self.node)
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
        self.store.data_watch("node.daemon_state", self._on_own_state, node=self.node)
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

    def _become_primary(self) -> None:
        self.bus.publish(RoleChanged(obj=f"node:{self.node}", role="primary"))
        self.plugins.call_each("pvc_become_primary", daemon=self)

    def _become_secondary(self) -> None:
        self.bus.publish(RoleChanged(obj=f"node:{self.node}", role="secondary"))
        self.plugins.call_each("pvc_become_secondary", daemon=self)

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
    installed = set(cfg.disabled_plugins)
    if cfg.enabled_plugins is not None:     # sections of installed, not enabled plugins are fine
        installed |= set(available())
    problems = host.config_problems(cfg, installed)
    if problems:
        raise StartupError(f"configuration error in {cfg.source}: " + "; ".join(problems),
                           EXIT_CONFIG)
    return NodeDaemon(cfg, host)


def config_reference(style: str = "yaml") -> str:
    """Every setting of pvcnoded.yaml: the kernel's (``pvc_kernel.config``) and each installed
    plugin's declared ones, as commented YAML or as the markdown of docs/config.md."""
    host = PluginHost()
    host.load()
    kernel = config_mod.example()
    plugins = "\n".join(host.config_help()) + "\n"
    if style == "yaml":
        return kernel + plugins
    return ("# pvcnoded.yaml: every setting\n\n"
            "Generated by `pvcnoded --help-config markdown` from the kernel's settings "
            "(`pvc_kernel/config.py`) and the keys each installed plugin declares "
            "(`pvc_config_settings`); `tests/unit/test_plugin_settings.py` fails when this "
            "file is out of date. Unknown keys and bad values stop pvcnoded and pvcapid "
            "with a line naming the key.\n\n"
            "## The kernel\n\n```yaml\n" + kernel + "```\n\n"
            "## Plugins\n\nEach plugin reads its own section under `plugins:`. A plugin "
            "that declares no settings takes none.\n\n```yaml\nplugins:\n" + plugins + "```\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pvcnoded", description="PVC node daemon: registers this node in the cluster, "
        "keeps it alive, runs its plugins and, on coordinators, the primary election.",
        epilog="Liveness: a running node whose keepalive is older than keepalive_interval × "
        "fence_intervals (default 2 s × 6 = 12 s) is declared dead and fenced by the primary; "
        "a node that cannot write a keepalive for keepalive_interval × suicide_intervals "
        "(default 2 s × 4 = 8 s, must be shorter) stops its own VMs first. "
        "See docs/fencing.md. Every setting of the config file: --help-config.")
    parser.add_argument("-c", "--config", help=f"config file (default ${config_mod.CONFIG_ENV} "
                        f"or {config_mod.DEFAULT_PATH})")
    parser.add_argument("--version", action="version", version=f"pvcnoded {__version__}")
    parser.add_argument("--help-config", nargs="?", const="yaml", choices=("yaml", "markdown"),
                        help="print every setting of the config file (the kernel's and those "
                        "each installed plugin declares) with default, type and help, as "
                        "commented YAML or as the markdown of docs/config.md, and exit")
    args = parser.parse_args(argv)
    if args.help_config:
        try:
            print(config_reference(args.help_config), end="")
        except PluginError as exc:
            print(f"pvcnoded: {exc}", file=sys.stderr)
            return EXIT_PLUGIN
        return 0
    try:
        daemon = build(args.config)
    except StartupError as exc:
        print(f"pvcnoded: {exc}", file=sys.stderr)
        return exc.code

    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # lock-free: the handler runs in the main thread wherever it is, possibly inside
        # Event.wait() holding the very lock that Event.set() would take (a deadlock)
        received.append(signum)

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
    while not received and not daemon.stopping.is_set():
        time.sleep(0.2)
    daemon.stopping.set()
    watchdog = threading.Timer(SHUTDOWN_BUDGET, lambda: os._exit(1))
    watchdog.daemon = True
    watchdog.start()
    daemon.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
