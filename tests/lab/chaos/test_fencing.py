"""Nodes die, get cut off, lose their BMC, the primary and the ZooKeeper leader die
mid-recovery — and every VM runs again exactly once, never on two nodes.

The lab is the package's (``conftest.py``); the victim is hv4. Throughout each case
``Invariant`` samples every node's libvirtd (or the QEMU processes of a node whose libvirtd
is gone) and fails on any VM seen on two nodes at one instant.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from pvc_lab.chaos import (
    Invariant,
    as_json,
    check_running,
    fence_record,
    ok,
    phases,
    running_now,
    start_guests,
    vm_lock_held,
)
from pvc_lab.pvcnoded import KEEPALIVE_INTERVAL
from tests.lab.chaos.conftest import PATTERN, POOL, VICTIM, read_back, wait_fence, write_pattern

pytestmark = pytest.mark.lab


def show(record: dict, killed_at: float) -> None:
    print(f"\n{record['node']}: {record['outcome']} {phases(record, killed_at)}")


def test_hard_kill_with_four_rbd_vms(cluster, tmp_path):
    lab = cluster
    names = [f"rbdvm{i}" for i in range(4)]
    for name in names:
        ok(lab, "storage", "volume", "add", POOL, name, "16M")
        write_pattern(lab, name)
    consoles = start_guests(lab, VICTIM, names, str(tmp_path), rbd_pool=POOL)
    lab.wait_for(lambda: all(read_back(lab, n)[0].startswith(b"tick ") for n in names), 60,
                 "every guest to write to its RBD disk")
    with Invariant(lab):
        killed_at = time.time()
        lab.kill(VICTIM)                     # pulling the plug: the BMC did not cause it
        record = wait_fence(lab, VICTIM, killed_at - 60)
        where = check_running(lab, consoles, timeout=120)
    show(record, killed_at)
    assert record["outcome"] == "fenced,recovered", record
    assert (record["storage"] or {}).get("ok") is True
    assert VICTIM not in where.values() and len(record["recovery"]["recovered"]) == 4
    before = {n: read_back(lab, n)[0] for n in names}
    lab.wait_for(lambda: all(read_back(lab, n)[0] != before[n] for n in names), 60,
                 "the recovered guests to write to their disks again")
    for name in names:
        assert read_back(lab, name)[1] == PATTERN, f"{name}: data lost"
    node = as_json(lab, "node", "info", VICTIM)
    assert (node["daemon_state"], node["domain_state"]) == ("fenced", "flushed"), node
    fault = [f for f in as_json(lab, "cluster", "status")["detail"]["faults"]
             if f["id"] == f"fence-{VICTIM}-{record['id']}"]
    assert fault and "powered off" in fault[0]["message"]

    # power comes back: the node rejoins flushed, its storage is given back, no old VM starts
    lab.restore(timeout=120)
    lab.wait_for(lambda: fence_record(lab, VICTIM).get("unfenced"), 60, "storage given back")
    assert running_now(lab)[VICTIM] == set()
    assert lab.store().get("node.domain_state", node=VICTIM) == "flushed"


def test_partition_with_bmc_reachable(cluster, tmp_path):
    lab = cluster
    consoles = start_guests(lab, VICTIM, ["partvm"], str(tmp_path))
    with Invariant(lab):
        cut_at = time.time()
        lab.partition(VICTIM)                # its processes run on, cut off from everyone
        record = wait_fence(lab, VICTIM, cut_at - 1)
        check_running(lab, consoles, timeout=90)
        assert record["outcome"] == "fenced,recovered"
        show(record, cut_at)
        log = open(os.path.join(lab.spec.node_dir(VICTIM), "pvcnoded.log")).read()
        assert "self-fence" in log           # it stopped its VM before the fence
        lab.heal(VICTIM)
        lab.restore(timeout=120)             # powered on again by the administrator
        lab.wait_for(lambda: lab.node_state(VICTIM)["daemon_state"] == "run", 60, "rejoin")
        time.sleep(3 * KEEPALIVE_INTERVAL)   # time to do harm, if it would
        assert "partvm" not in running_now(lab)[VICTIM]
    assert lab.store().get("node.domain_state", node=VICTIM) == "flushed"


def test_partition_with_bmc_unreachable_keeps_vms_and_self_fences(cluster, tmp_path):
    lab = cluster
    consoles = start_guests(lab, VICTIM, ["lonevm"], str(tmp_path))
    with Invariant(lab) as inv:
        lab.service("bmc").cut(lab, VICTIM)
        cut_at = time.time()
        lab.partition(VICTIM)
        record = wait_fence(lab, VICTIM, cut_at - 1)
        assert record["outcome"] == "fence-failed,not-recovered", record
        assert "lonevm" not in running_now(lab)[VICTIM]          # it fenced itself
        assert all("lonevm" not in v for n, v in running_now(lab).items() if n != VICTIM)
        status = as_json(lab, "cluster", "status")
        fault = [f for f in status["detail"]["faults"]
                 if f["id"] == f"fence-{VICTIM}-{record['id']}"]
        assert fault and fault[0]["health_delta"] == 50 and "NOT recovered" in \
            fault[0]["message"]
        assert lab.store().get("node.daemon_state", node=VICTIM) == "dead"
        assert as_json(lab, "vm", "info", "lonevm")["node"] == VICTIM     # not moved
        # healed: it rejoins, gets its storage back and starts its VM again, once
        lab.restore(timeout=120)
        where = check_running(lab, consoles, timeout=120)
        assert where == {"lonevm": VICTIM} and inv.samples > 0


def history_at(record: dict, text: str) -> list[float]:
    """Timestamps of the record's history entries whose text starts with ``text``."""
    return [t for t, _step, what in record.get("history", []) if what.startswith(text)]


