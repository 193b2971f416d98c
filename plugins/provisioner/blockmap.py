"""A volume as a block device on this node, without a kernel storage driver.

``qemu-storage-daemon`` opens the volume through its QEMU block driver (``rbd``: librbd,
the same library QEMU uses for the VMs) and exports it over FUSE as a regular file; a loop
device with partition scanning on that file is the block device a provisioner script
partitions, formats and mounts (``/dev/loopN``, ``/dev/loopNpM``). This needs FUSE and loop
devices only, so it works whether or not the kernel has ``rbd`` (``krbd_available`` tells;
``rbd map`` would be faster there, but one way everywhere is what is tested).

Each mapping leaves a state file in the work directory, so a node daemon that died with
mappings open finds and removes them at its next start (``cleanup_stale``).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

QSD = "/usr/bin/qemu-storage-daemon"


class MapError(Exception):
    """A volume cannot be mapped or unmapped; the message says why."""


@dataclass
class Mapping:
    device: str          # /dev/loopN
    export: str          # the FUSE file qemu-storage-daemon serves
    pid: int             # qemu-storage-daemon's
    workdir: str
    id: str
    diskseq: str = ""    # the loop device's attachment: ours while it is unchanged

    @property
    def state(self) -> str:
        return os.path.join(self.workdir, f"{self.id}.json")


def krbd_available() -> bool:
    """True when this kernel could map RBD images itself (``rbd map``)."""
    return os.path.isdir("/sys/bus/rbd")


def rbd_blockdev(pool: str, image: str, *, conf: str = "/etc/ceph/ceph.conf",
                 user: str = "admin") -> dict[str, Any]:
    return {"driver": "raw", "file": {"driver": "rbd", "pool": pool, "image": image,
                                      "conf": conf, "user": user}}


def _run(argv: list[str], timeout: float) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise MapError(f"{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise MapError(f"{' '.join(argv[:2])} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise MapError(f"{os.path.basename(argv[0])} failed: {' '.join(tail) or proc.returncode}")
    return proc.stdout.strip()


def _ours(pid: int, export: str) -> bool:
    """True if ``pid`` is the qemu-storage-daemon serving ``export``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return export.encode() in fh.read()
    except OSError:
        return False


def _sys(device: str, item: str) -> str | None:
    try:
        with open(f"/sys/block/{os.path.basename(device)}/{item}", encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _attached(mapping: Mapping) -> bool:
    """True while the loop device is still the one this mapping attached (its disk
    sequence number is unchanged; its backing file's path is gone once the daemon died)."""
    if not mapping.device or _sys(mapping.device, "loop/backing_file") is None:
        return False
    if mapping.diskseq:
        return _sys(mapping.device, "diskseq") == mapping.diskseq
    return _sys(mapping.device, "loop/backing_file") == mapping.export


def map_blockdev(blockdev: dict[str, Any], workdir: str, *, timeout: float = 30.0) -> Mapping:
    """Map a QEMU blockdev (without ``node-name``) to a loop block device."""
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    ident = uuid.uuid4().hex[:12]
    export = os.path.join(workdir, f"{ident}.img")
    pidfile = os.path.join(workdir, f"{ident}.pid")
    open(export, "w").close()
    # discard=unmap: the loop driver turns "write zeroes" (ext4's zeroing) into a hole
    # punch, which QEMU's default discard=ignore would drop: the zeroes would not be written
    spec = json.dumps({"discard": "unmap", **blockdev, "node-name": "vol"})
    try:
        _run([QSD, "--blockdev", spec, "--export",
              f"type=fuse,id=exp,node-name=vol,mountpoint={export},writable=on",
              "--pidfile", pidfile, "--daemonize"], timeout)
        with open(pidfile, encoding="ascii") as fh:
            pid = int(fh.read().strip())
    except (MapError, OSError, ValueError) as exc:
        _unmount_quietly(export)
        _remove(export)
        raise MapError(f"cannot open the volume: {exc}") from None
    mapping = Mapping(device="", export=export, pid=pid, workdir=workdir, id=ident)
    try:
        # buffered I/O (direct I/O over the FUSE export corrupted writes > 512 KiB on
        # Linux 6.18 / QEMU 7.2) and 512-byte sectors (what QEMU gives the VM)
        mapping.device = _run(["losetup", "--find", "--show", "--partscan",
                               "--direct-io=off", "--sector-size", "512", export], timeout)
    except MapError:
        _stop(mapping, timeout)
        raise
    mapping.diskseq = _sys(mapping.device, "diskseq") or ""
    # the kernel's scan at attach can miss a table read through FUSE: add what partx finds
    subprocess.run(["partx", "--update", mapping.device], capture_output=True,
                   timeout=timeout)
    with open(mapping.state + ".new", "w", encoding="utf-8") as fh:
        json.dump(asdict(mapping), fh)
    os.replace(mapping.state + ".new", mapping.state)
    return mapping


def _busy(device: str) -> list[str]:
    """The device and its partitions that something holds open exclusively (mounted)."""
    name = os.path.basename(device)
    try:
        parts = [f"/dev/{p}" for p in sorted(os.listdir(f"/sys/block/{name}"))
                 if p.startswith(name + "p")]
    except FileNotFoundError:
        parts = []
    held = []
    for path in [device, *parts]:
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_EXCL))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                held.append(path)
    return held


def unmap(mapping: Mapping, *, timeout: float = 30.0) -> None:
    """Flush and remove the mapping (idempotent); MapError while a partition is mounted."""
    if _attached(mapping):
        held = _busy(mapping.device)
        if held:
            raise MapError(f"{', '.join(held)} is still in use (mounted?): unmount it first")
        if _ours(mapping.pid, mapping.export):      # else its data path is gone already
            _run(["blockdev", "--flushbufs", mapping.device], timeout)
        _run(["losetup", "--detach", mapping.device], timeout)
    _stop(mapping, timeout)


def _stop(mapping: Mapping, timeout: float) -> None:
    if _ours(mapping.pid, mapping.export):
        os.kill(mapping.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _ours(mapping.pid, mapping.export):
            if time.monotonic() > deadline:
                os.kill(mapping.pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
            time.sleep(0.02)
    _unmount_quietly(mapping.export)
    for path in (mapping.export, mapping.state, os.path.join(mapping.workdir,
                                                             f"{mapping.id}.pid")):
        _remove(path)


def _unmount_quietly(path: str) -> None:
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        if any(line.split()[1] == path for line in fh if len(line.split()) > 1):
            subprocess.run(["umount", "-l", path], capture_output=True)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def find_stale(workdir: str) -> list[Mapping]:
    """The mappings recorded in ``workdir`` (left by a daemon that stopped without
    unmapping)."""
    found = []
    try:
        names = sorted(os.listdir(workdir))
    except FileNotFoundError:
        return []
    for name in names:
        if name.endswith(".json"):
            try:
                with open(os.path.join(workdir, name), encoding="utf-8") as fh:
                    found.append(Mapping(**json.load(fh)))
            except (OSError, ValueError, TypeError):
                continue
    return found


def cleanup_stale(workdir: str) -> list[str]:
    """Remove every recorded mapping; the problems left (a partition still mounted...)."""
    problems = []
    for mapping in find_stale(workdir):
        try:
            unmap(mapping)
        except MapError as exc:
            problems.append(f"{mapping.device or mapping.export}: {exc}")
    return problems
