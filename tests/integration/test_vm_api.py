"""The /vm routes in process (falcon TestClient) against real nodes (libvirtd + pvcnoded)."""

from __future__ import annotations

import os
import subprocess

import falcon.testing
import pytest

from pvc_api.app import create_app
from pvc_kernel.config import ApiConfig, NodeConfig
from pvc_kernel.plugins import PluginHost
from pvc_plugins.vm_kvm.plugin import VmKvmPlugin as vm_plugin
from tests.integration import test_vm_support as support
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration
vmcluster = support.vmcluster

KEY = "test-vm-api-key"
V1 = "/api/v1"


@pytest.fixture(scope="module")
def client(vmcluster):
    host = PluginHost()
    host.register(vm_plugin, "vm_kvm")
    cfg = NodeConfig(node="hv1", cluster="vmtest", zookeeper_hosts=[vmcluster.store.hosts],
                     api=ApiConfig(keys=[KEY], wait_timeout=120))
    api = create_app(vmcluster.store, cfg, host)
    c = falcon.testing.TestClient(api.app, headers={"X-Api-Key": KEY})
    yield c
    api.stopping.set()


def test_define_errors_are_clear_4xx(vmcluster, client):
    c = vmcluster
    r = client.simulate_post(f"{V1}/vm", params={"xml": "<domain><name>x</nam"})
    assert r.status_code == 400 and "not valid" in r.json["message"]
    r = client.simulate_post(f"{V1}/vm", params={"xml": c.xml("big", memory=10 ** 8)})
    assert r.status_code == 400 and "does not fit any node" in r.json["message"]
    r = client.simulate_post(f"{V1}/vm", params={"node": "hv9", "xml": c.xml("n9")})
    assert r.status_code == 400 and "hv9" in r.json["message"]
    r = client.simulate_post(f"{V1}/vm")
    assert r.status_code == 400 and "xml" in r.json["message"]
    assert client.simulate_get(f"{V1}/vm").status_code == 404
    assert client.simulate_get(f"{V1}/vm/nothere").json == {"message": "VM not found."}


