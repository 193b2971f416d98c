"""The /network/{vni}/acl routes and `pvc network acl` against a real ZooKeeper and the real
nft: the v1 shapes, order and renumbering in ZooKeeper, refusals naming the field, and the
CLI over HTTP to a real API server."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from click.testing import CliRunner

from pvc_api.server import create_server
from pvc_cli.main import cli
from tests.integration.test_net_api import KEY, OFFICE, V1, api, client  # noqa: F401
from tests.support import apiserver
from tests.support.daemons import wait_for
from tests.unit.test_cli_support import ENV_VARS

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")]
ACL = f"{V1}/network/office/acl"


@pytest.fixture
def office(client):  # noqa: F811
    r = client.simulate_post(f"{V1}/network", params=OFFICE)
    assert r.status_code == 200, r.text
    return client


def _stored(store) -> dict:
    return json.loads(store.get("network.acls", vni="100"))


def test_acls_round_trip_with_order_and_renumbering(office, store):
    c = office
    assert c.simulate_get(ACL).status_code == 404
    assert c.simulate_get(ACL).json == {"message": "ACL not found."}
    for name, rule, extra in (("ssh", "tcp dport 22 accept", {}),
                              ("web", "tcp dport { 80, 443 } accept", {"direction": "in"}),
                              ("first", "ip saddr 10.0.0.0/8 accept", {"order": 1}),
                              ("smtp", "tcp dport 25 drop", {"direction": "out"})):
        r = c.simulate_post(ACL, params={"description": name, "rule": rule, **extra})
        assert r.status_code == 200, r.text
        assert r.json == {"message": f"Firewall rule '{name}' added successfully!"}
    listed = c.simulate_get(ACL).json
    assert listed == [
        {"direction": "in", "order": 0, "description": "ssh", "rule": "tcp dport 22 accept"},
        {"direction": "in", "order": 1, "description": "first",
         "rule": "ip saddr 10.0.0.0/8 accept"},
        {"direction": "in", "order": 2, "description": "web",
         "rule": "tcp dport { 80, 443 } accept"},
        {"direction": "out", "order": 0, "description": "smtp", "rule": "tcp dport 25 drop"}]
    assert [a["description"] for a in _stored(store)["in"]] == ["ssh", "first", "web"]
    assert c.simulate_get(f"{V1}/network/100/acl").json == listed      # by VNI too
    assert [a["description"] for a in c.simulate_get(ACL, params={"direction": "out"}).json] \
        == ["smtp"]
    assert [a["description"] for a in c.simulate_get(ACL, params={"limit": "^s"}).json] == [
        "ssh", "smtp"]
    assert c.simulate_get(ACL, params={"limit": "^s$"}).status_code == 404
    assert c.simulate_get(ACL, params={"limit": "("}).status_code == 400
    assert c.simulate_get(f"{ACL}/first").json == [listed[1]]
    assert c.simulate_get(f"{ACL}/firs").status_code == 404          # exact

    # the path form, in the out direction; order 0 appends, as in the original
    r = c.simulate_post(f"{ACL}/dns", params={"rule": "udp dport 53 accept",
                                              "direction": "out", "order": 0})
    assert r.status_code == 200, r.text
    assert [a["description"] for a in _stored(store)["out"]] == ["smtp", "dns"]

    r = c.simulate_delete(f"{ACL}/ssh")
    assert r.status_code == 200 and r.json == {"message": "Firewall rule 'ssh' removed "
                                                          "successfully!"}
    assert [(a["description"], a["order"]) for a in c.simulate_get(
        ACL, params={"direction": "in"}).json] == [("first", 0), ("web", 1)]
    r = c.simulate_delete(f"{ACL}/ssh")
    assert r.status_code == 400 and r.json == {
        "message": "ERROR: No firewall rule exists matching description 'ssh'!"}

    # removing the network removes its ACLs
    assert c.simulate_delete(f"{V1}/network/office").status_code == 200
    assert not store.exists("network.acls", vni="100")


@pytest.mark.parametrize("params, field", [
    ({"description": "two words"}, "description"),
    ({"description": "a/b"}, "description"),
    ({"rule": "tcp dport 22 accept; flush ruleset"}, "rule"),
    ({"rule": "accept } chain x {"}, "rule"),
    ({"rule": "ip saddr 10.0.0.0/33 accept"}, "rule"),
    ({"rule": "tcp dport banana accept"}, "rule"),
    ({"rule": "masquerade"}, "rule"),
    ({"rule": ""}, "rule"),
    ({"direction": "both"}, "direction"),
    ({"order": "x"}, "order"),
    ({"order": -1}, "order"),
])
def test_bad_input_is_a_400_naming_the_field(office, store, params, field):
    r = office.simulate_post(ACL, params={"description": "ok", "rule": "accept", **params})
    assert r.status_code == 400, r.text
    assert f"'{field}'" in r.json["message"]
    assert store.get("network.acls", vni="100") is None


def test_duplicates_and_missing_networks_are_refused(office):
    c = office
    assert c.simulate_post(ACL, params={"description": "a", "rule": "accept"}).status_code == 200
    r = c.simulate_post(ACL, params={"description": "a", "rule": "drop", "direction": "out"})
    assert r.status_code == 400 and r.json == {
        "message": "ERROR: A rule with description 'a' already exists!"}
    for method, path in (("GET", f"{V1}/network/999/acl"), ("GET", f"{V1}/network/999/acl/a"),
                         ("POST", f"{V1}/network/999/acl/a"),
                         ("DELETE", f"{V1}/network/999/acl/a")):
        r = c.simulate_request(method, path, params={"rule": "accept"})
        assert r.status_code == 400, (method, path, r.text)
        assert r.json == {"message": "ERROR: Could not find network '999' in the cluster!"}
    assert c.simulate_post(ACL, params={"rule": "accept"}).status_code == 400   # description*
    # a bridged network is not routed by PVC: its ACLs would do nothing
    bridged = {"vni": 200, "description": "uplink", "nettype": "bridged"}
    assert c.simulate_post(f"{V1}/network", params=bridged).status_code == 200
    r = c.simulate_post(f"{V1}/network/uplink/acl", params={"description": "a", "rule": "accept"})
    assert r.status_code == 400 and "'vni'" in r.json["message"]
    assert "bridged" in r.json["message"]


def test_concurrent_adds_keep_every_rule_once(office, store):
    answers: list[int] = []

    def add(i: int) -> None:
        r = office.simulate_post(ACL, params={"description": f"r{i}",
                                              "rule": f"tcp dport {1000 + i} accept"})
        answers.append(r.status_code)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == [200] * 6
    assert sorted(a["description"] for a in _stored(store)["in"]) == [f"r{i}" for i in range(6)]


def test_the_cli_drives_acls_over_http(api, monkeypatch, tmp_path):  # noqa: F811
    app, cfg = api
    server = create_server(app, cfg)
    thread = threading.Thread(target=server.run, name="pvcapid", daemon=True)
    thread.start()
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PVC_CLI_CONFIG", str(tmp_path / "pvc.json"))
    monkeypatch.setenv("PVC_API_HOSTS", f"127.0.0.1:{cfg.api.port}")
    monkeypatch.setenv("PVC_API_KEY", KEY)

    def pvc(*args: str, stdin: str | None = None):
        return CliRunner().invoke(cli, list(args), input=stdin)

    try:
        wait_for(lambda: pvc("network", "list").exit_code == 0, 20, 0.2, "the API")
        r = pvc("network", "add", "100", "-d", "office", "-p", "managed", "-i",
                "10.100.0.0/24", "-g", "10.100.0.1")
        assert r.exit_code == 0, r.output
        assert "No ACL found." in pvc("network", "acl", "list", "office").output
        r = pvc("network", "acl", "add", "office", "--in", "-d", "ssh", "-r",
                "tcp dport 22 accept")
        assert r.exit_code == 0 and "'ssh' added successfully" in r.output, r.output
        assert pvc("network", "acl", "add", "office", "--out", "-d", "smtp", "-r",
                   "tcp dport 25 drop").exit_code == 0
        assert pvc("network", "acl", "add", "100", "-d", "web", "-r",
                   "tcp dport 80 accept", "-o", "0").exit_code == 0
        table = pvc("network", "acl", "list", "office").output
        lines = [line.split() for line in table.splitlines()]
        assert lines[0] == ["DIRECTION", "ORDER", "DESCRIPTION", "RULE"]
        assert [line[:3] for line in lines[1:]] == [["in", "0", "ssh"], ["in", "1", "web"],
                                                    ["out", "0", "smtp"]]
        only_out = json.loads(pvc("network", "acl", "list", "office", "--out", "-f",
                                  "json").output)
        assert [a["description"] for a in only_out] == ["smtp"]
        bad = pvc("network", "acl", "add", "office", "-d", "bad", "-r", "tcp dport x accept")
        assert bad.exit_code != 0 and "'rule'" in bad.output and "Traceback" not in bad.output
        missing = pvc("network", "acl", "list", "nowhere")
        assert missing.exit_code != 0 and "Could not find network" in missing.output
        refused = pvc("network", "acl", "remove", "office", "ssh", stdin="n\n")
        assert refused.exit_code != 0
        assert pvc("network", "acl", "remove", "office", "ssh", "--yes").exit_code == 0
        assert [a["description"] for a in json.loads(pvc(
            "network", "acl", "list", "office", "-f", "json").output)] == ["web", "smtp"]
    finally:
        app.stopping.set()
        apiserver.stop(server, thread)
