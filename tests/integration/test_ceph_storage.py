"""The storage plugin's operations against a real Ceph: pools, volumes, snapshots, uploads,
flags and OSD state (the code the API calls), run inside the Ceph namespace."""

from __future__ import annotations

import io
import os
import subprocess

import pytest

from pvc_plugins.storage_ceph import osds, pools, snapshots, upload, volumes
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.config import from_config
from pvc_plugins.storage_ceph.errors import NotFound, StorageError

pytestmark = pytest.mark.integration
MiB = 2**20


@pytest.fixture
def client(ceph):
    with ceph.inside():
        c = CephClient(from_config(ceph.plugin_config()))
        yield c
        c.close()


@pytest.fixture
def pool(client):
    name = f"p{os.urandom(3).hex()}"
    pools.add_pool(client, name, 8, "copies=2,mincopies=1", None, "osd")
    yield name
    pools.remove_pool(client, name)


def read(client, pool, volume, offset, length):
    import rbd

    with client.ioctx(pool) as ioctx, rbd.Image(ioctx, volume, read_only=True) as img:
        return img.read(offset, length)


def write(client, pool, volume, offset, data):
    import rbd

    with client.ioctx(pool) as ioctx, rbd.Image(ioctx, volume) as img:
        img.write(data, offset)


# -- pools ------------------------------------------------------------------------------------

def test_pool_add_list_set_pgs_remove(client):
    msg = pools.add_pool(client, "itpool", 8, "copies=2,mincopies=1", "default", "osd")
    assert msg == 'Created RBD pool "itpool" with 8 PGs'
    try:
        (found,) = [p for p in pools.list_pools(client) if p["name"] == "itpool"]
        assert found["pgs"] == "8" and found["tier"] == "default" and found["volume_count"] == 0
        assert (found["copies"], found["mincopies"]) == (2, 1)
        assert found["stats"]["free_bytes"] > 0 and "num_object_copies" in found["stats"]
        assert "device_health_metrics" not in [p["name"] for p in pools.list_pools(client)]
        assert "16" in pools.set_pgs(client, "itpool", 16)
        assert pools.get_pool(client, "itpool")["pgs"] == "16"
    finally:
        assert "Removed RBD pool 'itpool'" in pools.remove_pool(client, "itpool")
    with pytest.raises(NotFound):
        pools.get_pool(client, "itpool")


@pytest.mark.parametrize("replcfg, pgs, why", [
    ("copies=1,mincopies=2", 8, "must be at least mincopies"),
    ("copies=3,mincopies=2", 8, "only 2 failure domain"),
    ("copies=2", 8, "both copies and mincopies"),
    ("copies=2,mincopies=1", 12, "power of 2"),
])
def test_pool_add_refuses_bad_input(client, replcfg, pgs, why):
    with pytest.raises(StorageError, match=why):
        pools.add_pool(client, "badpool", pgs, replcfg, None, "osd")
    assert not client.pool_exists("badpool")


def test_pool_tier_creates_its_rule(client):
    pools.add_pool(client, "hddpool", 8, "copies=2,mincopies=1", "hdd", "osd")
    try:
        assert pools.get_pool(client, "hddpool")["tier"] == "hdd"
    finally:
        pools.remove_pool(client, "hddpool")


# -- volumes ----------------------------------------------------------------------------------

def test_volume_lifecycle(client, pool):
    assert volumes.add_volume(client, pool, "v1", "64M") == \
        f'Created RBD volume "{pool}/v1" of size "64M".'
    (vol,) = volumes.list_volumes(client, pool)
    assert vol["stats"]["size"] == "64M" and "layering" in vol["stats"]["features"]
    write(client, pool, "v1", 0, b"hello" * 100)
    volumes.resize_volume(client, pool, "v1", "128M")
    assert volumes.get_volume(client, pool, "v1")["stats"]["size"] == "128M"
    with pytest.raises(StorageError, match="can only grow"):
        volumes.resize_volume(client, pool, "v1", "32M")
    volumes.rename_volume(client, pool, "v1", "v2")
    volumes.clone_volume(client, pool, "v2", "v3")
    assert read(client, pool, "v3", 0, 500) == b"hello" * 100
    assert [v["name"] for v in volumes.list_volumes(client, pool)] == ["v2", "v3"]
    for name in ("v2", "v3"):
        volumes.remove_volume(client, pool, name)
    with pytest.raises(NotFound):
        volumes.get_volume(client, pool, "v2")


def test_volume_beyond_free_space_needs_force(client, pool):
    free = pools.max_avail(client, pool)
    with pytest.raises(StorageError, match="larger than the free space"):
        volumes.add_volume(client, pool, "huge", free * 2)
    with pytest.raises(StorageError, match="80 %"):
        volumes.add_volume(client, pool, "big", int(free * 0.9))
    volumes.add_volume(client, pool, "huge", free * 2, force=True)
    volumes.remove_volume(client, pool, "huge")


