"""Tasks ``osd.replace`` and ``osd.refresh`` on the node that holds the OSD.

Replace keeps the OSD's id and CRUSH position: out, wait until safe (unless force), stop,
``ceph osd destroy``, zap the old device, then a new bluestore (new uuid and cephx key) on the
new device under the same id, optionally reweighted and with a DB LV, started and marked in.
Refresh re-imports an OSD whose device survived a reinstall: its label must name this OSD
and cluster; the data directory is rebuilt from it and the daemon started.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Any

from pvc_plugins.storage_ceph import bluestore, launcher, osd_db, osds
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.config import CephConfig
from pvc_plugins.storage_ceph.errors import StorageError

run = bluestore.local_run


def _weight(value: Any) -> float | None:
    return float(value) if value not in (None, "") else None


def replace_osd(ctx: Any, client: CephClient, settings: CephConfig, store: Any) -> str:
    """Task ``osd.replace`` (args: osd, new_device, old_device, weight, ext_db_ratio,
    ext_db_size, force)."""
    osd_id = int(ctx.args["osd"])
    new = str(ctx.args.get("new_device") or "")
    weight = _weight(ctx.args.get("weight"))
    ratio, size = osd_db.check_args(ctx.args.get("ext_db_ratio"), ctx.args.get("ext_db_size"))
    conf = settings.ceph_conf
    o = osds.require_osd(client, str(osd_id))
    rec = store.get_json("ceph.osd", {}, osd=str(osd_id)) or {}
    data = bluestore.osd_data_dir(run, conf, osd_id)
    old = str(ctx.args.get("old_device") or "") or rec.get("device") \
        or bluestore.block_target(data) or ""
    bluestore.check_device(new)
    osds.check_unused(store, settings.node, new, but=str(osd_id))
    db_size = osd_db.db_bytes(new, ratio, size)
    db = ""
    if db_size and not osd_db.lv_exists(run, osd_id):   # a DB LV fails here, nothing touched
        ctx.progress(1, 7, f"Creating the DB volume {osd_db.lv_path(osd_id)}")
        db = osd_db.create_lv(run, osd_id, db_size)
    total = 7
    if "destroyed" not in o.get("state", []):
        if o.get("in"):
            ctx.progress(1, total, f"Marking OSD {osd_id} out")
            client.mon("osd out", ids=[str(osd_id)])
        if not ctx.args.get("force"):
            ctx.progress(2, total, f"Waiting until OSD {osd_id} is safe to destroy")
            osds.wait_safe(ctx, conf, osd_id, "replace")
    ctx.progress(3, total, f"Stopping and destroying OSD {osd_id}")
    launcher.stop(settings.osd_launcher, conf, osd_id)
    if o.get("up"):
        client.mon("osd down", ids=[str(osd_id)])
    if "destroyed" not in o.get("state", []):
        bluestore.destroy(run, conf, osd_id)
    ctx.progress(4, total, f"Wiping the old device {old or '(unknown)'}")
    old_db = osds.db_link(data) or rec.get("db_device", "")
    if bluestore.read_whoami(data) == osd_id:
        shutil.rmtree(data, ignore_errors=True)
    if old and os.path.exists(old):
        bluestore.zap(old)
    if old_db and not db:
        osd_db.remove_lv(run, osd_id)
    ctx.progress(5, total, f"Creating bluestore for OSD {osd_id} on {new}")
    osd_uuid, db = _remake(conf, osd_id, new, db_size, db)
    if weight is not None:
        bluestore.crush_reweight(run, conf, osd_id, weight)
    ctx.progress(6, total, f"Starting OSD {osd_id}")
    osds.start_osd(ctx, client, settings, osd_id, [new, db])
    client.mon("osd in", ids=[str(osd_id)])
    osds.record(store, settings, osd_id, new, db, osd_uuid)
    return f"Replaced OSD {osd_id} on {settings.node}: now on device {new}" + \
        (f" with DB {db}." if db else ".")


def _remake(conf: str, osd_id: int, device: str, db_size: int | None,
            db: str) -> tuple[str, str]:
    """A new bluestore under the destroyed id (``db``: a DB LV made already); on failure the
    id is left destroyed again."""
    osd_uuid = str(uuid.uuid4())
    key = bluestore.gen_key(run)
    try:
        bluestore.osd_new(run, conf, osd_uuid, key, osd_id)
        if db_size and not db:
            db = osd_db.create_lv(run, osd_id, db_size)
        bluestore.mkfs(run, conf, osd_id, osd_uuid, key, device, db or None)
    except (StorageError, bluestore.BluestoreError) as exc:
        run(["ceph", "-c", conf, "--connect-timeout", "15", "osd", "destroy", str(osd_id),
             "--yes-i-really-mean-it"], 60)
        raise StorageError(f"{getattr(exc, 'message', exc)}. OSD {osd_id} stays destroyed "
                           "(id and CRUSH position kept): fix the device and run replace "
                           "again") from None
    return osd_uuid, db


def refresh_osd(ctx: Any, client: CephClient, settings: CephConfig, store: Any) -> str:
    """Task ``osd.refresh`` (args: osd, device): re-import an OSD from its device."""
    osd_id = int(ctx.args["osd"])
    device = str(ctx.args.get("device") or "")
    conf = settings.ceph_conf
    o = osds.require_osd(client, str(osd_id))
    bluestore.check_device(device)
    osds.check_unused(store, settings.node, device, but=str(osd_id))
    ctx.progress(1, 4, f"Reading the bluestore label of {device}")
    label = bluestore.show_label(run, device)
    fsid = bluestore.cluster_fsid(run, conf)
    if str(label.get("whoami", "")) != str(osd_id):
        raise StorageError(f"Device {device} holds OSD {label.get('whoami', '?')}, not OSD "
                           f"{osd_id}")
    if label.get("ceph_fsid") != fsid:
        raise StorageError(f"Device {device} belongs to Ceph cluster {label.get('ceph_fsid')},"
                           f" not to this cluster ({fsid})")
    if o.get("uuid") and label.get("osd_uuid") != o["uuid"]:
        raise StorageError(f"Device {device} holds an earlier OSD {osd_id} (uuid "
                           f"{label.get('osd_uuid')}; the cluster's is {o['uuid']})")
    ctx.progress(2, 4, f"Rebuilding the data directory of OSD {osd_id}")
    launcher.stop(settings.osd_launcher, conf, osd_id)
    data = bluestore.osd_data_dir(run, conf, osd_id)
    db = osd_db.activate_lv(run, osd_id) if osd_db.vg_exists(run) else None
    bluestore.prime_osd_dir(run, device, data, db)
    key = bluestore.auth_key(run, conf, osd_id)
    if key:
        bluestore.write_keyring(os.path.join(data, "keyring"), f"osd.{osd_id}", key)
    ctx.progress(3, 4, f"Starting OSD {osd_id}")
    osds.start_osd(ctx, client, settings, osd_id, [device, db or ""])
    osds.record(store, settings, osd_id, device, db or "", label.get("osd_uuid", ""))
    return f"Refreshed OSD {osd_id} on {settings.node} from device {device}."
