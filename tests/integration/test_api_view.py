"""pvcapid answering from its watch-maintained view (real ZooKeeper, two API processes'
worth of stores): a write is seen by the next GET of the same API and of the other one,
and concurrent defines through both still place every VM on fresh loads."""

from __future__ import annotations

import threading
import uuid as uuidlib

import falcon.testing
import pytest

from pvc_api.app import create_app
from pvc_kernel.config import ApiConfig, NodeConfig
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store
from pvc_kernel.state.migrations import migrate
from pvc_plugins.vm_kvm.plugin import VmKvmPlugin

pytestmark = pytest.mark.integration
V1 = "/api/v1"
NODES = ("hv1", "hv2", "hv3")


def seed(store: Store, memory_total: int) -> None:
    """Nodes as their daemons report them, each with a hypervisor of ``memory_total`` MiB."""
    migrate(store)
    for name in NODES:
        store.set("node.static", {"cpu_count": 64, "memory_total": memory_total}, node=name)
        store.set("node.daemon_state", "run", node=name)
        store.set("node.domain_state", "ready", node=name)
        store.set("vm_kvm.node", {"virt_type": "kvm", "memory_total": memory_total}, node=name)


def xml(name: str, memory: int = 1024) -> str:
    return (f"<domain type='kvm'><name>{name}</name><uuid>{uuidlib.uuid4()}</uuid>"
            f"<memory unit='MiB'>{memory}</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os><devices/></domain>")


@pytest.fixture
def apis(zk_hosts):
    """Two API instances, each with its own ZooKeeper session and view."""
    stores, clients = [], []
    for node in ("hv1", "hv2"):
        store = Store(zk_hosts)
        host = PluginHost()
        host.register(VmKvmPlugin(), "vm_kvm")
        cfg = NodeConfig(node=node, cluster="viewtest", zookeeper_hosts=[zk_hosts],
                         api=ApiConfig(keys=[]))
        api = create_app(store, cfg, host)
        store.start()
        stores.append(store)
        clients.append(falcon.testing.TestClient(api.app))
    seed(stores[0], 64 * 1024)
    for store in stores:
        store.view.catch_up()
    yield clients, stores
    for store in stores:
        store.stop()


def vm(client: falcon.testing.TestClient, name: str) -> dict:
    r = client.simulate_get(f"{V1}/vm/{name}")
    assert r.status_code == 200, r.text
    return r.json[0]


def listed(client: falcon.testing.TestClient, **query: str) -> list[str]:
    r = client.simulate_get(f"{V1}/vm", params=query)
    return [v["name"] for v in r.json] if r.status_code == 200 else []


def test_each_write_is_seen_by_the_next_get_of_both_apis(apis):
    (a, b), stores = apis
    for store in stores:
        assert store.view.ready
    for i in range(5):
        name = f"rw{i}"
        assert a.simulate_post(f"{V1}/vm", params={"xml": xml(name), "node": "hv1"}
                               ).status_code == 200
        for c in (a, b):
            assert name in listed(c)
            assert vm(c, name)["state"] == "stop"
            assert c.simulate_get(f"{V1}/status").json["vms"]["total"] == i + 1
        r = a.simulate_post(f"{V1}/vm/{name}/state", params={"state": "disable"})
        assert r.status_code == 200, r.text
        assert [vm(c, name)["state"] for c in (a, b)] == ["disable", "disable"]
        assert name in listed(b, state="disable")
        r = b.simulate_post(f"{V1}/vm/{name}/meta", params={"limit": "hv1,hv2"})
        assert r.status_code == 200, r.text
        assert [vm(c, name)["node_limit"] for c in (a, b)] == [["hv1", "hv2"]] * 2
        r = a.simulate_post(f"{V1}/vm/{name}/node", params={"node": "hv2", "action": "move"})
        assert r.status_code == 200, r.text
        assert [vm(c, name)["node"] for c in (a, b)] == ["hv2", "hv2"]
        assert listed(b, node="hv2") == [f"rw{j}" for j in range(i + 1)]
        r = b.simulate_post(f"{V1}/vm/{name}/tags", params={"tag": "blue", "action": "add"})
        assert r.status_code == 200, r.text
        assert name in listed(a, tag="blue")
    r = b.simulate_delete(f"{V1}/vm/rw0")
    assert r.status_code == 200, r.text
    for c in (a, b):
        assert "rw0" not in listed(c)
        assert c.simulate_get(f"{V1}/vm/rw0").status_code == 404
    # a node daemon's report (another session) is seen as soon as it is written
    other = stores[0]
    uuid = vm(a, "rw1")["uuid"]
    other.set("vm.observed", {"node": "hv2", "state": "running"}, uuid=uuid)
    other.set("vm.state", "start", uuid=uuid)
    assert [vm(c, "rw1")["running_on"] for c in (a, b)] == ["hv2", "hv2"]


def test_concurrent_defines_through_two_apis_place_on_fresh_loads(apis):
    """Every define through either API at once; with the `vms` selector each goes to the
    node with the fewest VMs, so the VMs end up spread evenly, as if one by one."""
    clients, _stores = apis
    per_thread, errors = 8, []

    def define(client: falcon.testing.TestClient, prefix: str) -> None:
        for i in range(per_thread):
            r = client.simulate_post(f"{V1}/vm", params={"xml": xml(f"{prefix}{i}", 2048),
                                                          "selector": "vms"})
            if r.status_code != 200:
                errors.append(r.text)

    threads = [threading.Thread(target=define, args=(c, f"c{n}{k}-"))
               for n, c in enumerate(clients) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    placed = [v["node"] for v in clients[0].simulate_get(f"{V1}/vm").json]
    counts = sorted(placed.count(n) for n in NODES)
    assert sum(counts) == 4 * per_thread
    assert counts[-1] - counts[0] <= 1, counts


def test_a_define_placed_on_stale_loads_places_again(apis, monkeypatch):
    """A second define commits between the first's placement and its commit: the first's
    version check fails, and it places again, now counting the second's VM."""
    from pvc_plugins.vm_kvm import vms

    (a, b), _stores = apis
    place, raced = vms._place, []

    def racing_place(*args, **kw):
        chosen = place(*args, **kw)
        if not raced:
            raced.append(chosen)
            r = b.simulate_post(f"{V1}/vm", params={"xml": xml("second"), "selector": "vms"})
            assert r.status_code == 200, r.text
        return chosen

    monkeypatch.setattr(vms, "_place", racing_place)
    r = a.simulate_post(f"{V1}/vm", params={"xml": xml("first"), "selector": "vms"})
    assert r.status_code == 200, r.text
    first, second = vm(a, "first")["node"], vm(b, "second")["node"]
    assert raced == [second]            # both were placed on the same empty node at first
    assert first != second
