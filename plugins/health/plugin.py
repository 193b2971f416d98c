"""The ``health`` plugin (entry point ``health`` in ``pvc.plugins`` names ``HealthPlugin``):
runs every plugin's health checks on every node (``pvc_health_checks``; its own are the
host's: load, disk, ZooKeeper, packages, hardware), publishes the node's health with each
keepalive (namespace ``health``), raises the faults of failing checks and, on the primary,
those of dead nodes; the API shows them in the Node object (docs/health.md)."""

from __future__ import annotations

from typing import Any

from pvc_kernel.sdk import Settings, hookimpl
from pvc_plugins.health import config


class HealthPlugin:
    """One per daemon: ``agent`` runs the checks (pvcnoded only)."""

    def __init__(self) -> None:
        self.agent: Any = None

    @hookimpl
    def pvc_config_settings(self) -> Settings:
        """``plugins.health`` (``pvc_plugins.health.config.SETTINGS``)."""
        return config.SETTINGS

    @hookimpl
    def pvc_node_start(self, daemon: Any) -> None:
        from pvc_plugins.health.agent import HealthAgent

        self.agent = HealthAgent(daemon, config.load(daemon.config))
        self.agent.start()

    @hookimpl
    def pvc_node_stop(self, daemon: Any) -> None:
        agent, self.agent = self.agent, None
        if agent is not None:
            agent.stop()

    @hookimpl
    def pvc_keepalive_stats(self, daemon: Any) -> dict[str, dict[str, Any]]:
        """Namespace ``health``: the last round (``{"health", "checks", "at"}``); the first
        keepalive also lets the checks begin (every plugin has started by then)."""
        agent = self.agent
        if agent is None:
            return {}
        agent.started.set()
        return {"health": agent.latest} if agent.latest is not None else {}

    @hookimpl
    def pvc_become_primary(self, daemon: Any) -> None:
        if self.agent is not None:
            self.agent.become_primary()

    @hookimpl
    def pvc_become_secondary(self, daemon: Any) -> None:
        if self.agent is not None:
            self.agent.become_secondary()

    @hookimpl
    def pvc_api_node(self, stats: dict[str, Any]) -> dict[str, Any]:
        """``health`` (100 − Σ deltas), ``health_plugins`` (the checks' names) and
        ``health_details`` (one entry per check, ``data`` included)."""
        found = stats.get("health")
        if not isinstance(found, dict) or not isinstance(found.get("checks"), list):
            return {}
        entries = [e for e in found["checks"] if isinstance(e, dict)]
        return {
            "health": int(found.get("health") or 0),
            "health_plugins": [str(e.get("name", "")) for e in entries],
            "health_details": [{"name": str(e.get("name", "")), "last_run": e.get("last_run"),
                                "health_delta": int(e.get("health_delta") or 0),
                                "message": str(e.get("message", "")),
                                "data": e.get("data") if isinstance(e.get("data"), dict)
                                else {}} for e in entries],
        }
