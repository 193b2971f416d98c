"""RBD volumes: list/info, add, resize (grow), rename, clone, remove.

Sizes beyond what the pool can still store are refused unless ``force`` (thin provisioning
lets an administrator over-commit on purpose); so are sizes above 80 % of it (a soft cap
that keeps room for the other volumes' growth). Uploads are in ``upload.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc_plugins.storage_ceph import pools, rbdinfo, units
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.errors import NotFound, StorageError

SOFT_CAP = 0.8


def _rbd() -> Any:
    import rbd

    return rbd


def open_image(client: CephClient, ioctx: Any, pool: str, name: str, **kw: Any) -> Any:
    rbd = _rbd()
    try:
        return rbd.Image(ioctx, name, **kw)
    except rbd.ImageNotFound:
        raise StorageError(f'Volume "{pool}/{name}" not found.') from None


def volume_dict(ioctx: Any, pool: str, name: str) -> dict[str, Any]:
    rbd = _rbd()
    try:
        with rbd.Image(ioctx, name, read_only=True) as image:
            stats = rbdinfo.image_info(image, name)
    except rbd.ImageNotFound:
        raise
    except Exception:
        stats = rbdinfo.empty_info(name)
    stats["size"] = units.format_size(stats["size"])
    return {"name": name, "pool": pool, "stats": stats}


def list_volumes(client: CephClient, pool: str | None = None,
                 match: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    """Volume objects of the API sorted by name (then pool); ``pool`` must exist if given."""
    rbd = _rbd()
    if pool is not None:
        pools.require_pool(client, pool)
        names = [pool]
    else:
        names = [p["pool_name"] for p in pools.pool_details(client)]
    out = []
    for p in names:
        with client.ioctx(p) as ioctx:
            for name in rbd.RBD().list(ioctx):
                if match is None or match(name):
                    try:
                        out.append(volume_dict(ioctx, p, name))
                    except rbd.ImageNotFound:   # removed while listing
                        continue
    return sorted(out, key=lambda v: (v["name"], v["pool"]))


def get_volume(client: CephClient, pool: str, name: str) -> dict[str, Any]:
    rbd = _rbd()
    if not client.pool_exists(pool):
        raise NotFound("Volume not found.")
    with client.ioctx(pool) as ioctx:
        try:
            return volume_dict(ioctx, pool, name)
        except rbd.ImageNotFound:
            raise NotFound("Volume not found.") from None


def check_space(client: CephClient, pool: str, size: int, force: bool, what: str) -> None:
    """Refuse ``size`` new bytes beyond the pool's free space or its 80 % soft cap."""
    if force:
        return
    free = pools.max_avail(client, pool)
    if size > free:
        raise StorageError(f"{what} of {units.format_size(size)} is larger than the free space "
                           f"of pool {pool} ({units.format_size(free)}); use force to "
                           "over-commit")
    if size > SOFT_CAP * free:
        raise StorageError(f"{what} of {units.format_size(size)} is more than "
                           f"{int(SOFT_CAP * 100)} % of the free space of pool {pool} "
                           f"({units.format_size(free)}); use force to allow it")


def add_volume(client: CephClient, pool: str, name: str, size: str | int,
               force: bool = False) -> str:
    rbd = _rbd()
    units.check_name("volume", name)
    size_bytes = units.parse_size(size)
    if size_bytes <= 0:
        raise StorageError("Invalid size: a volume needs at least 1 byte")
    pools.require_pool(client, pool)
    with client.ioctx(pool) as ioctx:
        if name in rbd.RBD().list(ioctx):
            raise StorageError(f'Volume "{pool}/{name}" already exists.')
        check_space(client, pool, size_bytes, force, "A volume")
        rbd.RBD().create(ioctx, name, size_bytes, old_format=False)
    return f'Created RBD volume "{pool}/{name}" of size "{units.format_size(size_bytes)}".'


