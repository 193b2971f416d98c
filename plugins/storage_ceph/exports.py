"""Volume export and import as files, with the ``rbd`` tool (librbd: no kernel driver).

Both kinds of export are in the ``rbd export-diff`` format: a full one is the diff of
``pool/name@snap`` from the volume's creation, an incremental one ``--from-snap SINCE``.
(``rbd export --export-format 2`` of ``name@snap`` was tried and carries the volume's
current data and every snapshot, not the snapshot asked for.) Import is ``rbd
import-diff``: onto a new volume of the size the diff names, or onto a volume that holds
the diff's base snapshot. Either way the volume ends with the snapshot, so an import can be
followed by the next incremental one.
"""

from __future__ import annotations

import os
import struct

from pvc_plugins.storage_ceph import pools
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.errors import StorageError
from pvc_plugins.storage_ceph.volumes import open_image

TIMEOUT = 24 * 3600.0


def _snaps(client: CephClient, pool: str, name: str) -> list[str]:
    with client.ioctx(pool) as ioctx, open_image(client, ioctx, pool, name,
                                                 read_only=True) as image:
        return [s["name"] for s in image.list_snaps()]


def _exists(client: CephClient, pool: str, name: str) -> bool:
    import rbd

    with client.ioctx(pool) as ioctx:
        return name in rbd.RBD().list(ioctx)


def _run(client: CephClient, argv: list[str], what: str) -> None:
    proc = client.cli(["rbd", "--no-progress", *argv], timeout=TIMEOUT)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [str(proc.returncode)]
        raise StorageError(f"{what} failed: {tail[0]}")


def export(client: CephClient, pool: str, name: str, snap: str, since: str | None,
           path: str) -> int:
    """Write ``pool/name@snap`` (or its changes since snapshot ``since``) to ``path``, a file
    that must not exist; the bytes written."""
    pools.require_pool(client, pool)
    have = _snaps(client, pool, name)
    for needed in (snap, since):
        if needed and needed not in have:
            raise StorageError(f'Snapshot "{pool}/{name}@{needed}" not found.')
    if os.path.lexists(path):
        raise StorageError(f"{path} already exists")
    argv = ["export-diff", "--from-snap", since] if since else ["export-diff"]
    try:
        _run(client, [*argv, f"{pool}/{name}@{snap}", path], f"export of {pool}/{name}@{snap}")
    except Exception:
        if os.path.exists(path):
            os.unlink(path)
        raise
    return os.path.getsize(path)


def import_(client: CephClient, pool: str, name: str, path: str, since: str | None,
            snap: str) -> bool:
    """Make volume ``pool/name`` from ``path``: a new volume from a full export, or the
    changes of a diff applied to a volume that holds snapshot ``since``. Afterwards the
    volume has snapshot ``snap`` and holds its data."""
    pools.require_pool(client, pool)
    if since is None:
        if _exists(client, pool, name):
            raise StorageError(f'Volume "{pool}/{name}" already exists.')
        import rbd

        size = diff_size(path)
        with client.ioctx(pool) as ioctx:
            rbd.RBD().create(ioctx, name, size)
        try:
            _run(client, ["import-diff", path, f"{pool}/{name}"], f"import of {pool}/{name}")
        except Exception:
            with client.ioctx(pool) as ioctx:
                rbd.RBD().remove(ioctx, name)
            raise
    else:
        if not _exists(client, pool, name):
            raise StorageError(f'Volume "{pool}/{name}" not found: an incremental import '
                               "needs the volume of its parent")
        if since not in _snaps(client, pool, name):
            raise StorageError(f'Snapshot "{pool}/{name}@{since}" not found: the diff '
                               "cannot be applied")
        _run(client, ["import-diff", path, f"{pool}/{name}"], f"import of {pool}/{name}")
    if snap not in _snaps(client, pool, name):
        with client.ioctx(pool) as ioctx, open_image(client, ioctx, pool, name) as image:
            image.create_snap(snap)
    return True


def diff_size(path: str) -> int:
    """The volume size an ``rbd export-diff`` file ends with (its header's ``s`` record)."""
    with open(path, "rb") as fh:
        head = fh.readline()
        if head not in (b"rbd diff v1\n", b"rbd diff v2\n"):
            raise StorageError(f"{path} is not an rbd export-diff file")
        v2 = head == b"rbd diff v2\n"
        while True:
            tag = fh.read(1)
            if tag in (b"f", b"t"):
                if v2:
                    fh.read(8)
                (length,) = struct.unpack("<I", fh.read(4))
                fh.read(length)
            elif tag == b"s":
                if v2:
                    fh.read(8)
                (size,) = struct.unpack("<Q", fh.read(8))
                return size
            else:
                raise StorageError(f"{path}: no size record in the diff header")
