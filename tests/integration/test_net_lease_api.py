"""``/network/{vni}/lease`` and ``pvc network dhcp`` against a real ZooKeeper: reservations
(every refusal a 400 naming the field), live leases as the primary reports them, the v1
Lease shape, removal by MAC, host name or IP, and the CLI over HTTP to a real API server."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner

from pvc_api.server import create_server
from pvc_cli.main import cli
from tests.integration.test_net_api import KEY, OFFICE, V1, api, client  # noqa: F401
from tests.support import apiserver
from tests.support.daemons import wait_for
from tests.unit.test_cli_support import ENV_VARS

pytestmark = pytest.mark.integration
MAC = "52:54:00:12:34:56"
LEASE = f"{V1}/network/office/lease"


@pytest.fixture
def office(client):  # noqa: F811
    assert client.simulate_post(f"{V1}/network", params=OFFICE).status_code == 200
    return client


def live_lease(store, mac: str, ip4: str, hostname: str | None, expiry: int) -> None:
    """What the primary's DHCP service writes for a lease dnsmasq handed out."""
    store.set("network.lease", json.dumps({"mac": mac, "ip4": ip4, "hostname": hostname,
                                           "expiry": expiry, "client_id": None,
                                           "node": "hv1"}), vni=100, mac=mac)


def test_reservations_and_leases_in_the_v1_shape(office, store):
    c = office
    assert c.simulate_get(LEASE).json == {"message": "Lease not found."}
    assert c.simulate_get(f"{V1}/network/999/lease").status_code == 404
    before = store.get_versioned("network.reservations", vni=100)[1]
    r = c.simulate_post(LEASE, params={"macaddress": MAC.upper(), "ipaddress": "10.100.0.50",
                                       "hostname": "web1"})
    assert r.status_code == 200, r.text
    assert "52:54:00:12:34:56" in r.json["message"]
    assert store.get_json("network.reservation", vni=100, mac=MAC) == {
        "mac": MAC, "ip4": "10.100.0.50", "hostname": "web1"}
    assert store.get_versioned("network.reservations", vni=100)[1] > before  # the DHCP trigger
    r = c.simulate_post(f"{LEASE}/52:54:00:00:00:02", params={"ipaddress": "10.100.0.51"})
    assert r.status_code == 200, r.text
    live_lease(store, "52:54:00:00:00:09", "10.100.0.120", "db1", 1900000000)
    live_lease(store, MAC, "10.100.0.50", "web1", 1900000001)

    assert c.simulate_get(LEASE).json == [
        {"hostname": None, "ip4_address": "10.100.0.51", "mac_address": "52:54:00:00:00:02",
         "timestamp": "static"},
        {"hostname": "web1", "ip4_address": "10.100.0.50", "mac_address": MAC,
         "timestamp": "static"},
        {"hostname": "db1", "ip4_address": "10.100.0.120", "mac_address": "52:54:00:00:00:09",
         "timestamp": "1900000000"},
        {"hostname": "web1", "ip4_address": "10.100.0.50", "mac_address": MAC,
         "timestamp": "1900000001"}]
    assert [x["mac_address"] for x in c.simulate_get(LEASE, params={"static": "true"}).json] \
        == ["52:54:00:00:00:02", MAC]
    assert [x["timestamp"] for x in c.simulate_get(LEASE, params={"limit": "09$"}).json] \
        == ["1900000000"]
    assert c.simulate_get(LEASE, params={"limit": "("}).status_code == 400
    one = c.simulate_get(f"{LEASE}/{MAC.upper()}").json
    assert [x["timestamp"] for x in one] == ["static", "1900000001"]
    assert c.simulate_get(f"{LEASE}/52:54:00:00:00:77").status_code == 404

    # Removal by host name (a reservation and its live lease), by IP, by MAC.
    r = c.simulate_delete(f"{LEASE}/web1")
    assert r.status_code == 200 and "reservation 52:54:00:12:34:56" in r.json["message"]
    assert not store.exists("network.reservation", vni=100, mac=MAC)
    assert not store.exists("network.lease", vni=100, mac=MAC)
    assert c.simulate_delete(f"{LEASE}/10.100.0.120").status_code == 200
    assert c.simulate_delete(f"{LEASE}/52:54:00:00:00:02").status_code == 200
    r = c.simulate_delete(f"{LEASE}/52:54:00:00:00:02")
    assert r.status_code == 400 and "No DHCP reservation or lease" in r.json["message"]
    assert c.simulate_get(LEASE).status_code == 404


