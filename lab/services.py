"""A node's services: each is a named long-running process that the lab starts, tracks
and stops the same way (up, start NODE, kill NODE, down).

A service says which nodes run it, which namespace it lives in, its files, its command
line, and when it is ready. To add one (libvirtd, a Ceph OSD, FRR, dnsmasq, a BMC), write
a ``Service`` subclass and add it to ``Lab(services=...)`` (default: ``default_services()``).
Its PID file and log are ``<state dir>/<node>/<service>.pid|.log``.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

from pvc_lab import netns, procs
from pvc_lab.spec import LabSpec, NodeSpec

if TYPE_CHECKING:
    from pvc_lab.lab import Lab

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Service:
    """Base class; subclasses set ``name`` and implement ``argv`` (and usually ``ready``)."""

    name = ""
    stop_grace = 8.0       # seconds between SIGTERM and SIGKILL in a graceful stop
    start_timeout = 60.0   # seconds ``ready`` may take after a start

    # -- what and where -----------------------------------------------------
    def runs_on(self, node: NodeSpec) -> bool:
        return True

    def placed(self, spec: LabSpec, node: NodeSpec) -> bool:
        """Whether this lab runs the service on ``node``: ``runs_on``, unless the service
        depends on a lab option kept in ``spec.extra`` (e.g. Ceph on ``storage``)."""
        return self.runs_on(node)

    def netns(self, spec: LabSpec, node: NodeSpec) -> str:
        return node.netns

    def dir(self, spec: LabSpec, node: NodeSpec) -> str:
        return spec.node_dir(node.name)

    def pid_file(self, spec: LabSpec, node: NodeSpec) -> str:
        return os.path.join(self.dir(spec, node), f"{self.name}.pid")

    def log_file(self, spec: LabSpec, node: NodeSpec) -> str:
        return os.path.join(self.dir(spec, node), f"{self.name}.log")

    def env(self, spec: LabSpec, node: NodeSpec) -> dict[str, str]:
        return {"PATH": BASE_PATH, "HOME": "/root", "LANG": "C.UTF-8",
                "PVC_LAB_NAME": spec.name, "PVC_LAB_NODE": node.name}

    # -- to implement -------------------------------------------------------
    def prepare(self, spec: LabSpec, node: NodeSpec) -> None:
        """Write config files and data directories (idempotent; keeps existing data)."""

    def argv(self, spec: LabSpec, node: NodeSpec) -> list[str]:
        raise NotImplementedError

    def ready(self, lab: Lab, node: NodeSpec, rec: procs.ProcRecord) -> bool:
        """True once the service started as ``rec`` serves; polled after a start."""
        return True

    def healthy(self, lab: Lab, node: NodeSpec, rec: procs.ProcRecord) -> bool:
        """True if the running service is well now (default: ``ready``); ``restore`` waits
        for it."""
        return self.ready(lab, node, rec)

    def explain(self, lab: Lab, node: NodeSpec) -> str:
        """Why the service is not ready, for a timeout message."""
        return "not ready"

    def describe(self, lab: Lab, node: NodeSpec) -> dict[str, Any]:
        """Extra fields for ``status`` (e.g. ZooKeeper's mode)."""
        return {}

    def settle(self, lab: Lab, timeout: float) -> None:
        """After ``up``/``restore`` started every service: wait until the service's cluster
        as a whole is well (e.g. Ceph HEALTH_OK); raise LabError after ``timeout``."""

    # -- generic process handling --------------------------------------------
    def record(self, spec: LabSpec, node: NodeSpec) -> procs.ProcRecord | None:
        """The PID file's record if that process still runs, else None."""
        rec = procs.read_record(self.pid_file(spec, node))
        return rec if rec and procs.alive(rec.pid, rec.start) else None

    def start(self, spec: LabSpec, node: NodeSpec) -> tuple[procs.ProcRecord, bool]:
        """Start unless running; returns (record, True if newly started)."""
        rec = self.record(spec, node)
        if rec:
            return rec, False
        os.makedirs(self.dir(spec, node), exist_ok=True)
        self.prepare(spec, node)
        ns = self.netns(spec, node)
        if not netns.exists(ns):
            raise procs.ProcError(f"{node.name}: namespace {ns} does not exist")
        argv = ["ip", "netns", "exec", ns, *self.argv(spec, node)]
        rec = procs.spawn(argv, self.log_file(spec, node), self.env(spec, node),
                          cwd=self.dir(spec, node))
        procs.write_record(self.pid_file(spec, node), rec)
        return rec, True

    def signal(self, spec: LabSpec, node: NodeSpec, sig: int = signal.SIGKILL,
               wait: float = 10.0) -> procs.ProcRecord | None:
        """Send ``sig`` to the running process and wait up to ``wait`` s for it to end.

        Returns the record of the process signalled (None if it was not running); raises
        ProcError if it is still running after ``wait``.
        """
        rec = self.record(spec, node)
        if rec is None:
            return None
        procs.send(rec.pid, sig)
        if wait > 0 and procs.wait_gone({rec.pid: rec.start}, wait):
            raise procs.ProcError(f"{self.name} on {node.name} (pid {rec.pid}) still runs "
                                  f"{wait:g} s after signal {signal.Signals(sig).name}")
        return rec

    def status(self, lab: Lab, node: NodeSpec) -> dict[str, Any]:
        rec = self.record(lab.spec, node)
        info: dict[str, Any] = {"running": rec is not None, "pid": rec.pid if rec else None,
                                "log": self.log_file(lab.spec, node)}
        if rec:
            info.update(self.describe(lab, node))
        return info


def log_tail(path: str, lines: int = 3) -> str:
    """The last non-empty lines of a log file, joined with ' | ' (for one-line errors)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(tail)


def default_services() -> list[Service]:
    """Start order of a node's services (stopped in reverse order)."""
    from pvc_lab.bmc import BmcService
    from pvc_lab.ceph import ceph_services
    from pvc_lab.libvirt import Libvirtd
    from pvc_lab.pvcnoded import NodeDaemon
    from pvc_lab.zookeeper import ZooKeeper

    return [ZooKeeper(), *ceph_services(), Libvirtd(), NodeDaemon(), BmcService()]
