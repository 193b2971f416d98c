"""RBD disks for the VM plugin and storage fencing, against a real Ceph."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from pvc_plugins.storage_ceph import pools, vmdisks, volumes
from pvc_plugins.storage_ceph.plugin import StorageCephPlugin
from tests.support.ceph import task_node

pytestmark = pytest.mark.integration

CHILD = """
import sys, time, rados, rbd
c = rados.Rados(conffile=sys.argv[1], rados_id="admin"); c.connect()
img = rbd.Image(c.open_ioctx(sys.argv[2]), sys.argv[3])
img.write(b"c" * 4096, 0)            # the first write takes the exclusive lock
print("locked", flush=True)
time.sleep(600)
"""

plugin = StorageCephPlugin()  # one instance: one daemon's plugin state

LOCKER = """
import sys, time, rados, rbd
c = rados.Rados(conffile=sys.argv[1], rados_id="admin"); c.connect()
io = c.open_ioctx(sys.argv[2])
one = rbd.Image(io, sys.argv[3])
one.write(b"c" * 4096, 0)            # the exclusive lock of a writer
two = rbd.Image(io, sys.argv[4])
two.lock_shared("cookie-a", "tag")   # two advisory locks
two.lock_shared("cookie-b", "tag")
print("locked", flush=True)
time.sleep(600)
"""


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
        assert answer["libvirt"]["username"] == "admin"
        secret = answer["libvirt"]["secret"]
        assert secret and secret == plugin.pvc_hypervisor_secrets(daemon)[0]["uuid"]
        assert prepare(daemon, "vmpool/free", "migrate")["ok"]


def test_hypervisor_secret_is_the_cephx_key_of_the_plugin_user(ceph, daemon):
    """cephx is on in the test cluster: libvirt gets client.admin's real key, under a UUID
    that every node derives alike from the fsid (or the configured ``libvirt_secret``)."""
    with ceph.inside():
        secrets = plugin.pvc_hypervisor_secrets(daemon)
        key = ceph.cluster.site.ceph("auth", "get-key", "client.admin")["key"]
        fsid = ceph.cluster.site.ceph("fsid")["fsid"]
    assert len(secrets) == 1
    assert secrets[0]["value"] == key and secrets[0]["usage_type"] == "ceph"
    other = SimpleNamespace(config=ceph.plugin_config("ceph1"), node="other", store=None)
    with ceph.inside():
        other_plugin = StorageCephPlugin()
        again = other_plugin.pvc_hypervisor_secrets(other)
        other_plugin.pvc_node_stop(other)
    assert again[0]["uuid"] == secrets[0]["uuid"]
    from pvc_plugins.storage_ceph import secrets as secretsmod
    from pvc_plugins.storage_ceph.config import CephConfig as Settings

    assert secretsmod.secret_uuid(Settings(node="x"), fsid) == secrets[0]["uuid"]
    assert secretsmod.secret_uuid(Settings(node="x", libvirt_secret="fixed"), fsid) == "fixed"


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


def test_fence_and_unfence_blocklist_a_nodes_addresses(ceph):
    with task_node(ceph, "ceph1") as daemon:
        client = plugin.runtime(daemon).client
        answer = plugin.pvc_storage_fence(daemon, "deadnode", ["10.253.0.77", "10.253.0.78"])
        assert answer == {"ok": True, "reason": "", "addresses": ["10.253.0.77", "10.253.0.78"],
                          "osds_down": []}    # deadnode holds no OSD
        assert {"10.253.0.77", "10.253.0.78"} <= set(vmdisks.blocklisted(client))
        assert plugin.pvc_storage_unfence(daemon, "deadnode", ["10.253.0.77",
                                                               "10.253.0.78"])["ok"]
        assert "10.253.0.77" not in vmdisks.blocklisted(client)
        assert vmdisks.storage_addresses(plugin.runtime(daemon).settings) == \
            [ceph.cluster.site.address]


def test_fence_marks_the_fenced_nodes_osds_down_at_once(ceph):
    """Without this, PGs of a powered-off node's OSDs wait out Ceph's heartbeat grace."""
    osd = ceph.cluster.osd_ids[-1]

    def down_at():
        dump = ceph.cluster.site.ceph("osd", "dump")
        return next(o["down_at"] for o in dump["osds"] if o["osd"] == osd)

    with task_node(ceph, "ceph1") as daemon:
        daemon.store.set("ceph.osd", {"id": str(osd), "node": "deadnode"}, osd=str(osd))
        before = down_at()
        answer = plugin.pvc_storage_fence(daemon, "deadnode", ["10.253.0.79"])
        assert answer["ok"] and answer["osds_down"] == [str(osd)]
        assert down_at() > before          # the monitor marked it down in a new epoch
        assert plugin.pvc_storage_unfence(daemon, "deadnode", ["10.253.0.79"])["ok"]
    ceph.cluster.wait_healthy(120)          # the OSD runs: it marks itself up again


def dead_holder(ceph, pool: str, *images: str) -> None:
    """Lock ``images`` from a client that then dies (kill -9): its locks stay behind."""
    child = subprocess.Popen([sys.executable, "-c", LOCKER, ceph.conf, pool, *images],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
    finally:
        child.kill()
        child.wait()


def lockers(client, pool: str, image: str) -> list:
    import rbd

    with client.ioctx(pool) as ioctx, rbd.Image(ioctx, image) as img:
        return list((img.list_lockers() or {}).get("lockers", []))


def test_unlock_hook_answers_only_for_rbd(ceph, daemon):
    vm = {"uuid": "u", "name": "vm", "node": "ceph1"}
    assert plugin.pvc_vm_disk_unlock(daemon, vm, {"type": "file", "source": "/x"}) is None
    with ceph.inside():
        answer = plugin.pvc_vm_disk_unlock(daemon, vm, disk("vmpool/nothere"))
    assert answer["ok"] is False and "does not exist" in answer["reason"]
    assert answer["removed"] == 0


def test_flush_locks_task_breaks_every_lock_of_the_vms_disks(ceph, daemon):
    """vm.flush_locks on a VM with two RBD disks locked by a dead client: refused while the
    VM should run, then every lock is broken and the volumes are writable again."""
    import rbd

    from pvc_kernel import tasks
    from pvc_kernel.plugins import PluginHost
    from pvc_kernel.state import Store, schema
    from pvc_plugins.vm_kvm import flush_locks as locks
    from pvc_plugins.vm_kvm import keys

    for key in keys.KEYS:
        schema.register(key)
    with ceph.inside():
        client = plugin.runtime(daemon).client
        volumes.add_volume(client, "vmpool", "fl0", "16M")
        volumes.add_volume(client, "vmpool", "fl1", "16M")
        dead_holder(ceph, "vmpool", "fl0", "fl1")
        assert len(lockers(client, "vmpool", "fl0")) == 1
        assert len(lockers(client, "vmpool", "fl1")) == 2

        store = Store(ceph.zk_hosts(), timeout=5)
        store.start()
        host = PluginHost()
        node_plugin = StorageCephPlugin()
        host.register(node_plugin, "storage_ceph")
        node = SimpleNamespace(config=daemon.config, node="ceph1", store=store, plugins=host)
        try:
            uuid = "3b2f6c1e-5d4a-4c8b-9e7f-0a1b2c3d4e5f"
            xml = (f"<domain type='kvm'><name>flvm</name><uuid>{uuid}</uuid>"
                   "<memory unit='MiB'>128</memory><vcpu>1</vcpu><devices>"
                   + "".join(f"<disk type='network' device='disk'><source protocol='rbd' "
                             f"name='vmpool/fl{i}'/><target dev='vd{'ab'[i]}' bus='virtio'/>"
                             "</disk>" for i in (0, 1)) + "</devices></domain>")
            for name, value in (("vm", "flvm"), ("vm.xml", xml), ("vm.state", "start"),
                                ("vm.node", "ceph1")):
                store.set(name, value, uuid=uuid)

            def run(force: bool = False) -> str:
                record = tasks.create_task(store, locks.TASK, "ceph1",
                                           {"uuid": uuid, "force": force})
                return locks.flush(tasks.TaskContext(store, record, node))

            with pytest.raises(RuntimeError, match="in state 'start'"):
                run()
            assert len(lockers(client, "vmpool", "fl1")) == 2      # untouched
            store.set("vm.state", "stop", uuid=uuid)
            assert run() == "Flushed locks on VM flvm: 3 lock(s) removed."
            assert lockers(client, "vmpool", "fl0") == lockers(client, "vmpool", "fl1") == []
            assert run(force=True) == "Flushed locks on VM flvm: 0 lock(s) removed."
            with client.ioctx("vmpool") as ioctx, rbd.Image(ioctx, "fl0") as img:
                img.write(b"mine" * 1024, 0)
        finally:
            node_plugin.pvc_node_stop(node)
            store.stop()