def test_primary_killed_during_recovery(cluster, tmp_path):
    """The fencing coordinator dies in step ``recover``; the next primary resumes the fence.
    The test holds the first VM's lock until the primary is dead, so the recovery cannot
    have finished before the kill (it places VMs one at a time, each under its lock)."""
    lab = cluster
    names = [f"pkvm{i}" for i in range(4)]
    consoles = start_guests(lab, VICTIM, names, str(tmp_path))
    with Invariant(lab):
        with vm_lock_held(lab, names[0]):
            killed_at = time.time()
            lab.kill(VICTIM)
            primary = lab.primary()
            assert primary, "no primary before the kill"
            at_recover = wait_fence(lab, VICTIM, killed_at - 60, step="recover")
            lab.kill(primary)                # the fencing coordinator dies mid-recovery
            primary_killed_at = time.time()
        record = wait_fence(lab, VICTIM, killed_at - 60)
        other = wait_fence(lab, primary, killed_at)
        where = check_running(lab, consoles, timeout=120)
    show(record, killed_at)
    resumed_by = record.get("resumed_by")
    print(f"resumed by {resumed_by}; {primary}: {other['outcome']}")
    assert at_recover["by"] == primary and record["by"] == primary, record
    assert resumed_by in lab.coordinators and resumed_by != primary, record
    resumed = history_at(record, f"resumed by {resumed_by}")
    assert resumed and resumed[0] >= primary_killed_at, record["history"]
    assert history_at(record, "outcome")[0] > resumed[0]     # finished by the new primary
    assert record["outcome"] == "fenced,recovered" and other["outcome"] == "fenced,recovered"
    # each VM was recovered by this fence, or (placed on the primary that then died) by
    # the fence of that primary; check_running saw all of them run exactly once
    def recovered(rec: dict) -> set[str]:
        return {n for n in names for line in rec["recovery"]["recovered"]
                if line.startswith(f"VM {n}:")}
    handed = {n for n in names for line in record["recovery"]["failed"]
              if line.startswith(f"VM {n}:") and f"target {primary} died too" in line}
    assert recovered(record) | handed == set(names), record["recovery"]
    assert handed <= recovered(other), other.get("recovery")
    assert not {VICTIM, primary} & set(where.values())


def test_zookeeper_leader_killed_during_recovery(cluster, tmp_path):
    """The ZooKeeper leader dies while the recovery runs (held at the first VM's lock until
    then); the recovery completes after the kill."""
    lab = cluster
    names = [f"zkvm{i}" for i in range(4)]
    consoles = start_guests(lab, VICTIM, names, str(tmp_path))
    with Invariant(lab):
        with vm_lock_held(lab, names[0]):
            killed_at = time.time()
            lab.kill(VICTIM)
            wait_fence(lab, VICTIM, killed_at - 60, step="recover")
            leader = lab.zk_leader()
            assert leader, "no ZooKeeper leader"
            lab.zk_kill(leader)
            leader_killed_at = time.time()
        record = wait_fence(lab, VICTIM, killed_at - 60)
        where = check_running(lab, consoles, timeout=120)
    show(record, killed_at)
    assert record["outcome"] == "fenced,recovered"
    recover_at = [t for t, step, _text in record["history"] if step == "recover"]
    done_at = [t for t, step, _text in record["history"] if step == "done"]
    assert recover_at and recover_at[0] < leader_killed_at, record["history"]
    assert done_at and done_at[0] > leader_killed_at, record["history"]
    assert len(record["recovery"]["recovered"]) == len(names), record["recovery"]
    assert VICTIM not in where.values()


@pytest.mark.skipif(shutil.which("ipmitool") is None, reason="ipmitool is missing")
def test_node_info_shows_the_bmc_without_its_password(cluster):
    from pvc_lab.bmc import password

    lab = cluster
    text = ok(lab, "node", "info", VICTIM)
    info = as_json(lab, "node", "info", VICTIM)
    assert info["bmc"]["reachable"] is True and info["bmc"]["power"] == "on"
    assert "BMC" in text and password(lab.spec) not in text + str(info)
