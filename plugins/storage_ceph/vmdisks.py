"""RBD disks of VMs (hooks ``pvc_vm_disk_prepare``, ``pvc_vm_disk_unlock``) and storage
fencing (``pvc_storage_fence``).

A VM's RBD disk is ``<disk type='network'><source protocol='rbd' name='pool/volume'>``. Before
a start the volume must exist and its lock must be free: a lock held from one of this node's
own addresses is stale (the VM does not run here) and is broken; a lock held by another
client is broken only if that client no longer watches the image (it died), else the start is
refused with a readable reason. Breaking a lock blocklists its holder, so a half-dead writer
can never write again. The answer also carries what libvirt needs to reach the cluster
(``libvirt``: monitor hosts, user, secret UUID).

``pvc vm flush-locks`` (hook ``pvc_vm_disk_unlock``) breaks every lock on a volume, live
holder or not: the VM plugin allows it only for a VM that should not run, unless forced.

Fencing blocklists a node's storage addresses (``osd blocklist range add <ip>/32``) for
ten years, until ``pvc_storage_unfence`` removes the entries.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import psutil

from pvc_plugins.storage_ceph import bluestore, secrets
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.config import CephConfig
from pvc_plugins.storage_ceph.errors import StorageError

log = logging.getLogger(__name__)
FENCE_SECONDS = 10 * 365 * 86400.0
_V1 = re.compile(r"v1:([0-9.]+):(\d+)")
_ANY = re.compile(r"(?:v2:)?([0-9.]+):(\d+)")


def local_addresses() -> set[str]:
    return {a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family.name == "AF_INET"}


def storage_addresses(settings: CephConfig) -> list[str]:
    """This node's IPv4 addresses inside Ceph's public network (its client addresses)."""
    try:
        net = ipaddress.ip_network(bluestore.conf_value(bluestore.local_run, settings.ceph_conf,
                                                        "client.admin", "public_network")
                                   .split(",")[0].strip(), strict=False)
    except (bluestore.BluestoreError, ValueError):
        return []
    return sorted(a for a in local_addresses() if ipaddress.ip_address(a) in net)


def mon_hosts(settings: CephConfig) -> list[dict[str, str]]:
    """The monitors as libvirt ``<host name port>`` (their v1 addresses when listed)."""
    try:
        text = bluestore.conf_value(bluestore.local_run, settings.ceph_conf, "client.admin",
                                    "mon_host")
    except bluestore.BluestoreError:
        return []
    hosts = []
    for group in re.split(r"[,\s]+(?![^\[]*\])", text):
        m = _V1.search(group) or _ANY.search(group)
        if m:
            hosts.append({"name": m.group(1), "port": m.group(2)})
    return hosts


def locker_ip(addr: str) -> str:
    """``10.0.0.1:0/12345`` (or with a ``v1:`` prefix) → ``10.0.0.1``."""
    return addr.split("v1:")[-1].split("v2:")[-1].split(":")[0].strip("[]")


def _source(disk: dict[str, Any]) -> tuple[str, str, str, str]:
    """``(pool, volume, "pool/volume", target)`` of an RBD disk."""
    spec = str(disk.get("source") or "")
    pool, _, volume = spec.partition("/")
    return pool, volume, spec, disk.get("target") or spec


def _on_image(client: CephClient, disk: dict[str, Any],
              work: Callable[[Any, str, str], dict[str, Any]]) -> dict[str, Any]:
    """Run ``work(image, spec, target)`` on the disk's open RBD image and return its answer;
    a failure answer when the source is not ``pool/volume``, the volume is missing or Ceph
    fails."""
    import rbd

    pool, volume, spec, target = _source(disk)
    if not pool or not volume:
        return {"ok": False, "reason": f"disk {target}: RBD source {spec!r} is not pool/volume"}
    try:
        with client.ioctx(pool) as ioctx:
            try:
                image = rbd.Image(ioctx, volume)
            except rbd.ImageNotFound:
                return {"ok": False, "reason": f"disk {target}: volume {spec} does not exist"}
            with image:
                return work(image, spec, target)
    except (StorageError, rbd.Error) as exc:
        return {"ok": False, "reason": f"disk {target}: {exc}"}


def _lockers(image: Any) -> list[tuple[str, str, str]]:
    """Every holder of the image's lock as ``(client, cookie, address)``."""
    return [tuple(x) for x in (image.list_lockers() or {}).get("lockers", [])]


