"""Migration, the per-VM lock and node flush/ready on three real libvirt + pvcnoded nodes.

hv2 offers 300 MiB to VMs and hv3 100 MiB (``memory_total``), so a flush of three 128 MiB
VMs from hv1 can place two and must shut the third down with autostart; hv1 flushes and
readies one VM at a time (``flush_concurrency`` 1). An invariant
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
VM_NODE_SETTINGS = {"hv1": {"flush_concurrency": 1}, "hv2": {"memory_total": 300},
                    "hv3": {"memory_total": 100}}


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


def _migration_speed(c, node: str, name: str, mib_s: int) -> None:
    """Cap the VM's live-migration bandwidth on ``node`` (also of a migration under way)."""
    import libvirt

    conn = libvirt.open(c.nodes.uri(node))
    try:
        conn.lookupByName(name).migrateSetMaxSpeed(mib_s, 0)
    finally:
        conn.close()


def _domain_id(c, node: str, name: str) -> int:
    """libvirt's id of the running domain (a new one after every start or migration)."""
    import libvirt

    conn = libvirt.open(c.nodes.uri(node))
    try:
        return conn.lookupByName(name).ID()
    finally:
        conn.close()


def _migrating_from(c, name: str, node: str, timeout: float = 60):
    return wait_for(lambda: (r := c.record(name)).observed.get("state") == "migrating"
                    and r.observed.get("node") == node and r, timeout, 0.05,
                    f"{name} to be migrating away from {node}")


def _finished(c, task_id: str, timeout: float = 300) -> dict:
    return wait_for(lambda: (t := tasks.get_task(c.store, task_id))["state"]
                    in tasks.FINISHED and t, timeout, 0.2, f"task {task_id}")


def _assert_cancelled(task: dict) -> None:
    assert task["state"] == tasks.FAILURE, task
    assert task["status"].startswith("Cancelled:"), task


SLOW, FAST = 1, 10_000      # MiB/s: a 128 MiB guest takes >10 s at 1 MiB/s


def test_ready_cancels_a_running_flush(vmcluster):
    """hv1 flushes one VM at a time; cx1's migration is held at 1 MiB/s, so ready comes
    while it is certainly under way: the flush ends cancelled, cx2 is never moved, cx1's
    move finishes and ready brings it back."""
    c = vmcluster
    names = ["cx1", "cx2"]
    for n in names:
        start_on(c, n, "hv1")
    cx2_id = _domain_id(c, "hv1", "cx2")
    with support.Sampler(c):
        _migration_speed(c, "hv1", "cx1", SLOW)
        flush_id = _start_task(c, "hv1", "node.flush")
        _migrating_from(c, "cx1", "hv1")
        assert tasks.get_task(c.store, flush_id)["state"] == tasks.RUNNING
        ready_id = _start_task(c, "hv1", "node.unflush")
        _assert_cancelled(_finished(c, flush_id, timeout=30))
        assert c.record("cx1").observed.get("state") == "migrating", "cx1's move ended early"
        cx2 = c.record("cx2")
        assert (cx2.node, cx2.state, cx2.last_node) == ("hv1", keys.START, "")
        _migration_speed(c, "hv1", "cx1", FAST)
        final = _finished(c, ready_id)
        assert final["state"] == tasks.SUCCESS, final
        assert c.store.get("node.domain_state", node="hv1") == "ready"
        for n in names:
            rec = c.record(n)
            assert rec.running_on == "hv1" and rec.observed["state"] == "running", rec.observed
        assert c.domains("hv2") == {} and c.domains("hv3") == {}
        assert _domain_id(c, "hv1", "cx2") == cx2_id, "cx2 was moved after the cancel"
    for n in names:
        rec = c.record(n)
        assert rec.node == "hv1" and rec.last_node == "" and rec.state == keys.START
        assert c.console_text(n).count("GUEST-BOOTED") == 1
        vms.remove(c.store, n)


def test_flush_cancels_a_running_ready(vmcluster):
    """The other way round: ready (one VM at a time) is bringing cy1 back slowly when a
    flush comes; the ready ends cancelled, cy2 stays away, and the flush only ends once
    cy1's return has landed on hv1 and it is on hv2 again."""
    c = vmcluster
    names = ["cy1", "cy2"]
    for n in names:
        start_on(c, n, "hv1")
    with support.Sampler(c):
        assert _node_task(c, "hv1", "node.flush")["state"] == tasks.SUCCESS
        assert all(c.record(n).running_on == "hv2" for n in names)
        cy2_id = _domain_id(c, "hv2", "cy2")
        _migration_speed(c, "hv2", "cy1", SLOW)
        ready_id = _start_task(c, "hv1", "node.unflush")
        _migrating_from(c, "cy1", "hv2")
        assert tasks.get_task(c.store, ready_id)["state"] == tasks.RUNNING
        flush_id = _start_task(c, "hv1", "node.flush")
        _assert_cancelled(_finished(c, ready_id, timeout=30))
        time.sleep(1.0)
        assert c.record("cy1").observed.get("state") == "migrating", "cy1's move ended early"
        assert tasks.get_task(c.store, flush_id)["state"] == tasks.RUNNING, \
            "the flush ended while cy1 was still on its way to hv1"
        cy2 = c.record("cy2")
        assert (cy2.node, cy2.state, cy2.last_node) == ("hv2", keys.START, "hv1")
        _migration_speed(c, "hv2", "cy1", FAST)
        final = _finished(c, flush_id)
        assert final["state"] == tasks.SUCCESS, final
        assert c.store.get("node.domain_state", node="hv1") == "flushed"
        assert c.domains("hv1") == {}, "a VM is on hv1 after its flush"
        for n in names:
            rec = c.record(n)
            assert rec.observed["state"] == "running" and rec.running_on == "hv2", rec.observed
            assert rec.node == "hv2" and rec.last_node == "hv1"
        assert _domain_id(c, "hv2", "cy2") == cy2_id, "cy2 was moved after the cancel"
        assert _node_task(c, "hv1", "node.unflush")["state"] == tasks.SUCCESS
        for n in names:
            assert c.record(n).running_on == "hv1"
    for n in names:
        assert c.console_text(n).count("GUEST-BOOTED") == 1
        vms.remove(c.store, n)