def test_vm_lifecycle_through_the_api(vmcluster, client):
    c = vmcluster
    xml = c.xml("api1")
    r = client.simulate_post(f"{V1}/vm", body=f"xml={falcon.uri.encode_value(xml)}&node=hv1"
                             "&user_tags=web&protected_tags=prod&migration_max_downtime=250",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert r.json["message"].startswith("Added new VM with Name 'api1' and UUID '")
    vm = client.simulate_get(f"{V1}/vm/api1").json[0]
    assert (vm["state"], vm["node"], vm["last_node"], vm["migrated"]) == ("stop", "hv1", "",
                                                                           "no")
    assert vm["memory"] == 128 and vm["vcpu"] == 1 and vm["migration_max_downtime"] == 250
    assert {t["name"]: t["protected"] for t in vm["tags"]} == {"web": False, "prod": True}
    assert "'" in vm["xml"] and '"' not in vm["xml"]
    assert client.simulate_get(f"{V1}/vm/{vm['uuid']}").json[0]["name"] == "api1"

    r = client.simulate_post(f"{V1}/vm/api1/state", params={"state": "start", "wait": "true"})
    assert r.status_code == 200 and r.json["message"] == "Starting VM 'api1'."
    c.wait_booted("api1")
    wait_for(lambda: "GUEST-BOOTED" in client.simulate_get(
        f"{V1}/vm/api1/console", params={"lines": 50}).json["data"], 30, 0.3, "console")
    assert client.simulate_get(f"{V1}/vm/api1/state").json == {"name": "api1", "state": "start"}
    listed = client.simulate_get(f"{V1}/vm", params={"node": "hv1", "state": "start"}).json
    assert [v["name"] for v in listed] == ["api1"]
    assert client.simulate_get(f"{V1}/vm", params={"node": "hv1", "negate": "true"}
                               ).status_code == 404
    assert client.simulate_get(f"{V1}/vm", params={"state": "bogus"}).status_code == 400
    assert client.simulate_get(f"{V1}/vm", params={"tag": "prod"}).json[0]["name"] == "api1"

    with support.Sampler(c):
        r = client.simulate_post(f"{V1}/vm/api1/node", params={"action": "migrate",
                                                              "node": "hv2", "wait": "true"})
        assert r.status_code == 200, r.text
        assert r.json["message"] == "Migrating VM 'api1' to node 'hv2'."
        node = client.simulate_get(f"{V1}/vm/api1/node").json
        assert node == {"name": "api1", "node": "hv2", "last_node": "hv1"}
        assert "api1" not in c.domains("hv1")
        r = client.simulate_post(f"{V1}/vm/api1/node", params={"action": "unmigrate",
                                                              "wait": "true"})
        assert r.status_code == 200, r.text
    assert c.console_text("api1").count("GUEST-BOOTED") == 1

    r = client.simulate_post(f"{V1}/vm/api1/meta", params={"limit": "hv1,hv2",
                                                           "selector": "vms"})
    assert r.json["message"] == "Successfully modified PVC metadata of VM 'api1'."
    meta = client.simulate_get(f"{V1}/vm/api1/meta").json
    assert meta["node_limit"] == ["hv1", "hv2"] and meta["node_selector"] == "vms"
    assert client.simulate_post(f"{V1}/vm/api1/meta").status_code == 400
    r = client.simulate_post(f"{V1}/vm/api1/tags", params={"action": "remove", "tag": "prod"})
    assert r.status_code == 400 and "protected" in r.json["message"]
    client.simulate_post(f"{V1}/vm/api1/tags", params={"action": "add", "tag": "db"})
    tags = client.simulate_get(f"{V1}/vm/api1/tags").json["tags"]
    assert sorted(t["name"] for t in tags) == ["db", "prod", "web"]

    status = client.simulate_get(f"{V1}/status").json
    assert status["vms"]["total"] == 1 and status["vms"]["start"] == 1

    image = os.path.join(c.nodes.shared, "api1-extra.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", image, "8M"], check=True)
    disk = (f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file='{image}'/><target dev='vdb' bus='virtio'/></disk>")
    r = client.simulate_post(f"{V1}/vm/api1/device", params={"xml": "<disk"})
    assert r.status_code == 400
    for method in (client.simulate_post, client.simulate_delete):
        r = method(f"{V1}/vm/api1/device", params={"xml": disk})
        assert r.status_code == 202 and r.json["run_on"] == "hv1" and r.headers["Location"]
        task = wait_for(lambda r=r: (t := client.simulate_get(
            f"{V1}/tasks/{r.json['task_id']}").json)["state"] in ("SUCCESS", "FAILURE") and t,
            30, 0.3, "the device task")
        assert task["state"] == "SUCCESS", task

    r = client.simulate_post(f"{V1}/vm/api1/rename", params={"new_name": "api2"})
    assert r.status_code == 400 and "not stopped" in r.json["message"]
    r = client.simulate_post(f"{V1}/vm/api1/state", params={"state": "shutdown", "wait": "true"})
    assert r.status_code == 200 and r.json["message"] == "Shutting down VM 'api1'"
    assert client.simulate_get(f"{V1}/vm/api1").json[0]["state"] == "stop"
    assert "GUEST-POWERBUTTON" in c.console_text("api1")
    r = client.simulate_post(f"{V1}/vm/api1/rename", params={"new_name": "api2"})
    assert r.status_code == 200, r.text
    r = client.simulate_delete(f"{V1}/vm/api2")
    assert r.status_code == 200 and client.simulate_get(f"{V1}/vm/api2").status_code == 404


def test_start_failure_shows_fail_state(vmcluster, client):
    c = vmcluster
    client.simulate_post(f"{V1}/vm", params={"xml": c.xml("bad1", disk="/no/such.img"),
                                             "node": "hv2"})
    r = client.simulate_post(f"{V1}/vm/bad1/state", params={"state": "start", "wait": "true"})
    assert r.status_code == 400 and "/no/such.img does not exist" in r.json["message"]
    vm = client.simulate_get(f"{V1}/vm/bad1").json[0]
    assert vm["state"] == "fail" and "/no/such.img" in vm["failed_reason"]
    assert client.simulate_delete(f"{V1}/vm/bad1").status_code == 200


def test_flush_locks_runs_as_a_task_on_the_vms_node(vmcluster, client):
    """POST /vm/<vm>/locks: 202 + vm.flush_locks task on the VM's node (stop, fail), 400
    while it should run unless forced, 404 for an unknown VM. File disks hold no locks."""
    c = vmcluster

    def flush(vm: str, **params: str) -> dict:
        r = client.simulate_post(f"{V1}/vm/{vm}/locks", params=params)
        assert r.status_code == 202, r.text
        assert r.json["task_name"] == "vm.flush_locks" and r.json["run_on"] == "hv2"
        assert r.headers["Location"].endswith(f"{V1}/tasks/{r.json['task_id']}")
        return wait_for(lambda: (t := client.simulate_get(
            f"{V1}/tasks/{r.json['task_id']}").json)["state"] in ("SUCCESS", "FAILURE") and t,
            30, 0.2, "the flush-locks task")

    r = client.simulate_post(f"{V1}/vm/nothere/locks")
    assert r.status_code == 404 and r.json == {"message": "VM not found."}
    assert client.simulate_post(f"{V1}/vm", params={"xml": c.xml("lk1"), "node": "hv2"}
                                ).status_code == 200
    task = flush("lk1")
    assert task["state"] == "SUCCESS", task
    assert task["status"] == "Flushed locks on VM lk1: 0 lock(s) removed."

    r = client.simulate_post(f"{V1}/vm/lk1/state", params={"state": "start"})
    assert r.status_code == 200, r.text
    r = client.simulate_post(f"{V1}/vm/lk1/locks")
    assert r.status_code == 400 and "in state 'start'" in r.json["message"]
    assert flush("lk1", force="true")["state"] == "SUCCESS"
    assert client.simulate_delete(f"{V1}/vm/lk1").status_code == 200

    client.simulate_post(f"{V1}/vm", params={"xml": c.xml("lk2", disk="/no/such.img"),
                                             "node": "hv2"})
    client.simulate_post(f"{V1}/vm/lk2/state", params={"state": "start", "wait": "true"})
    assert client.simulate_get(f"{V1}/vm/lk2/state").json["state"] == "fail"
    assert flush("lk2")["state"] == "SUCCESS"
    assert client.simulate_delete(f"{V1}/vm/lk2").status_code == 200


def test_define_refuses_too_many_vcpus_and_a_duplicate_uuid(vmcluster, client):
    """vCPUs that fit no node, and a UUID (in any spelling) already in use under another
    name: 400 with a clear message, nothing written."""
    from pvc_plugins.vm_kvm import records

    c = vmcluster
    cpus = max(n.cpu_count for n in records.nodes(c.store))
    assert cpus > 0
    many = c.xml("cpu1").replace("<vcpu>1</vcpu>", f"<vcpu>{cpus + 1}</vcpu>")
    r = client.simulate_post(f"{V1}/vm", params={"xml": many})
    assert r.status_code == 400, r.text
    assert r.json["message"] == (f"ERROR: VM 'cpu1' (128 MiB, {cpus + 1} vCPUs) does not fit "
                                 f"any node: the largest offers "
                                 f"{max(n.memory_total for n in records.nodes(c.store))} MiB "
                                 f"and {cpus} CPUs.")
    r = client.simulate_post(f"{V1}/vm", params={"xml": many, "node": "hv2"})
    assert r.status_code == 400 and "does not fit node 'hv2'" in r.json["message"]
    assert client.simulate_get(f"{V1}/vm/cpu1").status_code == 404

    xml = c.xml("dup1")
    uuid = xml.split("<uuid>")[1].split("</uuid>")[0]
    assert client.simulate_post(f"{V1}/vm", params={"xml": xml, "node": "hv1"}
                                ).status_code == 200
    r = client.simulate_put(f"{V1}/vm/dup1", params={"xml": xml.replace(
        "<vcpu>1</vcpu>", f"<vcpu>{cpus + 1}</vcpu>")})
    assert r.status_code == 400 and "does not fit node 'hv1'" in r.json["message"]
    for spelling in (uuid, uuid.upper(), uuid.replace("-", "")):
        other = xml.replace(f"<uuid>{uuid}</uuid>", f"<uuid>{spelling}</uuid>").replace(
            "<name>dup1</name>", "<name>dup2</name>")
        r = client.simulate_post(f"{V1}/vm", params={"xml": other, "node": "hv2"})
        assert r.status_code == 400, r.text
        assert r.json["message"] == (f"ERROR: A VM with the name 'dup2' or UUID '{uuid}' "
                                     "already exists.")
    assert client.simulate_get(f"{V1}/vm/dup2").status_code == 404
    assert not c.store.exists("vm_name", vm_name="dup2")
    vm = client.simulate_get(f"{V1}/vm/{uuid}").json[0]
    assert (vm["name"], vm["vcpu"], vm["node"]) == ("dup1", 1, "hv1")
    r = client.simulate_post(f"{V1}/vm", params={"xml": c.xml("dup1"), "node": "hv2"})
    assert r.status_code == 400 and "name 'dup1'" in r.json["message"]
    assert client.simulate_delete(f"{V1}/vm/dup1").status_code == 200
