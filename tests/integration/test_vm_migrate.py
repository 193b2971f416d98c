"""Migration, the per-VM lock and node flush/ready on three real libvirt + pvcnoded nodes.

hv2 offers 300 MiB to VMs and hv3 100 MiB (``memory_total``), so a flush of three 128 MiB
VMs from hv1 can place two and must shut the third down with autostart. An invariant
sampler reads every libvirtd all along and fails a test if a VM ever runs on two nodes.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from pvc_kernel import tasks
from pvc_kernel.state import schema
from pvc_plugins.vm_kvm import keys, vms
from tests.integration import test_vm_support as support
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration
vmcluster = support.vmcluster

VM_NODES = 3
VM_NODE_SETTINGS = {"hv2": {"memory_total": 300}, "hv3": {"memory_total": 100}}


def start_on(c, name: str, node: str, **kw) -> None:
    vms.define(c.store, c.xml(name, **kw), node=node)
    vms.set_state(c.store, name, keys.START)
    c.wait_running(name, node)
    c.wait_booted(name)
    wait_for(lambda: len(c.ticks(name)) >= 2, 30, 0.2, f"{name} to tick")


def max_tick_gap(ticks: list[tuple[int, float]], after: float) -> float:
    """The largest guest-uptime step between consecutive ticks after uptime ``after``."""
    ups = [u for _, u in ticks if u >= after]
    return max((b - a for a, b in zip(ups, ups[1:], strict=False)), default=0.0)


def test_live_migrate_then_unmigrate(vmcluster):
    c = vmcluster
    start_on(c, "mig1", "hv1")
    before = c.ticks("mig1")[-1]
    with support.Sampler(c):
        t0 = time.monotonic()
        _, target, message = vms.migrate(c.store, "mig1", "migrate", node="hv2")
        assert target == "hv2" and message == "Migrating VM 'mig1' to node 'hv2'."
        rec = c.wait_running("mig1", "hv2", timeout=60)
        took = time.monotonic() - t0
        wait_for(lambda: c.record("mig1").state == keys.START, 20, 0.2, "state start")
        assert "mig1" not in c.domains("hv1") and "mig1" in c.domains("hv2")
        wait_for(lambda: c.ticks("mig1")[-1][0] >= before[0] + 3, 20, 0.2, "ticks on hv2")
        rec = c.record("mig1")
        assert rec.node == "hv2" and rec.last_node == "hv1"
        with pytest.raises(vms.VmError):          # already migrated, no force
            vms.migrate(c.store, "mig1", "migrate", node="hv3")
        vms.migrate(c.store, "mig1", "unmigrate")
        c.wait_running("mig1", "hv1", timeout=60)
        wait_for(lambda: c.record("mig1").state == keys.START, 20, 0.2, "state start")
    ticks = c.ticks("mig1")
    assert c.console_text("mig1").count("GUEST-BOOTED") == 1, "the guest rebooted"
    assert all(b[1] > a[1] for a, b in zip(ticks, ticks[1:], strict=False))
    print(f"live migration hv1->hv2 {took:.2f} s (request to observed), "
          f"max guest tick gap {max_tick_gap(ticks, before[1]):.2f} s")
    assert c.record("mig1").last_node == "" and "mig1" not in c.domains("hv2")
    vms.remove(c.store, "mig1")


def test_racing_requests_never_run_twice(vmcluster):
    """Migrate, then move elsewhere while the first migration runs, then start again."""
    c = vmcluster
    start_on(c, "race1", "hv1")
    with support.Sampler(c):
        vms.migrate(c.store, "race1", "migrate", node="hv2")
        time.sleep(0.3)
        while True:
            try:
                vms.migrate(c.store, "race1", "move", node="hv1", force=True)
                break
            except vms.VmError as exc:           # the first request is still being written
                assert exc.status == 409 or "already" in exc.message
                time.sleep(0.1)
        vms.set_state(c.store, "race1", keys.START)
        c.wait_running("race1", "hv1", timeout=90)
        wait_for(lambda: c.record("race1").state == keys.START, 30, 0.2, "state start")
        time.sleep(2)
    assert list(c.running_on().get("race1", [])) == ["hv1"]
    assert c.console_text("race1").count("GUEST-BOOTED") == 1
    vms.remove(c.store, "race1")


def test_unshared_disk_live_fails_forced_reverts_else_shutdown_migration(vmcluster):
    c = vmcluster
    disk = f"/var/tmp/pvct-vm-local-{os.getpid()}.raw"    # ext4: libvirt calls it unshared
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", disk, "16M"], check=True)
    try:
        start_on(c, "uns1", "hv1", disk=disk)
        with support.Sampler(c):
            vms.migrate(c.store, "uns1", "migrate", node="hv2", force_live=True)
            rec = wait_for(lambda: (r := c.record("uns1")).node == "hv1"
                           and r.observed.get("failed_reason") and r, 60, 0.2,
                           "the forced live migration to be reverted")
            assert "Live migration to hv2 failed" in rec.observed["failed_reason"]
            assert rec.state == keys.START and rec.running_on == "hv1"
            assert "uns1" in c.domains("hv1") and "uns1" not in c.domains("hv2")
            vms.migrate(c.store, "uns1", "migrate", node="hv2")
            c.wait_running("uns1", "hv2", timeout=90)
            c.wait_booted("uns1", count=2)     # shut down on hv1, booted again on hv2
        assert "GUEST-POWERBUTTON" in c.console_text("uns1")
        vms.remove(c.store, "uns1")
    finally:
        os.unlink(disk)


def _node_task(c, node: str, kind: str) -> dict:
    desired = "flushed" if kind == "node.flush" else "ready"
    txn = c.store.transaction()
    txn.set_data(schema.path("node.desired_domain_state", node=node), desired.encode())
    record = tasks.create_task(c.store, kind, node, {"state": desired}, txn=txn)
    c.store.commit(txn)
    return wait_for(lambda: (t := tasks.get_task(c.store, record["id"]))["state"]
                    in tasks.FINISHED and t, 300, 0.5, f"{kind} of {node}")


def test_flush_and_ready(vmcluster):
    c = vmcluster
    names = ["fl1", "fl2", "fl3"]
    for n in names:
        start_on(c, n, "hv1")
    first = {n: c.ticks(n)[-1] for n in names}
    with support.Sampler(c):
        t0 = time.monotonic()
        task = _node_task(c, "hv1", "node.flush")
        flushed_in = time.monotonic() - t0
        assert task["state"] == tasks.SUCCESS, task
        assert task["current"] == task["total"] == 3
        assert c.store.get("node.domain_state", node="hv1") == "flushed"
        recs = {n: c.record(n) for n in names}
        moved = [n for n in names if recs[n].running_on == "hv2"]
        stopped = [n for n in names if recs[n].running_on is None]
        assert len(moved) == 2 and len(stopped) == 1, {n: r.observed for n, r in recs.items()}
        assert recs[stopped[0]].meta["node_autostart"] is True
        assert recs[stopped[0]].state == keys.STOP and recs[stopped[0]].node == "hv1"
        assert all(recs[n].last_node == "hv1" for n in moved)
        assert c.domains("hv1") == {}
        for n in moved:
            wait_for(lambda n=n: c.ticks(n)[-1][0] > first[n][0] + 1, 20, 0.2, f"{n} ticking")
            assert c.console_text(n).count("GUEST-BOOTED") == 1
        t1 = time.monotonic()
        task = _node_task(c, "hv1", "node.unflush")
        ready_in = time.monotonic() - t1
        assert task["state"] == tasks.SUCCESS, task
        assert c.store.get("node.domain_state", node="hv1") == "ready"
        for n in names:
            rec = c.record(n)
            assert rec.running_on == "hv1" and rec.last_node == "" and rec.node == "hv1"
            assert rec.meta["node_autostart"] is False
        c.wait_booted(stopped[0], count=2)
        for n in moved:
            assert c.console_text(n).count("GUEST-BOOTED") == 1
    print(f"flush of 3 VMs (2 live, 1 shut down): {flushed_in:.1f} s; ready: {ready_in:.1f} s")
    for n in names:
        vms.remove(c.store, n)


def _start_task(c, node: str, kind: str) -> str:
    desired = "flushed" if kind == "node.flush" else "ready"
    txn = c.store.transaction()
    txn.set_data(schema.path("node.desired_domain_state", node=node), desired.encode())
    record = tasks.create_task(c.store, kind, node, {"state": desired}, txn=txn)
    c.store.commit(txn)
    return record["id"]


def test_ready_cancels_a_running_flush(vmcluster):
    c = vmcluster
    names = ["cx1", "cx2"]
    for n in names:
        start_on(c, n, "hv1")
    with support.Sampler(c):
        flush_id = _start_task(c, "hv1", "node.flush")
        wait_for(lambda: tasks.get_task(c.store, flush_id)["state"] == tasks.RUNNING, 20, 0.05,
                 "the flush to run")
        time.sleep(1.0)                      # a migration is under way
        ready_id = _start_task(c, "hv1", "node.unflush")
        final = wait_for(lambda: (t := tasks.get_task(c.store, ready_id))["state"]
                         in tasks.FINISHED and t, 300, 0.5, "the ready task")
        flush = tasks.get_task(c.store, flush_id)
        assert final["state"] == tasks.SUCCESS, final
        assert flush["state"] in tasks.FINISHED
        print("flush ended:", flush["state"], flush["status"])
        for n in names:
            c.wait_running(n, "hv1", timeout=120)
        assert c.store.get("node.domain_state", node="hv1") == "ready"
    for n in names:
        rec = c.record(n)
        assert rec.node == "hv1" and rec.last_node == "" and rec.state == keys.START
        assert c.console_text(n).count("GUEST-BOOTED") == 1
        vms.remove(c.store, n)
