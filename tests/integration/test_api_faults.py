"""The fault routes in process (falcon TestClient) against a real ZooKeeper."""

from __future__ import annotations

import threading
import time

import falcon.testing
import pytest

from pvc_api.app import create_app
from pvc_kernel import faults
from pvc_kernel.config import ApiConfig, NodeConfig
from pvc_kernel.state import Store

pytestmark = pytest.mark.integration

KEY = "test-api-key-1"
V1 = "/api/v1"
T0 = 1_700_000_000.0


@pytest.fixture
def store(migrated_store):
    return migrated_store


@pytest.fixture
def client(store, zk_hosts):
    config = NodeConfig(node="hv1", cluster="testcluster", zookeeper_hosts=[zk_hosts],
                        api=ApiConfig(keys=[KEY]))
    return falcon.testing.TestClient(create_app(store, config).app, headers={"X-Api-Key": KEY})


@pytest.fixture
def seeded(store):
    """Three faults as plugins raise them: reported at different times, one acknowledged."""
    faults.report(store, "bmc-hv2", "Node hv2: its BMC does not answer", 10, at=T0)
    faults.report(store, "fence-hv3-1", "Node hv3 was fenced", 50, at=T0 + 100)
    faults.report(store, "disk-hv1", "Disk sdb on hv1 is slow", 5, at=T0 + 50)
    faults.acknowledge(store, "disk-hv1", at=T0 + 60)
    return store


def ids(reply) -> list[str]:
    return [f["id"] for f in reply.json]


def test_list_default_order_and_fields(client, seeded):
    r = client.simulate_get(f"{V1}/faults")
    assert r.status_code == 200
    assert ids(r) == ["fence-hv3-1", "disk-hv1", "bmc-hv2"]  # last_reported, newest first
    assert r.json[1] == {"id": "disk-hv1", "first_reported": faults.stamp(T0 + 50),
                         "last_reported": faults.stamp(T0 + 50),
                         "acknowledged_at": faults.stamp(T0 + 60), "status": "ack",
                         "health_delta": 5, "message": "Disk sdb on hv1 is slow"}


@pytest.mark.parametrize("key, order", [
    ("last_reported", ["fence-hv3-1", "disk-hv1", "bmc-hv2"]),
    ("first_reported", ["fence-hv3-1", "disk-hv1", "bmc-hv2"]),
    ("acknowledged_at", ["disk-hv1", "bmc-hv2", "fence-hv3-1"]),
    ("status", ["disk-hv1", "bmc-hv2", "fence-hv3-1"]),
    ("health_delta", ["disk-hv1", "bmc-hv2", "fence-hv3-1"]),
    ("message", ["disk-hv1", "bmc-hv2", "fence-hv3-1"]),
])
def test_list_sort_keys(client, seeded, key, order):
    assert ids(client.simulate_get(f"{V1}/faults", params={"sort_key": key})) == order
    assert ids(client.simulate_get(f"{V1}/faults", json={"sort_key": key})) == order


def test_list_bad_sort_key_is_400_and_empty_list_is_200(client):
    r = client.simulate_get(f"{V1}/faults", params={"sort_key": "id"})
    assert r.status_code == 400 and "'sort_key'" in r.json["message"]
    r = client.simulate_get(f"{V1}/faults")
    assert r.status_code == 200 and r.json == []


def test_get_one_is_an_array_even_when_unknown(client, seeded):
    r = client.simulate_get(f"{V1}/faults/bmc-hv2")
    assert r.status_code == 200 and ids(r) == ["bmc-hv2"] and r.json[0]["health_delta"] == 10
    for unknown in ("nothing", "..", "a%20b"):
        r = client.simulate_get(f"{V1}/faults/{unknown}")
        assert r.status_code == 200 and r.json == [], unknown


def test_acknowledge_one_changes_health(client, seeded):
    assert client.simulate_get(f"{V1}/status").json["cluster_health"]["health"] == 40
    r = client.simulate_put(f"{V1}/faults/fence-hv3-1")
    assert r.status_code == 200
    assert r.json == {"message": "Successfully acknowledged fault(s) fence-hv3-1"}
    (fault,) = client.simulate_get(f"{V1}/faults/fence-hv3-1").json
    assert fault["status"] == "ack" and fault["acknowledged_at"] != ""
    status = client.simulate_get(f"{V1}/status").json
    assert status["cluster_health"]["health"] == 90
    assert [m["id"] for m in status["cluster_health"]["messages"]] == ["bmc-hv2"]


