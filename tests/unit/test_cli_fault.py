"""`pvc cluster fault`: list, ack, ack-all, delete, delete-all against a fake API."""

from __future__ import annotations

import json

import pytest

try:
    import test_cli_support as support
except ImportError:  # collected as part of a package
    from tests.unit import test_cli_support as support

from pvc_cli.errors import EXIT_API

run = support.run

FAULTS = [
    {"id": "fence-hv3-1", "first_reported": "2025-01-02 10:00:00",
     "last_reported": "2025-01-02 10:05:00", "acknowledged_at": "", "status": "new",
     "health_delta": 50, "message": "Node hv3 was fenced"},
    {"id": "bmc-hv2", "first_reported": "2025-01-01 09:00:00",
     "last_reported": "2025-01-01 09:30:00", "acknowledged_at": "2025-01-01 09:40:00",
     "status": "ack", "health_delta": 10, "message": "Node hv2: its BMC\ndoes not answer"},
]


@pytest.fixture
def api(monkeypatch, tmp_path):
    with support.fake_api_env(monkeypatch, tmp_path) as fake:
        yield fake


def test_list_pretty_table(api):
    api.route("GET", "/faults", body=FAULTS)
    result = run("cluster", "fault", "list")
    assert result.exit_code == 0, result.output
    assert api.calls("GET", "/faults")[0].query == {"sort_key": ["last_reported"]}
    lines = result.stdout.splitlines()
    assert lines[0].split("  ")[0] == "ID"
    for header in ("STATUS", "HEALTH DELTA", "FIRST REPORTED", "LAST REPORTED", "MESSAGE"):
        assert header in lines[0]
    assert lines[1].startswith("fence-hv3-1") and " new " in lines[1] and " -50 " in lines[1]
    assert "2025-01-02 10:00:00" in lines[1] and lines[1].endswith("Node hv3 was fenced")
    assert " ack " in lines[2] and lines[2].endswith("its BMC does not answer")  # one line
    assert lines[0].index("MESSAGE") == lines[1].index("Node hv3")  # aligned
    assert "\x1b[" not in result.output


def test_list_sort_key_json_and_colour(api):
    api.route("GET", "/faults", body=FAULTS)
    result = run("cluster", "fault", "list", "-s", "health_delta", "-f", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == FAULTS
    assert api.calls("GET", "/faults")[0].query == {"sort_key": ["health_delta"]}
    coloured = run("--colour", "cluster", "fault", "list", "--sort-key", "status").output
    assert "\x1b[31mnew\x1b[0m" in coloured and "\x1b[32mack\x1b[0m" in coloured


def test_list_bad_sort_key_is_a_usage_error(api):
    result = run("cluster", "fault", "list", "-s", "id")
    assert result.exit_code == 2 and not api.requests


def test_list_empty_and_one(api):
    api.route("GET", "/faults", body=[])
    result = run("cluster", "fault", "list")
    assert result.exit_code == 0 and result.stdout.strip() == "No faults found."
    assert run("cluster", "fault", "list", "-f", "json").stdout.strip() == "[]"
    api.route("GET", "/faults/bmc-hv2", body=[FAULTS[1]])
    result = run("cluster", "fault", "list", "bmc-hv2", "-f", "json-pretty")
    assert json.loads(result.stdout) == [FAULTS[1]]
    api.route("GET", "/faults/gone", body=[])
    support.assert_one_error_line(run("cluster", "fault", "list", "gone"), EXIT_API,
                                  "No fault with ID gone found")


def test_ack_each_id_and_report_failures_at_the_end(api):
    api.route("PUT", "/faults/a", body={"message": "Successfully acknowledged fault(s) a"})
    api.route("PUT", "/faults/missing", status=404,
              body={"message": "No fault with ID missing found"})
    api.route("PUT", "/faults/b", body={"message": "Successfully acknowledged fault(s) b"})
    result = run("cluster", "fault", "ack", "a", "missing", "b", "a")
    assert [r.path for r in api.requests] == ["/faults/a", "/faults/missing", "/faults/b"]
    assert result.stdout.splitlines() == ["Successfully acknowledged fault(s) a",
                                          "Successfully acknowledged fault(s) b"]
    support.assert_one_error_line(result, EXIT_API, "No fault with ID missing found")


def test_ack_needs_an_id(api):
    assert run("cluster", "fault", "ack").exit_code == 2 and not api.requests


def test_ack_all_asks_unless_yes(api):
    api.route("PUT", "/faults", body={"message": "Successfully acknowledged fault(s) a, b"})
    result = run("cluster", "fault", "ack-all", input="n\n")
    assert result.exit_code != 0 and not api.calls("PUT", "/faults")
    result = run("cluster", "fault", "ack-all", input="y\n")
    assert result.exit_code == 0 and "Successfully acknowledged fault(s) a, b" in result.stdout
    result = run("cluster", "fault", "ack-all", "-y")
    assert result.stdout == "Successfully acknowledged fault(s) a, b\n"
    assert len(api.calls("PUT", "/faults")) == 2


def test_delete_asks_unless_yes(api):
    api.route("DELETE", "/faults/a", body={"message": "Successfully deleted fault(s) a"})
    result = run("cluster", "fault", "delete", "a", input="n\n")
    assert "Delete fault(s) a?" in result.output and result.exit_code != 0
    assert not api.requests
    result = run("cluster", "fault", "delete", "a", "--yes")
    assert result.exit_code == 0 and result.stdout == "Successfully deleted fault(s) a\n"


def test_delete_unknown_is_one_error_line(api):
    api.route("DELETE", "/faults/x", status=404, body={"message": "No fault with ID x found"})
    support.assert_one_error_line(run("cluster", "fault", "delete", "x", "-y"), EXIT_API,
                                  "No fault with ID x found")


def test_delete_all(api):
    api.route("DELETE", "/faults", body={"message": "Successfully deleted fault(s) a, b"})
    assert run("cluster", "fault", "delete-all", input="\n").exit_code != 0
    assert not api.requests
    result = run("cluster", "fault", "delete-all", "-y")
    assert result.exit_code == 0 and result.stdout == "Successfully deleted fault(s) a, b\n"


def test_server_error_is_one_line(api):
    api.route("GET", "/faults", status=500, body={"message": "Internal Server Error"})
    support.assert_one_error_line(run("cluster", "fault", "list"), EXIT_API,
                                  "Internal Server Error")


def test_help_has_examples():
    for cmd in ("list", "ack", "ack-all", "delete", "delete-all"):
        result = run("cluster", "fault", cmd, "--help")
        assert result.exit_code == 0 and "pvc cluster fault " + cmd in result.output
