"""Saved connections: add/list/remove/default, the config file, selection order and detail."""

from __future__ import annotations

import json
import stat

import pytest

try:
    import test_cli_support as support
except ImportError:  # collected as part of a package
    from tests.unit import test_cli_support as support

from pvc_cli.connections import Endpoint, parse_address, resolve
from pvc_cli.errors import EXIT_CONFIG, PvcError

run = support.run


@pytest.fixture
def config(monkeypatch, tmp_path):
    return support.clean_env(monkeypatch, tmp_path)


def test_add_list_remove(config):
    result = run(
        "connection",
        "add",
        "lab",
        "--address",
        "10.0.0.1,10.0.0.2:7371",
        "-a",
        "10.0.0.3",
        "--api-key",
        "k1",
        "-d",
        "the lab",
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    saved = json.loads(config.read_text())
    assert saved["connections"]["lab"] == {
        "addresses": ["10.0.0.1", "10.0.0.2:7371", "10.0.0.3"],
        "port": 7370,
        "scheme": "http",
        "verify": True,
        "description": "the lab",
        "api_key": "k1",
    }

    listing = run("connection", "list")
    assert listing.exit_code == 0
    row = listing.stdout.splitlines()[1]
    assert "10.0.0.1:7370, 10.0.0.2:7371, 10.0.0.3:7370" in row
    assert "k1" not in listing.stdout  # keys are never printed
    as_json = json.loads(run("connection", "list", "-f", "json").stdout)
    assert as_json[0]["name"] == "lab" and as_json[0]["api_key"] == "set"

    again = run("connection", "add", "lab", "--address", "x")
    support.assert_one_error_line(again, EXIT_CONFIG, "exists")
    assert run("connection", "add", "lab", "--address", "x", "--replace").exit_code == 0

    assert run("connection", "remove", "lab").exit_code == 0
    assert json.loads(config.read_text())["connections"] == {}
    support.assert_one_error_line(
        run("connection", "remove", "lab"), EXIT_CONFIG, "no connection named"
    )


def test_default_and_selection_order(config, monkeypatch):
    run("connection", "add", "a", "--address", "10.0.0.1")
    run("connection", "add", "b", "--address", "10.0.0.2", "--default")
    assert resolve().name == "b"
    assert resolve("a").name == "a"
    monkeypatch.setenv("PVC_CLUSTER", "a")
    assert resolve().name == "a"
    monkeypatch.delenv("PVC_CLUSTER")
    monkeypatch.setenv("PVC_API_HOSTS", "127.0.0.1:9999")
    assert resolve().source == "env"  # env hosts beat the saved default
    assert resolve("b").name == "b"  # -c beats everything
    monkeypatch.delenv("PVC_API_HOSTS")

    assert run("connection", "default", "--unset").exit_code == 0
    with pytest.raises(PvcError, match="several connections"):
        resolve()
    assert run("connection", "default", "a").exit_code == 0
    assert run("connection", "default").stdout.strip() == "a"


def test_only_connection_is_used(config):
    run("connection", "add", "solo", "--address", "10.0.0.9")
    assert resolve().name == "solo"


def test_api_key_file_is_read_at_use(config, tmp_path):
    key = tmp_path / "key"
    key.write_text("from-file\n")
    assert (
        run("connection", "add", "k", "--address", "h", "--api-key-file", str(key)).exit_code == 0
    )
    conn = resolve()
    assert conn.key() == "from-file"
    key.write_text("rotated")
    assert resolve().key() == "rotated"
    key.unlink()
    with pytest.raises(PvcError, match="cannot read the API key file"):
        resolve().key()


def test_ca_file_is_stored_shown_and_checked(config, tmp_path, monkeypatch):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    result = run("connection", "add", "tls", "-a", "https://pvc.example:7371", "--ca-file",
                 str(ca))
    assert result.exit_code == 0, result.output
    assert json.loads(config.read_text())["connections"]["tls"]["ca_file"] == str(ca)
    assert f"ca {ca}" in run("connection", "list").stdout
    assert json.loads(run("connection", "list", "-f", "json").stdout)[0]["ca_file"] == str(ca)
    conn = resolve()
    assert conn.tls_verify() == str(ca)
    ca.unlink()
    with pytest.raises(PvcError, match="cannot read the CA file") as err:
        conn.tls_verify()
    assert err.value.exit_code == EXIT_CONFIG
    conn.verify = False
    assert conn.tls_verify() is False
    missing = run("connection", "add", "x", "-a", "h", "--ca-file", str(ca))
    assert missing.exit_code == 2  # click checks that the file exists
    monkeypatch.setenv("PVC_API_HOSTS", "https://h:1")
    monkeypatch.setenv("PVC_API_CA_FILE", str(tmp_path / "env-ca.pem"))
    assert resolve().ca_file == str(tmp_path / "env-ca.pem")


def test_connection_used_by_commands(config):
    with _api() as api:
        api.route("GET", "/node", body=[support.NODE_HV1])
        run(
            "connection",
            "add",
            "lab",
            "--address",
            f"{support.refused_address()},{api.address}",
            "--api-key",
            "k2",
        )
        result = run("-c", "lab", "node", "list", "-f", "json")
        assert result.exit_code == 0, result.output
        assert api.requests[0].headers["X-Api-Key"] == "k2"


def test_legacy_config_layout_is_read(config):
    config.parent.mkdir(parents=True)
    config.write_text(
        json.dumps(
            {
                "old": {
                    "description": "d",
                    "host": "10.1.1.1",
                    "port": 7370,
                    "scheme": "https",
                    "api_key": "z",
                }
            }
        )
    )
    conn = resolve()
    assert conn.name == "old" and conn.endpoints() == [Endpoint("https", "10.1.1.1", 7370)]


def test_broken_config_file(config):
    config.parent.mkdir(parents=True)
    config.write_text("{not json")
    support.assert_one_error_line(run("node", "list"), EXIT_CONFIG, "is not valid")


def test_parse_address():
    assert parse_address("h") == Endpoint("http", "h", 7370)
    assert parse_address("h:1", 7370, "https") == Endpoint("https", "h", 1)
    assert parse_address("[fd00::1]:7371").label == "[fd00::1]:7371"
    assert parse_address("fd00::1").base_url == "http://[fd00::1]:7370/api/v1"
    assert parse_address("https://pvc.example.com:8443/api/v1") == Endpoint(
        "https", "pvc.example.com", 8443
    )
    with pytest.raises(PvcError):
        parse_address("h:notaport")


def test_detail_probes_each_connection(config):
    with _api() as api:
        api.route("GET", "/status/primary_node", body={"primary_node": "hv1"})
        run("connection", "add", "up", "--address", api.address)
        run("connection", "add", "down", "--address", support.refused_address())
        result = run("connection", "detail", "-f", "json")
        assert result.exit_code == 0, result.output
        by_name = {r["name"]: r for r in json.loads(result.stdout)}
        assert by_name["up"]["reachable"] and by_name["up"]["primary_node"] == "hv1"
        assert not by_name["down"]["reachable"] and "connection refused" in by_name["down"]["error"]
        pretty = run("connection", "detail").stdout
        assert "hv1" in pretty and "down" in pretty


class _api:
    """A fake API as a context manager."""

    def __enter__(self) -> support.FakeApi:
        self.api = support.FakeApi().start()
        return self.api

    def __exit__(self, *exc: object) -> None:
        self.api.stop()
