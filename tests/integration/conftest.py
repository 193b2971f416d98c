"""Integration tier: real components started by fixtures."""

from __future__ import annotations

import pytest

from pvc_kernel.state import Store
from tests.support.daemons import DaemonProcess


@pytest.fixture
def store(zk_hosts):
    s = Store(zk_hosts, timeout=5)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def migrated_store(zk_hosts):
    """A store on a ZooKeeper chroot whose schema is migrated to the current version."""
    from pvc_kernel.state.migrations import migrate

    s = Store(zk_hosts, timeout=10)
    s.start()
    migrate(s)
    yield s
    s.stop()


@pytest.fixture
def daemons(tmp_path, zk_hosts):
    """Factory for pvcnoded processes on the test's ZooKeeper chroot; all stopped at the end."""
    started: list[DaemonProcess] = []

    def make(node: str, **kw) -> DaemonProcess:
        d = DaemonProcess(str(tmp_path), node, zk_hosts, **kw)
        started.append(d)
        return d.start()

    yield make
    for d in started:
        d.kill()


@pytest.fixture(scope="session")
def ceph():
    """A real Ceph (1 mon, 1 mgr, 2 OSDs) and ZooKeeper in one namespace, for storage tests."""
    from tests.support import ceph as support

    why = support.problem()
    if why:
        pytest.skip(why)
    env = support.acquire()
    yield env
    support.release()
