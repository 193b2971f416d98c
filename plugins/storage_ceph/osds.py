"""OSDs: statistics of this node's OSDs, the cluster-wide list, in/out, add/remove tasks.

Replace and refresh are in ``osd_ops``, the external DB volume group in ``osd_db``.

An OSD belongs to the node whose CRUSH host bucket holds it (``crush_host``, by default the
node name). That node reports the OSD's statistics with its keepalive and keeps its record
(``/ceph/osds/<id>``: node, device) up to date; ``osd.add``/``osd.remove`` run there.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from pvc_plugins.storage_ceph import bluestore, launcher, osd_db, units
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.config import CephConfig
from pvc_plugins.storage_ceph.errors import NotFound, StorageError

DF_KEYS = ("utilization", "var", "pgs", "kb", "kb_used", "kb_used_data", "kb_used_omap",
           "kb_used_meta", "kb_avail")
STATUS_KEYS = ("used", "avail", "wr_ops", "wr_data", "rd_ops", "rd_data")
UP_TIMEOUT = 120.0
SAFE_TIMEOUT = 600.0
OPTIONS = ("full", "pause", "noup", "nodown", "noout", "noin", "nobackfill", "norebalance",
           "norecover", "noscrub", "nodeep-scrub", "notieragent", "nosnaptrim")


def empty_stats(node: str = "") -> dict[str, Any]:
    stats: dict[str, Any] = {"uuid": "", "up": 0, "in": 0, "primary_affinity": 1.0,
                             "weight": 0.0, "reweight": 0.0, "class": "", "node": node,
                             "state": ""}
    stats.update({k: 0 for k in DF_KEYS})
    stats.update({"utilization": 0.0, "var": 0.0})
    stats.update({k: "0" for k in STATUS_KEYS})
    return stats


def host_osds(tree: dict[str, Any], host: str) -> list[int]:
    """Ids of the OSDs under CRUSH host bucket ``host``."""
    for n in tree.get("nodes", []):
        if n.get("type") == "host" and n.get("name") == host:
            return sorted(c for c in n.get("children", []) if c >= 0)
    return []


def osd_hosts(tree: dict[str, Any]) -> dict[int, str]:
    """{osd id: CRUSH host}."""
    out = {}
    for n in tree.get("nodes", []):
        if n.get("type") == "host":
            for c in n.get("children", []):
                out[c] = n["name"]
    return out


def build_stats(osd_id: int, node: str, dump: dict[str, Any], df: dict[str, Any],
                status: dict[int, dict[str, str]]) -> dict[str, Any]:
    """One OSD's stats from ``osd dump``, ``osd df`` and the ``osd status`` table."""
    stats = empty_stats(node)
    for o in dump.get("osds", []):
        if o["osd"] == osd_id:
            stats.update(uuid=o.get("uuid", ""), up=int(o.get("up", 0)),
                         primary_affinity=float(o.get("primary_affinity", 1.0)),
                         state=",".join(o.get("state", [])))
            stats["in"] = int(o.get("in", 0))
    for d in df.get("nodes", []):
        if d.get("id") == osd_id:
            stats.update({k: d.get(k, stats[k]) for k in DF_KEYS})
            stats.update(weight=float(d.get("crush_weight", 0.0)),
                         reweight=float(d.get("reweight", 0.0)),
                         **{"class": d.get("device_class", "")})
    row = status.get(osd_id)
    if row:
        stats.update({k: row[k] for k in STATUS_KEYS})
    return stats


