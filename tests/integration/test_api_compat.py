"""Issue 10: API v1 shapes the original's own client reads, and what `pvc node list` shows
for a fenced node (defect 8). In process (falcon TestClient) against a real ZooKeeper."""

from __future__ import annotations

import uuid

import falcon.testing
import pytest
from click.testing import CliRunner

from pvc_api.app import create_app
from pvc_api.server import create_server
from pvc_kernel import tasks
from pvc_kernel.plugins import PluginHost
from pvc_plugins.storage_ceph.plugin import StorageCephPlugin as ceph_plugin
from pvc_plugins.vm_kvm.plugin import VmKvmPlugin as vm_plugin
from pvc_plugins.vm_protect.plugin import VmProtectPlugin as protect_plugin
from tests.integration.test_api_routes import KEY, V1, make_config, seed_node
from tests.support import apiserver

pytestmark = pytest.mark.integration


def _client(store, zk_hosts, tmp_path, *plugins) -> falcon.testing.TestClient:
    host = PluginHost()
    for name, module in plugins:
        host.register(module, name)
    config = make_config(zk_hosts, wait_timeout=1)
    config.plugin_sections["storage_ceph"] = {"ceph_conf": str(tmp_path / "no-ceph.conf")}
    api = create_app(store, config, host)
    return falcon.testing.TestClient(api.app, headers={"X-Api-Key": KEY})


@pytest.fixture
def store(migrated_store):
    return migrated_store


@pytest.fixture
def client(store, zk_hosts, tmp_path):
    return _client(store, zk_hosts, tmp_path)


@pytest.fixture
def plugin_client(store, zk_hosts, tmp_path):
    seed_node(store, "hv1", coordinator="primary")
    store.set("config.primary_node", "hv1")
    client = _client(store, zk_hosts, tmp_path, ("vm_kvm", vm_plugin),
                     ("storage_ceph", ceph_plugin), ("vm_protect", protect_plugin))
    store.set("vm_kvm.node", {"memory_total": 8192}, node="hv1")  # runs a hypervisor
    return client


# -- tasks: the original's shapes by default, our records with detail=true -------------------

def _original_cli_task_list(data: dict) -> list[dict]:
    """What the original's client (pvc.lib.common.task_status) makes of GET /tasks."""
    out = []
    for kind in ("active", "reserved", "scheduled"):
        for worker, jobs in (data.get(kind) or {}).items():
            for job in jobs:
                out.append({"type": "pending" if kind == "reserved" else kind,
                            "worker": worker, "id": job.get("id"), "name": job.get("name"),
                            "args": job.get("args"), "kwargs": job.get("kwargs")})
    return out


def test_task_list_has_the_original_celery_shape(client, store):
    seed_node(store, "hv1", coordinator="primary")
    seed_node(store, "hv2")
    running = tasks.create_task(store, "node.flush", "hv1", {"state": "flushed"})
    tasks.update_task(store, running["id"], state=tasks.RUNNING, started=1700000000.0)
    pending = tasks.create_task(store, "osd.add", "hv2", {"device": "/dev/sdb"})
    done = tasks.create_task(store, "node.unflush", "hv2")
    tasks.update_task(store, done["id"], state=tasks.SUCCESS)

    r = client.simulate_get(f"{V1}/tasks")
    assert r.status_code == 200
    assert set(r.json) == {"active", "reserved", "scheduled"}
    assert r.json["scheduled"] == {"pvcworkerd@hv1": [], "pvcworkerd@hv2": []}
    (active,) = r.json["active"]["pvcworkerd@hv1"]
    assert active["id"] == running["id"] and active["name"] == "node.flush"
    assert active["hostname"] == "pvcworkerd@hv1" and active["time_start"] == 1700000000.0
    assert active["kwargs"] == {"state": "flushed"} and active["args"] == []
    assert r.json["reserved"] == {"pvcworkerd@hv1": [], "pvcworkerd@hv2": [
        {**r.json["reserved"]["pvcworkerd@hv2"][0], "id": pending["id"], "name": "osd.add"}]}
    seen = _original_cli_task_list(r.json)
    assert [(t["type"], t["worker"], t["id"]) for t in seen] == [
        ("active", "pvcworkerd@hv1", running["id"]), ("pending", "pvcworkerd@hv2", pending["id"])]

    r = client.simulate_get(f"{V1}/tasks", params={"detail": "true"})
    assert [t["id"] for t in r.json] == [running["id"], pending["id"], done["id"]]
    assert r.json[0]["owner"] == "hv1" and r.json[2]["state"] == "SUCCESS"


