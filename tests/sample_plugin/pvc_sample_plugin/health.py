"""The sample plugin's node health checks: ``sample`` (always applies; delta from a file, so
a test can make it fail) and ``sample_hang`` (never returns, when ``hang_check`` is on)."""

from __future__ import annotations

import os
import threading
from typing import Any

from pvc_kernel.sdk import CheckResult, HealthCheck

DELTA_FILE_ENV = "PVC_SAMPLE_HEALTH_FILE"


class SampleCheck(HealthCheck):
    name = "sample"

    def run(self, daemon: Any) -> CheckResult:
        path = os.environ.get(DELTA_FILE_ENV, "")
        try:
            with open(path) as f:
                delta = int(f.read().strip() or 0)
        except (OSError, ValueError):
            delta = 0
        return CheckResult(delta, f"sample says {delta}", {"node": daemon.node})


class HangingCheck(HealthCheck):
    name = "sample_hang"
    timeout = 2.0

    def __init__(self) -> None:
        self.forever = threading.Event()

    def run(self, daemon: Any) -> CheckResult:
        self.forever.wait()
        return CheckResult(0, "released")

    def cleanup(self, daemon: Any) -> None:
        self.forever.set()
