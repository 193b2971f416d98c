"""RBD disks of VMs (hook ``pvc_vm_disk_prepare``) and storage fencing (``pvc_storage_fence``).

A VM's RBD disk is ``<disk type='network'><source protocol='rbd' name='pool/volume'>``. Before
a start the volume must exist and its lock must be free: a lock held from one of this node's
own addresses is stale (the VM does not run here) and is broken; a lock held by another
client is broken only if that client no longer watches the image (it died), else the start is
refused with a readable reason. Breaking a lock blocklists its holder, so a half-dead writer
can never write again. The answer also carries what libvirt needs to reach the cluster
(``libvirt``: monitor hosts, ceph.conf, user, secret).

Fencing blocklists a node's storage addresses (``osd blocklist range add <ip>/32``) for
ten years, until ``pvc_storage_unfence`` removes the entries.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from typing import Any

import psutil

from pvc_plugins.storage_ceph import bluestore
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.errors import StorageError
from pvc_plugins.storage_ceph.settings import Settings

log = logging.getLogger(__name__)
FENCE_SECONDS = 10 * 365 * 86400.0
_V1 = re.compile(r"v1:([0-9.]+):(\d+)")
_ANY = re.compile(r"(?:v2:)?([0-9.]+):(\d+)")


def local_addresses() -> set[str]:
    return {a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family.name == "AF_INET"}


def storage_addresses(settings: Settings) -> list[str]:
    """This node's IPv4 addresses inside Ceph's public network (its client addresses)."""
    try:
        net = ipaddress.ip_network(bluestore.conf_value(bluestore.local_run, settings.ceph_conf,
                                                        "client.admin", "public_network")
                                   .split(",")[0].strip(), strict=False)
    except (bluestore.BluestoreError, ValueError):
        return []
    return sorted(a for a in local_addresses() if ipaddress.ip_address(a) in net)


def mon_hosts(settings: Settings) -> list[dict[str, str]]:
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


def prepare_rbd(client: CephClient, settings: Settings, disk: dict[str, Any],
                purpose: str) -> dict[str, Any]:
    import rbd

    spec = str(disk.get("source") or "")
    pool, _, volume = spec.partition("/")
    target = disk.get("target") or spec
    libvirt = {"hosts": mon_hosts(settings), "config": settings.ceph_conf,
               "username": settings.rados_id, "secret": settings.libvirt_secret}
    if not pool or not volume:
        return {"ok": False, "reason": f"disk {target}: RBD source {spec!r} is not pool/volume"}
    if purpose != "start":
        return {"ok": True, "shared": True, "libvirt": libvirt}
    try:
        with client.ioctx(pool) as ioctx:
            try:
                image = rbd.Image(ioctx, volume)
            except rbd.ImageNotFound:
                return {"ok": False, "reason": f"disk {target}: volume {spec} does not exist"}
            with image:
                lockers = image.list_lockers() or {}
                watching = {w.get("addr") for w in image.watchers_list()}
                mine = local_addresses()
                for who, cookie, addr in lockers.get("lockers", []):
                    if locker_ip(addr) not in mine and addr in watching:
                        return {"ok": False, "reason": f"disk {target}: volume {spec} is locked "
                                f"by a live client at {addr} (another node runs it?)"}
                    log.warning("breaking stale lock on %s held by %s (%s)", spec, who, addr)
                    image.break_lock(who, cookie)
    except StorageError as exc:
        return {"ok": False, "reason": f"disk {target}: {exc}"}
    return {"ok": True, "shared": True, "libvirt": libvirt}


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