class NodeOsds:
    """Collects this node's OSD statistics and keeps their records (one per node daemon)."""

    def __init__(self, client: CephClient, settings: CephConfig) -> None:
        self.client = client
        self.settings = settings
        self._dirs: dict[int, str] = {}

    def _data(self, osd_id: int) -> str:
        if osd_id not in self._dirs:       # ceph-conf once per OSD; the links are read each time
            self._dirs[osd_id] = bluestore.osd_data_dir(bluestore.local_run,
                                                        self.settings.ceph_conf, osd_id)
        return self._dirs[osd_id]

    def device(self, osd_id: int) -> str:
        try:
            return bluestore.block_target(self._data(osd_id)) or ""
        except bluestore.BluestoreError:
            return ""

    def db_device(self, osd_id: int) -> str:
        try:
            return db_link(self._data(osd_id))
        except bluestore.BluestoreError:
            return ""

    def collect(self) -> dict[str, dict[str, Any]]:
        """{osd id (str): stats} of the OSDs under this node's CRUSH host."""
        tree = self.client.mon("osd tree") or {}
        ids = host_osds(tree, self.settings.crush_host)
        if not ids:
            return {}
        dump = self.client.mon("osd dump") or {}
        df = self.client.mon("osd df") or {}
        try:
            status = units.parse_osd_status(self.client.mgr("osd status", fmt=None) or "")
        except StorageError:       # no manager: the op/usage columns stay "0"
            status = {}
        return {str(i): build_stats(i, self.settings.node, dump, df, status) for i in ids}

    def sync_records(self, store: Any, stats: dict[str, dict[str, Any]]) -> None:
        """Create or fix the records of this node's OSDs."""
        for osd_id, st in stats.items():
            have = store.get_json("ceph.osd", None, osd=osd_id) or {}
            want = {"id": osd_id, "node": self.settings.node,
                    "device": self.device(int(osd_id)) or have.get("device", ""),
                    "db_device": self.db_device(int(osd_id)) or have.get("db_device", ""),
                    "is_split": False, "fsid": st.get("uuid", ""),
                    "managed": bool(have.get("managed", False))}
            if have != want:
                store.set("ceph.osd", want, osd=osd_id)


def db_link(data_dir: str) -> str:
    """Where an OSD data directory's ``block.db`` symlink points ("" if it has none)."""
    try:
        return os.readlink(os.path.join(data_dir, "block.db"))
    except OSError:
        return ""


