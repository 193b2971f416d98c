"""Which polls of the VM agent may skip reading ZooKeeper (``Agent._settled``), and which
watch events of other nodes' VMs it may ignore (``Agent._unconcerned``)."""

from __future__ import annotations

import threading

import libvirt
import pytest

from pvc_plugins.vm_kvm import keys
from pvc_plugins.vm_kvm.agent import Agent
from pvc_plugins.vm_kvm.hypervisor import DomInfo

U = "0d7c1b9e-5a43-4f0e-9a41-111111111111"


def agent(desired=keys.STOP, node="hv1", obs=None, running=False, **extra) -> Agent:
    a = object.__new__(Agent)
    a.node, a.lock = "hv1", threading.Lock()
    a.desired = {U: desired} if desired else {}
    a.assigned = {U: node}
    a.observed = {U: obs if obs is not None else {"node": "hv1", "state": keys.STOPPED}}
    a.domains = ({U: DomInfo(U, "vm", libvirt.VIR_DOMAIN_RUNNING, 1, 256, 1)}
                 if running else {})
    a.stops, a.crash_faults, a.hold_until, a.intentional, a.known_guests = {}, {}, {}, {}, {}
    for name, value in extra.items():
        setattr(a, name, value)
    return a


RUNNING_HERE = {"node": "hv1", "state": keys.RUNNING, "libvirt_state": "running"}


@pytest.mark.parametrize("made, settled", [
    (agent(), True),                                           # stopped, stays stopped
    (agent(desired=keys.DISABLE), True),
    (agent(desired=keys.START), False),                        # should run: check
    (agent(desired=None), False),                              # not seen yet
    (agent(obs={"node": "hv1", "state": keys.RUNNING}), False),  # said to run here
    (agent(known_guests={U: object()}), False),                # a QEMU process of it
    (agent(stops={U: (0.0, 1)}), False),                       # a stop event pending
    (agent(hold_until={U: 1.0}), False),                       # a held restart
    (agent(desired=keys.START, obs=RUNNING_HERE, running=True), True),
    (agent(desired=keys.START, obs={**RUNNING_HERE, "libvirt_state": "paused"},
           running=True), False),                              # observed must be updated
    (agent(desired=keys.STOP, obs=RUNNING_HERE, running=True), False),   # to be stopped
    (agent(desired=keys.START, node="hv2", obs=RUNNING_HERE, running=True), False),
    (agent(desired=keys.START, obs=RUNNING_HERE, running=True,
           crash_faults={U: 1.0}), False),                     # crash record to clear
])
def test_settled(made, settled):
    assert made._settled(U) is settled


def test_unconcerned_only_for_vms_that_never_touch_this_node():
    elsewhere = {"node": "hv2", "state": keys.RUNNING}
    assert agent(node="hv2", obs=elsewhere)._unconcerned(U)
    assert not agent(node="hv1", obs=elsewhere)._unconcerned(U)        # assigned here
    assert not agent(node="hv2")._unconcerned(U)                       # observed here
    assert not agent(node="hv2", obs=elsewhere, running=True)._unconcerned(U)
    assert not agent(node="hv2", obs=elsewhere, known_guests={U: 1})._unconcerned(U)