@pytest.mark.parametrize("params, field", [
    ({"macaddress": "52-54-00-12-34-56"}, "macaddress"),
    ({"macaddress": "52:54:00:12:34"}, "macaddress"),
    ({"ipaddress": "10.100.1.5"}, "ipaddress"),
    ({"ipaddress": "10.100.0.1"}, "ipaddress"),        # the gateway
    ({"ipaddress": "10.100.0.255"}, "ipaddress"),      # broadcast
    ({"ipaddress": "fd00::5"}, "ipaddress"),
    ({"ipaddress": "x"}, "ipaddress"),
    ({"hostname": "two words"}, "hostname"),
    ({"macaddress": "52:54:00:AA:aa:aa"}, "macaddress"),   # reserved already
    ({"ipaddress": "10.100.0.50"}, "ipaddress"),           # reserved already
])
def test_bad_reservations_are_a_400_naming_the_field(office, store, params, field):
    first = {"macaddress": "52:54:00:aa:aa:aa", "ipaddress": "10.100.0.50", "hostname": "h"}
    assert office.simulate_post(LEASE, params=first).status_code == 200
    good = {"macaddress": "52:54:00:cc:cc:cc", "ipaddress": "10.100.0.70", "hostname": "g"}
    r = office.simulate_post(LEASE, params={**good, **params})
    assert r.status_code == 400, r.text
    assert f"'{field}'" in r.json["message"]
    assert store.children("network.reservations", vni=100) == ["52:54:00:aa:aa:aa"]


def test_reservations_need_a_managed_ipv4_network(client, store):  # noqa: F811
    assert client.simulate_post(f"{V1}/network", params={
        "vni": 200, "description": "uplink", "nettype": "bridged"}).status_code == 200
    r = client.simulate_post(f"{V1}/network/uplink/lease",
                             params={"macaddress": MAC, "ipaddress": "10.0.0.5"})
    assert r.status_code == 400 and "'vni'" in r.json["message"]
    r = client.simulate_post(f"{V1}/network/nothere/lease",
                             params={"macaddress": MAC, "ipaddress": "10.0.0.5"})
    assert r.status_code == 400 and "Could not find network 'nothere'" in r.json["message"]
    r = client.simulate_post(f"{V1}/network/uplink/lease", params={"ipaddress": "10.0.0.5"})
    assert r.status_code == 400 and "macaddress" in r.json["message"]
    assert store.children("network.reservations", vni=200) == []


def test_concurrent_reservations_of_one_ip_make_one(office, store):
    answers: list[int] = []

    def add(i: int) -> None:
        r = office.simulate_post(LEASE, params={"macaddress": f"52:54:00:00:00:0{i}",
                                                "ipaddress": "10.100.0.50"})
        answers.append(r.status_code)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(answers) == [200, 400, 400, 400]
    assert len(store.children("network.reservations", vni=100)) == 1


def test_removing_the_network_removes_its_reservations(office, store):
    office.simulate_post(LEASE, params={"macaddress": MAC, "ipaddress": "10.100.0.50"})
    assert office.simulate_delete(f"{V1}/network/office").status_code == 200
    assert store.children("networks") == []


def test_the_cli_drives_dhcp_over_http(api, office, store, monkeypatch, tmp_path):  # noqa: F811
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
        assert "No DHCP reservation" in pvc("network", "dhcp", "list", "office").output
        r = pvc("network", "dhcp", "add", "office", "10.100.0.50", "web1", MAC)
        assert r.exit_code == 0 and "added" in r.output, r.output
        live_lease(store, "52:54:00:00:00:09", "10.100.0.120", "db1", 1900000000)
        listed = pvc("network", "dhcp", "list", "office")
        assert listed.exit_code == 0, listed.output
        lines = listed.output.splitlines()
        assert lines[0].split() == ["HOSTNAME", "IP", "ADDRESS", "MAC", "ADDRESS", "EXPIRES"]
        assert lines[1].split() == ["web1", "10.100.0.50", MAC, "static"]
        assert lines[2].split()[:3] == ["db1", "10.100.0.120", "52:54:00:00:00:09"]
        static = json.loads(pvc("network", "dhcp", "list", "office", "-s", "-f", "json").output)
        assert [x["mac_address"] for x in static] == [MAC]
        bad = pvc("network", "dhcp", "add", "office", "10.100.9.9", "x", MAC)
        assert bad.exit_code != 0 and "'ipaddress'" in bad.output
        assert "Traceback" not in bad.output
        missing = pvc("network", "dhcp", "list", "nothere")
        assert missing.exit_code != 0 and "not found" in missing.output
        assert pvc("network", "dhcp", "remove", "office", MAC).exit_code == 0
        assert pvc("network", "dhcp", "remove", "office", MAC).exit_code != 0
    finally:
        app.stopping.set()
        apiserver.stop(server, thread)
