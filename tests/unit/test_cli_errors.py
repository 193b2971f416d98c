"""Fail-over between addresses and the one-line error reports of `pvc`."""

from __future__ import annotations

import json

import pytest

try:
    import test_cli_support as support
except ImportError:  # collected as part of a package
    from tests.unit import test_cli_support as support

from pvc_cli.errors import EXIT_API, EXIT_CONFIG, EXIT_UNREACHABLE

run = support.run


@pytest.fixture
def api(monkeypatch, tmp_path):
    with support.fake_api_env(monkeypatch, tmp_path) as fake:
        yield fake


def test_key_is_sent_and_list_is_read(api):
    api.route("GET", "/node", body=[support.NODE_HV1])
    result = run("node", "list", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [support.NODE_HV1]
    assert api.requests[0].headers["X-Api-Key"] == "secret"


def test_failover_to_second_address_when_first_refuses(api, monkeypatch):
    dead = support.refused_address()
    monkeypatch.setenv("PVC_API_HOSTS", f"{dead},{api.address}")
    api.route("GET", "/node", body=[support.NODE_HV1])
    api.route("GET", "/node/hv1", body=[support.NODE_HV1])
    result = run("node", "list")
    assert result.exit_code == 0, result.output
    assert "hv1" in result.stdout
    assert len(api.calls("GET", "/node")) == 1


def test_failover_remembers_the_working_address(api, monkeypatch):
    """Within one command, later requests go straight to the address that answered."""
    from pvc_cli.client import ApiClient
    from pvc_cli.connections import Connection

    dead = support.refused_address()
    conn = Connection(name="t", addresses=[dead, api.address], api_key="secret")
    client = ApiClient(conn, timeout=5)
    api.route("GET", "/status/primary_node", body={"primary_node": "hv1"})
    calls = []
    real = client._get_session

    def spy():
        session = real()
        original = session.request
        if not getattr(session, "_spied", False):

            def request(method, url, **kw):
                calls.append(url)
                return original(method, url, **kw)

            session.request = request
            session._spied = True
        return session

    monkeypatch.setattr(client, "_get_session", spy)
    assert client.get("/status/primary_node").data == {"primary_node": "hv1"}
    assert client.get("/status/primary_node").endpoint.label == api.address
    assert [c.split("/")[2] for c in calls] == [dead, api.address, api.address]


def test_failover_on_503(api, monkeypatch):
    second = support.FakeApi().start()
    try:
        monkeypatch.setenv("PVC_API_HOSTS", f"{api.address},{second.address}")
        api.route("GET", "/status", status=503, body={"message": "not the primary"})
        second.route("GET", "/status", body={"cluster_name": "lab", "maintenance": "false"})
        result = run("cluster", "status", "-f", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["cluster_name"] == "lab"
    finally:
        second.stop()


def test_all_addresses_refused(clean_env, monkeypatch):
    a, b = support.refused_address(), support.refused_address()
    monkeypatch.setenv("PVC_API_HOSTS", f"{a},{b}")
    result = run("node", "list")
    line = support.assert_one_error_line(result, EXIT_UNREACHABLE, "cannot reach the cluster")
    assert line == f"pvc: cannot reach the cluster at {a}, {b}: connection refused"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    return support.clean_env(monkeypatch, tmp_path)


def test_401_wrong_key(api):
    api.route("GET", "/node", status=401, body={"message": "X-Api-Key Authentication failed."})
    line = support.assert_one_error_line(run("node", "list"), EXIT_API, "401")
    assert line == "pvc: the API refused the key (401): X-Api-Key Authentication failed."


def test_401_without_key_gives_a_hint(api, monkeypatch):
    monkeypatch.delenv("PVC_API_KEY")
    api.route("GET", "/status", status=401, body={"message": "X-Api-Key Authentication required."})
    line = support.assert_one_error_line(run("cluster", "status"), EXIT_API, "(401)")
    assert "no API key is configured" in line


def test_404_prints_the_api_message(api):
    api.route("GET", "/node/nope", status=404, body={"message": "Node not found."})
    line = support.assert_one_error_line(run("node", "info", "nope"), EXIT_API, "Node not found.")
    assert line == "pvc: Node not found."


def test_400_with_parameter_dict(api):
    api.route(
        "POST",
        "/node/hv1/coordinator-state",
        status=400,
        body={"message": {"state": "A valid state must be specified."}},
    )
    line = support.assert_one_error_line(run("node", "primary", "hv1"), EXIT_API, "state:")
    assert line == "pvc: state: A valid state must be specified."


def test_400_plain_message(api):
    api.route(
        "POST",
        "/node/hv9/domain-state",
        status=400,
        body={"message": "ERROR: No node named hv9 is present in the cluster."},
    )
    support.assert_one_error_line(run("node", "flush", "hv9"), EXIT_API, "No node named hv9")


def test_500(api):
    api.route("GET", "/status", status=500, body={"message": "Internal Server Error"})
    line = support.assert_one_error_line(run("cluster", "status"), EXIT_API, "(500 at ")
    assert line.endswith("Internal Server Error")


def test_invalid_json(api):
    api.route("GET", "/status", body="<html>surprise</html>")
    support.assert_one_error_line(run("cluster", "status"), EXIT_API, "not JSON")


def test_html_404_from_something_else(api):
    api.route("GET", "/status", status=404, body="<html><h1>Not Found</h1></html>")
    support.assert_one_error_line(run("cluster", "status"), EXIT_API, "a PVC API?")


def test_no_connection_configured(clean_env):
    result = run("cluster", "status")
    line = support.assert_one_error_line(result, EXIT_CONFIG, "no cluster connection configured")
    assert "pvc connection add" in line


def test_unknown_connection_name(clean_env):
    support.assert_one_error_line(
        run("-c", "nope", "node", "list"), EXIT_CONFIG, "no connection named"
    )


def test_internal_error_is_one_line(api, monkeypatch):
    def boom(*_a, **_k):
        raise RuntimeError("bug")

    monkeypatch.setattr("pvc_cli.commands.node.render_node_table", boom)
    api.route("GET", "/node", body=[support.NODE_HV1])
    support.assert_one_error_line(
        run("node", "list"), EXIT_API, "internal error: RuntimeError: bug"
    )


def test_read_timeout_fails_over_for_get(api, monkeypatch):
    import time

    slow = support.FakeApi().start()
    try:
        slow.route("GET", "/status", handler=lambda _r: (time.sleep(1.0), (200, {}))[1])
        api.route("GET", "/status", body={"cluster_name": "fast"})
        monkeypatch.setenv("PVC_API_HOSTS", f"{slow.address},{api.address}")
        result = run("--timeout", "0.3", "cluster", "status", "-f", "json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["cluster_name"] == "fast"
    finally:
        slow.stop()
