"""The REST API in process (falcon TestClient) against a real ZooKeeper.

Nodes are seeded by writing their keys through Store + schema, as a node daemon would; the
test acts as the node's daemon where a task must finish.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import falcon.testing
import pytest

from pvc_api.app import create_app
from pvc_api.spec import Route
from pvc_kernel import tasks
from pvc_kernel.config import ApiConfig, NodeConfig
from pvc_kernel.hookspecs import hookimpl
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store, schema

pytestmark = pytest.mark.integration

KEY = "test-api-key-1"
V1 = "/api/v1"


def seed_node(store: Store, name: str, daemon: str = "run", coordinator: str = "secondary",
              domain: str = "ready", cpu: int = 4, mem: int = 8192, used: int = 2048,
              load: float = 0.5, log: str | None = None) -> None:
    """Write a node's keys like its daemon does (registration + one keepalive)."""
    store.set("node.static", {"cpu_count": cpu, "memory_total": mem, "kernel": "6.1.0",
                              "os": "debian", "arch": "x86_64", "pvc_version": "0.1.0"},
              node=name)
    store.set("node.daemon_state", daemon, node=name)
    store.set("node.coordinator_state", coordinator, node=name)
    store.set("node.domain_state", domain, node=name)
    store.set("node.keepalive", str(time.time()), node=name)
    store.set("node.stats", {"host": {"load": load, "memory_total": mem, "memory_used": used,
                                      "memory_free": mem - used}}, node=name)
    if log is not None:
        store.set("node.log", log, node=name)


def make_config(hosts: str, keys: tuple[str, ...] = (KEY,), **api: object) -> NodeConfig:
    return NodeConfig(node="hv1", cluster="testcluster", zookeeper_hosts=[hosts],
                      api=ApiConfig(keys=list(keys), **api))


class SamplePlugin:
    """A plugin adding a route (that fails) and a part of the cluster status."""

    @hookimpl
    def pvc_api_routes(self, api):
        def boom(call):
            """Always fails."""
            raise RuntimeError("plugin bug")

        api.add_route(Route("GET", "/sample/boom", boom, "Fails", zookeeper=False))

    @hookimpl
    def pvc_api_status(self, api):
        return {"vms": {"total": 2, "start": 2}, "networks": 3}


@pytest.fixture
def store(migrated_store):
    return migrated_store


@pytest.fixture
def api(store, zk_hosts):
    plugins = PluginHost()
    plugins.register(SamplePlugin(), "sample")
    return create_app(store, make_config(zk_hosts, wait_timeout=1.5), plugins)


@pytest.fixture
def client(api):
    return falcon.testing.TestClient(api.app, headers={"X-Api-Key": KEY})


@pytest.fixture
def cluster(store):
    """Three coordinators (hv1 primary) and one hypervisor."""
    seed_node(store, "hv1", coordinator="primary", log="\n".join(f"line {i}" for i in range(30)))
    seed_node(store, "hv2", load=1.5)
    seed_node(store, "hv3", daemon="stop", domain="flushed")
    seed_node(store, "hyper4", coordinator="client", cpu=8, mem=16384)
    store.set("config.primary_node", "hv1")
    return store


# -- root, errors, auth --------------------------------------------------------------------

def test_root_and_redirect_are_open(api):
    client = falcon.testing.TestClient(api.app)
    r = client.simulate_get(f"{V1}/")
    assert r.status_code == 200 and r.json == {"message": "PVC API version 1.0"}
    r = client.simulate_get(V1)
    assert r.status_code == 308 and r.headers["location"].endswith("/api/v1/")


def test_unknown_path_wrong_method_and_trailing_slash(client):
    r = client.simulate_get(f"{V1}/nothing")
    assert r.status_code == 404 and "not found" in r.json["message"]
    assert client.simulate_get(f"{V1}/node/").status_code == 404
    r = client.simulate_delete(f"{V1}/status")
    assert r.status_code == 405
    assert r.json == {"message": "The method is not allowed for the requested URL."}


