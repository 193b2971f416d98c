"""The ``pvc_volume_*`` hooks other plugins build on, answered by storage_ceph against a real
Ceph: create, snapshot, rollback (refused while the volume is in use), snapshot removal."""

from __future__ import annotations

import os

import pytest

from pvc_plugins.storage_ceph import pools
from pvc_plugins.storage_ceph.errors import StorageError
from tests.support.ceph import task_node

pytestmark = pytest.mark.integration
MiB = 2**20


def test_snapshot_rollback_and_remove_through_the_hooks(ceph):
    import rados
    import rbd

    with task_node(ceph) as daemon:
        plugin, rt = daemon.plugin, daemon.plugin.runtime(daemon)
        pool = f"h{os.urandom(3).hex()}"
        pools.add_pool(rt.client, pool, 8, "copies=2,mincopies=1", None, "osd")
        try:
            assert plugin.pvc_volume_create(daemon, pool, "disk0", 8 * MiB, None) is True
            with rt.client.ioctx(pool) as ioctx, rbd.Image(ioctx, "disk0") as img:
                img.write(b"A" * 4096, 0)
            assert plugin.pvc_volume_snapshot(daemon, pool, "disk0", "s1") is True
            with pytest.raises(StorageError, match="already exists"):
                plugin.pvc_volume_snapshot(daemon, pool, "disk0", "s1")
            with pytest.raises(StorageError):
                plugin.pvc_volume_snapshot(daemon, pool, "nodisk", "s1")
            with rt.client.ioctx(pool) as ioctx, rbd.Image(ioctx, "disk0") as img:
                img.write(b"B" * 4096, 0)

            # a second client holding the image open (as a running VM does) blocks rollback
            other = rados.Rados(conffile=ceph.conf, rados_id=rt.settings.rados_id)
            other.connect()
            try:
                with other.open_ioctx(pool) as ioctx, rbd.Image(ioctx, "disk0"):
                    with pytest.raises(StorageError, match="in use"):
                        plugin.pvc_volume_rollback(daemon, pool, "disk0", "s1")
            finally:
                other.shutdown()

            assert plugin.pvc_volume_rollback(daemon, pool, "disk0", "s1") is True
            with rt.client.ioctx(pool) as ioctx, rbd.Image(ioctx, "disk0",
                                                           read_only=True) as img:
                assert img.read(0, 4096) == b"A" * 4096
            with pytest.raises(StorageError, match="not found"):
                plugin.pvc_volume_rollback(daemon, pool, "disk0", "nosnap")

            assert plugin.pvc_volume_snapshot_remove(daemon, pool, "disk0", "s1") is True
            assert plugin.pvc_volume_snapshot_remove(daemon, pool, "disk0", "s1") is False
            assert plugin.pvc_volume_remove(daemon, pool, "disk0") is True
        finally:
            pools.remove_pool(rt.client, pool)


def test_export_and_import_full_and_incremental_through_the_hooks(ceph, tmp_path):
    import rbd

    def io(pool: str, name: str, data: bytes | None = None) -> bytes:
        with rt.client.ioctx(pool) as ioctx, rbd.Image(ioctx, name) as img:
            if data is not None:
                img.write(data, 4 * MiB)
            return img.read(4 * MiB, 4096)

    def snaps(pool: str, name: str) -> list[str]:
        with rt.client.ioctx(pool) as ioctx, rbd.Image(ioctx, name, read_only=True) as img:
            return [s["name"] for s in img.list_snaps()]

    with task_node(ceph) as daemon:
        plugin, rt = daemon.plugin, daemon.plugin.runtime(daemon)
        pool = f"x{os.urandom(3).hex()}"
        pools.add_pool(rt.client, pool, 8, "copies=2,mincopies=1", None, "osd")
        try:
            plugin.pvc_volume_create(daemon, pool, "src", 8 * MiB, None)
            io(pool, "src", b"A" * 4096)
            plugin.pvc_volume_snapshot(daemon, pool, "src", "s1")
            io(pool, "src", b"B" * 4096)
            plugin.pvc_volume_snapshot(daemon, pool, "src", "s2")
            io(pool, "src", b"C" * 4096)          # after s2: in no export

            full, diff = str(tmp_path / "s1.rbdimg"), str(tmp_path / "s2.rbddiff")
            assert plugin.pvc_volume_export(daemon, pool, "src", "s1", None, full) > 0
            assert plugin.pvc_volume_export(daemon, pool, "src", "s2", "s1", diff) > 0
            with pytest.raises(StorageError, match="already exists"):
                plugin.pvc_volume_export(daemon, pool, "src", "s1", None, full)
            with pytest.raises(StorageError, match="not found"):
                plugin.pvc_volume_export(daemon, pool, "src", "s9", None,
                                         str(tmp_path / "none"))
            assert not (tmp_path / "none").exists()

            # a diff needs its base: refused on a missing volume
            with pytest.raises(StorageError, match="not found"):
                plugin.pvc_volume_import(daemon, pool, "copy", diff, "s1", "s2")
            assert plugin.pvc_volume_import(daemon, pool, "copy", full, None, "s1") is True
            assert io(pool, "copy") == b"A" * 4096
            assert "s1" in snaps(pool, "copy")
            with pytest.raises(StorageError, match="already exists"):
                plugin.pvc_volume_import(daemon, pool, "copy", full, None, "s1")
            assert plugin.pvc_volume_import(daemon, pool, "copy", diff, "s1", "s2") is True
            assert io(pool, "copy") == b"B" * 4096
            assert snaps(pool, "copy") == ["s1", "s2"]
        finally:
            pools.remove_pool(rt.client, pool)