def build_list(records: dict[str, dict[str, Any]], node_stats: dict[str, dict[str, Any]],
               summary: dict[str, Any],
               match: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """The OSD objects of the API, sorted by id.

    ``records``: /ceph/osds; ``node_stats``: each node's ``ceph`` stats namespace;
    ``summary``: the primary's summary (``osds`` = cluster-wide {id: {up, in, host}}), which
    also brings OSDs whose node never reported them.
    """
    cluster = summary.get("osd_states") or {}
    ids = set(records) | set(cluster)
    out = []
    for osd_id in sorted(ids, key=lambda i: int(i)):
        if match is not None and not match(osd_id):
            continue
        rec = records.get(osd_id) or {}
        node = rec.get("node") or (cluster.get(osd_id) or {}).get("host", "")
        stats = dict(((node_stats.get(node) or {}).get("osds") or {}).get(osd_id)
                     or empty_stats(node))
        state = cluster.get(osd_id)
        if state:      # the primary's view is fresh even when the holding node is down
            stats["up"], stats["in"] = int(state.get("up", 0)), int(state.get("in", 0))
        out.append({"id": osd_id, "fsid": rec.get("fsid", stats.get("uuid", "")),
                    "node": node, "device": rec.get("device", ""),
                    "is_split": bool(rec.get("is_split", False)),
                    "db_device": rec.get("db_device", ""), "stats": stats})
    return out


# -- state and flags (API, no task) -----------------------------------------------------------

def require_osd(client: CephClient, osd_id: str) -> dict[str, Any]:
    if not str(osd_id).isdigit():
        raise NotFound("OSD not found.")
    for o in (client.mon("osd dump") or {}).get("osds", []):
        if o["osd"] == int(osd_id):
            return o
    raise NotFound("OSD not found.")


def osd_state(client: CephClient, osd_id: str) -> dict[str, Any]:
    o = require_osd(client, osd_id)
    return {"id": str(osd_id), "in": int(o.get("in", 0)), "up": int(o.get("up", 0))}


def set_osd_state(client: CephClient, osd_id: str, state: str) -> str:
    o = require_osd(client, osd_id)
    client.mon(f"osd {state}", ids=[str(o["osd"])])
    return f"Set OSD {osd_id} {'online' if state == 'in' else 'offline'}."


def set_option(client: CephClient, option: str, action: str) -> str:
    if option not in OPTIONS:
        raise StorageError(f"Invalid option {option!r}: must be one of {', '.join(OPTIONS)}")
    if action not in ("set", "unset"):
        raise StorageError(f"Invalid action {action!r}: must be set or unset")
    client.mon(f"osd {action}", key=option)
    return f"{'Set' if action == 'set' else 'Unset'} OSD property {option}."


# -- tasks on the node that holds the device --------------------------------------------------

def wait_osd(client: CephClient, osd_id: int, up: bool, timeout: float, ctx: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        o = next((x for x in (client.mon("osd dump") or {}).get("osds", [])
                  if x["osd"] == osd_id), None)
        if o is None or bool(o.get("up")) == up:
            return
        if time.monotonic() > deadline:
            raise StorageError(f"OSD {osd_id} is not {'up' if up else 'down'} after "
                               f"{timeout:g} s")
        if ctx is not None:
            ctx.check()
        time.sleep(1)


def check_unused(store: Any, node: str, device: str, but: str | None = None) -> None:
    """Refuse a device that already holds another OSD of this node."""
    for other in store.children("ceph.osds"):
        rec = store.get_json("ceph.osd", {}, osd=other) or {}
        if other != but and rec.get("node") == node and rec.get("device") and \
                os.path.realpath(rec["device"]) == os.path.realpath(device):
            raise StorageError(f"Device {device} already holds OSD {other} on {node}")


def wait_safe(ctx: Any, conf: str, osd_id: int, what: str) -> None:
    """Wait until ``ceph osd safe-to-destroy`` agrees (at most SAFE_TIMEOUT)."""
    deadline = time.monotonic() + SAFE_TIMEOUT
    while True:
        safe, why = bluestore.safe_to_destroy(bluestore.local_run, conf, osd_id)
        if safe:
            return
        if time.monotonic() > deadline:
            raise StorageError(f"OSD {osd_id} is not safe to destroy after {SAFE_TIMEOUT:g} s "
                               f"({why}); it stays out. Use force to {what} it anyway")
        ctx.check()
        time.sleep(2)


def start_osd(ctx: Any, client: CephClient, settings: CephConfig, osd_id: int,
              paths: list[str]) -> None:
    """Start the OSD daemon (owning ``paths`` to ceph first under systemd) and wait for up."""
    conf = settings.ceph_conf
    if settings.osd_launcher == "systemd":     # ceph-osd@ID runs as the ceph user
        data = bluestore.osd_data_dir(bluestore.local_run, conf, osd_id)
        bluestore.local_run(["chown", "-R", "ceph:ceph", data,
                             *(os.path.realpath(p) for p in paths if p)], 60)
    log_dir = os.path.dirname(bluestore.conf_value(bluestore.local_run, conf,
                                                   f"osd.{osd_id}", "log_file"))
    launcher.start(settings.osd_launcher, conf, osd_id, log_dir=log_dir)
    wait_osd(client, osd_id, True, UP_TIMEOUT, ctx)


def record(store: Any, settings: CephConfig, osd_id: int, device: str, db_device: str,
           osd_uuid: str) -> None:
    store.set("ceph.osd", {"id": str(osd_id), "node": settings.node,
                           "device": os.path.realpath(device), "db_device": db_device,
                           "is_split": False, "fsid": osd_uuid, "managed": True},
              osd=str(osd_id))


def ids_of_node(store: Any, node: str) -> list[str]:
    """The ids of the OSDs recorded as held by ``node``."""
    ids = []
    for osd_id in store.children("ceph.osds") or []:
        rec = store.get_json("ceph.osd", {}, osd=osd_id) or {}
        if rec.get("node") == node:
            ids.append(str(osd_id))
    return sorted(ids, key=lambda i: int(i) if i.isdigit() else -1)


def add_osd(ctx: Any, client: CephClient, settings: CephConfig, store: Any) -> str:
    """Task ``osd.add`` (args: device, weight, ext_db_ratio, ext_db_size): bluestore on the
    device (its DB on an ``osd-db`` LV when asked), daemon up, recorded."""
    device = str(ctx.args.get("device") or "")
    weight = ctx.args.get("weight")
    weight = float(weight) if weight not in (None, "") else None
    ratio, size = osd_db.check_args(ctx.args.get("ext_db_ratio"), ctx.args.get("ext_db_size"))
    conf = settings.ceph_conf
    check_unused(store, settings.node, device)
    ctx.progress(1, 4, f"Preparing bluestore on {device}")
    db = ""
    if ratio is not None or size is not None:
        bluestore.check_device(device)
        osd_id, osd_uuid, db = osd_db.prepare_with_db(
            bluestore.local_run, conf, device, settings.crush_host, weight,
            osd_db.db_bytes(device, ratio, size) or 0)
    else:
        osd_id, osd_uuid = bluestore.prepare(bluestore.local_run, conf, device,
                                             settings.crush_host, weight)
    ctx.progress(2, 4, f"Starting OSD {osd_id}")
    start_osd(ctx, client, settings, osd_id, [device, db])
    ctx.progress(3, 4, f"Recording OSD {osd_id}")
    record(store, settings, osd_id, device, db, osd_uuid)
    return f"Successfully created new OSD {osd_id} on {settings.node} device {device}" + \
        (f" with DB {db}." if db else ".")


def remove_osd(ctx: Any, client: CephClient, settings: CephConfig, store: Any) -> str:
    """Task ``osd.remove`` (args: osd, force): out, wait until safe (unless force), stop,
    purge, wipe the data directory, the device label and the DB LV, drop the record."""
    osd_id = int(ctx.args["osd"])
    force = bool(ctx.args.get("force"))
    conf = settings.ceph_conf
    o = require_osd(client, str(osd_id))
    rec = store.get_json("ceph.osd", {}, osd=str(osd_id)) or {}
    if o.get("in"):
        ctx.progress(1, 5, f"Marking OSD {osd_id} out")
        client.mon("osd out", ids=[str(osd_id)])
    if not force:
        ctx.progress(2, 5, f"Waiting until OSD {osd_id} is safe to destroy")
        wait_safe(ctx, conf, osd_id, "remove")
    ctx.progress(3, 5, f"Stopping OSD {osd_id}")
    data = bluestore.osd_data_dir(bluestore.local_run, conf, osd_id)
    device = rec.get("device") or bluestore.block_target(data) or ""
    db = db_link(data) or rec.get("db_device", "")
    launcher.stop(settings.osd_launcher, conf, osd_id)
    client.mon("osd down", ids=[str(osd_id)])
    ctx.progress(4, 5, f"Purging OSD {osd_id}")
    bluestore.purge(bluestore.local_run, conf, osd_id, force=True)
    if bluestore.read_whoami(data) == osd_id:
        shutil.rmtree(data, ignore_errors=True)
    if device and os.path.exists(device):
        bluestore.zap(device)
    if db:
        osd_db.remove_lv(bluestore.local_run, osd_id)
    store.delete("ceph.osd", osd=str(osd_id))
    forget_in_summary(store, str(osd_id))
    return f"Removed OSD {osd_id} from node {settings.node}."


def forget_in_summary(store: Any, osd_id: str) -> None:
    """Drop a purged OSD from the primary's last summary at once (not at its next report)."""
    def drop(text: str | None) -> str:
        summary = json.loads(text) if text else {}
        state = (summary.get("osd_states") or {}).pop(osd_id, None)
        counts = summary.get("osds") or {}
        if state is not None and counts:
            key = f"{'up' if state.get('up') else 'down'},{'in' if state.get('in') else 'out'}"
            counts["total"] = max(0, counts.get("total", 1) - 1)
            if counts.get(key):
                counts[key] -= 1
                if not counts[key]:
                    del counts[key]
        return json.dumps(summary)
    if store.exists("ceph.summary"):
        store.update("ceph.summary", drop)

