"""A new primary undoes the creates a dead primary left (``create.recover_jobs``) against a
real ZooKeeper: the task is failed with the stage it stood at, the VM and the volumes the
job recorded are removed through the VM and volume hooks (stand-ins here: the hooks' own
tests run on the lab), a volume still held by the dead node's mapping is retried, and a
create whose primary still runs is left alone."""

from __future__ import annotations

import json

import pytest

from pvc_kernel.plugins import PluginHost
from pvc_kernel.sdk import hookimpl, tasks
from pvc_plugins.provisioner import create
from pvc_plugins.provisioner.plugin import ProvisionerPlugin

pytestmark = pytest.mark.integration


class Cluster:
    """VM and volume hooks over plain sets; one volume stays 'in use' for a few tries."""

    def __init__(self) -> None:
        self.vms = {"uuid-1": "web1", "uuid-2": "web2"}
        self.volumes = {("vms", "web1_sda"), ("vms", "web1_sdb"), ("vms", "web2_sda")}
        self.busy = {("vms", "web1_sdb"): 2}

    @hookimpl
    def pvc_vm_undefine(self, vm: str) -> bool:
        return self.vms.pop(vm, None) is not None

    @hookimpl
    def pvc_volume_remove(self, pool: str, name: str) -> bool:
        if self.busy.get((pool, name), 0) > 0:
            self.busy[(pool, name)] -= 1
            raise RuntimeError(f'Volume "{pool}/{name}" is in use by 10.0.0.1:0/1')
        if (pool, name) not in self.volumes:
            return False
        self.volumes.discard((pool, name))
        return True


class NoWait:
    """``daemon.stopping`` whose waits between retries return at once."""

    def wait(self, timeout: float | None = None) -> bool:
        return False


class Daemon:
    def __init__(self, store, plugins) -> None:
        self.store, self.plugins, self.node = store, plugins, "hv2"
        self.stopping = NoWait()


def _job(store, owner: str, vm: str, uuid: str, volumes: list[list[str]], state: str) -> str:
    record = tasks.create_task(store, create.TASK, owner, {"name": vm, "profile": "p"})
    if state != tasks.PENDING:
        tasks.update_task(store, record["id"], state=state)
    store.set("provisioner.job", json.dumps({
        "task_id": record["id"], "vm": vm, "vm_uuid": uuid, "volumes": volumes,
        "node": owner, "stage": "Script install()", "claimed": True}), task_id=record["id"])
    store.create("provisioner.claim", record["id"], vm=vm)
    return record["id"]


def test_a_new_primary_undoes_a_dead_primarys_create(store):
    cluster = Cluster()
    host = PluginHost()
    host.register(ProvisionerPlugin, "provisioner")
    host.register(cluster, "cluster")
    store.set("node.daemon_state", "dead", node="hv1")
    store.set("node.daemon_state", "run", node="hv3")
    dead = _job(store, "hv1", "web1", "uuid-1", [["vms", "web1_sda"], ["vms", "web1_sdb"]],
                tasks.RUNNING)
    alive = _job(store, "hv3", "web2", "uuid-2", [["vms", "web2_sda"]], tasks.RUNNING)

    create.recover_jobs(Daemon(store, host))

    record = tasks.get_task(store, dead)
    assert record["state"] == tasks.FAILURE
    assert "Script install()" in record["status"] and "hv1" in record["status"]
    assert cluster.vms == {"uuid-2": "web2"}
    assert cluster.volumes == {("vms", "web2_sda")}          # web1_sdb after two busy tries
    assert store.children("provisioner.jobs") == [alive]
    assert store.children("provisioner.claims") == ["web2"]
    assert tasks.get_task(store, alive)["state"] == tasks.RUNNING


def test_a_job_that_cannot_be_undone_stays_for_the_next_try(store):
    cluster = Cluster()
    cluster.busy[("vms", "web1_sda")] = 10 ** 6               # never let go
    host = PluginHost()
    host.register(cluster, "cluster")
    store.set("node.daemon_state", "fenced", node="hv1")
    dead = _job(store, "hv1", "web1", "uuid-1", [["vms", "web1_sda"]], tasks.RUNNING)

    create.recover_jobs(Daemon(store, host))

    assert tasks.get_task(store, dead)["state"] == tasks.FAILURE
    assert cluster.vms == {"uuid-2": "web2"}
    assert ("vms", "web1_sda") in cluster.volumes
    assert store.children("provisioner.jobs") == [dead]       # kept: undone again later
