"""External bluestore DB devices: the volume group ``osd-db`` and one LV per OSD in it.

``pvc storage osd create-db-vg`` makes the VG on a node's device (``pvcreate`` +
``vgcreate``, task ``osd.add_db_vg``); an OSD added or replaced with ``ext_db_ratio`` (of its
data device's size) or ``ext_db_size`` gets the LV ``osd-db/osd-<id>`` as its bluestore
``block.db``. Real LVM with the host's configuration (tests point ``LVM_SYSTEM_DIR`` at an
lvm.conf that sees only their loop device).
"""

from __future__ import annotations

import os
import stat
from typing import Any

from pvc_plugins.storage_ceph import bluestore, units
from pvc_plugins.storage_ceph.errors import StorageError

VG = "osd-db"
MIN_DB_BYTES = 64 * 2**20


def lv_name(osd_id: int) -> str:
    return f"osd-{osd_id}"


def lv_path(osd_id: int) -> str:
    return f"/dev/{VG}/{lv_name(osd_id)}"


def check_args(ratio: float | None, size: str | None) -> tuple[float | None, int | None]:
    """Validate ``ext_db_ratio`` / ``ext_db_size`` (at most one): (ratio, size in bytes)."""
    if ratio is not None and size:
        raise StorageError("Give either ext_db_ratio or ext_db_size, not both")
    if ratio is not None:
        if not 0 < float(ratio) < 1:
            raise StorageError(f"Invalid ext_db_ratio {ratio!r}: must be between 0 and 1 "
                               "(a fraction of the OSD device's size, e.g. 0.05)")
        return float(ratio), None
    if size:
        nbytes = units.parse_size(size)
        if nbytes < MIN_DB_BYTES:
            raise StorageError(f"Invalid ext_db_size {size!r}: must be at least "
                               f"{units.format_size(MIN_DB_BYTES)}")
        return None, nbytes
    return None, None


def db_bytes(device: str, ratio: float | None, size: int | None) -> int | None:
    """The DB LV's size for an OSD on ``device``, in whole MiB (None: no external DB)."""
    if ratio is not None:
        size = int(bluestore.device_bytes(device) * ratio)
    if size is None:
        return None
    return max(MIN_DB_BYTES, size - size % 2**20)


def _lvm(run: bluestore.Runner, argv: list[str], what: str) -> str:
    proc = run(argv, 120)
    if proc.returncode != 0:
        lines = [x.strip() for x in (proc.stderr or proc.stdout or "").splitlines()
                 if x.strip() and "leaked on" not in x]
        raise StorageError(f"{what} failed: {'; '.join(lines[:3]) or f'exit {proc.returncode}'}")
    return proc.stdout


def vg_exists(run: bluestore.Runner) -> bool:
    return run(["vgs", "--noheadings", "-o", "vg_name", VG], 60).returncode == 0


def lv_exists(run: bluestore.Runner, osd_id: int) -> bool:
    return run(["lvs", "--noheadings", "-o", "lv_name", f"{VG}/{lv_name(osd_id)}"],
               60).returncode == 0


def create_vg(run: bluestore.Runner, device: str) -> None:
    """``pvcreate`` + ``vgcreate osd-db`` on a block device (refused if the VG exists)."""
    try:
        mode = os.stat(device).st_mode
    except OSError as exc:
        raise StorageError(f"Device {device}: {exc.strerror}") from None
    if not stat.S_ISBLK(mode):
        raise StorageError(f"Device {device} is not a block device")
    if vg_exists(run):
        raise StorageError(f"The OSD DB volume group {VG} already exists on this node")
    _lvm(run, ["pvcreate", device], f"pvcreate {device}")
    try:
        _lvm(run, ["vgcreate", VG, device], f"vgcreate {VG} {device}")
    except StorageError:
        run(["pvremove", "-y", device], 60)
        raise


def create_lv(run: bluestore.Runner, osd_id: int, size: int) -> str:
    """The DB LV of OSD ``osd_id`` (replaced if one is left over); returns its path."""
    if not vg_exists(run):
        raise StorageError(f"No OSD DB volume group {VG} on this node: create it first "
                           "(pvc storage osd create-db-vg NODE DEVICE)")
    remove_lv(run, osd_id)
    _lvm(run, ["lvcreate", "-y", "-W", "y", "-L", f"{size}b", "-n", lv_name(osd_id), VG],
         f"lvcreate {VG}/{lv_name(osd_id)}")
    path = lv_path(osd_id)
    if not os.path.exists(path):
        remove_lv(run, osd_id)
        raise StorageError(f"lvcreate made {VG}/{lv_name(osd_id)} but {path} does not exist")
    return path


def activate_lv(run: bluestore.Runner, osd_id: int) -> str | None:
    """Activate an existing DB LV of the OSD (after a reinstall); its path, None if none."""
    if not lv_exists(run, osd_id):
        return None
    _lvm(run, ["lvchange", "-ay", f"{VG}/{lv_name(osd_id)}"], "lvchange -ay")
    return lv_path(osd_id)


def remove_lv(run: bluestore.Runner, osd_id: int) -> None:
    if lv_exists(run, osd_id):
        _lvm(run, ["lvremove", "-f", f"{VG}/{lv_name(osd_id)}"], "lvremove")


def prepare_with_db(run: bluestore.Runner, conf: str, device: str, crush_host: str,
                    weight: float | None, db_size: int) -> tuple[int, str, str]:
    """Like ``bluestore.prepare`` with a DB LV as ``block.db``: (id, uuid, DB LV path).

    On failure after the id was allocated, the LV and the id are removed again.
    """
    bluestore.check_device(device)
    if not vg_exists(run):
        raise StorageError(f"No OSD DB volume group {VG} on this node: create it first "
                           "(pvc storage osd create-db-vg NODE DEVICE)")

    def undo(osd_id: int) -> None:
        try:
            remove_lv(run, osd_id)
        except StorageError:
            pass

    osd_id, osd_uuid = bluestore.prepare(run, conf, device, crush_host, weight,
                                         make_db=lambda i: create_lv(run, i, db_size),
                                         undo_db=undo)
    return osd_id, osd_uuid, lv_path(osd_id)


def add_db_vg(ctx: Any, client: Any, settings: Any, store: Any) -> str:
    """Task ``osd.add_db_vg`` (args: device): the ``osd-db`` VG on this node's device."""
    device = str(ctx.args.get("device") or "")
    ctx.progress(1, 2, f"Creating volume group {VG} on {device}")
    create_vg(bluestore.local_run, device)
    return f"Created OSD DB volume group {VG} on {settings.node} device {device}."