def test_acknowledge_and_delete_unknown_are_404(client, seeded):
    for method in (client.simulate_put, client.simulate_delete):
        for unknown in ("nothing", "..", "a%20b"):
            r = method(f"{V1}/faults/{unknown}")
            assert r.status_code == 404, (method, unknown)
        assert method(f"{V1}/faults/nothing").json == {"message": "No fault with ID nothing found"}
    assert len(client.simulate_get(f"{V1}/faults").json) == 3
    assert not seeded.exists("fault", fault_id="nothing")


def test_acknowledge_all(client, seeded):
    r = client.simulate_put(f"{V1}/faults")
    assert r.status_code == 200 and r.json == {
        "message": "Successfully acknowledged fault(s) fence-hv3-1, disk-hv1, bmc-hv2"}
    listed = client.simulate_get(f"{V1}/faults").json
    assert {f["status"] for f in listed} == {"ack"}
    disk = [f for f in listed if f["id"] == "disk-hv1"][0]
    assert disk["acknowledged_at"] == faults.stamp(T0 + 60)  # already acknowledged: unchanged
    assert client.simulate_get(f"{V1}/status").json["cluster_health"] == {
        "health": 100, "messages": []}


def test_delete_one_and_all(client, seeded):
    r = client.simulate_delete(f"{V1}/faults/bmc-hv2")
    assert r.status_code == 200 and r.json == {"message": "Successfully deleted fault(s) bmc-hv2"}
    assert not seeded.exists("fault", fault_id="bmc-hv2")
    assert client.simulate_delete(f"{V1}/faults/bmc-hv2").status_code == 404
    r = client.simulate_delete(f"{V1}/faults")
    assert r.json == {"message": "Successfully deleted fault(s) fence-hv3-1, disk-hv1"}
    assert client.simulate_get(f"{V1}/faults").json == []
    assert seeded.exists("faults")  # the parent key stays
    # the original's texts, also with no fault (its ID list is then empty)
    assert client.simulate_delete(f"{V1}/faults").json == {
        "message": "Successfully deleted fault(s) "}
    assert client.simulate_put(f"{V1}/faults").json == {
        "message": "Successfully acknowledged fault(s) "}


def test_reported_again_after_ack_keeps_ack_unless_message_changes(client, seeded):
    client.simulate_put(f"{V1}/faults/bmc-hv2")
    faults.report(seeded, "bmc-hv2", "Node hv2: its BMC does not answer", 10, at=T0 + 500)
    (fault,) = client.simulate_get(f"{V1}/faults/bmc-hv2").json
    assert fault["status"] == "ack" and fault["last_reported"] == faults.stamp(T0 + 500)
    faults.report(seeded, "bmc-hv2", "Node hv2: its BMC refuses the password", 10, at=T0 + 600)
    (fault,) = client.simulate_get(f"{V1}/faults/bmc-hv2").json
    assert fault["status"] == "new" and fault["acknowledged_at"] == ""
    assert fault["first_reported"] == faults.stamp(T0)


def test_deleted_fault_reported_again_comes_back_new(client, seeded):
    client.simulate_delete(f"{V1}/faults/bmc-hv2")
    faults.report(seeded, "bmc-hv2", "Node hv2: its BMC does not answer", 10, at=T0 + 700)
    (fault,) = client.simulate_get(f"{V1}/faults/bmc-hv2").json
    assert fault["status"] == "new" and fault["first_reported"] == faults.stamp(T0 + 700)


def test_acknowledge_races_with_refreshes(client, store, zk_hosts):
    """A plugin refreshes the fault (another ZooKeeper session) while the API acknowledges it:
    no refresh may bring back a stale ``new`` status, none of the refreshes is lost."""
    faults.report(store, "busy", "same text", 10, at=T0)
    other = Store(zk_hosts, timeout=10)
    other.start()
    stop = threading.Event()
    done = []

    def refresher():
        i = 0
        while not stop.is_set() and i < 400:
            i += 1
            faults.report(other, "busy", "same text", 10, at=T0 + i)
            done.append(i)

    thread = threading.Thread(target=refresher, daemon=True)
    thread.start()
    try:
        while len(done) < 5:
            time.sleep(0.001)
        assert client.simulate_put(f"{V1}/faults/busy").status_code == 200
        seen_after_ack = len(done)
        while len(done) < seen_after_ack + 20 and thread.is_alive():
            (fault,) = client.simulate_get(f"{V1}/faults/busy").json
            assert fault["status"] == "ack"
    finally:
        stop.set()
        thread.join(10)
        other.stop()
    (fault,) = client.simulate_get(f"{V1}/faults/busy").json
    assert fault["status"] == "ack" and fault["last_reported"] == faults.stamp(T0 + done[-1])
