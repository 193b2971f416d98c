"""The /network routes and `pvc network` against a real ZooKeeper: the v1 shapes, every
refusal a 400 naming the field, and the CLI over HTTP to a real API server."""

from __future__ import annotations

import json
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
from pvc_plugins.net_bridged.plugin import NetBridgedPlugin
from pvc_plugins.net_vxlan.plugin import NetVxlanPlugin
from tests.support import apiserver
from tests.support.daemons import wait_for
from tests.unit.test_cli_support import ENV_VARS

pytestmark = pytest.mark.integration
KEY = "test-net-api-key"
V1 = "/api/v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api(store, zk_hosts):
    host = PluginHost()
    host.register(NetBridgedPlugin, "net_bridged")
    host.register(NetVxlanPlugin, "net_vxlan")
    cfg = NodeConfig(node="hv1", cluster="nettest", zookeeper_hosts=[zk_hosts],
                     api=ApiConfig(keys=[KEY], port=_free_port(), threads=4))
    app = create_app(store, cfg, host)
    yield app, cfg
    app.stopping.set()


@pytest.fixture
def client(api):
    return falcon.testing.TestClient(api[0].app, headers={"X-Api-Key": KEY})


OFFICE = {"vni": 100, "description": "office", "nettype": "managed", "ip4_network":
          "10.100.0.0/24", "ip4_gateway": "10.100.0.1", "dhcp4": "true",
          "dhcp4_start": "10.100.0.100", "dhcp4_end": "10.100.0.199",
          "name_servers": ["10.0.0.53", "10.0.0.54"], "ip6_network": "fd00:100::/64"}


def test_networks_round_trip_in_the_v1_shape(client, store):
    assert client.simulate_get(f"{V1}/network").json == {"message": "Network not found."}
    r = client.simulate_post(f"{V1}/network", params=OFFICE)
    assert r.status_code == 200 and r.json == {"message": "Network 'office' added "
                                                          "successfully!"}
    r = client.simulate_post(f"{V1}/network/200", params={"description": "uplink",
                                                          "nettype": "bridged", "mtu": "9000"})
    assert r.status_code == 200, r.text
    nets = client.simulate_get(f"{V1}/network").json
    assert [n["vni"] for n in nets] == [100, 200]
    office = client.simulate_get(f"{V1}/network/office").json
    assert office == client.simulate_get(f"{V1}/network/100").json and len(office) == 1
    o = office[0]
    assert (o["type"], o["mtu"], o["domain"]) == ("managed", "", "office.local")
    assert o["name_servers"] == ["10.0.0.53", "10.0.0.54"]
    assert o["ip4"] == {"network": "10.100.0.0/24", "gateway": "10.100.0.1",
                        "dhcp_flag": "True", "dhcp_start": "10.100.0.100",
                        "dhcp_end": "10.100.0.199"}
    assert o["ip6"] == {"network": "fd00:100::/64", "gateway": "fd00:100::1",
                        "dhcp_flag": "True"}
    assert client.simulate_get(f"{V1}/network", params={"limit": "^upl"}).json[0]["vni"] == 200
    assert client.simulate_get(f"{V1}/network", params={"limit": "("}).status_code == 400
    store.set("network.node", json.dumps({"state": "up", "bridge": "vmbr100", "mtu": 1450,
                                          "port": "vxlan100", "error": ""}),
              vni="100", node="hv1")
    assert client.simulate_get(f"{V1}/network/100").json[0]["nodes"] == {
        "hv1": {"state": "up", "error": "", "bridge": "vmbr100", "port": "vxlan100",
                "mtu": 1450}}
    assert client.simulate_get(f"{V1}/status").json.get("networks") == 2

    r = client.simulate_put(f"{V1}/network/100", params={"dhcp4": "false", "mtu": "1400"})
    assert r.status_code == 200 and r.json["message"] == "Network '100' modified successfully!"
    o = client.simulate_get(f"{V1}/network/100").json[0]
    assert o["mtu"] == "1400" and o["ip4"]["dhcp_flag"] == "False"
    assert o["ip4"]["dhcp_start"] == "None"

    r = client.simulate_delete(f"{V1}/network/uplink")
    assert r.status_code == 200 and "removed" in r.json["message"]
    assert not store.exists("network", vni="200")
    r = client.simulate_delete(f"{V1}/network/uplink")
    assert r.status_code == 400 and r.json == {
        "message": "ERROR: Could not find network 'uplink' in the cluster!"}


@pytest.mark.parametrize("params, field", [
    ({"vni": 0}, "vni"),
    ({"vni": "x"}, "vni"),
    ({"nettype": "vlan"}, "nettype"),
    ({"description": "two words"}, "description"),
    ({"mtu": "100"}, "mtu"),
    ({"ip4_gateway": "10.9.9.1"}, "ip4_gateway"),
    ({"dhcp4_end": "10.100.0.20"}, "dhcp4_end"),
    ({"name_servers": "dns.example"}, "name_servers"),
    ({"ip6_network": "fd00::1/64"}, "ip6_network"),
])
def test_bad_input_is_a_400_naming_the_field(client, store, params, field):
    r = client.simulate_post(f"{V1}/network", params={**OFFICE, **params})
    assert r.status_code == 400, r.text
    assert f"'{field}'" in r.json["message"]
    assert store.children("networks") == []