def test_task_list_without_nodes_or_tasks():
    from pvc_api.resources.task import celery_list

    assert celery_list([], []) == {"active": {}, "reserved": {}, "scheduled": {}}


def test_task_status_reads_pending_for_an_unknown_id(client, store):
    for task_id in ("deadbeef", "..", "a b"):
        r = client.simulate_get(f"{V1}/tasks/{task_id}")
        assert r.status_code == 200 and r.json == {
            "state": "PENDING", "current": 0, "total": 1, "status": "Pending job start"}
        r = client.simulate_get(f"{V1}/tasks/{task_id}", params={"detail": "true"})
        assert r.status_code == 404 and r.json == {"message": "Task not found."}
    record = tasks.create_task(store, "node.flush", "hv1")
    r = client.simulate_get(f"{V1}/tasks/{record['id']}")
    assert r.json["state"] == "PENDING" and r.json["type"] == "node.flush"
    assert r.json["id"] == record["id"] and "args" not in r.json
    r = client.simulate_get(f"{V1}/tasks/{record['id']}", params={"detail": "true"})
    assert r.json == record


# -- storage: a clear 400 while Ceph is not configured ----------------------------------------

@pytest.mark.parametrize("method, path", [
    ("GET", "/storage/ceph/status"), ("GET", "/storage/ceph/utilization"),
    ("GET", "/storage/ceph/pool"), ("GET", "/storage/ceph/volume"),
    ("GET", "/storage/ceph/volume/vms/disk0"), ("GET", "/storage/ceph/snapshot"),
    ("GET", "/storage/ceph/osd"), ("GET", "/storage/ceph/osd/0/state"),
    ("GET", "/storage/ceph/benchmark"), ("DELETE", "/storage/ceph/volume/vms/disk0"),
])
def test_storage_without_ceph_is_400_with_the_reason(plugin_client, method, path):
    r = plugin_client.simulate_request(method, f"{V1}{path}")
    assert r.status_code == 400, (path, r.status_code, r.text)
    assert r.json["message"].startswith("Ceph storage is not configured on node hv1 (")


def test_storage_stubs_stay_null(plugin_client):
    for path in ("/storage", "/storage/ceph"):
        r = plugin_client.simulate_get(f"{V1}{path}")
        assert r.status_code == 200 and r.json is None


# -- /vm/autobackup and /vm/automirror are not VM names for POST --------------------------------

def _domain_xml(name: str) -> str:
    return (f"<domain type='kvm'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
            "<memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os>"
            "<devices></devices></domain>")


@pytest.mark.parametrize("job", ["autobackup", "automirror"])
def test_fixed_vm_routes_win_over_the_vm_name(plugin_client, job):
    r = plugin_client.simulate_post(f"{V1}/vm/{job}", params={"email_recipients": "a@b.c"})
    if job == "autobackup":                     # the vm_protect plugin's
        assert r.status_code == 202 and r.json["task_name"] == "cluster.autobackup", r.text
        assert "no mail is sent" in r.json["message"]
    else:
        assert r.status_code == 501
        assert r.json == {"message": f"POST /vm/{job} (task cluster.{job}) is not implemented "
                                     f"by this PVC API yet; nothing was done."}
    # the other methods still take the segment as a VM name, as in the original
    assert plugin_client.simulate_get(f"{V1}/vm/{job}").json == {"message": "VM not found."}
    r = plugin_client.simulate_delete(f"{V1}/vm/{job}")
    assert r.status_code == 400 and "Could not find VM" in r.json["message"]
    r = plugin_client.simulate_post(f"{V1}/vm", params={"xml": _domain_xml(job)})
    assert r.status_code == 200, r.text
    assert plugin_client.simulate_get(f"{V1}/vm/{job}").json[0]["name"] == job
    assert plugin_client.simulate_get(f"{V1}/vm/{job}/state").json["state"] == "stop"


