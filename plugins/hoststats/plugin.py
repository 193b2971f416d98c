"""Reports this host's load and memory with every keepalive (namespace ``host``)."""

from __future__ import annotations

import os
from typing import Any

import psutil

from pvc_kernel.sdk import hookimpl

MIB = 1024 * 1024


@hookimpl
def pvc_keepalive_stats(daemon: Any) -> dict[str, dict[str, Any]]:
    mem = psutil.virtual_memory()
    return {"host": {
        "load": round(os.getloadavg()[0], 2),
        "memory_total": mem.total // MIB,
        "memory_used": (mem.total - mem.available) // MIB,
        "memory_free": mem.available // MIB,
    }}
