"""Recovery of a fenced node's VMs (vm_kvm's ``pvc_node_recover``) on a real ZooKeeper, with
stand-in node agents that start a VM only the way vm_kvm does: when it is assigned to them
and ``observed`` says it runs nowhere else. Also: removing a VM whose node may still run it.
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from typing import Any

import pytest

from pvc_kernel import config as kconfig
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import schema
from pvc_lab.guest import GuestImage, domain_xml
from pvc_plugins.fencing_ipmi import keys as fencing_keys
from pvc_plugins.storage_ceph.plugin import StorageCephPlugin as ceph_plugin
from pvc_plugins.vm_kvm import keys, records, vms
from pvc_plugins.vm_kvm.recovery import Recovery
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration
for _key in [*keys.KEYS, *fencing_keys.KEYS]:
    schema.register(_key)
IMAGE = GuestImage("/nonexistent/vmlinux", "/nonexistent/initrd.gz", "test")
DEAD = "hv2"
POWERED_OFF = {"powered_off": True, "storage_cut": []}
CEPH_CUT_ONLY = {"powered_off": False, "storage_cut": ["storage_ceph"]}
"""How the fence went: a verified power off, or a failed one with only Ceph's cut."""


class Daemon:
    """The primary's daemon as recovery sees it; its plugins: the real storage_ceph hooks
    (only ``pvc_storage_fence_covers`` is called)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.node = "hv1"
        self.config = kconfig.parse({"node": "hv1", "cluster": "t",
                                     "zookeeper": {"hosts": ["x:1"]},
                                     "plugins": {"vm_kvm": {"recover_concurrency": 2,
                                                            "migrate_timeout": 5}}})
        self.plugins = PluginHost()
        self.plugins.register(ceph_plugin, "storage_ceph")


class Agents:
    """Every live node's vm_kvm, reduced to the start rule; records any double start."""

    def __init__(self, store: Any, nodes: list[str]) -> None:
        self.store = store
        self.nodes = nodes
        self.violations: list[str] = []
        self.started: dict[str, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for rec in records.all_records(self.store):
                obs = rec.observed
                if rec.node not in self.nodes or rec.state not in keys.RUN_STATES:
                    continue
                if obs.get("node") == rec.node and obs.get("state") == keys.RUNNING:
                    continue
                if obs.get("state") in keys.LIVE and obs.get("node") != rec.node:
                    continue            # vm_kvm waits for the other node to release it
                if rec.uuid in self.started and self.started[rec.uuid] != rec.node \
                        and obs.get("node") == self.started[rec.uuid] \
                        and obs.get("state") in keys.LIVE:
                    self.violations.append(rec.name)
                self.started[rec.uuid] = rec.node
                records.write_observed(self.store, rec.uuid, rec.node, keys.RUNNING,
                                       libvirt_state="running")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def add_node(store: Any, name: str, memory: int, state: str = "run") -> None:
    store.set("node.daemon_state", state, node=name)
    store.set("node.domain_state", "ready", node=name)
    store.set("node.static", {"cpu_count": 4, "memory_total": memory}, node=name)
    store.set("vm_kvm.node", {"memory_total": memory, "virt_type": "qemu"}, node=name)


RBD_DISK = ("<disk type='network' device='disk'><driver name='qemu' type='raw'/><source "
            "protocol='rbd' name='vms/{name}'/><target dev='vd{dev}' bus='virtio'/></disk>")
CDROM = ("<disk type='file' device='cdrom'><source file='/srv/iso/boot.iso'/>"
         "<target dev='sdz' bus='sata'/><readonly/></disk>")


def add_vm(store: Any, name: str, node: str, memory: int = 256, running_on: str | None = None,
           limit: list[str] | None = None, state: str = keys.START, disk: str | None = None,
           extra: str = "") -> str:
    """Define a VM (no disk, a file ``disk``, and ``extra`` disk XML) assigned to ``node``."""
    u = str(uuidlib.uuid4())
    xml = domain_xml(name, IMAGE, "/dev/null", memory_mib=memory, uuid=u, disk=disk)
    if extra:
        xml = xml.replace("<serial ", extra + "\n    <serial ", 1)
    vms.define(store, xml, node=node, limit=limit, state=state)
    if running_on:
        records.write_observed(store, u, running_on, keys.RUNNING, libvirt_state="running")
    return u


@pytest.fixture
def cluster(store):
    add_node(store, "hv1", 1024)
    add_node(store, DEAD, 4096, state="fenced")
    add_node(store, "hv3", 512)
    agents = Agents(store, ["hv1", "hv3"])
    yield store, agents
    agents.close()


def test_fenced_nodes_vms_restart_elsewhere_within_memory(cluster):
    store, agents = cluster
    mine = [add_vm(store, f"vm{i}", DEAD, running_on=DEAD) for i in range(5)]
    pinned = add_vm(store, "pinned", DEAD, running_on=DEAD, limit=[DEAD])
    stopped = add_vm(store, "off", DEAD, state=keys.STOP)
    inbound = add_vm(store, "inbound", DEAD)       # was live-migrating hv1 -> hv2
    records.write_observed(store, inbound, "hv1", keys.MIGRATING, target=DEAD)
    steps: list[tuple[int, int, str]] = []

    result = Recovery(Daemon(store), DEAD, lambda *a: steps.append(a), POWERED_OFF).run()

    assert agents.violations == []
    recs = {r.name: r for r in records.all_records(store)}
    placed = [recs[f"vm{i}"] for i in range(5)]
    where = [r.node for r in placed]
    # hv1 holds 4 × 256 MiB, hv3 2 × 256 MiB: 5 VMs fit, none on the dead node
    assert sorted(where).count("hv1") <= 4 and where.count("hv3") <= 2 and DEAD not in where
    assert all(r.running_on == r.node and r.last_node == DEAD for r in placed)
    assert all(r.state == keys.START and r.request["by"] == "fence" for r in placed)
    assert recs["pinned"].state == keys.STOP and recs["pinned"].meta["node_autostart"]
    assert recs["pinned"].node == DEAD and recs["pinned"].running_on is None
    assert recs["off"].node == DEAD and recs["off"].state == keys.STOP
    assert recs["inbound"].node == "hv1" and recs["inbound"].running_on == "hv1"
    assert len(result["recovered"]) == 6 and len(result["stopped"]) == 1
    assert result["failed"] == []
    assert steps[0][2].startswith("recovering") and len(steps) == 1 + 8
    assert {u for u in mine} <= set(agents.started)
    assert pinned not in agents.started and stopped not in agents.started


def test_recovery_is_resumable(cluster):
    """A second run (the next primary) changes nothing and reports the same VMs."""
    store, agents = cluster
    for i in range(3):
        add_vm(store, f"vm{i}", DEAD, running_on=DEAD)
    first = Recovery(Daemon(store), DEAD, lambda *a: None, POWERED_OFF).run()
    before = {r.name: (r.node, r.state_version) for r in records.all_records(store)}
    again = Recovery(Daemon(store), DEAD, lambda *a: None, POWERED_OFF).run()
    after = {r.name: (r.node, r.state_version) for r in records.all_records(store)}
    assert before == after
    assert len(first["recovered"]) == len(again["recovered"]) == 3
    assert agents.violations == []


def test_a_vm_is_not_started_while_its_lock_is_held(cluster):
    """Recovery takes the VM's lock: while a node holds it, nothing moves."""
    store, agents = cluster
    u = add_vm(store, "locked", DEAD, running_on=DEAD)
    lock = store.lock(keys.lock_name(u), DEAD)
    assert lock.acquire(timeout=5)
    done = threading.Event()
    out: dict[str, Any] = {}

    def run() -> None:
        out.update(Recovery(Daemon(store), DEAD, lambda *a: None, POWERED_OFF).run())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    time.sleep(1.0)
    assert records.read(store, u).node == DEAD and not done.is_set()
    lock.release()
    wait_for(done.is_set, timeout=30, what="recovery after the lock was released")
    assert records.read(store, u).running_on in ("hv1", "hv3")


def test_after_a_failed_power_off_only_vms_on_cut_storage_are_recovered(cluster):
    """Power off not confirmed, only the Ceph cut: a VM whose every disk is RBD (a CD-ROM
    aside) restarts elsewhere; one with a file disk, or with no disk, may still run on the
    node: left alone there (observed untouched), stopped with node_autostart, and why."""
    store, agents = cluster
    rbd = add_vm(store, "rbd", DEAD, running_on=DEAD,
                 extra=RBD_DISK.format(name="rbd", dev="a") + CDROM)
    mixed = add_vm(store, "mixed", DEAD, running_on=DEAD, disk="/srv/shared/mixed.img",
                   extra=RBD_DISK.format(name="mixed", dev="b"))
    diskless = add_vm(store, "diskless", DEAD, running_on=DEAD)

    result = Recovery(Daemon(store), DEAD, lambda *a: None, CEPH_CUT_ONLY).run()

    assert agents.violations == []
    recs = {r.name: r for r in records.all_records(store)}
    assert recs["rbd"].node != DEAD and recs["rbd"].running_on == recs["rbd"].node
    for name, u in (("mixed", mixed), ("diskless", diskless)):
        r = recs[name]
        assert (r.node, r.state, r.meta["node_autostart"]) == (DEAD, keys.STOP, True), name
        assert r.observed["node"] == DEAD and r.observed["state"] == keys.RUNNING, name
        assert u not in agents.started
    assert rbd in agents.started and len(result["recovered"]) == 1
    why = sorted(result["stopped"])
    assert len(why) == 2 and "VM diskless: not recovered, it has no disk" in why[0]
    assert "VM mixed: not recovered, disk vda (file /srv/shared/mixed.img)" in why[1]
    assert all(f"{DEAD} was not confirmed off" in w for w in why)


def test_a_cut_by_no_plugin_covers_nothing(cluster):
    """An RBD disk counts only if the plugin that covers it did cut (it is in storage_cut)."""
    store, agents = cluster
    add_vm(store, "rbd2", DEAD, running_on=DEAD, extra=RBD_DISK.format(name="rbd2", dev="a"))
    result = Recovery(Daemon(store), DEAD, lambda *a: None,
                      {"powered_off": False, "storage_cut": ["other"]}).run()
    assert result["recovered"] == [] and len(result["stopped"]) == 1
    assert records.read(store, records.find(store, "rbd2")).node == DEAD


def test_after_a_verified_power_off_every_vm_is_recovered(cluster):
    store, agents = cluster
    add_vm(store, "filevm", DEAD, running_on=DEAD, disk="/srv/shared/f.img")
    add_vm(store, "nodisk", DEAD, running_on=DEAD)
    result = Recovery(Daemon(store), DEAD, lambda *a: None, POWERED_OFF).run()
    assert len(result["recovered"]) == 2 and result["stopped"] == []
    assert all(r.running_on not in (None, DEAD) for r in records.all_records(store))


def test_recovery_places_nothing_more_once_the_caller_lost_the_fence(cluster):
    store, agents = cluster
    for i in range(6):
        add_vm(store, f"c{i}", DEAD, running_on=DEAD, memory=64)
    result = Recovery(Daemon(store), DEAD, lambda *a: True, POWERED_OFF).run()
    moved = [r for r in records.all_records(store) if r.node != DEAD]
    # recover_concurrency 2: what was under way finishes, nothing else is placed
    assert len(result["recovered"]) == len(moved) <= 2


# -- removing a VM whose node may still run it -------------------------------------------------

def test_remove_refuses_a_vm_its_dead_node_may_still_run(cluster):
    store, _agents = cluster
    add_node(store, "hv4", 1024, state="dead")        # declared dead, not confirmed off
    u = add_vm(store, "zombie", "hv4", running_on="hv4")
    with pytest.raises(vms.VmError) as err:
        vms.remove(store, "zombie", stop_timeout=5)
    assert err.value.status == 409
    assert "may still run on node 'hv4' (daemon state dead)" in err.value.message
    assert "was not removed" in err.value.message
    rec = records.read(store, u)
    assert rec is not None and rec.state == keys.START      # untouched: nothing was written


def test_remove_refuses_when_the_stop_is_not_confirmed(cluster):
    """A hung daemon (state run, nobody stops the VM): asked to stop, then refused."""
    store, _agents = cluster
    add_node(store, "hv5", 1024)
    u = add_vm(store, "hung", "hv5", running_on="hv5")
    started = time.monotonic()
    with pytest.raises(vms.VmError) as err:
        vms.remove(store, "hung", stop_timeout=1)
    assert time.monotonic() - started >= 1
    assert err.value.status == 409 and "did not stop within 1 s" in err.value.message
    rec = records.read(store, u)
    assert rec is not None and rec.state == keys.STOP and rec.running_on == "hv5"


def test_remove_goes_ahead_once_the_node_is_fenced_or_the_vm_stopped(cluster):
    store, _agents = cluster
    add_vm(store, "onfenced", DEAD, running_on=DEAD)      # DEAD is `fenced`
    assert vms.remove(store, "onfenced", stop_timeout=5) == \
        "Removed VM 'onfenced' from the cluster."
    assert records.find(store, "onfenced") is None
    add_node(store, "hv6", 1024)
    u = add_vm(store, "stops", "hv6", running_on="hv6")

    def node_stops_it() -> None:
        wait_for(lambda: records.read(store, u).state == keys.STOP, 5, what="the stop")
        records.write_observed(store, u, "hv6", keys.STOPPED, libvirt_state="shutoff")

    threading.Thread(target=node_stops_it, daemon=True).start()
    vms.remove(store, "stops", stop_timeout=10)
    assert records.find(store, "stops") is None


def test_remove_refusal_reaches_the_api_as_a_409(cluster):
    from pvc_api.errors import ApiError
    from pvc_plugins.vm_kvm import api as vm_api

    store, _agents = cluster
    add_node(store, "hv7", 1024, state="stop")
    add_vm(store, "orphan", "hv7", running_on="hv7")

    class Call:
        api = type("Api", (), {"store": store})()
        args = {"vm": "orphan"}

    with pytest.raises(ApiError) as err:
        vm_api.remove_vm(Call())
    assert err.value.status == 409 and "may still run on node 'hv7'" in str(err.value.message)
