"""Node state changes with --wait, task progress, and log following."""

from __future__ import annotations

import json

import pytest

try:
    import test_cli_support as support
except ImportError:  # collected as part of a package
    from tests.unit import test_cli_support as support

from pvc_cli.commands.node import new_lines
from pvc_cli.commands.task import normalise_tasks
from pvc_cli.errors import EXIT_API

run = support.run


@pytest.fixture
def api(monkeypatch, tmp_path):
    with support.fake_api_env(monkeypatch, tmp_path) as fake:
        yield fake


def task_replies():
    return [
        (200, {"state": "PENDING", "current": 0, "total": 1, "status": "Pending job start"}),
        (200, {"state": "RUNNING", "current": 1, "total": 3, "status": "Migrating VM web1"}),
        (200, {"state": "RUNNING", "current": 2, "total": 3, "status": "Migrating VM db1"}),
        (200, {"state": "SUCCESS", "current": 3, "total": 3, "status": "Node hv1 flushed"}),
    ]


def test_flush_wait_follows_the_task_to_success(api):
    api.route(
        "POST",
        "/node/hv1/domain-state",
        body={"message": "Removing node hv1 from active service.", "task_id": "1a2b3c4d"},
    )
    api.sequence("GET", "/tasks/1a2b3c4d", task_replies())
    result = run("node", "flush", "hv1", "--wait")
    assert result.exit_code == 0, result.output
    assert api.calls("POST", "/node/hv1/domain-state")[0].query == {"state": ["flush"]}
    assert result.stdout.splitlines() == [
        "Removing node hv1 from active service.",
        "SUCCESS: Node hv1 flushed",
    ]
    progress = result.stderr.splitlines()  # not a terminal: one line per status change
    assert "[1/3] RUNNING: Migrating VM web1" in progress
    assert "[2/3] RUNNING: Migrating VM db1" in progress
    assert len(api.calls("GET", "/tasks/1a2b3c4d")) == 4


def test_flush_without_wait_prints_the_task_id(api):
    api.route(
        "POST",
        "/node/hv1/domain-state",
        status=202,
        body={"message": "Removing node hv1 from active service.", "task_id": "1a2b3c4d"},
    )
    result = run("node", "flush", "hv1")
    assert result.exit_code == 0
    assert "Task ID: 1a2b3c4d" in result.stdout
    assert not api.calls("GET", "/tasks/1a2b3c4d")


def test_ready_wait_task_failure_exits_non_zero(api):
    api.route(
        "POST", "/node/hv1/domain-state", body={"message": "Restoring node hv1.", "task_id": "t1"}
    )
    api.sequence(
        "GET",
        "/tasks/t1",
        [
            (200, {"state": "RUNNING", "current": 1, "total": 2, "status": "Migrating VM web1"}),
            (
                200,
                {
                    "state": "FAILURE",
                    "current": 1,
                    "total": 1,
                    "status": "MigrationError: no target",
                },
            ),
        ],
    )
    result = run("node", "ready", "hv1", "--wait")
    assert api.calls("POST", "/node/hv1/domain-state")[0].query == {"state": ["ready"]}
    assert result.exit_code == EXIT_API and "Traceback" not in result.output
    assert result.stderr.splitlines() == [
        "[1/2] RUNNING: Migrating VM web1",
        "pvc: task t1 ended in FAILURE: MigrationError: no target",
    ]


def test_flush_wait_without_task_id_polls_the_node(api):
    """The original API has no task for flush: fall back to watching domain_state."""
    api.route(
        "POST", "/node/hv1/domain-state", body={"message": "Removing node hv1 from active service."}
    )
    api.sequence(
        "GET",
        "/node/hv1",
        [
            (200, [dict(support.NODE_HV1, domain_state="flush")]),
            (200, [dict(support.NODE_HV1, domain_state="flushed")]),
        ],
    )
    result = run("node", "flush", "hv1", "--wait")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "Node hv1 is now flushed."