def test_duplicates_missing_networks_and_bridged_services_are_refused(client):
    assert client.simulate_post(f"{V1}/network", params=OFFICE).status_code == 200
    r = client.simulate_post(f"{V1}/network", params={**OFFICE, "description": "other"})
    assert r.status_code == 400 and r.json["message"] == "Network with VNI 100 already exists."
    r = client.simulate_post(f"{V1}/network", params={**OFFICE, "vni": 101})
    assert r.status_code == 400 and "description 'office' already exists" in r.json["message"]
    r = client.simulate_put(f"{V1}/network/999", params={"mtu": "1400"})
    assert r.status_code == 400 and "Could not find network '999'" in r.json["message"]
    r = client.simulate_post(f"{V1}/network", params={
        "vni": 300, "description": "vlan300", "nettype": "bridged", "dhcp4": "true"})
    assert r.status_code == 400 and "'dhcp4'" in r.json["message"]


def test_overlapping_subnets_and_mtus_above_the_nodes_devices_are_refused(client, store):
    assert client.simulate_post(f"{V1}/network", params=OFFICE).status_code == 200
    r = client.simulate_post(f"{V1}/network", params={
        "vni": 101, "description": "inner", "nettype": "managed",
        "ip4_network": "10.100.0.128/25", "ip4_gateway": "10.100.0.129"})
    assert r.status_code == 400 and "'ip4_network'" in r.json["message"]
    assert "overlaps 10.100.0.0/24 of network 'office'" in r.json["message"]
    r = client.simulate_post(f"{V1}/network", params={
        "vni": 102, "description": "v6", "nettype": "managed",
        "ip6_network": "fd00:100::/48"})
    assert r.status_code == 400 and "'ip6_network'" in r.json["message"]
    r = client.simulate_put(f"{V1}/network/100", params={"ip4_network": "10.100.0.0/23"})
    assert r.status_code == 200, r.text         # its own subnet never clashes

    for node, largest in (("hv1", 1450), ("hv2", 8950)):   # as pvcnoded registers them
        store.ensure("node", node=node)
        store.set("node.static", json.dumps({"max_mtu_managed": largest,
                                             "max_mtu_bridged": 9000}), node=node)
    r = client.simulate_put(f"{V1}/network/100", params={"mtu": "1451"})
    assert r.status_code == 400 and "'mtu'" in r.json["message"]
    assert "above 1450" in r.json["message"]
    assert client.simulate_put(f"{V1}/network/100", params={"mtu": "1450"}).status_code == 200
    r = client.simulate_post(f"{V1}/network", params={
        "vni": 300, "description": "vlan300", "nettype": "bridged", "mtu": "9000"})
    assert r.status_code == 200, r.text


def test_concurrent_adds_of_one_vni_make_one_network(client, store):
    answers: list[int] = []

    def add(i: int) -> None:
        r = client.simulate_post(f"{V1}/network", params={**OFFICE, "description": f"n{i}"})
        answers.append(r.status_code)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(answers) == [200, 400, 400, 400]
    assert store.children("networks") == ["100"]


def test_the_cli_drives_networks_over_http(api, monkeypatch, tmp_path):
    app, cfg = api
    server = create_server(app, cfg)
    thread = threading.Thread(target=server.run, name="pvcapid", daemon=True)
    thread.start()
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PVC_CLI_CONFIG", str(tmp_path / "pvc.json"))
    monkeypatch.setenv("PVC_API_HOSTS", f"127.0.0.1:{cfg.api.port}")
    monkeypatch.setenv("PVC_API_KEY", KEY)

    def pvc(*args: str):
        return CliRunner().invoke(cli, list(args))

    try:
        wait_for(lambda: pvc("network", "list").exit_code == 0, 20, 0.2, "the API")
        r = pvc("network", "add", "100", "-d", "office", "-p", "managed", "-i",
                "10.100.0.0/24", "-g", "10.100.0.1", "--dns-server", "10.0.0.53",
                "--dns-server", "10.0.0.54")
        assert r.exit_code == 0 and "added successfully" in r.output, r.output
        listed = pvc("network", "list")
        assert "office" in listed.output and "10.100.0.0/24" in listed.output
        info = json.loads(pvc("network", "info", "office", "-f", "json").output)
        assert info["name_servers"] == ["10.0.0.53", "10.0.0.54"]
        bad = pvc("network", "add", "101", "-d", "x", "-p", "managed", "-g", "10.9.9.1")
        assert bad.exit_code != 0 and "'ip4_gateway'" in bad.output
        assert "Traceback" not in bad.output
        assert pvc("network", "modify", "100", "-m", "1400").exit_code == 0
        assert pvc("network", "modify", "100").exit_code != 0         # nothing to change
        assert pvc("network", "remove", "office", "--yes").exit_code == 0
        assert "No network found." in pvc("network", "list").output
    finally:
        app.stopping.set()
        apiserver.stop(server, thread)


def test_a_type_two_plugins_declare_is_refused_naming_both(store, zk_hosts):
    from pvc_kernel.sdk import hookimpl

    class Rival:
        @hookimpl
        def pvc_network_types(self):
            return {"managed": "another overlay"}

    host = PluginHost()
    host.register(NetBridgedPlugin, "net_bridged")
    host.register(NetVxlanPlugin, "net_vxlan")
    host.register(Rival, "rival")
    cfg = NodeConfig(node="hv1", cluster="nettest", zookeeper_hosts=[zk_hosts],
                     api=ApiConfig(keys=[KEY]))
    app = create_app(store, cfg, host)
    try:
        c = falcon.testing.TestClient(app.app, headers={"X-Api-Key": KEY})
        r = c.simulate_post(f"{V1}/network", params=OFFICE)
        assert r.status_code == 400 and r.json["message"] == (
            "Invalid parameter 'nettype': 'managed' is declared by more than one plugin "
            "(net_vxlan, rival); disable all but one")
        bridged = {"vni": 200, "description": "uplink", "nettype": "bridged"}
        assert c.simulate_post(f"{V1}/network", params=bridged).status_code == 200
    finally:
        app.stopping.set()
