"""``pvcapid``: serve the API with waitress on ``api.listen_address:api.port``.

Reads the node's ``pvcnoded.yaml`` (``--config``, else $PVC_CONFIG_FILE, else the default),
loads the plugins, connects to ZooKeeper in the background (answering 503 until connected) and
stops promptly on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any

import waitress
import waitress.server

from pvc_api.app import Api, create_app
from pvc_kernel import config as node_config
from pvc_kernel.plugins import PluginError, PluginHost
from pvc_kernel.state import Store

log = logging.getLogger("pvcapid")


def load(path: str | None) -> tuple[node_config.NodeConfig, PluginHost]:
    """Read and validate the config and load the plugins; raises ConfigError/PluginError."""
    cfg = node_config.load(path)
    plugins = PluginHost()
    plugins.load(cfg.disabled_plugins)
    problems = plugins.config_problems(cfg, cfg.disabled_plugins)
    if problems:
        raise node_config.ConfigError(problems, cfg.source)
    return cfg, plugins


STOP_DEADLINE = 10
"""Seconds a shutdown may take after SIGTERM before SIGALRM ends the process."""

OUTPUT_IN_MEMORY = 16 * 2**20
"""Bytes of a response waitress keeps in memory before it spills the rest to a file."""


def create_server(api: Api, cfg: node_config.NodeConfig) -> Any:
    """A waitress server for ``api.app`` (not yet running), trusting the configured TLS front."""
    extra: dict[str, Any] = {}
    if cfg.api.trusted_proxy:
        extra = {"trusted_proxy": cfg.api.trusted_proxy, "trusted_proxy_count": 1,
                 "trusted_proxy_headers": cfg.api.trusted_proxy_headers,
                 "clear_untrusted_proxy_headers": True}
    # a VM list of 1,000 VMs is ~1.5 MB: kept in memory, not spilled to a temporary file
    # (waitress' default above 1 MiB)
    server = waitress.create_server(api.app, host=cfg.api.listen_address, port=cfg.api.port,
                                    threads=cfg.api.threads, ident="pvcapid",
                                    outbuf_overflow=OUTPUT_IN_MEMORY, **extra)
    keep_listening(server)
    return server


def keep_listening(server: Any) -> None:
    """Make an error while taking one connection cost that connection only.

    waitress' default answer to an exception in the listener's handlers (e.g. a peer gone
    between ``accept`` and the channel's set-up) closes the listening socket and the loop's
    trigger: the API would stop answering for good while the process lives on."""
    def handle_error() -> None:
        log.error("error while taking a connection; still listening", exc_info=True)

    # one listener per address ``listen_address`` resolves to (a MultiSocketServer holds them)
    listeners = getattr(server, "map", {server: server}).values()
    for listener in listeners:
        if isinstance(listener, waitress.server.BaseWSGIServer):
            listener.handle_error = handle_error


def serve(cfg: node_config.NodeConfig, plugins: PluginHost) -> None:
    """Run until SIGTERM/SIGINT."""
    store = Store(cfg.zookeeper_hosts, timeout=cfg.zookeeper_session_timeout)
    store.add_listener(lambda state: log.info("ZooKeeper connection %s", state))
    api = create_app(store, cfg, plugins)
    server = create_server(api, cfg)

    stopping = []
    wake_read, wake_write = os.pipe()

    def release_waiters() -> None:
        os.read(wake_read, 1)
        api.stopping.set()  # requests waiting for a task answer now

    threading.Thread(target=release_waiters, name="pvcapid-stop", daemon=True).start()

    def stop(signum: int, frame: Any) -> None:
        # No lock may be taken here: the handler runs in the main thread wherever it was,
        # also inside an earlier run of itself (two SIGTERMs at once: the parent's death
        # signal and a supervisor's); Event.set() here once deadlocked pvcapid for good.
        if stopping:
            return
        stopping.append(signum)
        os.write(wake_write, b"x")   # release_waiters sets api.stopping
        signal.alarm(STOP_DEADLINE)  # SIGALRM's default action ends a shutdown that hangs
        raise SystemExit(0)  # waitress' run() catches it and closes the server

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    store.start_async()  # keeps retrying; requests get 503 until it is connected
    log.info("pvcapid on %s listening on http://%s:%d%s (plugins: %s)", cfg.node,
             cfg.api.listen_address, cfg.api.port, api.prefix, ", ".join(plugins.names) or "none")
    try:
        server.run()
    finally:
        api.stopping.set()  # requests waiting for a task answer now
        server.close()
        store.stop()
        log.info("pvcapid stopped")


def die_with_parent(parent_pid: int) -> None:
    """Get SIGTERM when the process that started us dies, even by SIGKILL; exit at once if
    it is already gone (it died before the request took effect)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent_pid:
        raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvcapid", description="PVC REST API daemon")
    parser.add_argument("--config", "-c", help="path of pvcnoded.yaml (default: "
                        f"${node_config.CONFIG_ENV} or {node_config.DEFAULT_PATH})")
    parser.add_argument("--parent-pid", type=int, metavar="PID",
                        help="exit (SIGTERM) when process PID, the supervising pvcnoded, dies")
    args = parser.parse_args(argv)
    if args.parent_pid:
        die_with_parent(args.parent_pid)
    try:
        cfg, plugins = load(args.config)
    except (node_config.ConfigError, PluginError) as exc:
        print(f"pvcapid: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(cfg, plugins)
    except OSError as exc:  # e.g. the port is taken
        log.error("cannot serve on %s:%d: %s", cfg.api.listen_address, cfg.api.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
