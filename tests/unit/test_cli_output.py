"""Output formats (-f pretty|json|json-pretty), tables and colours."""

from __future__ import annotations

import json
import sys

import pytest

try:
    import test_cli_support as support
except ImportError:  # collected as part of a package
    from tests.unit import test_cli_support as support

from pvc_cli.output import Painter, colour_default, human_mib, render_table, show_list

run = support.run

STATUS = {
    "cluster_name": "lab",
    "cluster_health": {
        "health": 80,
        "messages": [{"id": "DEAD_NODE_hv2", "health_delta": 20, "text": "Node hv2 is dead"}],
    },
    "node_health": {
        "hv1": {"health": 100, "messages": []},
        "hv2": {"health": "N/A", "messages": ["'load': high"]},
    },
    "maintenance": "true",
    "primary_node": "hv1",
    "pvc_version": "0.1.0",
    "upstream_ip": "10.0.0.254/24",
    "nodes": {"total": 2, "run,ready": 1, "dead,flushed": 1},
    "vms": {"total": 3, "start": 2, "stop": 1},
    "networks": 1,
    "osds": {"total": 3, "up,in": 3},
    "pools": 1,
    "volumes": 4,
    "snapshots": 0,
    "resources": {
        "memory": {
            "total": 32768,
            "free": 20000,
            "used": 12768,
            "allocated": 8192,
            "provisioned": 10240,
            "utilization": 38.9,
        },
        "cpu": {"total": 16, "load": 1.5, "allocated": 6, "utilization": 9.4},
        "disk": {"total": 104857600, "used": 10485760, "free": 94371840, "utilization": 10.0},
    },
}


@pytest.fixture
def api(monkeypatch, tmp_path):
    with support.fake_api_env(monkeypatch, tmp_path) as fake:
        fake.route("GET", "/node", body=[support.NODE_HV1, support.NODE_HV2])
        fake.route("GET", "/node/hv1", body=[support.NODE_HV1])
        fake.route("GET", "/status", body=STATUS)
        yield fake


def test_node_list_pretty_is_an_aligned_table(api):
    result = run("node", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:6] == ["NAME", "VERSION", "HEALTH", "DAEMON", "COORDINATOR", "DOMAIN"]
    assert lines[1].split()[:6] == ["hv1", "0.1.0", "100%", "run", "primary", "ready"]
    assert lines[2].split()[:6] == ["hv2", "0.1.0", "40%", "dead", "secondary", "flushed"]
    assert lines[0].index("DAEMON") == lines[1].index("run") == lines[2].index("dead")
    assert "16.0G" in lines[1] and "4/8" in lines[1]
    assert "\x1b[" not in result.output  # not a terminal: no colour


def test_node_list_json_and_json_pretty(api):
    compact = run("node", "list", "-f", "json")
    pretty = run("node", "list", "--format", "json-pretty")
    assert compact.exit_code == pretty.exit_code == 0
    assert len(compact.stdout.strip().splitlines()) == 1
    assert len(pretty.stdout.splitlines()) > 10
    assert (
        json.loads(compact.stdout)
        == json.loads(pretty.stdout)
        == [support.NODE_HV1, support.NODE_HV2]
    )


def test_node_list_sends_limit_and_filters(api):
    result = run("node", "list", "hv", "--daemon-state", "run", "--domain-state", "flushed")
    assert result.exit_code == 0, result.output
    req = api.calls("GET", "/node")[-1]
    assert req.query == {"limit": ["hv"], "daemon_state": ["run"], "domain_state": ["flushed"]}


