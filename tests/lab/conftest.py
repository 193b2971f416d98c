"""The lab tier: one real 4-node cluster (3 coordinators + 1 client) for the whole session.

Needs root (network namespaces). The lab is named ``pvctest`` (env ``PVC_TEST_LAB_NAME``),
so it can run beside an administrator's ``pvc`` lab. Logs stay in
/var/tmp/pvc-lab/pvctest after the run for post-mortems; PVC_TEST_LAB_KEEP=1 leaves the
lab itself up (``pvc-lab --name pvctest status``).
"""

from __future__ import annotations

import os

import pytest

from pvc_lab import Lab, LabError
from pvc_lab.pvcnoded import binary as pvcnoded_binary
from pvc_lab.zookeeper import available as zookeeper_problem

LAB_NAME = os.environ.get("PVC_TEST_LAB_NAME", "pvctest")
NODES, COORDINATORS = 4, 3
RESTORE_TIMEOUT = 30


@pytest.fixture(scope="session")
def lab():
    """The running lab; torn down at the end of the session, also after failures."""
    if os.geteuid() != 0:
        pytest.skip("the lab tests need root (they create network namespaces)")
    problem = zookeeper_problem()
    if problem:
        pytest.skip(f"ZooKeeper cannot run here: {problem}")
    if not os.access(pvcnoded_binary(), os.X_OK):
        pytest.skip(f"{pvcnoded_binary()} is missing (run scripts/bootstrap.sh)")
    the_lab = Lab(name=LAB_NAME)
    the_lab.down(grace=0, quiet=True)   # leftovers of a run that was killed
    try:
        the_lab.up(nodes=NODES, coordinators=COORDINATORS, timeout=120)
        yield the_lab
    finally:
        if os.environ.get("PVC_TEST_LAB_KEEP"):   # debugging: leave the lab up
            the_lab.close()
        else:
            the_lab.down(grace=3)


def _rebuild(lab) -> None:
    lab.down(grace=2)
    lab.up(nodes=NODES, coordinators=COORDINATORS, timeout=120)


@pytest.fixture
def healthy(lab):
    """The lab with every service running and a primary; restored after the test, so a test
    that kills, partitions or stops something leaves the next one a whole cluster. If the
    cluster cannot be restored (e.g. it never elects a primary again), the teardown fails
    with the reason and the lab is rebuilt from scratch for the next test."""
    try:
        lab.restore(timeout=RESTORE_TIMEOUT)
    except LabError:
        _rebuild(lab)
    yield lab
    try:
        lab.restore(timeout=RESTORE_TIMEOUT)
    except LabError:
        _rebuild(lab)
        raise


@pytest.fixture
def vmlab(healthy, tmp_path):
    """The healthy lab with its API answering; VMs named in ``lab.vm_names`` are removed
    afterwards (``tests.lab.vmtools.define`` adds them)."""
    from tests.lab.vmtools import pvc

    lab = healthy
    lab.wait_for(lambda: pvc(lab, "node", "list").returncode == 0, 60, "the API")
    lab.wait_for(lambda: all(st.get("daemon_state") == "run" for st in
                             lab.node_states().values()), 60, "every node running")
    lab.vm_names = []
    lab.vm_dir = tmp_path
    yield lab
    for name in lab.vm_names:
        pvc(lab, "vm", "remove", name, "--yes")
