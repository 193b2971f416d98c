"""The ``fencing_ipmi`` plugin (entry point ``fencing_ipmi`` in ``pvc.plugins`` names
``FencingIpmiPlugin``).

Every node publishes and checks its BMC (``agent``); the primary runs the fence monitor
(``monitor.Monitor``); a node given up by the cluster waits for its fence to finish before it
rejoins; the API gets ``POST /node/{node}/fence/confirm`` (``api``). pyghmi is imported
only when a BMC is talked to.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pvc_kernel.sdk import Settings, TimerFired, hookimpl
from pvc_plugins.fencing_ipmi import agent, keys
from pvc_plugins.fencing_ipmi import config as fconfig

log = logging.getLogger("pvc_plugins.fencing_ipmi")
CHECK_TIMER = "fencing_ipmi.check"


class FencingIpmiPlugin:
    """One per daemon: the fence monitor while this node is primary, and the last BMC
    self-check (no password in it)."""

    def __init__(self) -> None:
        self.monitor: Any = None
        self.last_check: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @hookimpl
    def pvc_config_settings(self) -> Settings:
        """``plugins.fencing_ipmi`` (``pvc_plugins.fencing_ipmi.config.SETTINGS``)."""
        return fconfig.SETTINGS

    @hookimpl
    def pvc_schema_keys(self) -> list[Any]:
        return list(keys.KEYS)

    def _check(self, daemon: Any) -> None:
        try:
            self.last_check = agent.publish_and_check(daemon, fconfig.load(daemon.config))
        except Exception as exc:
            log.warning("BMC self-check of %s failed: %s", daemon.node, exc)

    @hookimpl
    def pvc_health_checks(self, daemon: Any) -> list[Any]:
        """``ipmi``: this node's BMC answers (``agent.BmcCheck``)."""
        return [agent.BmcCheck(lambda: self.last_check)]

    @hookimpl
    def pvc_node_start(self, daemon: Any) -> None:
        """Publish this node's BMC and check it now (in the background) and periodically."""
        cfg = fconfig.load(daemon.config)
        threading.Thread(target=self._check, args=(daemon,), name="bmc-check",
                         daemon=True).start()
        daemon.bus.every(cfg.check_interval, CHECK_TIMER, obj=CHECK_TIMER)

    @hookimpl
    def pvc_event(self, daemon: Any, event: Any) -> None:
        if isinstance(event, TimerFired) and event.name == CHECK_TIMER:
            self._check(daemon)

    @hookimpl
    def pvc_become_primary(self, daemon: Any) -> None:
        """Start the fence monitor."""
        from pvc_plugins.fencing_ipmi.monitor import Monitor

        with self._lock:
            if self.monitor:
                self.monitor.stop()
            mon = self.monitor = Monitor(daemon, fconfig.load(daemon.config))
        mon.start()

    @hookimpl
    def pvc_become_secondary(self, daemon: Any) -> None:
        """Stop the fence monitor."""
        with self._lock:
            mon, self.monitor = self.monitor, None
        if mon:
            mon.stop()

    @hookimpl
    def pvc_node_stop(self, daemon: Any) -> None:
        self.pvc_become_secondary(daemon)

    @hookimpl
    def pvc_keepalive_stats(self, daemon: Any) -> dict[str, dict[str, Any]]:
        """Namespace ``bmc``: host, port, user, reachable, power, error, checked (the last
        self-check; never the password)."""
        last = self.last_check
        return {"bmc": dict(last)} if last else {}

    @hookimpl
    def pvc_api_routes(self, api: Any) -> None:
        """``POST /node/{node}/fence/confirm``: an operator confirms a dead node is off."""
        from pvc_plugins.fencing_ipmi import api as fence_api

        fence_api.add_to(api)

    @hookimpl
    def pvc_api_node(self, stats: dict[str, Any]) -> dict[str, Any]:
        """The Node object's ``bmc`` field (what ``pvc node info`` shows) from the stats."""
        bmc = stats.get("bmc")
        return {"bmc": bmc} if isinstance(bmc, dict) else {}

    @hookimpl
    def pvc_node_rejoin_wait(self, daemon: Any) -> str | None:
        return agent.rejoin_wait(daemon)
