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
