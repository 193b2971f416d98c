"""A node's bad day short of death: pvcnoded and libvirtd stall or die, guests crash, a
migration target dies mid-flush, a self-fence meets a hung libvirtd. Each case checks what
the guests saw (same QEMU process, console still ticking) and what the cluster says.

The lab is the package's (``conftest.py``): keepalive 2 s, suicide delay 4 s, fence delay
8 s; the vm_kvm plugin restarts a libvirtd that does not answer for 5 s and puts a VM that
crashed 3 times within 2 minutes in ``fail``.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from pvc_lab import procs
from pvc_lab.chaos import (
    Invariant,
    as_json,
    fence_record,
    ok,
    pvc,
    qemu_processes,
    running_now,
    start_guests,
)
from pvc_lab.pvcnoded import KEEPALIVE_INTERVAL
from tests.lab.chaos.conftest import VICTIM, wait_fence

pytestmark = pytest.mark.lab


def pids(lab, node: str) -> dict[str, int]:
    """{guest: PID} of the QEMU processes on ``node`` (each guest must have one)."""
    found = qemu_processes(lab.node(node).netns)
    names = [n for n, _ in found]
    assert len(names) == len(set(names)), f"a guest runs twice on {node}: {found}"
    return dict(found)


def service_pid(lab, node: str, service: str) -> int:
    rec = lab.service(service).record(lab.spec, lab.node(node))
    assert rec is not None, f"{service} does not run on {node}"
    return rec.pid


def node_log(lab, node: str) -> str:
    with open(os.path.join(lab.spec.node_dir(node), "pvcnoded.log"), errors="replace") as fh:
        return fh.read()


def ticks(path: str) -> list[int]:
    """The guest's tick counters, in order (a reboot starts them again at 1).

    Only whole lines count: the guest may be halfway through writing the last
    one ("tick " or "tick 1" of "tick 123"), which would read as a restart.
    """
    try:
        with open(path, errors="replace") as fh:
            lines = [line.split() for line in fh if line.endswith("\n")]
    except OSError:
        return []
    return [int(f[1]) for f in lines if len(f) >= 2 and f[0] == "tick" and f[1].isdigit()]


def boots(path: str) -> int:
    """How many times the guest booted (its console file is appended to across starts)."""
    try:
        with open(path, errors="replace") as fh:
            return fh.read().count("GUEST-BOOTED")
    except OSError:
        return 0


def ticking_on(lab, consoles: dict[str, str], timeout: float = 30.0) -> None:
    """Every guest prints new ticks, counting on (no reboot)."""
    seen = {v: ticks(c) for v, c in consoles.items()}

    def moved() -> bool:
        for v, c in consoles.items():
            now = ticks(c)
            if len(now) <= len(seen[v]):
                return False
            assert now[-1] > seen[v][-1] if seen[v] else True, f"{v} started counting again"
        return True

    lab.wait_for(moved, timeout, "the guests to tick on")


def fault(lab, fault_id: str) -> dict | None:
    found = [f for f in as_json(lab, "cluster", "fault", "list") or [] if f["id"] == fault_id]
    return found[0] if found else None


def fault_ids(lab) -> set[str]:
    return {f["id"] for f in as_json(lab, "cluster", "fault", "list") or []}


def libvirt_facts(lab, node: str) -> dict:
    from pvc_kernel.state import schema
    from pvc_plugins.vm_kvm import keys

    for key in keys.KEYS:
        schema.register(key)
    return lab.store().get_json("vm_kvm.node", {}, node=node) or {}


# -- pvcnoded stalls -----------------------------------------------------------------------

def test_pvcnoded_stalls_shorter_than_the_fence_delay_cost_no_vm_anything(cluster, tmp_path):
    """SIGSTOP of pvcnoded for 3 s, then 5 s (> the 4 s suicide delay; with the age of its
    last keepalive still < the 8 s fence delay): no self-fence, no fence, no reboot."""
    lab = cluster
    consoles = start_guests(lab, VICTIM, ["stall1", "stall2"], str(tmp_path))
    before = pids(lab, VICTIM)
    started = time.time()
    daemon = service_pid(lab, VICTIM, "pvcnoded")
    log_at = len(node_log(lab, VICTIM))
    with Invariant(lab):
        for stall in (3.0, 5.0):
            last = lab.node_state(VICTIM)["keepalive"]
            lab.wait_for(lambda last=last: lab.node_state(VICTIM)["keepalive"] > last,
                         3 * KEEPALIVE_INTERVAL, "a keepalive")
            procs.send(daemon, signal.SIGSTOP)
            time.sleep(stall)                # the stall under test
            resumed = time.time()
            procs.send(daemon, signal.SIGCONT)
            lab.wait_for(lambda at=resumed: lab.node_state(VICTIM)["keepalive"] > at,
                         KEEPALIVE_INTERVAL, "a keepalive right after the stall")
        ticking_on(lab, consoles)
    log = node_log(lab, VICTIM)[log_at:]
    assert "self-fence:" not in log, log[-3000:]
    assert log.count("did not run for") == 2, log[-3000:]
    assert pids(lab, VICTIM) == before                     # the same QEMU processes
    assert fence_record(lab, VICTIM).get("declared", 0) < started
    assert lab.node_state(VICTIM)["daemon_state"] == "run"


# -- libvirtd dies or hangs ----------------------------------------------------------------

@pytest.mark.parametrize("how", ["killed", "hung"])
def test_dead_or_hung_libvirtd_is_seen_restarted_and_reconciled(cluster, tmp_path, how):
    lab = cluster
    consoles = start_guests(lab, VICTIM, [f"lv{how}"], str(tmp_path))
    # started before the kill: booting it can outlast libvirtd_restart_after (10 s)
    other = start_guests(lab, "hv3", [f"lvmove{how}"], str(tmp_path))
    ok(lab, "vm", "meta", f"lvmove{how}", "--limit", f"hv3,{VICTIM}")
    before = pids(lab, VICTIM)
    old = service_pid(lab, VICTIM, "libvirtd")
    with Invariant(lab):
        procs.send(old, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        at = time.time()
        seen = lab.wait_for(lambda: fault(lab, f"libvirt-{VICTIM}"), 15, "the libvirt fault")
        noticed = time.time() - at
        assert seen["health_delta"] == 50 and "libvirtd does not answer" in seen["message"]
        assert libvirt_facts(lab, VICTIM).get("libvirt") == "down"
        # no target while it is down: a VM that may only go to hv4 finds no node
        out = pvc(lab, "vm", "migrate", f"lvmove{how}")
        assert out.returncode != 0, out.stdout
        # pvcnoded restarts it (the lab's command SIGKILLs a hung one first)
        lab.wait_for(lambda: service_pid(lab, VICTIM, "libvirtd") != old, 30,
                     "pvcnoded to restart libvirtd")
        lab.wait_for(lambda: fault(lab, f"libvirt-{VICTIM}") is None, 30,
                     "the libvirt fault to clear")
        assert libvirt_facts(lab, VICTIM).get("libvirt") == "up"
        lab.wait_for(lambda: f"lv{how}" in running_now(lab)[VICTIM], 15,
                     "the new libvirtd to know the guest")
        ticking_on(lab, {**consoles, **other})
    print(f"\nlibvirtd {how}: fault after {noticed:.1f} s")
    assert pids(lab, VICTIM) == before                     # never rebooted, never doubled
    assert "vm-orphan" not in " ".join(fault_ids(lab))
    assert as_json(lab, "vm", "info", f"lv{how}")["state"] == "start"
    log = node_log(lab, VICTIM)
    assert "restarting libvirtd" in log and "answers again" in log


def test_no_second_qemu_when_libvirtd_lost_its_state(cluster, tmp_path):
    """libvirtd dies and its runtime directory is wiped: the new one does not know the
    running guest; PVC must not start a second QEMU of it, says so, and `pvc vm stop`
    ends the orphan so that a start runs it under libvirt again."""
    import shutil

    lab = cluster
    start_guests(lab, VICTIM, ["orphan1"], str(tmp_path))
    uuid = as_json(lab, "vm", "info", "orphan1")["uuid"]
    old = service_pid(lab, VICTIM, "libvirtd")
    run = os.path.join(lab.spec.node_dir(VICTIM), "libvirt", "run")
    with Invariant(lab):
        procs.send(old, signal.SIGKILL)
        lab.wait_for(lambda: not procs.alive(old, None), 10, "libvirtd to die")
        for entry in os.listdir(run):        # what a reboot of /run would do
            path = os.path.join(run, entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        found = lab.wait_for(lambda: fault(lab, f"vm-orphan-{uuid}"), 45,
                             "the orphan fault")
        assert "will not start a second copy" in found["message"]
        for _ in range(5 * int(KEEPALIVE_INTERVAL)):   # a few reconcile rounds
            assert [n for n, _ in qemu_processes(lab.node(VICTIM).netns)] == ["orphan1"]
            time.sleep(0.5)
        assert as_json(lab, "vm", "info", "orphan1")["libvirt_state"] == "unmanaged"
        ok(lab, "vm", "stop", "orphan1", "--wait")
        lab.wait_for(lambda: not qemu_processes(lab.node(VICTIM).netns), 20,
                     "the orphan to be killed")
        ok(lab, "vm", "start", "orphan1", "--wait")
        lab.wait_for(lambda: "orphan1" in running_now(lab)[VICTIM], 30, "a managed start")
    assert fault(lab, f"vm-orphan-{uuid}") is None


# -- guests crash ----------------------------------------------------------------------------

def test_guest_crash_loop_is_recorded_backed_off_then_failed(cluster, tmp_path):
    lab = cluster
    consoles = start_guests(lab, VICTIM, ["crashy"], str(tmp_path))
    uuid = as_json(lab, "vm", "info", "crashy")["uuid"]
    restarts = []

    def booted(times: int) -> None:       # kill a running guest, not one libvirt still starts
        lab.wait_for(lambda: boots(consoles["crashy"]) >= times, 60, f"boot {times}")

    for n in (1, 2):
        booted(n)
        pid = pids(lab, VICTIM)["crashy"]
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        new = lab.wait_for(lambda pid=pid: (p := pids(lab, VICTIM).get("crashy")) and p != pid
                           and p, 30, f"the restart after crash {n}")
        restarts.append(time.time() - killed)
        info = as_json(lab, "vm", "info", "crashy")
        assert info["crashes"]["count"] == n and info["crashes"]["recent"] == n, info
        assert "no libvirt event" not in info["crashes"]["reason"], info   # libvirt said why
        assert info["crashes"]["node"] == VICTIM
        found = fault(lab, f"vm-crash-{uuid}")
        assert found and found["health_delta"] == 10 and f"{n} crash(es)" in found["message"]
        assert new != pid
    booted(3)
    os.kill(pids(lab, VICTIM)["crashy"], signal.SIGKILL)   # the 3rd within the window
    info = lab.wait_for(lambda: (v := as_json(lab, "vm", "info", "crashy"))["state"] == "fail"
                        and v, 20, "the VM to be put in fail")
    assert "crashed 3 times" in info["failed_reason"].lower(), info
    found = fault(lab, f"vm-crash-{uuid}")
    assert found["health_delta"] == 50 and "state fail" in found["message"]
    time.sleep(3 * KEEPALIVE_INTERVAL)                     # time to restart it, if it would
    assert "crashy" not in pids(lab, VICTIM)
    log = node_log(lab, VICTIM)
    assert log.count("VM crashy crashed on") == 2 and "crashed 3 times" in log.lower()
    assert "starting it again in 1 s" in log and "starting it again in 2 s" in log  # backoff
    ok(lab, "vm", "start", "crashy", "--wait")             # a new request: a fresh budget
    assert "crashy" in pids(lab, VICTIM)
    print(f"\nrestart delays after crashes 1 and 2: {restarts[0]:.1f} s, {restarts[1]:.1f} s")


# -- a migration target dies ---------------------------------------------------------------

def _cap_migration(lab, node: str, vm: str, mib_s: int) -> None:
    import libvirt

    uri = lab.service("libvirtd").uri(lab.spec, lab.node(node))
    conn = libvirt.open(uri)
    try:
        conn.lookupByName(vm).migrateSetMaxSpeed(mib_s, 0)
    finally:
        conn.close()


def test_migration_target_dying_mid_flush_leaves_the_vm_running(cluster, tmp_path):
    """hv2 is flushed; its VM may go to hv4 or hv3 and hv4 is chosen (fewest VMs). hv4 dies
    during the migration (held at 1 MiB/s): the VM keeps running on hv2, then the flush
    moves it to hv3; its home stays hv2."""
    lab = cluster
    source = "hv2"
    consoles = start_guests(lab, source, ["moving"], str(tmp_path))
    start_guests(lab, "hv3", ["ballast"], str(tmp_path))   # hv3 has a VM, hv4 none
    ok(lab, "vm", "meta", "moving", "--limit", f"{VICTIM},hv3", "--selector", "vms")
    _cap_migration(lab, source, "moving", 1)
    with Invariant(lab):
        ok(lab, "node", "flush", source)
        lab.wait_for(lambda: (v := as_json(lab, "vm", "info", "moving"))["node"] == VICTIM
                     and "moving" in qemu_processes_names(lab, VICTIM) and v, 30,
                     "the migration to hv4 to run")
        killed_at = time.time()
        lab.kill(VICTIM)
        _cap_migration(lab, source, "moving", 10_000)        # the next try may go fast
        moved = lab.wait_for(lambda: (v := as_json(lab, "vm", "info", "moving"))
                             .get("running_on") == "hv3" and v, 90,
                             "the flush to move the VM to hv3")
        lab.wait_for(lambda: lab.store().get("node.domain_state", node=source) == "flushed",
                     60, f"{source} to be flushed")
        ticking_on(lab, consoles)
        wait_fence(lab, VICTIM, killed_at - 1)
    assert moved["last_node"] == source and moved["node"] == "hv3", moved
    with open(consoles["moving"], errors="replace") as fh:
        assert fh.read().count("GUEST-BOOTED") == 1, "the VM rebooted"
    log = node_log(lab, source)
    assert "shut down on hv2 for a move" not in log
    assert f"Live migration to {VICTIM} failed" in log and "trying another node" in log


def qemu_processes_names(lab, node: str) -> list[str]:
    return [n for n, _ in qemu_processes(lab.node(node).netns)]


# -- a self-fence with a hung libvirtd ---------------------------------------------------------

def test_self_fence_ends_guests_in_time_with_libvirtd_hung(cluster, tmp_path):
    """hv4 is cut off (its BMC too) while its libvirtd hangs (stalled storage would do the
    same): its self-fence kills the QEMU processes by PID before anyone may fence it."""
    lab = cluster
    start_guests(lab, VICTIM, ["hung1", "hung2"], str(tmp_path))
    last_keepalive = lab.node_state(VICTIM)["keepalive"]
    with Invariant(lab):
        lab.service("bmc").cut(lab, VICTIM)
        procs.send(service_pid(lab, VICTIM, "libvirtd"), signal.SIGSTOP)
        lab.partition(VICTIM)
        cut_at = time.time()
        lab.wait_for(lambda: not qemu_processes(lab.node(VICTIM).netns), 20,
                     "the self-fence to end the guests")
        gone_at = time.time()
        record = wait_fence(lab, VICTIM, cut_at - 10)
        assert gone_at < record["declared"], (gone_at, record["declared"])
        assert record["outcome"] == "fence-failed,not-recovered"
        assert all("hung1" not in v and "hung2" not in v for v in running_now(lab).values())
    log = node_log(lab, VICTIM)
    assert "killed by signal: hung" in log and "self-fence done" in log, log[-3000:]
    print(f"\nguests gone {gone_at - max(last_keepalive, cut_at - 2):.1f} s after the last "
          f"keepalive; declared dead {record['declared'] - gone_at:.1f} s later")
