"""Fixtures shared by every test tier."""

from __future__ import annotations

import uuid

import pytest

from tests.support import zookeeper


@pytest.fixture(scope="session")
def zk_server():
    """A real standalone ZooKeeper server for the whole session."""
    if not zookeeper.available():
        pytest.skip("ZooKeeper is not installed (run scripts/bootstrap.sh)")
    server = zookeeper.ZooKeeperServer()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def zk_hosts(zk_server):
    """A connect string with a fresh chroot, so every test sees an empty cluster."""
    from kazoo.client import KazooClient

    chroot = f"/t-{uuid.uuid4().hex[:10]}"
    client = KazooClient(hosts=zk_server.hosts)
    client.start(timeout=30)
    client.ensure_path(chroot)
    client.stop()
    client.close()
    return zk_server.hosts + chroot
