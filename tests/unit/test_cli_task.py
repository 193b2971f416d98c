"""`pvc task` reads this API's task records (detail=true), not the original's shapes."""

from __future__ import annotations

import pytest

try:
    import test_cli_support as support
except ImportError:  # collected as part of a package
    from tests.unit import test_cli_support as support

from pvc_cli.errors import EXIT_API

run = support.run

RECORD = {"id": "1a2b3c4d", "type": "node.flush", "owner": "hv1", "args": {},
          "state": "SUCCESS", "cancel": False, "current": 3, "total": 3,
          "status": "Node hv1 flushed", "result": None, "created": 1700000000.0,
          "started": 1700000001.0, "finished": 1700000009.0}


@pytest.fixture
def api(monkeypatch, tmp_path):
    with support.fake_api_env(monkeypatch, tmp_path) as fake:
        yield fake


def test_list_asks_for_the_task_records(api):
    api.route("GET", "/tasks", body=[RECORD])
    result = run("task", "list")
    assert result.exit_code == 0, result.output
    assert api.calls("GET", "/tasks")[0].query == {"detail": ["true"]}
    assert result.stdout.splitlines()[1].split()[:5] == ["1a2b3c4d", "node.flush", "hv1",
                                                         "SUCCESS", "3/3"]


def test_show_asks_for_the_record(api):
    api.route("GET", "/tasks/1a2b3c4d", body=RECORD)
    result = run("task", "show", "1a2b3c4d")
    assert result.exit_code == 0, result.output
    assert api.calls("GET", "/tasks/1a2b3c4d")[0].query == {"detail": ["true"]}
    assert "Node hv1 flushed" in result.stdout


@pytest.mark.parametrize("wait", [[], ["--wait"]])
def test_show_of_an_unknown_id_fails_at_once(api, wait):
    """Without detail the API reads PENDING for any id (as the original does): --wait would
    never end. The record lookup says "not found" instead."""
    api.route("GET", "/tasks/deadbeef",
              handler=lambda r: (404, {"message": "Task not found."}) if r.param("detail")
              else (200, {"state": "PENDING", "current": 0, "total": 1,
                          "status": "Pending job start"}))
    result = run("task", "show", "deadbeef", *wait)
    assert result.exit_code == EXIT_API, result.output
    assert "Task not found." in result.output
    assert len(api.calls("GET", "/tasks/deadbeef")) == 1


def test_show_wait_follows_a_known_task(api):
    api.sequence("GET", "/tasks/1a2b3c4d", [
        (200, {**RECORD, "state": "RUNNING", "current": 1}),
        (200, {"state": "RUNNING", "current": 2, "total": 3, "status": "Migrating"}),
        (200, {"state": "SUCCESS", "current": 3, "total": 3, "status": "Node hv1 flushed"}),
    ])
    result = run("task", "show", "1a2b3c4d", "--wait")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["SUCCESS: Node hv1 flushed"]
