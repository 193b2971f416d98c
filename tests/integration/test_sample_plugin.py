"""The third-party sample plugin (tests/sample_plugin, the one docs/plugins.md walks
through) end to end: installed as a package, loaded through its entry points by a real
pvcnoded and the pvcapid it supervises, its declared config key read on the node, its hook
feeding the keepalive, its API routes served and its CLI commands run over HTTP."""

from __future__ import annotations

import socket

import pytest
import requests
from click.testing import CliRunner

from pvc_cli.main import cli
from tests.support.daemons import KERNEL_TEST_PLUGINS, wait_for
from tests.unit.test_cli_support import ENV_VARS

pytestmark = pytest.mark.integration
KEY = "sample-plugin-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pvc(daemons, monkeypatch, tmp_path):
    """``pvc(*args)`` against a real pvcnoded (sample greeting "hej", notes of at most 12
    characters) whose pvcapid serves the sample plugin's routes."""
    from pvc_kernel.plugins import available

    port = _free_port()
    others = [p for p in available() if p not in KERNEL_TEST_PLUGINS]
    daemons("hv1", api={"enabled": True, "port": port, "keys": [KEY]},
            plugins={"disabled": others, "sample": {"greeting": "hej", "note_limit": 12}})
    base = f"http://127.0.0.1:{port}/api/v1"

    def greeted() -> bool:
        r = requests.get(f"{base}/sample/greetings", headers={"X-Api-Key": KEY}, timeout=5)
        return r.status_code == 200 and bool(r.json())

    wait_for(greeted, 60, 0.2, "the sample plugin's greeting through the API")
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PVC_CLI_CONFIG", str(tmp_path / "pvc.json"))
    monkeypatch.setenv("PVC_API_HOSTS", f"127.0.0.1:{port}")
    monkeypatch.setenv("PVC_API_KEY", KEY)
    return lambda *args: CliRunner().invoke(cli, list(args))


def test_sample_plugin_config_hook_route_and_command(pvc):
    result = pvc("sample", "greetings", "-f", "json")
    assert result.exit_code == 0, result.output
    import json

    (hv1,) = json.loads(result.output)
    assert hv1["node"] == "hv1" and hv1["greeting"] == "hej" and hv1["keepalives"] >= 1
    table = pvc("sample", "greetings").output
    assert "Node" in table and "hej" in table

    assert pvc("sample", "note").output.strip() == "(no note)"
    saved = pvc("sample", "note", "shelf 2 out")
    assert saved.exit_code == 0 and saved.output.strip() == "Note saved."
    assert pvc("sample", "note").output.strip() == "shelf 2 out"

    refused = pvc("sample", "note", "a note that is far too long")
    assert refused.exit_code != 0
    assert refused.output.strip().splitlines()[-1].endswith(
        "Parameter 'text' must be at most 12 characters long.")
    assert "Traceback" not in refused.output
    assert pvc("sample", "note").output.strip() == "shelf 2 out"    # nothing changed


def test_third_party_health_checks_run_and_a_hung_one_is_reported(daemons, monkeypatch,
                                                                   tmp_path):
    """The health plugin runs the sample plugin's checks (loaded by entry point) beside its
    own: ``sample`` is healthy, ``sample_hang`` never returns and is reported as timed out
    (10 off the node's health, a fault of half that) while the others keep running."""
    import json

    from pvc_kernel.plugins import available

    port = _free_port()
    others = [p for p in available() if p not in {"hoststats", "sample", "health"}]
    daemon = daemons("hv1", api={"enabled": True, "port": port, "keys": [KEY]},
                     plugins={"disabled": others, "sample": {"hang_check": True},
                              "health": {"interval": 1, "load_delta": 0,
                                         "disk_paths": [str(tmp_path)]}})
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PVC_CLI_CONFIG", str(tmp_path / "pvc.json"))
    monkeypatch.setenv("PVC_API_HOSTS", f"127.0.0.1:{port}")
    monkeypatch.setenv("PVC_API_KEY", KEY)

    def pvc(*args: str):
        return CliRunner().invoke(cli, list(args))

    def node() -> dict | None:
        out = pvc("node", "info", "hv1", "-f", "json")
        if out.exit_code != 0:
            return None
        found = json.loads(out.output)
        found = found[0] if isinstance(found, list) else found
        names = {d["name"] for d in found["health_details"]}
        return found if {"sample", "sample_hang", "load", "disk"} <= names else None

    hv1 = wait_for(node, 60, 0.3, "hv1's health checks in the API")
    details = {d["name"]: d for d in hv1["health_details"]}
    assert details["sample"]["health_delta"] == 0
    assert details["sample"]["message"] == "sample says 0"
    assert details["sample"]["data"] == {"node": "hv1"}
    hung = details["sample_hang"]
    assert hung["health_delta"] == 10 and hung["message"].startswith("timed out")
    assert details["disk"]["health_delta"] == 0 and str(tmp_path) in details["disk"]["data"]
    assert details["smart"]["message"].startswith("not applicable")  # no such hardware here
    assert hv1["health"] == 100 - sum(d["health_delta"] for d in details.values())
    assert hv1["health"] <= 90

    # the others keep running: the sample check's last run moves on while the hang stays
    first = details["sample"]["last_run"]
    wait_for(lambda: {d["name"]: d for d in node()["health_details"]}["sample"]["last_run"]
             > first, 20, 0.3, "another round of the sample check")
    faults = json.loads(pvc("cluster", "fault", "list", "-f", "json").output)
    by_id = {f["id"]: f for f in faults}
    assert by_id["NODE_PLUGIN_SAMPLE_HANG_hv1"]["health_delta"] == 5
    assert "sample_hang" in by_id["NODE_PLUGIN_SAMPLE_HANG_hv1"]["message"]
    status = json.loads(pvc("cluster", "status", "-f", "json").output)
    assert status["node_health"]["hv1"]["health"] <= 90
    assert any(m.startswith("'sample_hang': timed out")
               for m in status["node_health"]["hv1"]["messages"])
    table = pvc("node", "info", "hv1").output
    assert "sample_hang" in table and "timed out" in table
    assert daemon.terminate(10) < 6                      # the hung check does not hold it
