"""``vms.wait_for`` on a real ZooKeeper: woken by the watch on a change, and leaving no
watch behind once its keys change again."""

from __future__ import annotations

import json
import threading

from pvc_kernel.state import schema
from pvc_plugins.vm_kvm import keys, vms

UUID = "0f6d7c1e-3b1a-4c55-8a0e-7d2f9b6c4e10"
LONG = 60.0     # a recheck no test may rely on: the wait must be woken by a watch
for _key in keys.KEYS:
    schema.register(_key)


def _define(store) -> None:
    for key, value in (("vm", "vm1"), ("vm.state", keys.START), ("vm.node", "hv1"),
                       ("vm.observed", "{}")):
        store.set(key, value, uuid=UUID)


def _ours(store) -> int:
    """How many wait_for watches kazoo still holds on the VM's keys."""
    return sum(1 for key in vms.WATCHED
               for w in store.client._data_watchers.get(schema.path(key, uuid=UUID), ())
               if getattr(w, "__func__", None) is vms._Watches._fired)


def test_a_change_wakes_the_wait_and_no_watch_outlives_it(store, monkeypatch):
    _define(store)
    armed = threading.Event()
    real_arm = vms._Watches.arm

    def arm(self) -> None:
        real_arm(self)
        armed.set()

    monkeypatch.setattr(vms._Watches, "arm", arm)

    def change() -> None:
        assert armed.wait(10)
        store.set("vm.observed", json.dumps({"node": "hv1", "state": keys.RUNNING}),
                  uuid=UUID)

    t = threading.Thread(target=change)
    t.start()
    rec = vms.wait_for(store, UUID, lambda r: r.running_on == "hv1", 30, recheck=LONG)
    t.join()
    assert rec is not None and rec.running_on == "hv1"
    for key in vms.WATCHED:     # every key changes once more: each one-shot watch is spent
        store.set(key, store.get(key, uuid=UUID), uuid=UUID)
    store.set("vm.observed", "{}", uuid=UUID)   # a round trip after the notifications
    assert _ours(store) == 0


def test_removing_the_vm_ends_the_wait(store):
    _define(store)
    done = threading.Event()
    box: dict[str, object] = {}

    def wait() -> None:
        box["rec"] = vms.wait_for(store, UUID, lambda r: False, 30, recheck=LONG)
        done.set()

    t = threading.Thread(target=wait)
    t.start()
    store.delete("vm", uuid=UUID)
    assert done.wait(10)
    t.join()
    assert box["rec"] is None