def resize_volume(client: CephClient, pool: str, name: str, size: str | int,
                  force: bool = False) -> str:
    size_bytes = units.parse_size(size)
    pools.require_pool(client, pool)
    with client.ioctx(pool) as ioctx, open_image(client, ioctx, pool, name) as image:
        current = image.size()
        if size_bytes < current:
            raise StorageError(f'Volume "{pool}/{name}" is {units.format_size(current)}: it '
                               "can only grow (shrinking would destroy data)")
        check_space(client, pool, size_bytes - current, force, "Growing the volume")
        image.resize(size_bytes)
    return f'Resized RBD volume "{pool}/{name}" to size "{units.format_size(size_bytes)}".'


def rename_volume(client: CephClient, pool: str, name: str, new_name: str) -> str:
    rbd = _rbd()
    units.check_name("volume", new_name)
    pools.require_pool(client, pool)
    with client.ioctx(pool) as ioctx:
        existing = rbd.RBD().list(ioctx)
        if name not in existing:
            raise StorageError(f'Volume "{pool}/{name}" not found.')
        if new_name in existing:
            raise StorageError(f'Volume "{pool}/{new_name}" already exists.')
        rbd.RBD().rename(ioctx, name, new_name)
    return f'Renamed RBD volume "{pool}/{name}" to "{new_name}".'


def clone_volume(client: CephClient, pool: str, name: str, new_name: str,
                 force: bool = False, snapshot: str | None = None) -> str:
    """A full copy of the volume (``snapshot``: a copy-on-write clone of that snapshot)."""
    rbd = _rbd()
    units.check_name("volume", new_name)
    pools.require_pool(client, pool)
    with client.ioctx(pool) as ioctx:
        if new_name in rbd.RBD().list(ioctx):
            raise StorageError(f'Volume "{pool}/{new_name}" already exists.')
        with open_image(client, ioctx, pool, name) as image:
            if snapshot is None:
                check_space(client, pool, image.size(), force, "A copy")
                image.copy(ioctx, new_name)
                return f'Cloned RBD volume "{pool}/{name}" to "{pool}/{new_name}".'
            if not image.snap_exists(snapshot):
                raise StorageError(f'Snapshot "{pool}/{name}@{snapshot}" not found.')
            if not image.is_protected_snap(snapshot):
                image.protect_snap(snapshot)     # clone format 1 needs it; harmless otherwise
        rbd.RBD().clone(ioctx, name, snapshot, ioctx, new_name,
                        features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
                        | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
                        | rbd.RBD_FEATURE_DEEP_FLATTEN)
    return f'Cloned RBD snapshot "{pool}/{name}@{snapshot}" to "{pool}/{new_name}".'


def in_use(ioctx: Any, name: str) -> list[str]:
    """Addresses of the clients watching the image (a running VM, a mapping).

    A read-only handle sets no watch of its own, so only other clients are listed.
    """
    rbd = _rbd()
    try:
        with rbd.Image(ioctx, name, read_only=True) as image:
            return [w.get("addr", "?") for w in image.watchers_list()]
    except rbd.ImageNotFound:
        return []


def remove_volume(client: CephClient, pool: str, name: str) -> str:
    rbd = _rbd()
    pools.require_pool(client, pool)
    with client.ioctx(pool) as ioctx:
        with open_image(client, ioctx, pool, name, read_only=True) as image:
            snaps = [s["name"] for s in image.list_snaps()]
        watchers = in_use(ioctx, name)
        if snaps:
            raise StorageError(f'Volume "{pool}/{name}" has {len(snaps)} snapshot(s) '
                               f"({', '.join(sorted(snaps))}); remove them first")
        if watchers:
            raise StorageError(f'Volume "{pool}/{name}" is in use by {", ".join(watchers)}')
        try:
            rbd.RBD().remove(ioctx, name)
        except (rbd.ImageBusy, rbd.ImageHasSnapshots) as exc:
            raise StorageError(f'Volume "{pool}/{name}" cannot be removed: {exc}') from None
    return f'Removed RBD volume "{pool}/{name}".'
