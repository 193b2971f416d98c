"""RBD snapshots of volumes: list, add, rename, rollback (volume not in use), remove."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc_plugins.storage_ceph import pools, rbdinfo, units
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.errors import NotFound, StorageError
from pvc_plugins.storage_ceph.volumes import in_use, open_image


def _rbd() -> Any:
    import rbd

    return rbd


def _snap_dict(ioctx: Any, pool: str, volume: str, snap: str) -> dict[str, Any]:
    rbd = _rbd()
    try:
        with rbd.Image(ioctx, volume, snapshot=snap, read_only=True) as image:
            stats: Any = rbdinfo.image_info(image, volume, snap)
    except rbd.ImageNotFound:
        raise
    except Exception:
        stats = []
    return {"pool": pool, "volume": volume, "snapshot": snap, "stats": stats}


def list_snapshots(client: CephClient, pool: str | None = None, volume: str | None = None,
                   match: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """Snapshot objects of the API, sorted by snapshot name (then pool and volume)."""
    rbd = _rbd()
    if pool is not None:
        if not client.pool_exists(pool):
            return []
        pool_names = [pool]
    else:
        pool_names = [p["pool_name"] for p in pools.pool_details(client)]
    out = []
    for p in pool_names:
        with client.ioctx(p) as ioctx:
            vols = rbd.RBD().list(ioctx)
            for vol in vols if volume is None else [v for v in vols if v == volume]:
                try:
                    with rbd.Image(ioctx, vol, read_only=True) as image:
                        names = [s["name"] for s in image.list_snaps()]
                except rbd.ImageNotFound:
                    continue
                for snap in names:
                    if match is None or match(snap):
                        try:
                            out.append(_snap_dict(ioctx, p, vol, snap))
                        except rbd.ImageNotFound:
                            continue
    return sorted(out, key=lambda s: (s["snapshot"], s["pool"], s["volume"]))


def get_snapshot(client: CephClient, pool: str, volume: str, snap: str) -> dict[str, Any]:
    found = [s for s in list_snapshots(client, pool, volume) if s["snapshot"] == snap]
    if not found:
        raise NotFound("Volume snapshot not found.")
    return found[0]


def _with_image(client: CephClient, pool: str, volume: str, fn: Callable[[Any], str],
                idle: bool = False) -> str:
    """Run ``fn(image)``; with ``idle`` only while no other client uses the volume."""
    pools.require_pool(client, pool)
    with client.ioctx(pool) as ioctx:
        watchers = in_use(ioctx, volume) if idle else []
        if watchers:
            raise StorageError(f'Volume "{pool}/{volume}" is in use by {", ".join(watchers)}: '
                               "stop its VM first")
        with open_image(client, ioctx, pool, volume) as image:
            return fn(image)


def _require_snap(image: Any, pool: str, volume: str, snap: str) -> None:
    if not image.snap_exists(snap):
        raise StorageError(f'Snapshot "{pool}/{volume}@{snap}" not found.')


def add_snapshot(client: CephClient, pool: str, volume: str, snap: str) -> str:
    units.check_name("snapshot", snap)

    def run(image: Any) -> str:
        if image.snap_exists(snap):
            raise StorageError(f'Snapshot "{pool}/{volume}@{snap}" already exists.')
        image.create_snap(snap)
        return f'Created RBD snapshot "{snap}" of volume "{pool}/{volume}".'
    return _with_image(client, pool, volume, run)


def rename_snapshot(client: CephClient, pool: str, volume: str, snap: str, new: str) -> str:
    units.check_name("snapshot", new)

    def run(image: Any) -> str:
        _require_snap(image, pool, volume, snap)
        if image.snap_exists(new):
            raise StorageError(f'Snapshot "{pool}/{volume}@{new}" already exists.')
        image.rename_snap(snap, new)
        return f'Renamed RBD snapshot "{snap}" to "{new}" for volume "{pool}/{volume}".'
    return _with_image(client, pool, volume, run)


def rollback_snapshot(client: CephClient, pool: str, volume: str, snap: str) -> str:
    """Roll the volume back to the snapshot; refused while a client (a VM) uses it."""
    def run(image: Any) -> str:
        _require_snap(image, pool, volume, snap)
        image.rollback_to_snap(snap)
        return f'Rolled back RBD volume "{pool}/{volume}" to snapshot "{snap}".'
    return _with_image(client, pool, volume, run, idle=True)


def remove_snapshot(client: CephClient, pool: str, volume: str, snap: str) -> str:
    def run(image: Any) -> str:
        _require_snap(image, pool, volume, snap)
        if image.is_protected_snap(snap):
            image.set_snap(snap)
            children = list(image.list_children())
            image.set_snap(None)
            if children:
                names = ", ".join(f"{p}/{v}" for p, v in children)
                raise StorageError(f'Snapshot "{pool}/{volume}@{snap}" has clones ({names}); '
                                   "remove or flatten them first")
            image.unprotect_snap(snap)
        image.remove_snap(snap)
        return f'Removed RBD snapshot "{snap}" of volume "{pool}/{volume}".'
    return _with_image(client, pool, volume, run)
