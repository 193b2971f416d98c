"""Kernel acceptance tests against the real daemons of the lab (3 coordinators + 1 client).

Every test starts from a whole cluster and leaves one behind (fixture ``healthy``); waits
poll with a timeout, never sleep for a fixed time.
"""

from __future__ import annotations

import time

import pytest

from pvc_lab.pvcnoded import KEEPALIVE_INTERVAL, SESSION_TIMEOUT

pytestmark = pytest.mark.lab

# A dead primary's lock goes with its session (SESSION_TIMEOUT); then an election.
TAKEOVER_TIMEOUT = SESSION_TIMEOUT * 3 + 5
STALE_AGE = 3 * KEEPALIVE_INTERVAL        # a keepalive this old means the node is silent
FRESH_AGE = 2 * KEEPALIVE_INTERVAL + 1    # a live node's keepalive is never older


def keepalive_ages(lab) -> dict[str, float]:
    now = time.time()
    return {n: now - (st["keepalive"] or 0) for n, st in lab.node_states().items()}


def new_primary(lab, old: str):
    """A predicate: the primary once it is a coordinator other than ``old``."""
    def check():
        p = lab.primary()
        return p if p and p != old else None
    return check


def test_exactly_one_primary_among_coordinators(healthy):
    lab = healthy
    states = lab.node_states()
    assert all(st["daemon_state"] == "run" for st in states.values()), states
    primaries = [n for n, st in states.items() if st["coordinator_state"] == "primary"]
    assert len(primaries) == 1, states
    assert primaries[0] in lab.coordinators
    assert lab.store().get("config.primary_node") == primaries[0]
    for n in lab.coordinators:
        if n != primaries[0]:
            assert states[n]["coordinator_state"] == "secondary", states
    for n in set(lab.nodes) - set(lab.coordinators):
        assert states[n]["coordinator_state"] == "client", states


def test_primary_daemon_crash_leads_to_takeover(healthy):
    lab = healthy
    old = lab.primary()
    t0 = time.monotonic()
    lab.daemon_kill(old, "KILL")
    new = lab.wait_for(new_primary(lab, old), TAKEOVER_TIMEOUT, f"a new primary after {old} died")
    print(f"takeover {old} -> {new} in {time.monotonic() - t0:.2f} s")
    assert new in lab.coordinators
    states = lab.node_states()
    assert sum(st["coordinator_state"] == "primary" for n, st in states.items() if n != old) == 1


def test_primary_node_power_loss_leads_to_takeover(healthy):
    """Pull the plug on the primary's node: its pvcnoded and its ZooKeeper server die."""
    lab = healthy
    old = lab.primary()
    lab.kill(old)
    new = lab.wait_for(new_primary(lab, old), TAKEOVER_TIMEOUT + 5,
                       f"a new primary after node {old} lost power")
    assert new in lab.coordinators and new != old


def test_zookeeper_leader_loss_keeps_keepalives_going(healthy):
    lab = healthy
    leader = lab.zk_leader()
    assert leader in lab.coordinators
    killed_at = time.time()
    lab.zk_kill(leader)

    def all_fresh_after_kill():
        states = lab.node_states()
        return all((st["keepalive"] or 0) > killed_at + KEEPALIVE_INTERVAL
                   for st in states.values())
    lab.wait_for(all_fresh_after_kill, 30, "every node's keepalive to advance after the "
                 f"ZooKeeper leader on {leader} died")
    assert lab.wait_for(lambda: lab.zk_leader(), 15, "a new ZooKeeper leader") != leader
    assert all(st["daemon_state"] == "run" for st in lab.node_states().values())
    assert lab.primary() is not None


@pytest.mark.parametrize("which", ["client", "secondary coordinator"])
def test_partitioned_node_goes_silent_and_returns(healthy, which):
    lab = healthy
    primary = lab.primary()
    if which == "client":
        node = next(n for n in lab.nodes if n not in lab.coordinators)
    else:
        node = next(n for n in lab.coordinators if n != primary)
    others = [n for n in lab.nodes if n != node]
    lab.partition(node)

    def silent_while_others_live():
        ages = keepalive_ages(lab)
        return ages[node] > STALE_AGE and all(ages[o] < FRESH_AGE for o in others)
    lab.wait_for(silent_while_others_live, 30,
                 f"{node}'s keepalive to age while the other nodes stay fresh")
    assert lab.primary() is not None   # the rest of the cluster still has a primary

    healed_at = time.time()
    lab.heal(node)

    def back():
        st = lab.node_state(node)
        return st["daemon_state"] == "run" and (st["keepalive"] or 0) > healed_at
    lab.wait_for(back, 30, f"{node} to return to run with a fresh keepalive after healing")
    assert lab.node_state(node)["coordinator_state"] == (
        "client" if which == "client" else "secondary")


def test_primary_sigterm_hands_over(healthy):
    lab = healthy
    old = lab.primary()
    t0 = time.monotonic()
    lab.daemon_kill(old, "TERM")          # returns once the daemon has exited
    stopped = time.monotonic() - t0
    assert stopped < 6, f"pvcnoded on {old} took {stopped:.1f} s to stop"
    new = lab.wait_for(new_primary(lab, old), TAKEOVER_TIMEOUT, f"a handover from {old}")
    print(f"handover {old} -> {new}: daemon stopped in {stopped:.2f} s, "
          f"new primary after {time.monotonic() - t0:.2f} s")
    assert lab.node_state(old)["daemon_state"] == "stop"
    assert new in lab.coordinators


def test_handover_after_short_network_blips(healthy):
    """Outages shorter than a ZooKeeper session on the secondaries (their sessions survive)
    must not leave anything behind that blocks the next handover."""
    lab = healthy
    old = lab.primary()
    secondaries = [n for n in lab.coordinators if n != old]
    for node in secondaries * 2:           # not every outage hits the election mid-flight
        lab.partition(node)
        time.sleep(SESSION_TIMEOUT * 0.75)   # the length of the outage, not a wait
        healed_at = time.time()
        lab.heal(node)
        lab.wait_for(lambda n=node, t=healed_at: (lab.node_state(n)["keepalive"] or 0) > t, 20,
                     f"{node} to send keepalives again after a short outage")
    lab.daemon_kill(old, "TERM")
    new = lab.wait_for(new_primary(lab, old), TAKEOVER_TIMEOUT,
                       f"a handover from {old} after short outages of the secondaries")
    assert new in lab.coordinators
