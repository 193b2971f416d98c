"""Create, start and tear down one bluestore OSD on a block device or a plain file.

Used by the plugin's ``osd.add``/``osd.remove`` tasks on the node that holds the device and by
the lab (``pvc_lab.ceph``), which runs the same steps through ``ip netns exec``. Every step is
a command run through ``run(argv, timeout)`` so the caller decides where it runs.

An OSD's data directory (``osd_data`` of the ceph.conf) holds a ``block`` symlink to the device;
``ceph-osd --mkfs`` writes the bluestore label and metadata there. The OSD's cephx key is made
here, registered with ``ceph osd new`` and kept in ``keyring`` beside them (harmless when the
cluster runs without cephx).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
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
            weight: float | None = None, make_db: Callable[[int], str] | None = None,
            undo_db: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Allocate an OSD id (with a new cephx key), make bluestore on ``device`` and place it
    under ``crush_host``; ``make_db(osd_id)`` returns a device for its ``block.db``.

    Returns ``(osd_id, osd_uuid)``. On failure after the id was allocated the id is purged
    again (and ``undo_db(osd_id)`` called), so a failed add leaves no half-made OSD behind.
    """
    check_device(device)
    osd_uuid = str(uuid.uuid4())
    key = gen_key(run)
    osd_id = osd_new(run, conf, osd_uuid, key)
    try:
        db = make_db(osd_id) if make_db else None
        mkfs(run, conf, osd_id, osd_uuid, key, device, db)
        if weight is None:
            weight = round(max(_device_bytes(device), 1) / 2**40, 5) or 0.001
        crush_add(run, conf, osd_id, weight, crush_host)
    except Exception:
        run(_ceph(conf, "osd", "purge", str(osd_id), "--yes-i-really-mean-it"), 60)
        if undo_db:
            undo_db(osd_id)
        raise
    return osd_id, osd_uuid


def write_keyring(path: str, entity: str, key: str) -> None:
    """A keyring file holding one entity's cephx key, readable by root only."""
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"[{entity}]\n\tkey = {key}\n")
    os.replace(path + ".tmp", path)


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


# -- steps of replace / refresh / external DB (used by ``osd_ops``) -----------------------------

def _ceph(conf: str, *args: str) -> list[str]:
    return ["ceph", "-c", conf, "--connect-timeout", "15", *args]


def gen_key(run: Runner) -> str:
    """A fresh cephx key."""
    return _check(run(["ceph-authtool", "--gen-print-key"], 30),
                  "ceph-authtool --gen-print-key").strip()


def osd_new(run: Runner, conf: str, osd_uuid: str, key: str, osd_id: int | None = None) -> int:
    """``ceph osd new`` with a cephx key; ``osd_id`` reuses a destroyed OSD's id."""
    with tempfile.NamedTemporaryFile("w", prefix="pvc-osd-", suffix=".json") as secrets:
        json.dump({"cephx_secret": key}, secrets)
        secrets.flush()
        os.chmod(secrets.name, 0o600)
        argv = _ceph(conf, "osd", "new", osd_uuid)
        if osd_id is not None:
            argv.append(str(osd_id))
        out = _check(run([*argv, "-i", secrets.name], 60), "ceph osd new")
    return int(out.strip().splitlines()[-1])


def _link(data: str, name: str, target: str) -> None:
    link = os.path.join(data, name)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.path.abspath(target), link)


def mkfs(run: Runner, conf: str, osd_id: int, osd_uuid: str, key: str, device: str,
         db_device: str | None = None) -> str:
    """A fresh data directory (keyring, ``block``, optional ``block.db``) and ``ceph-osd
    --mkfs`` on it; returns the data directory."""
    data = osd_data_dir(run, conf, osd_id)
    if os.path.isdir(data):
        shutil.rmtree(data)
    os.makedirs(data)
    write_keyring(os.path.join(data, "keyring"), f"osd.{osd_id}", key)
    _link(data, "block", device)
    if db_device:
        _link(data, "block.db", db_device)
    _check(run(["ceph-osd", "-c", conf, "-i", str(osd_id), "--mkfs", "--osd-uuid", osd_uuid,
                "--osd-data", data], 180), "ceph-osd --mkfs")
    return data


def destroy(run: Runner, conf: str, osd_id: int) -> None:
    """``ceph osd destroy``: keys gone, id and CRUSH position kept for a new device."""
    _check(run(_ceph(conf, "osd", "destroy", str(osd_id), "--yes-i-really-mean-it"), 60),
           f"ceph osd destroy {osd_id}")


def crush_reweight(run: Runner, conf: str, osd_id: int, weight: float) -> None:
    _check(run(_ceph(conf, "osd", "crush", "reweight", f"osd.{osd_id}", f"{weight:g}"), 60),
           "ceph osd crush reweight")


def show_label(run: Runner, device: str) -> dict[str, str]:
    """The bluestore label of ``device`` (osd_uuid, whoami, ceph_fsid, description...)."""
    proc = run(["ceph-bluestore-tool", "show-label", "--dev", device], 60)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise BluestoreError(f"{device} carries no bluestore label"
                             + (f" ({lines[-1]})" if lines else ""))
    labels = json.loads(proc.stdout)
    return labels.get(device) or next(iter(labels.values()), {})


def prime_osd_dir(run: Runner, device: str, data: str, db_device: str | None = None) -> None:
    """Rebuild a data directory from the label on ``device`` (plus ``block``/``block.db``)."""
    os.makedirs(data, exist_ok=True)
    _check(run(["ceph-bluestore-tool", "prime-osd-dir", "--dev", device, "--path", data], 60),
           "ceph-bluestore-tool prime-osd-dir")
    _link(data, "block", device)
    if db_device:
        _link(data, "block.db", db_device)


def auth_key(run: Runner, conf: str, osd_id: int) -> str | None:
    """The cluster's cephx key of ``osd.ID`` (None when the cluster has no such entity)."""
    proc = run(_ceph(conf, "auth", "get-key", f"osd.{osd_id}"), 60)
    if proc.returncode != 0:
        if "ENOENT" in (proc.stderr or "") or "not find" in (proc.stderr or ""):
            return None
        _check(proc, f"ceph auth get-key osd.{osd_id}")
    return proc.stdout.strip() or None


def cluster_fsid(run: Runner, conf: str) -> str:
    return _check(run(_ceph(conf, "fsid"), 60), "ceph fsid").strip()


def crush_add(run: Runner, conf: str, osd_id: int, weight: float, crush_host: str) -> None:
    _check(run(_ceph(conf, "osd", "crush", "add", f"osd.{osd_id}", f"{weight:g}",
                     "root=default", f"host={crush_host}"), 60), "ceph osd crush add")


def device_bytes(device: str) -> int:
    """The size of a block device or file."""
    return _device_bytes(device)