def test_volume_in_use_or_with_snapshots_is_not_removed(client, pool):
    volumes.add_volume(client, pool, "busy", "16M")
    snapshots.add_snapshot(client, pool, "busy", "s1")
    with pytest.raises(StorageError, match="snapshot"):
        volumes.remove_volume(client, pool, "busy")
    snapshots.remove_snapshot(client, pool, "busy", "s1")
    volumes.remove_volume(client, pool, "busy")


# -- snapshots --------------------------------------------------------------------------------

def test_snapshot_rollback_restores_content(client, pool):
    import rbd

    volumes.add_volume(client, pool, "sv", "16M")
    write(client, pool, "sv", 4096, b"before" * 10)
    snapshots.add_snapshot(client, pool, "sv", "snap1")
    write(client, pool, "sv", 4096, b"after!" * 10)
    snapshots.rename_snapshot(client, pool, "sv", "snap1", "good")
    (snap,) = snapshots.list_snapshots(client, pool, "sv")
    assert snap["snapshot"] == "good" and snap["stats"]["size"] == 16 * MiB
    with client.ioctx(pool) as ioctx, rbd.Image(ioctx, "sv"):   # an open image = a watcher
        with pytest.raises(StorageError, match="in use"):
            snapshots.rollback_snapshot(client, pool, "sv", "good")
    snapshots.rollback_snapshot(client, pool, "sv", "good")
    assert read(client, pool, "sv", 4096, 60) == b"before" * 10
    volumes.clone_volume(client, pool, "sv", "child", snapshot="good")
    assert read(client, pool, "child", 4096, 60) == b"before" * 10
    with pytest.raises(StorageError, match="clones"):
        snapshots.remove_snapshot(client, pool, "sv", "good")
    volumes.remove_volume(client, pool, "child")
    snapshots.remove_snapshot(client, pool, "sv", "good")
    assert snapshots.list_snapshots(client, pool, "sv") == []
    volumes.remove_volume(client, pool, "sv")


# -- uploads ----------------------------------------------------------------------------------

def test_upload_raw_and_qcow2(client, pool, tmp_path):
    payload = os.urandom(MiB) + bytes(3 * MiB) + b"tail" * 1024
    raw = tmp_path / "disk.raw"
    raw.write_bytes(payload)
    volumes.add_volume(client, pool, "up", "8M")
    write(client, pool, "up", MiB, b"x" * 4096)        # stale data must be overwritten
    msg = upload.upload(client, pool, "up", io.BytesIO(payload), "raw", len(payload))
    assert msg.startswith("Wrote")
    assert read(client, pool, "up", 0, len(payload)) == payload

    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)],
                   check=True)
    with open(qcow, "rb") as fh:
        assert "Converted" in upload.upload(client, pool, "up", fh, "qcow2")
    assert read(client, pool, "up", 0, len(payload)) == payload

    with pytest.raises(StorageError, match="larger than"):
        upload.upload(client, pool, "up", io.BytesIO(bytes(9 * MiB)), "raw")
    with pytest.raises(StorageError, match="not a valid qcow2"):
        upload.upload(client, pool, "up", io.BytesIO(b"garbage" * 100), "qcow2")
    assert read(client, pool, "up", 0, len(payload)) == payload
    volumes.remove_volume(client, pool, "up")


# -- flags and OSD state ----------------------------------------------------------------------

def test_noout_flag_set_and_unset(client):
    assert osds.set_option(client, "noout", "set") == "Set OSD property noout."
    assert "noout" in client.mon("osd dump")["flags"]
    osds.set_option(client, "noout", "unset")
    assert "noout" not in client.mon("osd dump")["flags"]
    with pytest.raises(StorageError, match="Invalid option"):
        osds.set_option(client, "nonsense", "set")


def test_osd_out_keeps_io_going_and_in_heals(ceph, client, pool):
    volumes.add_volume(client, pool, "io", "16M")
    osd = str(ceph.cluster.osd_ids[0])
    assert osds.set_osd_state(client, osd, "out") == f"Set OSD {osd} offline."
    assert osds.osd_state(client, osd)["in"] == 0
    write(client, pool, "io", 0, b"during-out" * 100)
    assert read(client, pool, "io", 0, 1000) == b"during-out" * 100
    assert osds.set_osd_state(client, osd, "in") == f"Set OSD {osd} online."
    ceph.cluster.wait_healthy(120)
    volumes.remove_volume(client, pool, "io")
    with pytest.raises(NotFound):
        osds.osd_state(client, "99")
