"""RBD disks for the VM plugin and storage fencing, against a real Ceph."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from pvc_plugins.storage_ceph import plugin, pools, vmdisks, volumes
from tests.support import ceph as support

pytestmark = pytest.mark.integration

CHILD = """
import sys, time, rados, rbd
c = rados.Rados(conffile=sys.argv[1], rados_id="admin"); c.connect()
img = rbd.Image(c.open_ioctx(sys.argv[2]), sys.argv[3])
img.write(b"c" * 4096, 0)            # the first write takes the exclusive lock
print("locked", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="session")
def ceph():
    why = support.problem()
    if why:
        pytest.skip(why)
    env = support.acquire()
    yield env
    support.release()


@pytest.fixture(scope="module")
def daemon(ceph):
    with ceph.inside():
        d = SimpleNamespace(config=ceph.plugin_config("ceph1"), node="ceph1", store=None)
        rt = plugin.runtime(d)
        pools.add_pool(rt.client, "vmpool", 8, "copies=2,mincopies=1", None, "osd")
        yield d
        pools.remove_pool(rt.client, "vmpool")
        plugin.pvc_node_stop(d)


def disk(source: str) -> dict:
    return {"type": "network", "device": "disk", "source": source, "protocol": "rbd",
            "format": "raw", "target": "vda", "bus": "virtio"}


def prepare(daemon, source, purpose="start"):
    return plugin.pvc_vm_disk_prepare(daemon, {"uuid": "u", "name": "vm", "node": "ceph1"},
                                      disk(source), purpose)


def test_other_disks_are_not_ours(daemon):
    assert plugin.pvc_vm_disk_prepare(daemon, {}, {"type": "file", "source": "/x"},
                                      "start") is None


def test_missing_volume_refuses_the_start(ceph, daemon):
    with ceph.inside():
        answer = prepare(daemon, "vmpool/nothere")
    assert answer["ok"] is False and "does not exist" in answer["reason"]
    assert prepare(daemon, "justaname")["ok"] is False


def test_free_volume_and_libvirt_details(ceph, daemon):
    with ceph.inside():
        volumes.add_volume(plugin.runtime(daemon).client, "vmpool", "free", "16M")
        answer = prepare(daemon, "vmpool/free")
        assert answer["ok"] and answer["shared"] is True
        assert answer["libvirt"]["hosts"] == [{"name": ceph.cluster.site.address,
                                               "port": "6789"}]
        assert answer["libvirt"]["config"] == ceph.conf
        assert prepare(daemon, "vmpool/free", "migrate")["ok"]


def test_stale_lock_of_a_dead_writer_is_broken(ceph, daemon):
    """A writer dies holding the exclusive lock: the next start breaks it (blocklisting it)."""
    import rbd

    with ceph.inside():
        client = plugin.runtime(daemon).client
        volumes.add_volume(client, "vmpool", "locked", "16M")
        child = subprocess.Popen([sys.executable, "-c", CHILD, ceph.conf, "vmpool", "locked"],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "locked"
        finally:
            child.kill()
            child.wait()
        with client.ioctx("vmpool") as ioctx, rbd.Image(ioctx, "locked") as img:
            assert img.list_lockers()["lockers"]
        answer = prepare(daemon, "vmpool/locked")
        assert answer["ok"], answer
        with client.ioctx("vmpool") as ioctx, rbd.Image(ioctx, "locked") as img:
            assert not img.list_lockers()
            img.write(b"mine" * 1024, 0)          # we can write now


def test_fence_and_unfence_blocklist_a_nodes_addresses(ceph, daemon):
    with ceph.inside():
        client = plugin.runtime(daemon).client
        answer = plugin.pvc_storage_fence(daemon, "deadnode", ["10.253.0.77", "10.253.0.78"])
        assert answer == {"ok": True, "reason": "", "addresses": ["10.253.0.77", "10.253.0.78"]}
        assert {"10.253.0.77", "10.253.0.78"} <= set(vmdisks.blocklisted(client))
        assert plugin.pvc_storage_unfence(daemon, "deadnode", ["10.253.0.77",
                                                               "10.253.0.78"])["ok"]
        assert "10.253.0.77" not in vmdisks.blocklisted(client)
        assert vmdisks.storage_addresses(plugin.runtime(daemon).settings) == \
            [ceph.cluster.site.address]
