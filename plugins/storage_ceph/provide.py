"""Volumes for other plugins (``pvc_volume_*`` hooks): the same checks as the volume
routes, called on the primary by plugins that make VMs (the provisioner). A refusal raises
``StorageError`` with the message an administrator reads."""

from __future__ import annotations

from typing import Any

from pvc_plugins.storage_ceph import exports, pools, secrets, snapshots, vmdisks, volumes
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.config import CephConfig


def facts(client: CephClient, settings: CephConfig) -> dict[str, Any]:
    """Monitor hosts, their port and the hypervisor secret's UUID (None without cephx)."""
    hosts = vmdisks.mon_hosts(settings)
    access = secrets.disk_access(client, settings, hosts)
    return {"hosts": [h["name"] for h in hosts],
            "port": hosts[0]["port"] if hosts else "6789", "secret": access.get("secret")}


def free(client: CephClient, pool: str) -> int:
    pools.require_pool(client, pool)
    return pools.max_avail(client, pool)


def create(client: CephClient, pool: str, name: str, size_bytes: int,
           source: str | None) -> bool:
    if source:
        volumes.clone_volume(client, pool, source, name)
    else:
        volumes.add_volume(client, pool, name, size_bytes)
    return True


def remove(client: CephClient, pool: str, name: str) -> bool:
    pools.require_pool(client, pool)
    if name not in {v["name"] for v in volumes.list_volumes(client, pool)}:
        return False
    volumes.remove_volume(client, pool, name)
    return True


def snapshot(client: CephClient, pool: str, name: str, snap: str) -> bool:
    snapshots.add_snapshot(client, pool, name, snap)
    return True


def snapshot_remove(client: CephClient, pool: str, name: str, snap: str) -> bool:
    pools.require_pool(client, pool)
    if not snapshots.list_snapshots(client, pool, name, match=lambda found: found == snap):
        return False
    snapshots.remove_snapshot(client, pool, name, snap)
    return True


def rollback(client: CephClient, pool: str, name: str, snap: str) -> bool:
    snapshots.rollback_snapshot(client, pool, name, snap)
    return True


def blockdev(settings: CephConfig, pool: str, name: str) -> dict[str, Any]:
    """The volume for QEMU tools on this node (librbd: no kernel driver needed)."""
    return {"driver": "raw", "discard": "unmap",
            "file": {"driver": "rbd", "pool": pool, "image": name, "discard": "unmap",
                     "conf": settings.ceph_conf, "user": settings.rados_id}}


def export(client: CephClient, pool: str, name: str, snap: str, since: str | None,
           path: str) -> int:
    return exports.export(client, pool, name, snap, since, path)


def import_volume(client: CephClient, pool: str, name: str, path: str, since: str | None,
                  snap: str) -> bool:
    return exports.import_(client, pool, name, path, since, snap)