def _break(image: Any, spec: str, who: str, cookie: str, addr: str, why: str) -> None:
    """Break one lock; librbd blocklists the holder first, so it can never write again."""
    log.warning("breaking %s lock on %s held by %s (%s)", why, spec, who, addr)
    image.break_lock(who, cookie)


def prepare_rbd(client: CephClient, settings: CephConfig, disk: dict[str, Any],
                purpose: str) -> dict[str, Any]:
    libvirt = secrets.disk_access(client, settings, mon_hosts(settings))

    def free_stale_locks(image: Any, spec: str, target: str) -> dict[str, Any]:
        watching = {w.get("addr") for w in image.watchers_list()}
        mine = local_addresses()
        for who, cookie, addr in _lockers(image):
            if locker_ip(addr) not in mine and addr in watching:
                return {"ok": False, "reason": f"disk {target}: volume {spec} is locked "
                        f"by a live client at {addr} (another node runs it?)"}
            _break(image, spec, who, cookie, addr, "stale")
        return {"ok": True, "shared": True, "libvirt": libvirt}

    pool, volume, _, _ = _source(disk)
    if purpose != "start" and pool and volume:
        return {"ok": True, "shared": True, "libvirt": libvirt}
    return _on_image(client, disk, free_stale_locks)


def unlock_rbd(client: CephClient, disk: dict[str, Any]) -> dict[str, Any]:
    """Break every lock on the disk's volume, whoever holds it (``pvc vm flush-locks``).

    ``{"ok", "reason", "removed": how many locks were broken}``; on a failure ``removed``
    counts those broken before it.
    """
    removed = 0

    def break_all(image: Any, spec: str, target: str) -> dict[str, Any]:
        nonlocal removed
        for who, cookie, addr in _lockers(image):
            _break(image, spec, who, cookie, addr, "flushed")
            removed += 1
        return {"ok": True, "reason": "", "removed": removed}

    answer = _on_image(client, disk, break_all)
    answer.setdefault("removed", removed)
    return answer


def fence(client: CephClient, addresses: list[str], cut: bool) -> dict[str, Any]:
    done = []
    try:
        for ip in addresses:
            args: dict[str, Any] = {"range": "range", "blocklistop": "add" if cut else "rm",
                                    "addr": f"{ip}/32"}
            if cut:
                args["expire"] = FENCE_SECONDS
            try:
                client.mon("osd blocklist", **args)
            except StorageError:
                if cut:
                    raise
            done.append(ip)
    except StorageError as exc:
        return {"ok": False, "reason": str(exc), "addresses": done}
    if not done and cut:
        return {"ok": False, "reason": "no storage addresses known for the node",
                "addresses": []}
    return {"ok": True, "reason": "", "addresses": done}


def mark_osds_down(client: CephClient, ids: list[str]) -> list[str]:
    """Mark a fenced node's OSDs down at once, so PGs peer without them now instead of
    after Ceph's heartbeat grace (I/O to their PGs waits until then). An OSD that still runs
    marks itself up again; failures are logged, never raised. Returns the ids marked."""
    if not ids:
        return []
    try:
        client.mon("osd down", ids=[str(i) for i in ids])
    except StorageError as exc:
        log.warning("could not mark OSDs %s down: %s", ", ".join(ids), exc)
        return []
    log.info("marked OSDs %s of the fenced node down", ", ".join(ids))
    return [str(i) for i in ids]


def blocklisted(client: CephClient) -> list[str]:
    """The blocklisted ranges' IPs (for checks and status)."""
    text = client.mon_text("osd blocklist ls", format="json")
    out = []
    decoder, pos = json.JSONDecoder(), 0
    while pos < len(text):
        doc, end = decoder.raw_decode(text, pos)
        out += [e.get("range", "").split(":")[0] for e in doc if "range" in e]
        pos = end
        while pos < len(text) and text[pos] in " \n":
            pos += 1
    return out
