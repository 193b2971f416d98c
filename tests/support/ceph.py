"""A standalone real Ceph (1 mon, 1 mgr, 2 OSDs) plus a ZooKeeper, both inside one network
namespace, shared by the storage integration tests of one pytest process.

Tests run *inside* the namespace (``inside()``): the calling thread enters it, so librados,
kazoo and every subprocess (ceph, fio, qemu-img) reach the cluster on its own addresses.
Everything is stopped by PID and the namespace removed when the last user is done.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pvc_lab import netns, procs
from pvc_lab.ceph import CephCluster, available
from tests.support.zookeeper import ZooKeeperServer
from tests.support.zookeeper import available as zk_available

NS_PREFIX = "pvcceph-"
BASE_ROOT = "/var/tmp/pvc-ceph-it"


@dataclass
class CephEnv:
    cluster: CephCluster
    zk: ZooKeeperServer
    bringup: dict[str, float]

    @property
    def ns(self) -> str:
        return self.cluster.ns

    @property
    def conf(self) -> str:
        return self.cluster.conf

    @contextmanager
    def inside(self) -> Iterator[None]:
        with netns.inside(self.ns):
            yield

    def zk_hosts(self) -> str:
        """A connect string with a fresh chroot (an empty cluster state per test)."""
        from kazoo.client import KazooClient

        chroot = f"/t-{uuid.uuid4().hex[:10]}"
        with self.inside():
            client = KazooClient(hosts=self.zk.hosts)
            client.start(timeout=30)
            client.ensure_path(chroot)
            client.stop()
            client.close()
        return self.zk.hosts + chroot

    def plugin_config(self, node: str = "ceph1", **section: Any) -> Any:
        """A NodeConfig whose storage_ceph section points at this cluster."""
        from pvc_kernel.config import parse

        data = {"node": node, "cluster": "test", "zookeeper": {"hosts": [self.zk.hosts]},
                "plugins": {"storage_ceph": {"ceph_conf": self.conf, "osd_launcher": "spawn",
                                             "failure_domain": "osd", **section}}}
        return parse(data)


@contextmanager
def task_node(env: CephEnv, node: str = "ceph1", api_key: str | None = None,
              **section: Any) -> Iterator[Any]:
    """A stand-in node daemon inside the cluster's namespace: store (fresh chroot), the
    storage plugin's config (``section``) and a TaskRunner with its handlers; with
    ``api_key`` also a migrated schema, daemon state ``run`` and ``http``, a falcon test
    client of the API with the plugin's routes."""
    from types import SimpleNamespace

    from pvc_kernel import tasks
    from pvc_kernel.state import Store, schema
    from pvc_plugins.storage_ceph.plugin import StorageCephPlugin

    plugin = StorageCephPlugin()
    for key in plugin.pvc_schema_keys():
        schema.register(key)
    hosts = env.zk_hosts()
    with env.inside():
        store = Store(hosts, timeout=5)
        store.start()
        config = env.plugin_config(node, **section)
        daemon = SimpleNamespace(config=config, store=store, node=node, plugin=plugin)
        if api_key is not None:
            _with_api(daemon, api_key)
        daemon.tasks = tasks.TaskRunner(store, node, plugin.pvc_task_handlers(), daemon=daemon)
        rt = plugin.runtime(daemon)
        try:
            yield daemon
        finally:
            daemon.tasks.stop()
            rt.client.close()
            store.stop()


def _with_api(daemon: Any, api_key: str) -> None:
    import falcon.testing

    from pvc_api.app import create_app
    from pvc_kernel.plugins import PluginHost
    from pvc_kernel.state.migrations import migrate
    from pvc_plugins.storage_ceph.plugin import StorageCephPlugin

    migrate(daemon.store)
    daemon.config.api.keys = [api_key]
    daemon.store.set("node.daemon_state", "run", node=daemon.node)
    plugins = PluginHost()
    plugins.register(StorageCephPlugin, "storage_ceph")
    daemon.http = falcon.testing.TestClient(create_app(daemon.store, daemon.config,
                                                       plugins).app,
                                            headers={"X-Api-Key": api_key})


def run_task(daemon: Any, kind: str, args: dict[str, Any], timeout: float = 300.0) -> dict:
    """Create a task for ``daemon``'s node and run it through its TaskRunner; the final
    record (AssertionError if it is not finished within ``timeout``)."""
    from pvc_kernel import tasks

    record = tasks.create_task(daemon.store, kind, daemon.node, args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.tasks.scan()
        final = tasks.get_task(daemon.store, record["id"])
        if final["state"] in tasks.FINISHED:
            return final
        time.sleep(0.2)
    raise AssertionError(f"task {kind} still running after {timeout} s")


def problem() -> str | None:
    if os.geteuid() != 0:
        return "the Ceph integration tests need root (network namespaces)"
    missing = available()
    if missing:
        return f"Ceph cannot run here: {missing}"
    if not zk_available():
        return "ZooKeeper is not installed (run scripts/bootstrap.sh)"
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError:
        return "python3-rados/python3-rbd are not importable (venv without system site-packages?)"
    return None


def _clean_stale() -> None:
    """Namespaces of earlier runs whose pytest is gone: end their processes, delete them."""
    for ns in netns.names():
        if not ns.startswith(NS_PREFIX) or not ns[len(NS_PREFIX):].isdigit():
            continue
        if procs.alive(int(ns[len(NS_PREFIX):])):
            continue
        stray = {p: procs.start_time(p) for p in netns.pids(ns)}
        procs.terminate(stray, 2.0)
        netns.delete(ns)
        shutil.rmtree(os.path.join(BASE_ROOT, ns[len(NS_PREFIX):]), ignore_errors=True)


_env: CephEnv | None = None
_users = 0
_lock = threading.Lock()


def acquire() -> CephEnv:
    """Start the shared environment on first use (raises on failure, after cleaning up)."""
    global _env, _users
    with _lock:
        if _env is None:
            _clean_stale()
            pid = str(os.getpid())
            base = os.path.join(BASE_ROOT, pid)
            shutil.rmtree(base, ignore_errors=True)
            cluster = CephCluster(base, NS_PREFIX + pid, osds=2, fast_fail=True)
            zk = None
            try:
                t0 = time.monotonic()
                bringup = cluster.up()
                zk = netns.call_in(cluster.ns, ZooKeeperServer)
                netns.call_in(cluster.ns, zk.start)
                bringup["total_with_zookeeper"] = round(time.monotonic() - t0, 2)
            except BaseException:
                if zk is not None:
                    zk.cleanup()
                cluster.down()
                raise
            _env = CephEnv(cluster, zk, bringup)
        _users += 1
        return _env


def release() -> None:
    global _env, _users
    with _lock:
        _users -= 1
        if _users == 0 and _env is not None:
            _env.zk.cleanup()
            _env.cluster.cleanup()
            _env = None
