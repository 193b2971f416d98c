"""``pvc vm flush-locks``: the ``vm.flush_locks`` task, run on the VM's node.

For each ``<disk>`` of the VM's XML, the ``pvc_vm_disk_unlock`` hook asks the storage plugin
that handles the disk (Ceph for RBD) to break every lock on it. Only for a VM that should not
run (state stop, disable, fail or mirror), unless forced: breaking a running VM's lock cuts
its storage. The rule is checked by the API (400) and again by the task under the VM's lock.
No libvirt here: pvcapid imports this module for the rule.
"""

from __future__ import annotations

from typing import Any

from pvc_plugins.vm_kvm import domxml, keys, records
from pvc_plugins.vm_kvm.records import Record

TASK = "vm.flush_locks"
FLUSHABLE = (keys.STOP, keys.DISABLE, keys.FAIL, "mirror")
"""States (as the API shows them) in which the locks may be flushed without force."""
LOCK_WAIT = 15.0
"""Seconds the task waits for the VM's lock (a start or migration holds it briefly)."""


def refusal(rec: Record, force: bool) -> str:
    """Why the locks of ``rec`` must not be flushed now, or "" if they may."""
    state = rec.display_state
    if force or state in FLUSHABLE:
        return ""
    return (f"ERROR: VM '{rec.name}' is in state '{state}'; its locks can be flushed only in "
            f"state {', '.join(FLUSHABLE[:-1])} or {FLUSHABLE[-1]} (force=true overrides, "
            "and breaks a running VM's storage access).")


def _unlock(ctx: Any, rec: Record, disk: dict[str, Any]) -> int:
    """Locks removed on one disk (0 when no plugin handles it); raises on a failure."""
    daemon = ctx.daemon
    vm = {"uuid": rec.uuid, "name": rec.name, "node": daemon.node}
    answer = daemon.plugins.call_first("pvc_vm_disk_unlock", obj=f"vm:{rec.uuid}",
                                       daemon=daemon, vm=vm, disk=disk)
    if answer is None:
        return 0
    if not answer.get("ok", False):
        raise RuntimeError(answer.get("reason")
                           or f"disk {disk.get('target')}: its locks could not be removed")
    return int(answer.get("removed") or 0)


def flush(ctx: Any) -> str:
    """Task handler: args ``{"uuid", "force"}``; the result is the message shown."""
    store = ctx.daemon.store
    uuid = ctx.args["uuid"]
    with store.locked(keys.lock_name(uuid), ctx.daemon.node, LOCK_WAIT, f"VM {uuid}"):
        rec = records.read(store, uuid)
        if rec is None:
            raise RuntimeError(f"VM {uuid} no longer exists")
        why = refusal(rec, bool(ctx.args.get("force")))
        if why:
            raise RuntimeError(why)
        try:
            disks = domxml.disks(domxml.parse_root(rec.xml))
        except domxml.XmlError as exc:
            raise RuntimeError(f"VM {rec.name}: invalid XML: {exc}") from None
        removed = 0
        for done, disk in enumerate(disks):
            ctx.check()
            ctx.progress(done, len(disks), f"Flushing locks of disk "
                                           f"{disk.get('target') or disk.get('source')}")
            removed += _unlock(ctx, rec, disk)
    return f"Flushed locks on VM {rec.name}: {removed} lock(s) removed."
