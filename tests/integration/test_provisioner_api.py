"""The /provisioner object routes and `pvc provisioner` against a real ZooKeeper: templates,
user data, scripts and profiles in the v1 shapes, every refusal a 400 naming the field, a
used template kept, and the CLI over HTTP to a real API server."""

from __future__ import annotations

import json
import os
import socket
import threading

import falcon.testing
import pytest
from click.testing import CliRunner

from pvc_api.app import create_app
from pvc_api.server import create_server
from pvc_cli.main import cli
from pvc_kernel.config import ApiConfig, NodeConfig
from pvc_kernel.plugins import PluginHost
from pvc_kernel.sdk import tasks
from pvc_plugins.provisioner.plugin import ProvisionerPlugin
from tests.support import apiserver
from tests.support.daemons import wait_for
from tests.unit.test_cli_support import ENV_VARS

pytestmark = pytest.mark.integration
KEY = "test-provisioner-key"
V1 = "/api/v1/provisioner"
SCRIPT = """from daemon_lib.vmbuilder import VMBuilder

class VMBuilderScript(VMBuilder):
    def create(self):
        return "<domain/>"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api(store, zk_hosts, tmp_path):
    host = PluginHost()
    host.register(ProvisionerPlugin, "provisioner")
    cfg = NodeConfig(node="hv1", cluster="provtest", zookeeper_hosts=[zk_hosts],
                     api=ApiConfig(keys=[KEY], port=_free_port(), threads=4))
    cfg.plugin_sections["provisioner"] = {"work_dir": str(tmp_path / "work")}
    app = create_app(store, cfg, host)
    yield app, cfg
    app.stopping.set()


@pytest.fixture
def client(api):
    return falcon.testing.TestClient(api[0].app, headers={"X-Api-Key": KEY})


def _ok(r) -> dict:
    assert r.status_code == 200, r.text
    return r.json


def _make_parts(client) -> None:
    _ok(client.simulate_post(f"{V1}/template/system", params={
        "name": "small", "vcpus": 2, "vram": 2048, "serial": "true", "vnc": "false"}))
    _ok(client.simulate_post(f"{V1}/template/network", params={
        "name": "web", "mac_template": "{prefix}:ff:{vmid}:{netid}"}))
    _ok(client.simulate_post(f"{V1}/template/network/web/net/100"))
    _ok(client.simulate_post(f"{V1}/template/network/web/net", params={"vni": "200"}))
    _ok(client.simulate_post(f"{V1}/template/storage", params={"name": "root10"}))
    _ok(client.simulate_post(f"{V1}/template/storage/root10/disk/sda", params={
        "pool": "vms", "disk_size": 10, "filesystem": "ext4", "filesystem_arg": ["-L=root"],
        "mountpoint": "/"}))
    _ok(client.simulate_post(f"{V1}/template/storage/root10/disk", params={
        "disk_id": "sdb", "pool": "vms", "source_volume": "golden"}))
    _ok(client.simulate_post(f"{V1}/userdata", params={
        "name": "init", "data": "#cloud-config\nhostname: web1\n"}))
    _ok(client.simulate_post(f"{V1}/script", params={"name": "noop", "data": SCRIPT}))


def test_objects_round_trip_in_the_v1_shape(client, store):
    assert client.simulate_get(f"{V1}/template/system").status_code == 404
    assert _ok(client.simulate_get(f"{V1}/template")) == {
        "system_templates": [], "network_templates": [], "storage_templates": []}
    _make_parts(client)
    (small,) = _ok(client.simulate_get(f"{V1}/template/system/small"))
    assert small == {"id": 1, "name": "small", "vcpu_count": 2, "vram_mb": 2048,
                     "serial": True, "vnc": False, "vnc_bind": None, "node_limit": None,
                     "node_selector": None, "node_autostart": False,
                     "migration_method": None, "migration_max_downtime": 300, "ova": None}
    (web,) = _ok(client.simulate_get(f"{V1}/template/network/web"))
    assert web["mac_template"] == "{prefix}:ff:{vmid}:{netid}"
    assert [(n["id"], n["network_template"], n["vni"]) for n in web["networks"]] == [
        (1, web["id"], "100"), (2, web["id"], "200")]
    assert _ok(client.simulate_get(f"{V1}/template/network/web/net/200"))["vni"] == "200"
    disks = _ok(client.simulate_get(f"{V1}/template/storage/root10/disk"))
    assert [(d["disk_id"], d["disk_size_gb"], d["source_volume"], d["filesystem_args"])
            for d in disks] == [("sda", 10, None, "-L=root"), ("sdb", None, "golden", "")]
    everything = _ok(client.simulate_get(f"{V1}/template"))
    assert [t["name"] for t in everything["storage_templates"]] == ["root10"]

    _ok(client.simulate_post(f"{V1}/profile", params={
        "name": "web", "profile_type": "provisioner", "system_template": "small",
        "network_template": "web", "storage_template": "root10", "userdata": "init",
        "script": "noop", "arg": ["release=bookworm", "mirror=http://x/debian"]}))
    (prof,) = _ok(client.simulate_get(f"{V1}/profile/web"))
    assert prof == {"id": 1, "name": "web", "type": "provisioner", "system_template": "small",
                    "network_template": "web", "storage_template": "root10",
                    "userdata": "init", "script": "noop", "ova": "N/A",
                    "arguments": ["release=bookworm", "mirror=http://x/debian"]}

    # a used template stays; the profile can be changed off it, then it goes
    r = client.simulate_delete(f"{V1}/template/system/small")
    assert r.status_code == 409 and "profile(s) web" in r.json["message"]
    _ok(client.simulate_post(f"{V1}/template/system/big", params={"vcpus": 8, "vram": 8192}))
    _ok(client.simulate_put(f"{V1}/profile/web", params={"system_template": "big"}))
    _ok(client.simulate_delete(f"{V1}/template/system/small"))
    assert client.simulate_get(f"{V1}/template/system/small").status_code == 404

    _ok(client.simulate_put(f"{V1}/template/system/big", params={"vnc": "true",
                                                                  "vnc_bind": "0.0.0.0"}))
    (big,) = _ok(client.simulate_get(f"{V1}/template/system/big"))
    assert (big["vcpu_count"], big["vnc"], big["vnc_bind"]) == (8, True, "0.0.0.0")
    _ok(client.simulate_put(f"{V1}/userdata/init", params={"data": "#!/bin/sh\necho hi\n"}))
    assert _ok(client.simulate_get(f"{V1}/userdata/init"))[0]["userdata"].startswith("#!")
    _ok(client.simulate_delete(f"{V1}/template/network/web/net/200"))
    _ok(client.simulate_delete(f"{V1}/template/storage/root10/disk/sdb"))
    _ok(client.simulate_delete(f"{V1}/profile/web"))
    _ok(client.simulate_delete(f"{V1}/template/system/big"))
    assert client.simulate_get(f"{V1}/profile").status_code == 404
    assert json.loads(store.get("provisioner.ids"))["profile"] == 1


@pytest.mark.parametrize(("path", "params", "field"), [
    ("template/system", {"name": "x", "vcpus": 0, "vram": 1024}, "vcpus"),
    ("template/system", {"name": "x", "vcpus": 2}, "vram"),
    ("template/system", {"name": "x/y", "vcpus": 2, "vram": 1}, "name"),
    ("template/system", {"name": "x", "vcpus": 2, "vram": 1, "migration_method": "fly"},
     "migration_method"),
    ("template/network", {"name": "x", "mac_template": "{prefix}:{nope}"}, "mac_template"),
    ("template/network", {"name": "x", "mac_template": "{prefix}:zz:{vmid}"}, "mac_template"),
    ("template/network/web/net", {"vni": "100"}, "vni"),            # already in the template
    ("template/network/web/net", {"vni": "abc"}, "vni"),
    ("template/storage/root10/disk", {"disk_id": "sda", "pool": "vms", "disk_size": 5},
     "disk_id"),                                                    # a disk id used twice
    ("template/storage/root10/disk", {"disk_id": "hda", "pool": "vms", "disk_size": 5},
     "disk_id"),
    ("template/storage/root10/disk", {"disk_id": "sdc", "pool": "vms", "disk_size": 5,
                                      "mountpoint": "/srv"}, "mountpoint"),
    ("template/storage/root10/disk", {"disk_id": "sdc", "pool": "vms", "disk_size": 5,
                                      "filesystem": "ext4", "mountpoint": "/"}, "mountpoint"),
    ("template/storage/root10/disk", {"disk_id": "sdc", "pool": "vms", "disk_size": 5,
                                      "filesystem": "zfs", "mountpoint": "/z"}, "filesystem"),
    ("template/storage/root10/disk", {"disk_id": "sdc", "pool": "vms", "disk_size": 5,
                                      "filesystem": "xfs"}, "mountpoint"),
    ("template/storage/root10/disk", {"disk_id": "sdc", "pool": "vms",
                                      "source_volume": "golden", "disk_size": 5},
     "source_volume"),
    ("template/storage/root10/disk", {"disk_id": "sdc", "pool": "vms"}, "disk_size"),
    ("userdata", {"name": "bad", "data": "#cloud-config\nusers: [a, b\n"}, "data"),
    ("userdata", {"name": "bad", "data": "#cloud-config\n- a list\n"}, "data"),
    ("userdata", {"name": "bad", "data": "Content-Type: multipart/mixed; boundary=X\n\nno"},
     "data"),
    ("script", {"name": "bad", "data": "import os\nclass Other: pass\n"}, "data"),
    ("script", {"name": "bad", "data": "class VMBuilderScript(:\n"}, "data"),
    ("profile", {"name": "p", "profile_type": "provisioner", "system_template": "small",
                 "network_template": "web", "storage_template": "nope", "script": "noop"},
     "storage_template"),
    ("profile", {"name": "p", "profile_type": "provisioner", "system_template": "small",
                 "network_template": "web", "script": "noop"}, "storage_template"),
    ("profile", {"name": "p", "profile_type": "provisioner", "system_template": "small",
                 "network_template": "web", "storage_template": "root10", "script": "noop",
                 "arg": ["novalue"]}, "arg"),
    ("profile", {"name": "p", "profile_type": "ova", "system_template": "small",
                 "script": "noop"}, "ova"),
])
def test_bad_input_is_a_400_naming_the_field(client, store, path, params, field):
    _make_parts(client)
    before = {k: store.children("provisioner.kind", kind=k) for k in (
        "system_template", "network_template", "storage_template", "userdata", "script",
        "profile")}
    r = client.simulate_post(f"{V1}/{path}", params=params)
    assert r.status_code == 400, r.text
    assert f"'{field}'" in r.json["message"], r.json
    assert "Traceback" not in r.text
    after = {k: store.children("provisioner.kind", kind=k) for k in before}
    assert after == before


def test_missing_objects_and_taken_names(client):
    _make_parts(client)
    r = client.simulate_post(f"{V1}/template/system", params={"name": "small", "vcpus": 1,
                                                              "vram": 1})
    assert r.status_code == 400 and r.json["message"] == "System template 'small' already " \
                                                         "exists."
    assert client.simulate_put(f"{V1}/template/system/none", params={"vcpus": 1}
                               ).status_code == 404
    assert client.simulate_delete(f"{V1}/template/system/none").status_code == 400
    assert client.simulate_post(f"{V1}/template/storage/none/disk/sda", params={
        "pool": "vms", "disk_size": 1}).status_code == 400
    assert client.simulate_get(f"{V1}/template/network/none/net").status_code == 404
    assert client.simulate_get(f"{V1}/template/network/web/net/999").status_code == 404
    assert client.simulate_get(f"{V1}/script/none").status_code == 404
    assert client.simulate_get(f"{V1}/script", params={"limit": "^no"}).json[0]["name"] == \
        "noop"


def test_two_adds_of_one_name_at_once_store_one(client, store):
    answers: list[int] = []

    def add() -> None:
        answers.append(client.simulate_post(f"{V1}/template/storage",
                                            params={"name": "same"}).status_code)
    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(answers) == [200, 400, 400, 400]
    assert store.children("provisioner.kind", kind="storage_template") == ["same"]


def test_the_cli_drives_the_objects_over_http(api, monkeypatch, tmp_path):
    app, cfg = api
    server = create_server(app, cfg)
    thread = threading.Thread(target=server.run, name="pvcapid", daemon=True)
    thread.start()
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PVC_CLI_CONFIG", str(tmp_path / "pvc.json"))
    monkeypatch.setenv("PVC_API_HOSTS", f"127.0.0.1:{cfg.api.port}")
    monkeypatch.setenv("PVC_API_KEY", KEY)
    script = tmp_path / "noop.py"
    script.write_text(SCRIPT)
    userdata = tmp_path / "init.yaml"
    userdata.write_text("#cloud-config\nhostname: web1\n")

    def pvc(*args: str):
        return CliRunner().invoke(cli, ["provisioner", *args])

    def ok(*args: str) -> str:
        r = pvc(*args)
        assert r.exit_code == 0, r.output
        return r.output

    try:
        wait_for(lambda: pvc("profile", "list").exit_code == 0, 20, 0.2, "the API")
        ok("template", "system", "add", "small", "-u", "2", "-m", "2048", "--serial")
        ok("template", "network", "add", "web", "-m", "{prefix}:ff:{vmid}:{netid}")
        ok("template", "network", "vni", "add", "web", "100")
        ok("template", "storage", "add", "root10")
        ok("template", "storage", "disk", "add", "root10", "sda", "-p", "vms", "-s", "10",
           "-f", "ext4", "--fsarg", "L=root", "-m", "/")
        ok("userdata", "add", "init", str(userdata))
        ok("script", "add", "noop", str(script))
        ok("profile", "add", "web", "-s", "small", "-n", "web", "-t", "root10", "-u", "init",
           "-x", "noop", "-a", "release=bookworm")
        listed = ok("profile", "list")
        assert "web" in listed and "release=bookworm" in listed
        disks = json.loads(ok("template", "storage", "list", "-f", "json"))
        assert disks[0]["disks"][0]["filesystem_args"] == "-L=root"
        assert "small" in ok("template", "system", "list")
        assert ok("script", "show", "noop") == SCRIPT
        bad = pvc("template", "system", "remove", "small")
        assert bad.exit_code != 0 and "profile(s) web" in bad.output
        assert "Traceback" not in bad.output
        bad = pvc("template", "storage", "disk", "add", "root10", "sdb", "-p", "vms", "-s",
                  "1", "-m", "/data")
        assert bad.exit_code != 0 and "'mountpoint'" in bad.output
        assert pvc("profile", "modify", "web").exit_code != 0     # nothing to change
        ok("profile", "remove", "web")
        ok("template", "system", "remove", "small")
        assert "No profile found." in ok("profile", "list")
    finally:
        app.stopping.set()
        apiserver.stop(server, thread)


def test_a_malformed_ova_is_refused_before_anything_is_made(client, store, tmp_path):
    r = client.simulate_post(f"{V1}/ova/junk", params={"pool": "vms"}, body=b"not a tar" * 100,
                             headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 400 and r.json["message"].startswith("Invalid OVA"), r.text
    r = client.simulate_post(f"{V1}/ova/junk", params={"pool": "vms", "ova_size": 5},
                             body=b"123456", headers={"Content-Type":
                                                      "application/octet-stream"})
    assert r.status_code == 400 and "'ova_size'" in r.json["message"], r.text
    r = client.simulate_post(f"{V1}/ova/junk", params={"pool": "vms"})
    assert r.status_code == 400 and "application/octet-stream" in r.json["message"]
    assert os.listdir(tmp_path / "work" / "hv1") == []          # nothing spooled is left
    assert not [t for t in tasks.list_tasks(store) if t["type"].startswith("provisioner.")]
    assert client.simulate_get(f"{V1}/ova").status_code == 404
