"""The ``fencing_ipmi`` plugin's hook implementations (entry point ``pvc.plugins``).

Every node publishes and checks its BMC; the primary runs the fence monitor
(``monitor.Monitor``); a node given up by the cluster waits for its fence to finish before it
rejoins; the API gets ``POST /node/{node}/fence/confirm`` (``api``). pyghmi is imported
only when a BMC is talked to.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pvc_kernel.sdk import TimerFired, hookimpl
from pvc_plugins.fencing_ipmi import config as fconfig
from pvc_plugins.fencing_ipmi import keys, node

log = logging.getLogger("pvc_plugins.fencing_ipmi")
CHECK_TIMER = "fencing_ipmi.check"

_monitors: dict[int, Any] = {}
_checks: dict[int, dict[str, Any]] = {}
"""The last BMC self-check of each daemon in this process (no password in it)."""
_lock = threading.Lock()


@hookimpl
def pvc_config_validate(config: Any) -> list[str]:
    return fconfig.parse(config.plugin_section(fconfig.NAME))[1]


@hookimpl
def pvc_schema_keys() -> list[Any]:
    return list(keys.KEYS)


def _check(daemon: Any) -> None:
    try:
        _checks[id(daemon)] = node.publish_and_check(daemon, fconfig.load(daemon.config))
    except Exception as exc:
        log.warning("BMC self-check of %s failed: %s", daemon.node, exc)


@hookimpl
def pvc_node_start(daemon: Any) -> None:
    """Publish this node's BMC and check it now (in the background) and periodically."""
    cfg = fconfig.load(daemon.config)
    threading.Thread(target=_check, args=(daemon,), name="bmc-check", daemon=True).start()
    daemon.bus.every(cfg.check_interval, CHECK_TIMER, obj=CHECK_TIMER)


@hookimpl
def pvc_event(daemon: Any, event: Any) -> None:
    if isinstance(event, TimerFired) and event.name == CHECK_TIMER:
        _check(daemon)


@hookimpl
def pvc_become_primary(daemon: Any) -> None:
    """Start the fence monitor."""
    from pvc_plugins.fencing_ipmi.monitor import Monitor

    with _lock:
        old = _monitors.pop(id(daemon), None)
        if old:
            old.stop()
        mon = _monitors[id(daemon)] = Monitor(daemon, fconfig.load(daemon.config))
    mon.start()


@hookimpl
def pvc_become_secondary(daemon: Any) -> None:
    with _lock:
        mon = _monitors.pop(id(daemon), None)
    if mon:
        mon.stop()


@hookimpl
def pvc_node_stop(daemon: Any) -> None:
    pvc_become_secondary(daemon)


@hookimpl
def pvc_keepalive_stats(daemon: Any) -> dict[str, dict[str, Any]]:
    """Namespace ``bmc``: host, port, user, reachable, power, error, checked (the last
    self-check; never the password)."""
    last = _checks.get(id(daemon))
    return {"bmc": dict(last)} if last else {}


@hookimpl
def pvc_api_routes(api: Any) -> None:
    """``POST /node/{node}/fence/confirm``: an operator confirms a dead node is off."""
    from pvc_plugins.fencing_ipmi import api as fence_api

    fence_api.add_to(api)


@hookimpl
def pvc_api_node(stats: dict[str, Any]) -> dict[str, Any]:
    """The Node object's ``bmc`` field (what ``pvc node info`` shows) from the stats."""
    bmc = stats.get("bmc")
    return {"bmc": bmc} if isinstance(bmc, dict) else {}


@hookimpl
def pvc_node_rejoin_wait(daemon: Any) -> str | None:
    return node.rejoin_wait(daemon)
