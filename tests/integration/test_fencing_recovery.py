"""Recovery of a fenced node's VMs (vm_kvm's ``pvc_node_recover``) on a real ZooKeeper, with
stand-in node agents that start a VM only the way vm_kvm does: when it is assigned to them
and ``observed`` says it runs nowhere else.
"""

from __future__ import annotations

import threading
import time
import uuid as uuidlib
from typing import Any

import pytest

from pvc_kernel import config as kconfig
from pvc_kernel.state import schema
from pvc_lab.guest import GuestImage, domain_xml
from pvc_plugins.fencing_ipmi import keys as fencing_keys
from pvc_plugins.vm_kvm import keys, records, vms
from pvc_plugins.vm_kvm.recovery import Recovery
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration
for _key in [*keys.KEYS, *fencing_keys.KEYS]:
    schema.register(_key)
IMAGE = GuestImage("/nonexistent/vmlinux", "/nonexistent/initrd.gz", "test")
DEAD = "hv2"


class Daemon:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.node = "hv1"
        self.config = kconfig.parse({"node": "hv1", "cluster": "t",
                                     "zookeeper": {"hosts": ["x:1"]},
                                     "plugins": {"vm_kvm": {"flush_concurrency": 2,
                                                            "migrate_timeout": 5}}})


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


def add_vm(store: Any, name: str, node: str, memory: int = 256, running_on: str | None = None,
           limit: list[str] | None = None, state: str = keys.START) -> str:
    u = str(uuidlib.uuid4())
    vms.define(store, domain_xml(name, IMAGE, "/dev/null", memory_mib=memory, uuid=u),
               node=node, limit=limit, state=state)
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

    result = Recovery(Daemon(store), DEAD, lambda *a: steps.append(a)).run()

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
    first = Recovery(Daemon(store), DEAD, lambda *a: None).run()
    before = {r.name: (r.node, r.state_version) for r in records.all_records(store)}
    again = Recovery(Daemon(store), DEAD, lambda *a: None).run()
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
        out.update(Recovery(Daemon(store), DEAD, lambda *a: None).run())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    time.sleep(1.0)
    assert records.read(store, u).node == DEAD and not done.is_set()
    lock.release()
    wait_for(done.is_set, timeout=30, what="recovery after the lock was released")
    assert records.read(store, u).running_on in ("hv1", "hv3")
