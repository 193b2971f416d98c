"""VM disks through the ``pvc_vm_disk_prepare`` hook; this plugin answers for file disks.

Another plugin (Ceph) answers for its own disks (``type='network' protocol='rbd'``); a
disk nobody answers for goes to libvirt as it is.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pvc_plugins.vm_kvm import domxml

log = logging.getLogger(__name__)


def prepare(daemon: Any, rec: Any, purpose: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """Ask the hook about each disk of ``rec``: ``(first problem or "", {target: libvirt
    access})``, the access being what storage plugins said libvirt needs for that disk."""
    try:
        found = domxml.disks(domxml.parse_root(rec.xml))
    except domxml.XmlError as exc:
        return f"invalid XML: {exc}", {}
    vm = {"uuid": rec.uuid, "name": rec.name, "node": daemon.node}
    access: dict[str, dict[str, Any]] = {}
    for disk in found:
        answer = daemon.plugins.call_first("pvc_vm_disk_prepare", obj=f"vm:{rec.uuid}",
                                           daemon=daemon, vm=vm, disk=disk, purpose=purpose)
        if answer is None:
            continue
        if not answer.get("ok", False):
            return answer.get("reason") or f"disk {disk.get('target')} is not usable", {}
        if purpose == "migrate" and answer.get("shared") is False:
            return f"disk {disk.get('target')} is not on shared storage", {}
        if answer.get("libvirt") and disk.get("target"):
            access[disk["target"]] = answer["libvirt"]
    return "", access


def check(daemon: Any, rec: Any, purpose: str) -> str:
    """The first problem with a disk of ``rec``, or ""."""
    return prepare(daemon, rec, purpose)[0]


def sync_secrets(daemon: Any, hv: Any) -> int:
    """Give this node's libvirtd every secret storage plugins hand out
    (``pvc_hypervisor_secrets``); returns how many were set. A plugin that fails is logged
    (by the plugin host) and tried again next time."""
    count = 0
    for name, secrets in daemon.plugins.call_each("pvc_hypervisor_secrets",
                                                  obj="vm_kvm:secrets", daemon=daemon):
        for secret in secrets or []:
            try:
                hv.set_secret(secret["uuid"], secret.get("usage_type", "ceph"),
                              secret.get("usage_name", f"pvc {secret['uuid']}"),
                              secret["value"])
                count += 1
            except Exception as exc:    # never log the value
                log.warning("cannot set secret %s from %s in libvirt: %s", secret.get("uuid"),
                            name, type(exc).__name__ + ": " + str(exc).split("\n")[0])
    return count


def prepare_local(daemon: Any, vm: dict[str, Any], disk: dict[str, Any],
                        purpose: str) -> dict[str, Any] | None:
    """File and block disks: the source must exist on this node (an empty CD-ROM is fine).

    Whether the file is on shared storage is left to libvirt (``shared`` unknown): it
    refuses a live migration of unshared disks, and vm_kvm then falls back to a shutdown
    migration.
    """
    if disk.get("type") not in ("file", "block"):
        return None
    source = disk.get("source")
    if not source:
        if disk.get("device") in ("cdrom", "floppy"):
            return {"ok": True, "shared": None}
        return {"ok": False, "reason": f"disk {disk.get('target')} has no source"}
    if purpose == "start" and not os.path.exists(source):
        return {"ok": False, "reason": f"disk {disk.get('target')}: {source} does not exist "
                                       f"on node {daemon.node}"}
    return {"ok": True, "shared": None}
