"""Tasks ``provisioner.ova_import`` and ``provisioner.ova_remove``.

The API spools an uploaded OVA to the work directory of the node that received it, checks it
(``ova.inspect``) and starts ``ova_import`` on that same node: a volume per disk
(``ova_<name>_<disk id>``, the capacity the OVF declares), each disk converted to raw into
its volume by ``qemu-img`` through librbd (the storage plugin's ``pvc_volume_blockdev``),
then the OVA object and its system template (``ova_<name>``: the OVF's vCPUs and memory).
A failure removes the volumes it made; the spooled file is removed in any case. An ``ova``
profile then makes VMs whose disks are copies of these volumes.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from pvc_plugins.provisioner import model, ova
from pvc_plugins.provisioner.create import ask
from pvc_plugins.provisioner.keys import LOCK

log = logging.getLogger("pvc_plugins.provisioner")

IMPORT, REMOVE = "provisioner.ova_import", "provisioner.ova_remove"
GB = 1024 ** 3


def volume_name(name: str, disk_id: str) -> str:
    return f"ova_{name}_{disk_id}"


def _next_id(store: Any, kind: str) -> int:
    ids = json.loads(store.get("provisioner.ids") or "{}")
    ids[kind] = int(ids.get(kind, 0)) + 1
    store.set("provisioner.ids", json.dumps(ids))
    return ids[kind]


def run_import(ctx: Any, daemon: Any) -> str:
    a = ctx.args
    name, pool, path = a["name"], a["pool"], a["path"]
    made: list[str] = []
    try:
        facts = ova.inspect(path)
        total = max(len(facts.disks), 1) * 100
        for index, disk in enumerate(facts.disks):
            ctx.check()
            volume = volume_name(name, disk.disk_id)
            ctx.progress(index * 100, total, f"Creating volume {pool}/{volume}")
            ask(daemon, "pvc_volume_create", pool=pool, name=volume,
                 size_bytes=disk.capacity_bytes, source=None)
            made.append(volume)
            if not disk.file:
                continue
            target = ask(daemon, "pvc_volume_blockdev", pool=pool, name=volume)

            def progress(fraction: float, index: int = index, disk_id: str = disk.disk_id) -> None:
                ctx.progress(index * 100 + int(fraction * 99), total,
                             f"Converting disk {disk_id} ({fraction:.0%})")
            ova.convert_disk(path, disk, ["-n", "json:" + json.dumps(target)],
                             progress=progress)
        record = {"ovf": facts.ovf, "volumes": [
            {"pool": pool, "volume_name": volume_name(name, d.disk_id), "volume_format": "raw",
             "disk_id": d.disk_id, "disk_size_gb": -(-d.capacity_bytes // GB)}
            for d in facts.disks]}
        system = ova.system_template_facts(facts)
        with daemon.store.locked(LOCK, daemon.node, timeout=30, what="the provisioner"):
            if daemon.store.get("provisioner.object", kind=model.OVA, obj=name):
                raise ova.OvaError(f"OVA '{name}' already exists")
            ova_id = _next_id(daemon.store, model.OVA)
            daemon.store.set("provisioner.object", json.dumps(
                {"id": ova_id, "name": name, **record}), kind=model.OVA, obj=name)
            template = f"ova_{name}"
            if not daemon.store.get("provisioner.object", kind=model.SYSTEM, obj=template):
                daemon.store.set("provisioner.object", json.dumps({
                    "id": _next_id(daemon.store, model.SYSTEM), "name": template,
                    **model.system_template(None, {"vcpus": system["vcpu_count"],
                                                   "vram": system["vram_mb"],
                                                   "serial": True}),
                    "ova": ova_id}), kind=model.SYSTEM, obj=template)
    except BaseException:
        for volume in reversed(made):
            try:
                ask(daemon, "pvc_volume_remove", pool=pool, name=volume)
            except Exception as exc:
                log.error("provisioner: OVA %s: cannot remove %s/%s: %s", name, pool, volume,
                          exc)
        raise
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return (f"Imported OVA '{name}': {len(facts.disks)} disk(s) in pool {pool}, system "
            f"template ova_{name}.")


def run_remove(ctx: Any, daemon: Any) -> str:
    """Remove an OVA's volumes, then its object (the API checked no profile uses it)."""
    name = ctx.args["name"]
    text = daemon.store.get("provisioner.object", kind=model.OVA, obj=name)
    if not text:
        return f"OVA '{name}' was already removed."
    record = json.loads(text)
    for volume in record.get("volumes") or []:
        ctx.check()
        ask(daemon, "pvc_volume_remove", pool=volume["pool"], name=volume["volume_name"])
    daemon.store.delete("provisioner.object", kind=model.OVA, obj=name)
    return f"Removed OVA '{name}' and its volumes."


HANDLERS = {IMPORT: run_import, REMOVE: run_remove}
