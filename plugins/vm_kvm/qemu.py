"""This node's QEMU guest processes, found without asking libvirtd (it may be hung or dead).

Two sources, merged:

* libvirtd's runtime directory (next to its unix socket: ``/run/libvirt`` for
  ``qemu:///system``): a status file ``qemu/<name>.xml`` per running guest, with its PID;
* a scan of ``/proc`` for ``qemu-system-*`` processes with a ``-uuid`` argument in this
  process's network namespace (on a real host every guest; in the lab only this node's;
  it also finds a guest whose libvirtd lost its runtime directory).

Each guest is identified by PID *and* start time, so a reused PID is never signalled.
"""

from __future__ import annotations

import glob
import os
import signal
import time
import xml.etree.ElementTree as ET  # noqa: N817
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import psutil

DEFAULT_SOCKET = "/run/libvirt/libvirt-sock"


@dataclass(frozen=True)
class Guest:
    pid: int
    started: float
    uuid: str
    name: str


def run_dir(libvirt_uri: str) -> str | None:
    """libvirtd's runtime directory for a local URI (the directory of its socket), or None
    for a remote one."""
    parsed = urlparse(libvirt_uri)
    if parsed.hostname or "+" in parsed.scheme and not parsed.scheme.endswith("+unix"):
        return None
    socket = parse_qs(parsed.query).get("socket", [DEFAULT_SOCKET])[0]
    return os.path.dirname(socket)


def _netns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _argument(argv: list[str], flag: str) -> str:
    try:
        return argv[argv.index(flag) + 1]
    except (ValueError, IndexError):
        return ""


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def from_run_dir(directory: str | None) -> list[Guest]:
    """The guests libvirtd's status files name, whose process still runs."""
    if not directory:
        return []
    found = []
    for path in glob.glob(os.path.join(directory, "qemu", "*.xml")):
        try:
            root = ET.parse(path).getroot()
            pid = int(root.get("pid") or 0)
        except (ET.ParseError, OSError, ValueError):
            continue
        dom = root.find("domain")
        uuid = (dom.findtext("uuid") if dom is not None else "") or ""
        name = (dom.findtext("name") if dom is not None else "") or ""
        started = _started(pid) if pid > 0 else None
        if started is not None and uuid:
            found.append(Guest(pid, started, uuid.lower(), name))
    return found


def scan() -> list[Guest]:
    """QEMU guest processes in this process's network namespace."""
    own = _netns("self")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        argv = proc.info.get("cmdline") or []
        if not argv or "qemu-system" not in os.path.basename(argv[0]):
            continue
        uuid = _argument(argv, "-uuid").lower()
        if not uuid or _netns(proc.info["pid"]) != own:
            continue
        name = _argument(argv, "-name").split("guest=", 1)[-1].split(",", 1)[0]
        found.append(Guest(proc.info["pid"], proc.info.get("create_time") or 0.0, uuid, name))
    return found


def guests(directory: str | None) -> list[Guest]:
    """Every QEMU guest of this node that either source knows, once each."""
    merged = {(g.pid, round(g.started, 2)): g for g in scan()}
    for g in from_run_dir(directory):
        merged.setdefault((g.pid, round(g.started, 2)), g)
    return list(merged.values())


def alive(guest: Guest) -> bool:
    try:
        proc = psutil.Process(guest.pid)
        return (abs(proc.create_time() - guest.started) < 0.05
                and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def kill(found: list[Guest], wait: float) -> list[Guest]:
    """SIGKILL the guests still alive and wait up to ``wait`` s; returns those left."""
    for g in found:
        if alive(g):
            try:
                os.kill(g.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + wait
    left = [g for g in found if alive(g)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [g for g in left if alive(g)]
    return left