def test_primary_wait_polls_primary_node(api):
    api.route(
        "POST",
        "/node/hv2/coordinator-state",
        body={"message": "Setting node hv2 in primary coordinator state."},
    )
    api.sequence(
        "GET",
        "/status/primary_node",
        [
            (200, {"primary_node": "hv1"}),
            (500, {"message": "Internal Server Error"}),  # the original during a handover
            (503, {"message": "API moving"}),  # nobody serves for a moment: ridden out
            (200, {"primary_node": "hv2"}),
        ],
    )
    result = run("node", "primary", "hv2", "--wait")
    assert result.exit_code == 0, result.output
    assert api.calls("POST", "/node/hv2/coordinator-state")[0].query == {"state": ["primary"]}
    assert result.stdout.splitlines()[-1] == "Primary coordinator is now hv2."


def test_secondary_wait_prints_the_new_primary(api):
    api.route(
        "POST",
        "/node/hv1/coordinator-state",
        body={"message": "Setting node hv1 in secondary coordinator state."},
    )
    api.sequence(
        "GET",
        "/status/primary_node",
        [
            (200, {"primary_node": "hv1"}),
            (204, None),
            (200, {"primary_node": "none"}),
            (200, {"primary_node": "hv3"}),
        ],
    )
    result = run("node", "secondary", "hv1", "--wait")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "Primary coordinator is now hv3."


def test_primary_already_does_not_wait(api):
    api.route(
        "POST",
        "/node/hv1/coordinator-state",
        body={"message": "Node hv1 is already in primary coordinator state."},
    )
    result = run("node", "primary", "hv1", "--wait")
    assert result.exit_code == 0
    assert not api.calls("GET", "/status/primary_node")


def test_task_show_wait_running_to_success(api):
    api.sequence(
        "GET",
        "/tasks/abc",
        [
            (200, {"state": "RUNNING", "current": 1, "total": 2, "status": "Step one"}),  # lookup
            (200, {"state": "RUNNING", "current": 1, "total": 2, "status": "Step one"}),
            (
                200,
                {
                    "state": "SUCCESS",
                    "current": 2,
                    "total": 2,
                    "status": "All done",
                    "result": None,
                },
            ),
        ],
    )
    result = run("task", "show", "abc", "--wait")
    assert result.exit_code == 0, result.output
    assert "[1/2] RUNNING: Step one" in result.stderr
    assert result.stdout.strip() == "SUCCESS: All done"
    as_json = run("task", "show", "abc", "--wait", "-f", "json")
    assert json.loads(as_json.stdout)["state"] == "SUCCESS"


def test_task_show_no_wait(api):
    api.route(
        "GET", "/tasks/abc", body={"state": "RUNNING", "current": 1, "total": 4, "status": "Busy"}
    )
    result = run("task", "show", "abc")
    assert result.exit_code == 0
    assert "RUNNING" in result.stdout and "1/4" in result.stdout and "Busy" in result.stdout


def test_task_list_both_shapes(api):
    ours = [
        {
            "id": "t1",
            "type": "node.flush",
            "owner": "hv1",
            "state": "RUNNING",
            "current": 1,
            "total": 3,
            "status": "Migrating VM web1",
            "created": 1700000000,
        }
    ]
    api.route("GET", "/tasks", body=ours)
    result = run("task", "list")
    assert result.exit_code == 0, result.output
    row = result.stdout.splitlines()[1]
    assert row.split()[:5] == ["t1", "node.flush", "hv1", "RUNNING", "1/3"]
    assert json.loads(run("task", "list", "-f", "json").stdout) == ours

    celery = {
        "active": {"pvcworkerd@hv1": [{"id": "c1", "name": "osd.add", "args": [], "kwargs": {}}]},
        "reserved": {"pvcworkerd@hv2": []},
        "scheduled": {
            "pvcworkerd@hv2": [
                {"eta": "x", "priority": 0, "request": {"id": "c2", "name": "storage.benchmark"}}
            ]
        },
    }
    api.route("GET", "/tasks", body=celery)
    lines = run("task", "list").stdout.splitlines()
    assert lines[1].split()[:4] == ["c1", "osd.add", "hv1", "RUNNING"]
    assert lines[2].split()[:4] == ["c2", "storage.benchmark", "hv2", "SCHEDULED"]


