"""VM snapshots: every volume of a VM snapshotted at one moment, its XML and metadata kept
in ZooKeeper beside them. Runs as tasks on the primary, asking the VM plugin
(``pvc_vm_volumes``, ``pvc_vm_modify``) and the storage plugin (``pvc_volume_snapshot``,
``pvc_volume_snapshot_remove``, ``pvc_volume_rollback``) through hooks.

A running VM's snapshot is crash-consistent (as after a power cut): the volumes are
snapshotted one after the other without pausing the guest, so writes between two of them
are not ordered across disks. Freezing the guest's file systems through its agent is the
next step (docs/data-protection-plan.md); the record says which kind each snapshot is.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from pvc_plugins.vm_protect import keys

log = logging.getLogger("pvc_plugins.vm_protect")

NAME = re.compile(r"^[a-z0-9._-]{1,64}$")
LOCK_WAIT = 30.0
STOPPED = ("stop", "disable", "fail", "mirror")   # desired states in which no guest runs

CREATE_TASK = "vm.create_snapshot"
REMOVE_TASK = "vm.remove_snapshot"
ROLLBACK_TASK = "vm.rollback_snapshot"


class SnapshotError(Exception):
    """A refusal or failure, with the message an administrator reads; ``status`` is the
    HTTP status the API answers with when it is found before the task starts."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def default_name(now: float | None = None) -> str:
    """``YYYYMMDDHHMMSS`` (UTC), the original's default."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(now))


def check_name(name: str) -> None:
    if not NAME.match(name) or name in (".", ".."):
        raise SnapshotError(f"snapshot name {name!r} is not valid: use 1 to 64 of a-z 0-9 . _ -")


def ask(daemon: Any, hook: str, **kw: Any) -> Any:
    """The first answer of a VM or volume hook; a plugin's refusal raises (its reason)."""
    return daemon.plugins.call_first(hook, raising=True, daemon=daemon, **kw)


def find_vm(daemon: Any, vm: str) -> dict[str, Any]:
    found = ask(daemon, "pvc_vm_volumes", vm=vm)
    if not found:
        raise SnapshotError(f"VM '{vm}' not found", status=404)
    return found


def _split(volume: str) -> tuple[str, str]:
    pool, _, name = volume.partition("/")
    return pool, name


def records(store: Any, uuid: str) -> list[dict[str, Any]]:
    """The VM's snapshots, newest first."""
    out = []
    for name in store.children("vm_protect.vm", uuid=uuid):
        rec = store.get_json("vm_protect.snapshot", uuid=uuid, snapshot=name)
        if isinstance(rec, dict):
            out.append(rec)
    return sorted(out, key=lambda r: (r.get("timestamp", 0), r.get("name", "")), reverse=True)


def listing(store: Any, uuid: str, now: float | None = None) -> list[dict[str, Any]]:
    """The API's view of the VM's snapshots (the v1 VMSnap fields, without the XML)."""
    now = time.time() if now is None else now
    return [{"name": r["name"], "timestamp": str(r["timestamp"]),
             "age": int(now - float(r["timestamp"])), "rbd_snapshots": r["volumes"],
             "consistency": r.get("consistency", "crash")} for r in records(store, uuid)]


def create(daemon: Any, vm: str, name: str, progress: Any = None) -> str:
    """Snapshot every volume of ``vm`` as ``name`` and record it; a volume refused on the
    way removes those already made (nothing half-made is left)."""
    check_name(name)
    info = find_vm(daemon, vm)
    store, uuid = daemon.store, info["uuid"]
    with store.locked(keys.lock_name(uuid), daemon.node, LOCK_WAIT,
                      what=f"VM '{info['name']}' snapshots"):
        if store.exists("vm_protect.snapshot", uuid=uuid, snapshot=name):
            raise SnapshotError(f"VM '{info['name']}' already has a snapshot '{name}'")
        made: list[str] = []
        total = len(info["volumes"]) + 1
        for index, volume in enumerate(info["volumes"]):
            if progress:
                progress(index, total, f"snapshot of {volume}")
            pool, vol = _split(volume)
            try:
                ask(daemon, "pvc_volume_snapshot", pool=pool, name=vol, snapshot=name)
            except Exception as exc:
                left = _remove_volume_snaps(daemon, made, name)
                tail = f"; could not remove {', '.join(left)}" if left else \
                    (f"; removed the {len(made)} made before it" if made else "")
                raise SnapshotError(f"the snapshot of volume {volume} failed: {exc}{tail}") \
                    from None
            made.append(volume)
        record = {"name": name, "timestamp": time.time(), "xml": info["xml"],
                  "meta": info.get("meta") or {}, "consistency": "crash",
                  "volumes": [f"{v}@{name}" for v in made]}
        try:
            store.create("vm_protect.snapshot", json.dumps(record), uuid=uuid, snapshot=name)
        except Exception:
            _remove_volume_snaps(daemon, made, name)
            raise
    return (f"Created snapshot '{name}' of VM '{info['name']}' "
            f"({len(made)} volume(s), crash-consistent).")