def test_node_list_empty_404_is_an_empty_list(api):
    api.route("GET", "/node", status=404, body={"message": "Node not found."})
    assert run("node", "list").stdout.strip() == "No nodes found."
    result = run("node", "list", "-f", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_node_info_reads_the_one_element_array(api):
    result = run("node", "info", "hv1")
    assert result.exit_code == 0, result.output
    assert "Coordinator state:" in result.stdout and "primary" in result.stdout
    assert "web1, db1" in result.stdout
    assert json.loads(run("node", "info", "hv1", "-f", "json").stdout) == support.NODE_HV1


def test_cluster_status_pretty_and_json(api):
    result = run("cluster", "status")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for fragment in (
        "lab",
        "80%",
        "Maintenance:",
        "on",
        "hv1",
        "2 total: 1 run,ready, 1 dead,flushed",
        "DEAD_NODE_hv2: Node hv2 is dead",
        "'load': high",
        "12.5G used of 32.0G",
    ):
        assert fragment in out, fragment
    assert json.loads(run("cluster", "status", "-f", "json").stdout) == STATUS


def test_maintenance_on_off(api):
    api.route("POST", "/status", handler=lambda r: (200, {"message": f"state={r.param('state')}"}))
    assert run("cluster", "maintenance", "on").stdout.strip() == "state=true"
    assert run("cluster", "maintenance", "off").stdout.strip() == "state=false"


def test_colour_on_request_and_states_coloured(api):
    result = run("--colour", "node", "list")
    assert result.exit_code == 0
    out = result.stdout
    assert "\x1b[32mrun\x1b[0m" in out  # green run
    assert "\x1b[31mdead\x1b[0m" in out  # red dead
    assert "\x1b[33mflushed\x1b[0m" in out  # yellow flushed
    assert "\x1b[1m" in out  # bold headers / primary


def test_no_colour_flag_beats_a_terminal(api, monkeypatch):
    monkeypatch.setattr("pvc_cli.output.colour_default", lambda: True)  # as on a terminal
    assert "\x1b[" in run("node", "list").output
    assert "\x1b[" not in run("--no-colour", "node", "list").output
    assert "\x1b[" not in run("--no-color", "node", "list").output


class FakeStdout:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_colour_default_needs_a_terminal_and_no_NO_COLOR(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "stdout", FakeStdout(True))
    assert colour_default() is True
    monkeypatch.setenv("NO_COLOR", "1")
    assert colour_default() is False
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr(sys, "stdout", FakeStdout(False))
    assert colour_default() is False


def test_render_table_alignment_ignores_colour():
    painter = Painter(colour=True)
    text = render_table(
        painter, ["A", "B"], [[("x", {"fg": "red"}), "1"], ["long", ("22", None)]], right=[1]
    )
    plain = click_unstyle(text).splitlines()
    assert plain == ["A      B", "x      1", "long  22"]


def test_show_list_json_empty_message_or_table(capsys):
    rendered = []

    def render(painter: Painter, items: list[dict]) -> str:
        rendered.append(items)
        return painter.bold("TABLE") + f" {len(items)}"

    items = [{"a": 1}, {"a": 2}]
    show_list(Painter(colour=True), items, "json", "None.", render)
    assert capsys.readouterr().out == '[{"a":1},{"a":2}]\n'
    show_list(Painter(colour=True), [], "json-pretty", "None.", render)
    assert capsys.readouterr().out == "[]\n"
    assert rendered == []  # JSON never renders the table
    show_list(Painter(colour=True), [], "pretty", "None.", render)
    assert capsys.readouterr().out == "None.\n"
    assert rendered == []
    show_list(Painter(colour=True), items, "pretty", "None.", render)
    assert capsys.readouterr().out == "\x1b[1mTABLE\x1b[0m 2\n"
    assert rendered == [items]


def click_unstyle(text: str) -> str:
    import click

    return click.unstyle(text)


def test_human_mib():
    assert human_mib(512) == "512M"
    assert human_mib(2048) == "2.0G"
    assert human_mib(3 * 1024 * 1024) == "3.0T"
    assert human_mib(None) == "-"


def test_node_info_shows_the_checks_and_one_checks_data(api):
    disk = {"name": "disk", "last_run": 1733300000, "health_delta": 10,
            "message": "/var/lib/ceph 93% full (space)",
            "data": {"/var/lib/ceph": {"used_percent": 93.1}}}
    node = dict(support.NODE_HV1, health=90, health_plugins=["load", "disk"],
                health_details=[{"name": "load", "last_run": 1733300000, "health_delta": 0,
                                 "message": "load 0.42 on 8 CPUs", "data": {}}, disk])
    api.route("GET", "/node/hv3", body=[node])
    out = run("node", "info", "hv3").stdout
    assert "Health plugins:" in out and "93% full" in out and "load 0.42" in out
    one = run("node", "info", "hv3", "--check", "disk")
    assert one.exit_code == 0, one.output
    assert "Message:" in one.stdout and '"used_percent": 93.1' in one.stdout
    assert json.loads(run("node", "info", "hv3", "-c", "disk", "-f", "json").stdout) == disk
    missing = run("node", "info", "hv3", "--check", "smart")
    assert missing.exit_code != 0
    assert "has no health check 'smart' (checks: load, disk)" in missing.output