def test_normalise_tasks_ignores_junk():
    assert normalise_tasks(None) == []
    assert normalise_tasks({"active": None}) == []
    assert (
        normalise_tasks(["x", {"task_id": "a", "task_name": "n", "run_on": "hv1"}])[0]["owner"]
        == "hv1"
    )


def test_log_lines(api):
    api.route(
        "GET",
        "/node/hv1/log",
        handler=lambda r: (200, {"name": "hv1", "data": f"lines={r.param('lines')}\nb"}),
    )
    result = run("node", "log", "hv1", "--lines", "5")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == ["lines=5", "b"]


def test_log_follow_prints_only_new_lines(api, monkeypatch):
    api.sequence(
        "GET",
        "/node/hv1/log",
        [
            (200, {"name": "hv1", "data": "a\nb\nc"}),
            (200, {"name": "hv1", "data": "a\nb\nc"}),
            (200, {"name": "hv1", "data": "b\nc\nd\ne"}),
            (503, {"message": "moving"}),
            (200, {"name": "hv1", "data": "c\nd\ne\nf"}),
        ],
    )
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) > 5:
            raise KeyboardInterrupt  # Ctrl-C ends --follow quietly

    monkeypatch.setattr("pvc_cli.commands.node.time.sleep", fake_sleep)
    result = run("node", "log", "hv1", "--follow")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["a", "b", "c", "d", "e", "f"]
    assert api.calls("GET", "/node/hv1/log")[1].query == {"lines": ["200"]}


@pytest.mark.parametrize("fmt, expected", [
    ("json", '{"name":"hv1","data":"a\\nb"}\n'),
    ("json-pretty", '{\n  "name": "hv1",\n  "data": "a\\nb"\n}\n'),
    ("pretty", "a\nb\n"),
])
def test_log_format(api, fmt, expected):
    api.route("GET", "/node/hv1/log", body={"name": "hv1", "data": "a\nb"})
    result = run("node", "log", "hv1", "--lines", "2", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert result.stdout == expected
    assert api.calls("GET", "/node/hv1/log")[0].query == {"lines": ["2"]}


def test_log_format_json_follow_prints_one_object_per_batch(api, monkeypatch):
    api.sequence("GET", "/node/hv1/log", [
        (200, {"name": "hv1", "data": "a\nb"}),
        (200, {"name": "hv1", "data": "a\nb"}),
        (200, {"name": "hv1", "data": "b\nc\nd"}),
    ])
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) > 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("pvc_cli.commands.node.time.sleep", fake_sleep)
    result = run("node", "log", "hv1", "--follow", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"name": "hv1", "data": "a\nb"}, {"name": "hv1", "data": "c\nd"}]


def test_log_rejects_an_unknown_format(api):
    result = run("node", "log", "hv1", "--format", "yaml")
    assert result.exit_code == 2 and "yaml" in result.output


def test_new_lines():
    assert new_lines([], ["a"]) == ["a"]
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines(["a", "b"], ["b", "c"]) == ["c"]
    assert new_lines(["x", "y"], ["p", "q"]) == ["p", "q"]
    assert new_lines(["a", "a"], ["a", "a", "b"]) == ["b"]


def test_ctrl_c_while_waiting_says_the_task_goes_on(api, monkeypatch):
    api.route(
        "GET", "/tasks/t9", body={"state": "RUNNING", "current": 1, "total": 2, "status": "x"}
    )

    def interrupt(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("pvc_cli.waiting.time.sleep", interrupt)
    result = run("task", "show", "t9", "--wait")
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == (
        "pvc: stopped waiting; task t9 goes on (pvc task show t9 --wait)"
    )


def test_progress_bar_on_a_terminal(monkeypatch):
    import io

    from pvc_cli.waiting import TaskProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    monkeypatch.setattr("pvc_cli.waiting.sys.stderr", stream)
    progress = TaskProgress("t1")
    progress.update({"state": "RUNNING", "current": 1, "total": 4, "status": "Migrating VM web1"})
    progress.update({"state": "RUNNING", "current": 3, "total": 4, "status": "Migrating VM db1"})
    progress.close()
    text = stream.getvalue()
    assert "Task t1" in text and "3/4" in text and "Migrating VM db1" in text