def _remove_volume_snaps(daemon: Any, volumes: list[str], name: str) -> list[str]:
    """Remove ``volume@name`` for each volume; the ones that could not be removed."""
    left = []
    for volume in volumes:
        pool, vol = _split(volume)
        try:
            ask(daemon, "pvc_volume_snapshot_remove", pool=pool, name=vol, snapshot=name)
        except Exception as exc:
            log.error("could not remove snapshot %s@%s: %s", volume, name, exc)
            left.append(f"{volume}@{name}")
    return left


def snapshot_record(store: Any, info: dict[str, Any], name: str) -> dict[str, Any]:
    rec = store.get_json("vm_protect.snapshot", uuid=info["uuid"], snapshot=name)
    if not isinstance(rec, dict):
        raise SnapshotError(f"VM '{info['name']}' has no snapshot '{name}'", status=404)
    return rec


def remove(daemon: Any, vm: str, name: str) -> str:
    """Remove the snapshot's volume snapshots, then its record (kept while one remains)."""
    info = find_vm(daemon, vm)
    store, uuid = daemon.store, info["uuid"]
    with store.locked(keys.lock_name(uuid), daemon.node, LOCK_WAIT,
                      what=f"VM '{info['name']}' snapshots"):
        rec = snapshot_record(store, info, name)
        left = _remove_volume_snaps(daemon, [v.rpartition("@")[0] for v in rec["volumes"]],
                                    name)
        if left:
            raise SnapshotError(f"could not remove {', '.join(left)}; the snapshot is kept")
        store.delete("vm_protect.snapshot", uuid=uuid, snapshot=name)
    return f"Removed snapshot '{name}' of VM '{info['name']}'."


def rollback(daemon: Any, vm: str, name: str) -> str:
    """Put the stopped VM's volumes and XML back as they were at the snapshot."""
    info = find_vm(daemon, vm)
    store, uuid = daemon.store, info["uuid"]
    with store.locked(keys.lock_name(uuid), daemon.node, LOCK_WAIT,
                      what=f"VM '{info['name']}' snapshots"):
        rec = snapshot_record(store, info, name)
        if info["state"] not in STOPPED or info.get("running_on"):
            raise SnapshotError(f"VM '{info['name']}' must be stopped to roll back (it is "
                                f"{info['state']}" + (f" on {info['running_on']}"
                                                      if info.get("running_on") else "") + ")")
        done: list[str] = []
        for volume in rec["volumes"]:
            pool, vol = _split(volume.rpartition("@")[0])
            try:
                ask(daemon, "pvc_volume_rollback", pool=pool, name=vol, snapshot=name)
            except Exception as exc:
                already = f" ({', '.join(done)} already rolled back)" if done else ""
                raise SnapshotError(f"the rollback of {volume} failed: {exc}{already}; the "
                                    "VM stays stopped, roll back again once fixed") from None
            done.append(volume)
        if rec.get("xml") and rec["xml"] != info["xml"]:
            ask(daemon, "pvc_vm_modify", vm=uuid, xml=rec["xml"])
    return f"Rolled back VM '{info['name']}' to snapshot '{name}'."


def run_task(ctx: Any, action: str) -> str:
    """A task handler's body: ``action`` of ``ctx.args`` {vm, snapshot}."""
    args = ctx.args
    if action == CREATE_TASK:
        return create(ctx.daemon, args["vm"], args["snapshot"], progress=ctx.progress)
    fn = remove if action == REMOVE_TASK else rollback
    return fn(ctx.daemon, args["vm"], args["snapshot"])
