"""pvcapid supervision, a part of ``NodeDaemon``: a coordinator with ``api.enabled`` runs
the API server as a child process and restarts it with a backoff when it dies."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

log = logging.getLogger("pvcnoded")


class ApiSupervisor:
    """pvcapid supervision methods of ``NodeDaemon``."""

    config: Any
    stopping: threading.Event
    api_process: subprocess.Popen | None

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