def test_undefine_and_remove_messages_are_the_originals(plugin_client):
    for name in ("keep1", "gone1"):
        r = plugin_client.simulate_post(f"{V1}/vm", params={"xml": _domain_xml(name)})
        assert r.status_code == 200, r.text
    r = plugin_client.simulate_delete(f"{V1}/vm/keep1", params={"delete_disks": "False"})
    assert r.status_code == 200 and r.json == {"message": "Undefined VM 'keep1' from the "
                                                          "cluster."}
    r = plugin_client.simulate_delete(f"{V1}/vm/gone1", params={"delete_disks": "True"})
    assert r.status_code == 200 and r.json == {"message": "Removed VM 'gone1' from the "
                                                          "cluster."}


# -- defect 8: a fenced node is neither primary nor running anything --------------------------

def _seed_fenced_cluster(store) -> None:
    """hv1 was primary with 3 VMs, died and was fenced; hv2 took over and runs them."""
    stale = {"host": {"load": 2.5, "memory_total": 8192, "memory_used": 4096,
                      "memory_free": 4096},
             "vm": {"domains_count": 3, "running_domains": ["a", "b", "c"],
                    "vcpu_allocated": 3, "memory_allocated": 768, "memory_provisioned": 768}}
    seed_node(store, "hv1", daemon="fenced", coordinator="primary", domain="fence-flush")
    store.set("node.stats", stale, node="hv1")
    seed_node(store, "hv2", coordinator="primary")
    store.set("node.stats", {**stale, "vm": {**stale["vm"], "running_domains": ["a", "b"],
                                             "domains_count": 2}}, node="hv2")
    seed_node(store, "hv3", daemon="dead", coordinator="takeover")
    seed_node(store, "hv4")
    store.set("config.primary_node", "hv2")


def test_a_fenced_node_shows_what_is_true(plugin_client, store):
    _seed_fenced_cluster(store)
    listed = {n["name"]: n for n in plugin_client.simulate_get(f"{V1}/node").json}
    assert {n: x["coordinator_state"] for n, x in listed.items()} == {
        "hv1": "secondary", "hv2": "primary", "hv3": "secondary", "hv4": "secondary"}
    hv1 = listed["hv1"]
    assert hv1["daemon_state"] == "fenced"
    assert (hv1["domains_count"], hv1["running_domains"], hv1["load"]) == (0, [], 0.0)
    assert hv1["vcpu"] == {"total": 4, "allocated": 0}
    assert hv1["memory"] == {"total": 8192, "allocated": 0, "provisioned": 0, "used": 0,
                             "free": 0}
    assert listed["hv2"]["domains_count"] == 2 and listed["hv2"]["load"] == 2.5
    r = plugin_client.simulate_get(f"{V1}/node", params={"coordinator_state": "primary"})
    assert [n["name"] for n in r.json] == ["hv2"]
    assert plugin_client.simulate_get(f"{V1}/node/hv1/coordinator-state").json == {
        "name": "hv1", "coordinator_state": "secondary"}
    assert plugin_client.simulate_get(f"{V1}/node/hv1").json[0]["domains_count"] == 0


def test_pvc_node_list_shows_one_primary(store, zk_hosts, monkeypatch, tmp_path):
    """The real CLI over HTTP to the real API (waitress)."""
    import socket
    import threading

    from pvc_cli.main import cli
    from tests.unit.test_cli_support import ENV_VARS

    _seed_fenced_cluster(store)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = PluginHost()
    host.register(vm_plugin, "vm_kvm")
    config = make_config(zk_hosts, wait_timeout=1)
    config.api.port, config.api.threads = port, 2
    api = create_app(store, config, host)
    server = create_server(api, config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for var in ENV_VARS:
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("PVC_CLI_CONFIG", str(tmp_path / "pvc.json"))
        monkeypatch.setenv("PVC_API_HOSTS", f"127.0.0.1:{port}")
        monkeypatch.setenv("PVC_API_KEY", KEY)
        result = CliRunner().invoke(cli, ["--no-colour", "node", "list"])
        assert result.exit_code == 0, result.output
        rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]
                if line.strip()}
        assert [n for n, row in rows.items() if "primary" in row] == ["hv2"]
        assert rows["hv1"][3:7] == ["fenced", "secondary", "fence-flush", "0"]
        result = CliRunner().invoke(cli, ["--no-colour", "node", "info", "hv1"])
        assert result.exit_code == 0, result.output
        info = {line.split(":")[0].strip(): line.split(":", 1)[1].strip()
                for line in result.stdout.splitlines() if ":" in line}
        assert info["Coordinator state"] == "secondary" and info["VMs"] == "0"
    finally:
        api.stopping.set()
        apiserver.stop(server, thread)
