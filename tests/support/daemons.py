"""Run real pvcnoded processes against a test ZooKeeper and wait on their state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import yaml

from pvc_kernel.plugins import available

KERNEL_TEST_PLUGINS = {"hoststats", "sample"}


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # ZooKeeper briefly unavailable etc.
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class DaemonProcess:
    """One pvcnoded with a generated config file; stopped by PID."""

    def __init__(self, workdir: str, node: str, hosts: str, coordinator: bool = True,
                 cluster: str = "test", **settings: Any) -> None:
        self.node = node
        self.config_path = os.path.join(workdir, f"{node}.yaml")
        self.log_path = os.path.join(workdir, f"{node}.log")
        # Kernel tests run only the plugins that need no host subsystem.
        others = [p for p in available() if p not in KERNEL_TEST_PLUGINS]
        data = {"node": node, "cluster": cluster, "coordinator": coordinator,
                "zookeeper": {"hosts": hosts.split(","), "session_timeout": 3},
                "keepalive_interval": 0.5, "plugins": {"disabled": others}}
        data.update(settings)
        with open(self.config_path, "w") as fh:
            yaml.safe_dump(data, fh)
        self.proc: subprocess.Popen | None = None

    def start(self) -> DaemonProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pvc_kernel.daemon", "--config", self.config_path],
            stdout=subprocess.DEVNULL, stderr=open(self.log_path, "ab"),
            stdin=subprocess.DEVNULL)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running():
            self.proc.send_signal(sig)

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM; returns how long the daemon took to exit."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        if self.proc:
            self.proc.wait(timeout)
        return time.monotonic() - started

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()
