"""The ``hoststats`` plugin (entry point ``hoststats`` in ``pvc.plugins`` names
``HostStatsPlugin``): this host's load and memory with every keepalive (namespace ``host``).
It takes no settings and keeps no state."""

from __future__ import annotations

import os
from typing import Any

import psutil

from pvc_kernel.sdk import hookimpl

MIB = 1024 * 1024


class HostStatsPlugin:
    @hookimpl
    def pvc_keepalive_stats(self, daemon: Any) -> dict[str, dict[str, Any]]:
        """Namespace ``host``: load (1 min), memory_total/used/free in MiB."""
        mem = psutil.virtual_memory()
        return {"host": {
            "load": round(os.getloadavg()[0], 2),
            "memory_total": mem.total // MIB,
            "memory_used": (mem.total - mem.available) // MIB,
            "memory_free": mem.available // MIB,
        }}
