"""`vm.flush_locks`: the state rule and the task handler over fake storage answers."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from pvc_kernel.state import LockBusy
from pvc_plugins.vm_kvm import flush_locks as locks
from pvc_plugins.vm_kvm import keys, records
from pvc_plugins.vm_kvm.records import Record

XML = ("<domain type='kvm'><name>web1</name><uuid>u1</uuid><memory unit='MiB'>128</memory>"
       "<vcpu>1</vcpu><devices>"
       "<disk type='network' device='disk'><source protocol='rbd' name='vms/web1_0'/>"
       "<target dev='vda' bus='virtio'/></disk>"
       "<disk type='file' device='cdrom'><source file='/iso/x.iso'/>"
       "<target dev='sda' bus='sata'/></disk>"
       "<disk type='network' device='disk'><source protocol='rbd' name='vms/web1_1'/>"
       "<target dev='vdb' bus='virtio'/></disk></devices></domain>")


def record(state: str = "stop", observed: dict | None = None, version: int = 3) -> Record:
    return Record(uuid="u1", name="web1", xml=XML, state=state, state_version=version,
                  node="hv1", last_node="", meta={}, tags=[], request={},
                  observed=observed or {})


@pytest.mark.parametrize("state", ["stop", "disable", "mirror"])
def test_stopped_states_may_flush(state):
    assert locks.refusal(record(state), force=False) == ""


@pytest.mark.parametrize("state", ["start", "restart", "shutdown", "migrate", "unmigrate"])
def test_other_states_need_force(state):
    why = locks.refusal(record(state), force=False)
    assert f"in state '{state}'" in why and "stop, disable, fail or mirror" in why
    assert "force" in why
    assert locks.refusal(record(state), force=True) == ""


def test_a_failed_start_counts_as_fail():
    failed = record("start", {"node": "hv1", "state": keys.FAILED, "fail_version": 3})
    assert failed.display_state == "fail" and locks.refusal(failed, False) == ""
    older = record("start", {"node": "hv1", "state": keys.FAILED, "fail_version": 2})
    assert locks.refusal(older, False)          # a newer start request is under way


class FakeLock:
    def __init__(self, free: bool = True) -> None:
        self.free, self.held = free, False

    def acquire(self, timeout: float) -> bool:
        self.held = self.free
        return self.free

    def release(self) -> None:
        self.held = False


def context(monkeypatch, rec, answers, force=False, lock=None):
    """A TaskContext stand-in whose plugins answer ``answers[target]`` per disk."""
    lock = lock or FakeLock()
    asked, progress = [], []

    def call_first(hook, obj="", **kw):
        assert hook == "pvc_vm_disk_unlock" and obj == "vm:u1"
        assert kw["vm"] == {"uuid": "u1", "name": "web1", "node": "hv1"}
        asked.append(kw["disk"]["target"])
        return answers.get(kw["disk"]["target"])

    @contextlib.contextmanager
    def locked(name, ident, timeout, what):
        assert name == "vm-u1" and ident == "hv1"
        if not lock.acquire(timeout):
            raise LockBusy(f"{what}: its lock stayed busy for {timeout:g} s")
        try:
            yield lock
        finally:
            lock.release()

    store = SimpleNamespace(locked=locked)
    daemon = SimpleNamespace(store=store, node="hv1",
                             plugins=SimpleNamespace(call_first=call_first))
    monkeypatch.setattr(records, "read", lambda _store, uuid: rec if uuid == "u1" else None)
    ctx = SimpleNamespace(daemon=daemon, args={"uuid": "u1", "force": force},
                          check=lambda: None,
                          progress=lambda cur, total, msg: progress.append((cur, total, msg)))
    return ctx, asked, progress, lock


def test_handler_sums_the_locks_of_every_handled_disk(monkeypatch):
    ctx, asked, progress, lock = context(monkeypatch, record("stop"), {
        "vda": {"ok": True, "reason": "", "removed": 2},
        "vdb": {"ok": True, "reason": "", "removed": 1}})
    assert locks.flush(ctx) == "Flushed locks on VM web1: 3 lock(s) removed."
    assert asked == ["vda", "sda", "vdb"] and not lock.held
    assert [p[:2] for p in progress] == [(0, 3), (1, 3), (2, 3)]
    assert progress[0][2] == "Flushing locks of disk vda"


def test_handler_fails_with_the_storage_reason(monkeypatch):
    ctx, asked, _, lock = context(monkeypatch, record("stop"), {
        "vda": {"ok": False, "reason": "disk vda: volume vms/web1_0 does not exist",
                "removed": 0}})
    with pytest.raises(RuntimeError, match="volume vms/web1_0 does not exist"):
        locks.flush(ctx)
    assert asked == ["vda"] and not lock.held


def test_handler_rechecks_the_state_under_the_vm_lock(monkeypatch):
    ctx, asked, _, lock = context(monkeypatch, record("start"), {})
    with pytest.raises(RuntimeError, match="in state 'start'"):
        locks.flush(ctx)
    assert asked == [] and not lock.held
    ctx, asked, _, _ = context(monkeypatch, record("start"), {}, force=True)
    assert locks.flush(ctx).endswith(": 0 lock(s) removed.") and len(asked) == 3


def test_handler_gives_up_on_a_busy_vm_lock(monkeypatch):
    monkeypatch.setattr(locks, "LOCK_WAIT", 0.01)
    ctx, asked, _, _ = context(monkeypatch, record("stop"), {}, lock=FakeLock(free=False))
    with pytest.raises(LockBusy, match="VM u1: its lock stayed busy"):
        locks.flush(ctx)
    assert asked == []