def test_auth_required_failed_and_ok(api, cluster):
    anon = falcon.testing.TestClient(api.app)
    r = anon.simulate_get(f"{V1}/node")
    assert r.status_code == 401
    assert r.json == {"message": "X-Api-Key Authentication required."}
    r = anon.simulate_get(f"{V1}/node", headers={"X-Api-Key": "wrong-key-xx"})
    assert r.json == {"message": "X-Api-Key Authentication failed."} and r.status_code == 401
    assert anon.simulate_get(f"{V1}/node", headers={"X-Api-Key": KEY}).status_code == 200
    # auth comes before parameter validation
    assert anon.simulate_post(f"{V1}/status", params={"state": "bad"}).status_code == 401
    # the open routes
    assert anon.simulate_get(f"{V1}/status/primary_node").status_code == 200
    assert anon.simulate_get(f"{V1}/openapi.json").status_code == 200


def test_no_keys_means_no_auth(store, zk_hosts, caplog):
    with caplog.at_level(logging.WARNING):
        api = create_app(store, make_config(zk_hosts, keys=()))
    assert "without authentication" in caplog.text
    r = falcon.testing.TestClient(api.app).simulate_get(f"{V1}/tasks")
    assert r.status_code == 200 and r.json == {"active": {}, "reserved": {}, "scheduled": {}}


def test_unexpected_error_is_500_with_traceback_in_log(client, caplog):
    with caplog.at_level(logging.ERROR):
        r = client.simulate_get(f"{V1}/sample/boom")
    assert r.status_code == 500 and r.json == {"message": "Internal Server Error"}
    assert "plugin bug" in caplog.text and "Traceback" in caplog.text


# -- cluster status --------------------------------------------------------------------------

def test_status_of_an_empty_cluster(client):
    s = client.simulate_get(f"{V1}/status").json
    assert s["cluster_name"] == "testcluster"
    assert s["cluster_health"] == {"health": 100, "messages": []}
    assert s["nodes"] == {"total": 0} and s["maintenance"] == "false"
    assert s["primary_node"] == "none" and s["upstream_ip"] == "" and s["node_health"] == {}
    assert s["detail"] == {"node": [], "vm": [], "osd": [], "faults": []}
    assert s["resources"]["cpu"] == {"total": 0, "load": 0, "allocated": 0, "utilization": 0}


def test_status_counts_health_resources_and_plugin_parts(client, cluster):
    cluster.set("config.cluster_name", "lab")
    cluster.set("fault", {"id": "DEAD_NODE_hv3", "health_delta": 50, "status": "new",
                          "message": "Node hv3 is dead", "first_reported": "2025-01-01 10:00:00",
                          "last_reported": "2025-01-01 10:05:00", "acknowledged_at": ""},
                fault_id="DEAD_NODE_hv3")
    cluster.set("fault", {"id": "OLD", "health_delta": 30, "status": "ack", "message": "old"},
                fault_id="OLD")
    cluster.set("fault", {"id": "SMALL", "health_delta": 10, "status": "new", "message": "m"},
                fault_id="SMALL")
    s = client.simulate_get(f"{V1}/status").json
    assert s["cluster_name"] == "lab" and s["primary_node"] == "hv1"
    assert s["cluster_health"]["health"] == 40
    assert [m["id"] for m in s["cluster_health"]["messages"]] == ["DEAD_NODE_hv3", "SMALL"]
    assert s["nodes"] == {"total": 4, "run,ready": 3, "stop,flushed": 1}
    mem = s["resources"]["memory"]  # running nodes only (hv3 is stopped)
    assert mem["total"] == 8192 * 2 + 16384 and mem["used"] == 2048 * 3
    assert s["resources"]["cpu"]["total"] == 16 and s["resources"]["cpu"]["load"] == 2.5
    assert {f["id"] for f in s["detail"]["faults"]} == {"DEAD_NODE_hv3", "OLD", "SMALL"}
    assert {"name": "hv3", "daemon_state": "stop", "domain_state": "flushed"} \
        in s["detail"]["node"]
    assert s["vms"] == {"total": 2, "start": 2} and s["networks"] == 3  # from the plugin


