"""Create, start and tear down one bluestore OSD on a block device or a plain file.

Used by the plugin's ``osd.add``/``osd.remove`` tasks on the node that holds the device and by
the lab (``pvc_lab.ceph``), which runs the same steps through ``ip netns exec``. Every step is
a command run through ``run(argv, timeout)`` so the caller decides where it runs.

An OSD's data directory (``osd_data`` of the ceph.conf) holds a ``block`` symlink to the device;
``ceph-osd --mkfs`` writes the bluestore label and the OSD keyring-less metadata there.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from collections.abc import Callable

Runner = Callable[[list[str], float], subprocess.CompletedProcess]
"""Runs argv (text output captured) with a timeout in seconds."""

ZAP_BYTES = 16 * 1024 * 1024
"""How much of a device's start is zeroed when an OSD is removed (labels, superblock)."""


class BluestoreError(Exception):
    """A step failed; the message says which and why."""


def local_run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """The default runner: here, in this process's namespaces."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _check(proc: subprocess.CompletedProcess, what: str) -> str:
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise BluestoreError(f"{what} failed: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return proc.stdout


def conf_value(run: Runner, conf: str, name: str, key: str) -> str:
    """A ceph.conf value as daemon ``name`` (e.g. ``osd.3``) sees it, metavariables expanded."""
    out = _check(run(["ceph-conf", "-c", conf, "--name", name, "--lookup", key], 30),
                 f"ceph-conf --lookup {key}")
    return out.strip()


def osd_data_dir(run: Runner, conf: str, osd_id: int) -> str:
    return conf_value(run, conf, f"osd.{osd_id}", "osd_data")


def check_device(device: str) -> None:
    """The device must exist and be a block device or a regular file."""
    try:
        mode = os.stat(device).st_mode
    except OSError as exc:
        raise BluestoreError(f"device {device}: {exc.strerror}") from None
    if not (stat.S_ISBLK(mode) or stat.S_ISREG(mode)):
        raise BluestoreError(f"device {device} is neither a block device nor a file")


def create_file_device(path: str, size_bytes: int) -> None:
    """A sparse file of ``size_bytes`` (kept as is if it exists)."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as fh:
            fh.truncate(size_bytes)


def prepare(run: Runner, conf: str, device: str, crush_host: str,
            weight: float | None = None) -> tuple[int, str]:
    """Allocate an OSD id, make bluestore on ``device`` and place it under ``crush_host``.

    Returns ``(osd_id, osd_uuid)``. On failure after the id was allocated the id is purged
    again, so a failed add leaves no half-made OSD behind.
    """
    check_device(device)
    osd_uuid = str(uuid.uuid4())
    out = _check(run(["ceph", "-c", conf, "--connect-timeout", "15", "osd", "new", osd_uuid],
                     60), "ceph osd new")
    osd_id = int(out.strip().splitlines()[-1])
    try:
        data = osd_data_dir(run, conf, osd_id)
        os.makedirs(data, exist_ok=True)
        link = os.path.join(data, "block")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.abspath(device), link)
        _check(run(["ceph-osd", "-c", conf, "-i", str(osd_id), "--mkfs",
                    "--osd-uuid", osd_uuid, "--osd-data", data], 180), "ceph-osd --mkfs")
        if weight is None:
            weight = round(max(_device_bytes(device), 1) / 2**40, 5) or 0.001
        _check(run(["ceph", "-c", conf, "--connect-timeout", "15", "osd", "crush", "add",
                    f"osd.{osd_id}", f"{weight:g}", "root=default", f"host={crush_host}"], 60),
               "ceph osd crush add")
    except Exception:
        run(["ceph", "-c", conf, "--connect-timeout", "15", "osd", "purge", str(osd_id),
             "--yes-i-really-mean-it"], 60)
        raise
    return osd_id, osd_uuid


def _device_bytes(device: str) -> int:
    with open(device, "rb") as fh:
        return fh.seek(0, os.SEEK_END)


def osd_argv(conf: str, osd_id: int) -> list[str]:
    """The foreground command line of an OSD daemon."""
    return ["ceph-osd", "-f", "-c", conf, "-i", str(osd_id)]


def block_target(data_dir: str) -> str | None:
    """The device an OSD data directory's ``block`` symlink points to (None if none)."""
    try:
        return os.path.realpath(os.path.join(data_dir, "block")) \
            if os.path.islink(os.path.join(data_dir, "block")) else None
    except OSError:
        return None


def read_whoami(data_dir: str) -> int | None:
    try:
        with open(os.path.join(data_dir, "whoami")) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def zap(device: str) -> None:
    """Zero the start of the device so a later add does not find the old bluestore label."""
    check_device(device)
    size = min(ZAP_BYTES, _device_bytes(device))
    with open(device, "r+b") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())


def purge(run: Runner, conf: str, osd_id: int, force: bool = False) -> None:
    """Remove the OSD from the CRUSH map, the OSD map and auth (``ceph osd purge``)."""
    argv = ["ceph", "-c", conf, "--connect-timeout", "15", "osd", "purge", str(osd_id),
            "--yes-i-really-mean-it"]
    if force:
        argv.append("--force")
    _check(run(argv, 60), f"ceph osd purge {osd_id}")


def safe_to_destroy(run: Runner, conf: str, osd_id: int) -> tuple[bool, str]:
    """(safe, reason) from ``ceph osd safe-to-destroy``."""
    proc = run(["ceph", "-c", conf, "--connect-timeout", "15", "osd", "safe-to-destroy",
                str(osd_id), "-f", "json"], 60)
    if proc.returncode == 0:
        return True, ""
    text = (proc.stderr or proc.stdout or "").strip()
    try:
        data = json.loads(proc.stdout)
        if data.get("safe_to_destroy") and osd_id in data["safe_to_destroy"]:
            return True, ""
    except ValueError:
        pass
    return False, text.splitlines()[-1] if text else "not safe to destroy"
