"""A node's own liveness against a real ZooKeeper and a real pvcnoded: a stall of the daemon
shorter than the fence delay costs nothing (no self-fence, a keepalive at once on resume),
also when it outlasts the ZooKeeper session; a node that cannot reach ZooKeeper still fences
itself (``test_fencing_monitor.test_self_fence_after_losing_zookeeper``)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from pvc_kernel.state import migrations
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration
KA, FENCE, SUICIDE = 2.0, 5, 2          # suicide delay 4 s, fence delay 10 s; session 3 s


def keepalive(store, node: str) -> float:
    return float(store.get("node.keepalive", node=node) or 0)


@pytest.mark.parametrize("stall", [2.5, 5.0], ids=["short", "longer-than-suicide-and-session"])
def test_a_stall_shorter_than_the_fence_delay_costs_nothing(store, daemons, stall):
    migrations.migrate(store, "test")
    d = daemons("hv1", coordinator=False, keepalive_interval=KA, fence_intervals=FENCE,
                suicide_intervals=SUICIDE)
    wait_for(lambda: store.get("node.daemon_state", node="hv1") == "run", what="the node runs")
    # stop right after a keepalive: the stall then adds to a fresh silence, the worst case
    # for the old rule is the other end, so stop just before the next one is due
    last = keepalive(store, "hv1")
    wait_for(lambda: keepalive(store, "hv1") > last, timeout=10, what="a keepalive")
    time.sleep(KA * 0.8)
    os.kill(d.proc.pid, signal.SIGSTOP)
    time.sleep(stall)
    resumed = time.time()
    os.kill(d.proc.pid, signal.SIGCONT)
    wait_for(lambda: keepalive(store, "hv1") > resumed, timeout=KA * 2,
             what="a keepalive after the stall")
    took = keepalive(store, "hv1") - resumed
    assert took < KA / 2, f"the first keepalive after the stall came {took:.2f} s late"
    time.sleep(KA)                      # time for a wrong self-fence to show in the log
    log = d.log()
    assert "self-fence:" not in log, log[-2000:]
    assert "did not run for" in log     # the stall was seen and said
    assert store.get("node.daemon_state", node="hv1") == "run"
    assert store.exists("alive.node", node="hv1")      # re-created if the session expired