def test_maintenance_on_off_and_already(client, store):
    post = client.simulate_post
    assert post(f"{V1}/status", params={"state": "true"}).json == {
        "message": "Successfully set cluster in maintenance mode"}
    assert store.get("config.maintenance") == "true"
    assert post(f"{V1}/status", json={"state": True}).json == {
        "message": "Cluster is already in maintenance mode"}
    r = post(f"{V1}/status", body="state=OFF",
             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.json == {"message": "Successfully set cluster in normal mode"}
    assert client.simulate_get(f"{V1}/status").json["maintenance"] == "false"


@pytest.mark.parametrize("kwargs, needle", [
    ({}, "Missing required parameter 'state'"),
    ({"params": {"state": "perhaps"}}, "Invalid parameter 'state'"),
    ({"json": {"state": [1, 2]}}, "Invalid parameter 'state'"),
    ({"json": ["state"]}, "JSON request body must be an object"),
    ({"body": "{bad json", "headers": {"Content-Type": "application/json"}}, "JSON"),
])
def test_maintenance_bad_input_is_400(client, kwargs, needle):
    r = client.simulate_post(f"{V1}/status", **kwargs)
    assert r.status_code == 400 and needle in r.json["message"]


def test_primary_node_open_204_then_200(api, store):
    anon = falcon.testing.TestClient(api.app)
    r = anon.simulate_get(f"{V1}/status/primary_node")
    assert r.status_code == 204 and r.content == b""
    store.set("config.primary_node", "hv2")
    assert anon.simulate_get(f"{V1}/status/primary_node").json == {"primary_node": "hv2"}


# -- nodes -----------------------------------------------------------------------------------

def test_node_list_fields_and_order(client, cluster):
    nodes = client.simulate_get(f"{V1}/node").json
    assert [n["name"] for n in nodes] == ["hv1", "hv2", "hv3", "hyper4"]
    hv2 = nodes[1]
    assert hv2["daemon_state"] == "run" and hv2["coordinator_state"] == "secondary"
    assert hv2["cpu_count"] == 4 and hv2["load"] == 1.5 and hv2["health"] == "N/A"
    assert hv2["memory"] == {"total": 8192, "allocated": 0, "provisioned": 0, "used": 2048,
                             "free": 6144}
    assert hv2["vcpu"] == {"total": 4, "allocated": 0} and hv2["running_domains"] == []
    assert hv2["pvc_version"] == "0.1.0" and hv2["arch"] == "x86_64"
    assert abs(hv2["keepalive"] - time.time()) < 60


def _eventually(fn, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not fn():
        assert time.monotonic() < deadline, "no change seen"
        time.sleep(0.02)


def test_cached_node_reads_follow_changes(client, cluster, api):
    """Node reads come from the API's view: changes show up at once, deleted nodes go."""
    assert client.simulate_get(f"{V1}/node/hv2").json[0]["daemon_state"] == "run"
    assert api.store.view.ready
    assert api.store.view.exists(schema.path("node.daemon_state", node="hv2"))
    cluster.set("node.daemon_state", "dead", node="hv2")
    assert client.simulate_get(f"{V1}/node/hv2").json[0]["daemon_state"] == "dead"
    seed_node(cluster, "hv5")
    assert len(client.simulate_get(f"{V1}/node").json) == 5
    cluster.delete("node", node="hv5")
    _eventually(lambda: client.simulate_get(f"{V1}/node/hv5").status_code == 404)
    assert len(client.simulate_get(f"{V1}/node").json) == 4


def test_node_with_missing_keys_reads_zeros(client, store):
    store.set("node.daemon_state", "init", node="bare")
    (node,) = client.simulate_get(f"{V1}/node/bare").json
    assert node["cpu_count"] == 0 and node["memory"]["total"] == 0 and node["load"] == 0.0
    assert node["domain_state"] == "unknown" and node["keepalive"] == 0.0


@pytest.mark.parametrize("params, names", [
    ({"limit": "y"}, ["hyper4"]),
    ({"limit": "h"}, ["hv1", "hv2", "hv3", "hyper4"]),
    ({"limit": "^hv"}, ["hv1", "hv2", "hv3"]),
    ({"limit": "4$"}, ["hyper4"]),
    ({"limit": "^hv1$"}, ["hv1"]),
    ({"daemon_state": "stop"}, ["hv3"]),
    ({"coordinator_state": "client", "domain_state": "flushed"}, ["hv3", "hyper4"]),
    ({"limit": "^hv", "coordinator_state": "primary"}, ["hv1"]),
])
def test_node_list_filters(client, cluster, params, names):
    assert [n["name"] for n in client.simulate_get(f"{V1}/node", params=params).json] == names


def test_node_list_errors(client, cluster):
    r = client.simulate_get(f"{V1}/node", params={"limit": "zzz"})
    assert r.status_code == 404 and r.json == {"message": "Node not found."}
    r = client.simulate_get(f"{V1}/node", params={"limit": "hv[("})
    assert r.status_code == 400 and r.json["message"].startswith("Regex Error:")
    r = client.simulate_get(f"{V1}/node", params={"daemon_state": "sleepy"})
    assert r.status_code == 400 and "'daemon_state'" in r.json["message"]


def test_empty_node_list_is_404(client):
    assert client.simulate_get(f"{V1}/node").status_code == 404


def test_one_node_and_its_states(client, cluster):
    r = client.simulate_get(f"{V1}/node/hv1")
    assert r.status_code == 200 and len(r.json) == 1 and r.json[0]["name"] == "hv1"
    get = client.simulate_get
    assert get(f"{V1}/node/hv3/daemon-state").json == {"name": "hv3", "daemon_state": "stop"}
    assert get(f"{V1}/node/hv1/coordinator-state").json == {
        "name": "hv1", "coordinator_state": "primary"}
    assert get(f"{V1}/node/hv3/domain-state").json == {"name": "hv3", "domain_state": "flushed"}
    for path in ("/node/hv9", "/node/hv9/daemon-state", "/node/..",
                 "/node/a%20b/domain-state", "/node/hv9/coordinator-state"):
        r = get(V1 + path)
        assert r.status_code == 404 and r.json == {"message": "Node not found."}, path


def test_node_log(client, cluster):
    assert client.simulate_get(f"{V1}/node/hv1/log").json == {
        "name": "hv1", "data": "\n".join(f"line {i}" for i in range(20, 30))}
    r = client.simulate_get(f"{V1}/node/hv1/log", params={"lines": "2"})
    assert r.json["data"] == "line 28\nline 29"
    assert client.simulate_get(f"{V1}/node/hv1/log", params={"lines": 0}).json["data"] == ""
    assert client.simulate_get(f"{V1}/node/hv2/log").json == {"name": "hv2", "data": ""}
    r = client.simulate_get(f"{V1}/node/hv9/log")
    assert r.status_code == 400 and "No node named hv9" in r.json["message"]
    for bad in ("-1", "ten", "1.5"):
        r = client.simulate_get(f"{V1}/node/hv1/log", params={"lines": bad})
        assert r.status_code == 400 and "'lines'" in r.json["message"], bad


# -- coordinator state -----------------------------------------------------------------------

def _coord(client, node, state):
    return client.simulate_post(f"{V1}/node/{node}/coordinator-state", params={"state": state})


def test_primary_handover_requests(client, cluster):
    assert _coord(client, "hv2", "primary").json == {
        "message": "Setting node hv2 in primary coordinator state."}
    assert cluster.get("config.desired_primary") == "hv2"
    assert _coord(client, "hv1", "primary").json == {
        "message": "Node hv1 is already in primary coordinator state."}
    assert _coord(client, "hv2", "secondary").json == {
        "message": "Node hv2 is already in secondary coordinator state."}
    cluster.set("config.desired_primary", "")
    # secondary on the primary: the other running secondary coordinator (hv3 is stopped)
    assert _coord(client, "hv1", "secondary").json == {
        "message": "Setting node hv1 in secondary coordinator state."}
    assert cluster.get("config.desired_primary") == "hv2"


@pytest.mark.parametrize("node, state, message", [
    ("hv9", "primary", "ERROR: No node named hv9 is present in the cluster."),
    ("hyper4", "primary", "ERROR: Cannot change coordinator state on non-coordinator node hyper4"),
    ("hv3", "primary", "ERROR: Node hv3 is not active"),
    ("hv1", "sideways", "Invalid parameter 'state'"),
])
def test_coordinator_state_errors(client, cluster, node, state, message):
    r = _coord(client, node, state)
    assert r.status_code == 400 and message in r.json["message"]


def test_secondary_without_another_coordinator(client, cluster):
    cluster.set("node.daemon_state", "dead", node="hv2")
    r = _coord(client, "hv1", "secondary")
    assert r.status_code == 400 and "No other coordinator" in r.json["message"]


# -- domain state (flush / ready) and tasks -----------------------------------------------------

def _domain(client, node, state, **extra):
    return client.simulate_post(f"{V1}/node/{node}/domain-state",
                                params={"state": state, **extra})


def test_flush_writes_desired_state_and_task_together(client, cluster):
    r = _domain(client, "hv2", "flush")
    assert r.status_code == 200
    assert r.json["message"] == "Removing node hv2 from active service."
    task_id = r.json["task_id"]
    assert cluster.get("node.desired_domain_state", node="hv2") == "flushed"
    record = tasks.get_task(cluster, task_id)
    assert record["type"] == "node.flush" and record["owner"] == "hv2"
    assert record["state"] == tasks.PENDING
    # visible through the task routes
    status = client.simulate_get(f"{V1}/tasks/{task_id}").json
    assert status == {"state": "PENDING", "current": 0, "total": 1,
                      "status": "Pending job start", "result": None, "id": task_id,
                      "type": "node.flush", "owner": "hv2"}
    listed = client.simulate_get(f"{V1}/tasks", params={"detail": "true"}).json
    assert [t["id"] for t in listed] == [task_id]
    reserved = client.simulate_get(f"{V1}/tasks").json["reserved"]["pvcworkerd@hv2"]
    assert [t["id"] for t in reserved] == [task_id]
    # ready: a second, unflush task; the desired state is overwritten (version-checked)
    r = _domain(client, "hv2", "ready")
    assert r.json["message"] == "Restoring node hv2 to active service."
    assert cluster.get("node.desired_domain_state", node="hv2") == "ready"
    assert tasks.get_task(cluster, r.json["task_id"])["type"] == "node.unflush"


def test_flush_nothing_to_do(client, cluster):
    cluster.set("node.desired_domain_state", "flushed", node="hv3")
    assert _domain(client, "hv3", "flush").json == {"message": "Node hv3 is already flushed."}
    assert _domain(client, "hv1", "ready").json == {"message": "Node hv1 is already ready."}
    assert tasks.list_tasks(cluster) == []


def _act_as_node(hosts: str, node: str, state: str, status: str) -> threading.Thread:
    """The node's daemon: pick up its pending task, run it a moment, finish it."""
    def run():
        s = Store(hosts)
        s.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                for rec in tasks.list_tasks(s):
                    if rec["owner"] == node and rec["state"] == tasks.PENDING:
                        tasks.update_task(s, rec["id"], state=tasks.RUNNING, status="Running")
                        time.sleep(0.3)
                        tasks.update_task(s, rec["id"], state=state, status=status,
                                          finished=time.time())
                        return
                time.sleep(0.05)
        finally:
            s.stop()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_flush_wait_success(client, cluster, zk_hosts):
    node = _act_as_node(zk_hosts, "hv2", tasks.SUCCESS, "Flushed")
    r = _domain(client, "hv2", "flush", wait="yes")
    node.join(5)
    assert r.status_code == 200
    assert r.json["message"] == "Removed node hv2 from active service."
    assert tasks.get_task(cluster, r.json["task_id"])["state"] == tasks.SUCCESS


def test_ready_wait_failure_is_400_with_task_status(client, cluster, zk_hosts):
    node = _act_as_node(zk_hosts, "hv3", tasks.FAILURE, "RuntimeError: no target node")
    r = _domain(client, "hv3", "ready", wait="True")
    node.join(5)
    assert r.status_code == 400 and r.json["message"] == "RuntimeError: no target node"


def test_flush_wait_timeout_is_202_with_location(client, cluster):
    r = _domain(client, "hv2", "flush", wait="1")  # nobody runs it; wait_timeout is 1.5 s
    assert r.status_code == 202
    task_id = r.json["task_id"]
    assert r.headers["location"].endswith(f"/api/v1/tasks/{task_id}")
    assert r.json["task_name"] == "node.flush" and r.json["run_on"] == "hv2"


@pytest.mark.parametrize("node, params, message", [
    ("hv9", {"state": "flush"}, "ERROR: No node named hv9 is present in the cluster."),
    ("hv1", {"state": "drain"}, "Invalid parameter 'state'"),
    ("hv1", {}, "Missing required parameter 'state'"),
    ("hv1", {"state": "flush", "wait": "maybe"}, "Invalid parameter 'wait'"),
])
def test_domain_state_errors(client, cluster, node, params, message):
    r = client.simulate_post(f"{V1}/node/{node}/domain-state", params=params)
    assert r.status_code == 400 and message in r.json["message"]
    assert tasks.list_tasks(cluster) == []


def test_domain_state_from_multipart_form(client, cluster):
    body = (b"--XX\r\nContent-Disposition: form-data; name=\"state\"\r\n\r\nflush\r\n--XX--\r\n")
    r = client.simulate_post(f"{V1}/node/hv2/domain-state", body=body,
                             headers={"Content-Type": "multipart/form-data; boundary=XX"})
    assert r.status_code == 200 and "task_id" in r.json


def test_unknown_task_reads_pending_or_404_with_detail(client):
    for task_id in ("deadbeef", "..", "a b"):
        r = client.simulate_get(f"{V1}/tasks/{task_id}")
        assert r.status_code == 200 and r.json["state"] == "PENDING"  # as in the original
        r = client.simulate_get(f"{V1}/tasks/{task_id}", params={"detail": "true"})
        assert r.status_code == 404 and r.json == {"message": "Task not found."}


# -- OpenAPI and schemathesis --------------------------------------------------------------------

def test_openapi_lists_every_route_once(api, client):
    doc = client.simulate_get(f"{V1}/openapi.json").json
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert ops == {(r.method, r.path) for r in api.routes}
    assert ("GET", "/sample/boom") in ops  # plugin routes go through the same table
    node_post = doc["paths"]["/node/{node}/domain-state"]["post"]
    params = {p["name"]: p for p in node_post["parameters"]}
    assert params["state"]["schema"]["enum"] == ["flush", "ready"] and params["state"]["required"]
    assert params["wait"]["schema"] == {"type": "boolean", "default": False}
    assert doc["paths"]["/"]["get"]["security"] == []
    assert doc["servers"] == [{"url": "http://falconframework.org/api/v1"}]


def _fuzz(app, max_examples: int = 40, max_time: int | None = None, allowed: tuple[str, ...] = (),
          known: dict[str, list[str]] | None = None) -> tuple[list[int], list[str], set[str]]:
    """Run schemathesis over ``app``'s OpenAPI document.

    Returns the response statuses, the problems found and the operations ("GET /x") that
    got requests. ``max_time``: repeat the phases until that many seconds have passed.
    ``allowed``: 5xx statuses that are no server error here (503: a backend is missing).
    ``known``: parameter (``path.vm``, ``query.node``) → existing names, used half the time
    so that requests get past "not found" into the handlers.
    """
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import Status, events

    settings = {
        "headers": {"X-Api-Key": KEY},
        "seed": 1,
        "generation": {"max-examples": max_examples, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in (
            "not_a_server_error", "response_schema_conformance", "status_code_conformance",
            "content_type_conformance", "negative_data_rejection")}},
    }
    if known:
        settings["dictionaries"] = {key: {"values": values} for key, values in known.items()}
        settings["parameters"] = {key: {"dictionary": key, "probability": 0.5}
                                  for key in known}
    if allowed:
        settings["checks"]["not_a_server_error"]["expected-statuses"] = [
            "2xx", "3xx", "4xx", *allowed]
    if max_time:
        settings["max-time"] = max_time
    config = SchemathesisConfig.from_dict(settings)
    schema_ = schemathesis.openapi.from_wsgi(f"{V1}/openapi.json", app, config=config)
    problems, statuses, operations = [], [], set()
    for event in schemathesis.engine.from_schema(schema_).execute():
        if isinstance(event, (events.NonFatalError, events.FatalError)):
            problems.append(f"error: {getattr(event, 'value', None) or event.exception}")
        if isinstance(event, events.ScenarioFinished):
            rec = event.recorder
            if rec.interactions:
                operations.add(rec.label)
            statuses += [i.response.status_code for i in rec.interactions.values() if i.response]
            for case_id, checks in rec.checks.items():
                failed = [c.name for c in checks if c.status == Status.FAILURE]
                if failed:
                    problems.append(f"{rec.label}: {', '.join(failed)}: "
                                    f"{_describe(rec, case_id)}")
    return statuses, problems, operations


def _describe(rec, case_id: str) -> str:
    """The request and answer of one failed case, short."""
    node, reply = rec.cases.get(case_id), rec.interactions.get(case_id)
    case = node.value if node else None
    sent = f"path={case.path_parameters} query={case.query} body={case.body!r}" if case else ""
    got = (f"{reply.response.status_code} {reply.response.content[:200]!r}"
           if reply and reply.response else "no answer")
    return f"{sent} -> {got}"


def _operations(api) -> set[str]:
    """Every operation schemathesis should exercise (it leaves out the document itself)."""
    return {f"{r.method} {r.path}" for r in api.routes if r.path != "/openapi.json"}


def test_schemathesis_finds_no_server_errors_or_schema_violations(store, zk_hosts):
    seed_node(store, "hv1", coordinator="primary")
    seed_node(store, "hv2")
    # no plugin routes here (the sample plugin's route fails on purpose)
    api = create_app(store, make_config(zk_hosts, wait_timeout=1))
    statuses, problems, operations = _fuzz(api.app)
    assert problems == [], "\n".join(problems)
    assert operations == _operations(api)
    assert len(statuses) > 100, "schemathesis made too few requests"
    assert not [s for s in statuses if s >= 500]


BUILTIN_PLUGINS = ("vm_kvm", "storage_ceph", "fencing_ipmi", "net_bridged", "net_vxlan",
                   "provisioner", "vm_protect")


def _domain_xml(name: str) -> str:
    """A small libvirt domain XML (never started: there is no libvirtd here)."""
    return (f"<domain type='kvm'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
            "<memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os>"
            "<devices></devices></domain>")


def test_schemathesis_over_the_builtin_plugin_routes(store, zk_hosts, tmp_path):
    """The routes of the real plugins, loaded from their entry points as pvcapid does, with
    no Ceph and no libvirtd behind them: every answer is a 2xx/4xx (or the 501 of a route
    not implemented yet) the document allows."""
    from pvc_kernel.plugins import available

    seed_node(store, "hv1", coordinator="primary")
    seed_node(store, "hv2")
    store.set("node.stats", {"host": {"load": 0.5, "memory_total": 8192, "memory_used": 2048,
                                      "memory_free": 6144},
                             "bmc": {"address": "192.0.2.1", "reachable": False}}, node="hv1")
    store.set("config.primary_node", "hv1")
    plugins = PluginHost()
    plugins.load([name for name in available() if name not in BUILTIN_PLUGINS])
    assert sorted(plugins.names) == sorted(BUILTIN_PLUGINS)
    config = make_config(zk_hosts, wait_timeout=1)
    config.plugin_sections["storage_ceph"] = {"ceph_conf": str(tmp_path / "no-ceph.conf")}
    api = create_app(store, config, plugins)
    assert any(r.path.startswith("/storage/ceph/") for r in api.routes)
    assert any(r.path.startswith("/vm") for r in api.routes)
    client = falcon.testing.TestClient(api.app, headers={"X-Api-Key": KEY})
    for node in ("hv1", "hv2"):  # both run a hypervisor (as their VM agent reports it)
        store.set("vm_kvm.node", {"memory_total": 8192}, node=node)
    for name, node in (("web1", "hv1"), ("db1", "hv2")):
        r = client.simulate_post(f"{V1}/vm", params={"xml": _domain_xml(name), "node": node})
        assert r.status_code == 200, r.text
    client.simulate_post(f"{V1}/vm/db1/state", params={"state": "start"})
    store.set("ceph.osd", {"node": "hv1", "device": "/dev/sdb", "fsid": "f-0"}, osd="0")
    store.set("ceph.osd", {"node": "hv2", "device": "/dev/sdb", "fsid": "f-1"}, osd="1")
    r = client.simulate_post(f"{V1}/network", params={"vni": 100, "description": "office",
                                                      "nettype": "managed"})
    assert r.status_code == 200, r.text
    r = client.simulate_post(f"{V1}/network/office/acl", params={"description": "ssh",
                                                                 "rule": "tcp dport 22 accept"})
    assert r.status_code == 200, r.text
    for path, params in (("template/system", {"name": "small", "vcpus": 1, "vram": 512}),
                         ("template/network", {"name": "web"}),
                         ("template/network/web/net", {"vni": "100"}),
                         ("template/storage", {"name": "root"}),
                         ("template/storage/root/disk", {"disk_id": "sda", "pool": "vms",
                                                         "disk_size": 4}),
                         ("script", {"name": "noop", "data": "class VMBuilderScript: pass"}),
                         ("userdata", {"name": "init", "data": "#!/bin/sh"}),
                         ("profile", {"name": "web", "profile_type": "provisioner",
                                      "system_template": "small", "network_template": "web",
                                      "storage_template": "root", "script": "noop"})):
        r = client.simulate_post(f"{V1}/provisioner/{path}", params=params)
        assert r.status_code == 200, r.text
    known = {"path.vm": ["web1", "db1"], "path.node": ["hv1", "hv2"],
             "query.node": ["hv1", "hv2"], "path.osdid": ["0", "1"],
             "path.vni": ["100", "office"], "path.description": ["ssh"],
             "path.template": ["small", "web", "root"], "path.disk_id": ["sda"],
             "path.script": ["noop"], "path.userdata": ["init"], "path.profile": ["web"]}
    started = time.monotonic()
    statuses, problems, operations = _fuzz(api.app, max_examples=15, max_time=60,
                                           allowed=("501",), known=known)
    assert problems == [], "\n".join(problems)
    assert time.monotonic() - started < 90
    assert operations == _operations(api)
    assert len(statuses) > 2000, "schemathesis made too few requests"
    assert not [s for s in statuses if s >= 500 and s != 501]
    assert 501 in statuses  # POST /vm/automirror
    r = client.simulate_get(f"{V1}/storage/ceph/pool")  # the Ceph routes without Ceph: 400
    assert r.status_code == 400 and "Ceph storage is not configured" in r.json["message"]


# -- Prometheus metrics ------------------------------------------------------------------------

def _families(text: str) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_show_what_the_status_and_nodes_show(cluster, store, zk_hosts):
    from pvc_plugins.health.plugin import HealthPlugin

    plugins = PluginHost()
    plugins.register(HealthPlugin(), "health")           # Node health from the keepalive
    client = falcon.testing.TestClient(create_app(store, make_config(zk_hosts), plugins).app,
                                       headers={"X-Api-Key": KEY})
    stats = {"host": {"load": 0.5, "memory_total": 8192, "memory_used": 2048,
                      "memory_free": 6144},
             "health": {"health": 90, "at": 1, "checks": [
                 {"name": "load", "health_delta": 10, "message": "busy", "data": {},
                  "last_run": 1, "state": "problem", "fault": None}]}}
    store.set("node.stats", stats, node="hv2")
    store.set("fault", {"id": "DEAD_NODE_hv3", "health_delta": 50, "status": "new",
                        "message": "Node hv3 is dead"}, fault_id="DEAD_NODE_hv3")
    bare = falcon.testing.TestClient(client.app)                 # no API key: still served
    r = bare.simulate_get(f"{V1}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    found = _families(r.text)
    status = client.simulate_get(f"{V1}/status").json
    (health,) = found["pvc_cluster_health"]
    assert health.value == status["cluster_health"]["health"] == 50
    assert {s.labels["status"]: s.value for s in found["pvc_cluster_faults"]} == {"new": 1,
                                                                                  "ack": 0}
    nodes = {s.labels["node"]: s.value for s in found["pvc_node_health"]}
    assert nodes["hv2"] == 90 and nodes["hv1"] == -1                # hv1 reports no checks
    assert [(s.labels, s.value) for s in found["pvc_node_health_check_delta"]] == [
        ({"node": "hv2", "check": "load"}, 10)]
    assert {s.labels["node"]: s.value for s in found["pvc_node_memory_total_bytes"]}["hyper4"] \
        == 16384 * 2**20
    (info,) = found["pvc_info"]
    assert info.name == "pvc_info" and info.labels["cluster"] == status["cluster_name"]
    assert found["pvc_nodes"][0].value == 4
    assert {s.labels["server"]: s.value for s in found["pvc_zookeeper_up"]} and all(
        s.value == 1 for s in found["pvc_zookeeper_up"])
    # one group at a time; the answer is kept for metrics_cache seconds
    assert "pvc_cluster_health" in bare.simulate_get(f"{V1}/metrics/health").text
    assert "pvc_zookeeper_up" not in bare.simulate_get(f"{V1}/metrics/health").text
    store.set("fault", {"id": "X", "health_delta": 10, "status": "new", "message": "x"},
              fault_id="X")
    again = _families(bare.simulate_get(f"{V1}/metrics/health").text)
    assert again["pvc_cluster_health"][0].value == 50               # cached (5 s)


def test_metrics_may_need_the_key_or_be_off(store, zk_hosts):
    api = create_app(store, make_config(zk_hosts, metrics_auth=True, metrics_cache=0))
    bare = falcon.testing.TestClient(api.app)
    assert bare.simulate_get(f"{V1}/metrics").status_code == 401
    keyed = falcon.testing.TestClient(api.app, headers={"X-Api-Key": KEY})
    assert keyed.simulate_get(f"{V1}/metrics/resource").status_code == 200
    bearer = bare.simulate_get(f"{V1}/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200                        # what Prometheus sends
    wrong = bare.simulate_get(f"{V1}/metrics", headers={"Authorization": "Bearer nope-nope"})
    assert wrong.status_code == 401
    doc = keyed.simulate_get(f"{V1}/openapi.json").json
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    off = create_app(store, make_config(zk_hosts, metrics=False))
    r = falcon.testing.TestClient(off.app).simulate_get(f"{V1}/metrics")
    assert r.status_code == 404
