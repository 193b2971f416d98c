"""`pvc task`: long-running cluster jobs (flush, provisioning, benchmarks...)."""

from __future__ import annotations

from typing import Any

import click

from pvc_cli.context import get_settings
from pvc_cli.output import (
    Painter,
    emit_json,
    fmt_time,
    format_option,
    render_pairs,
    render_table,
    state_cell,
)
from pvc_cli.waiting import report_task, task_state, wait_task

CELERY_KINDS = (("active", "RUNNING"), ("reserved", "PENDING"), ("scheduled", "SCHEDULED"))
DETAIL = {"detail": "true"}
"""Asks the task routes for this API's task records rather than the original's shapes."""


@click.group()
def task() -> None:
    """List and follow long-running cluster tasks.

    \b
    Examples:
      pvc task list
      pvc task show 1a2b3c4d --wait
    """


def normalise_tasks(data: Any) -> list[dict[str, Any]]:
    """Rows from either task-list shape.

    This API answers a list of records [{id, type, owner, state, current, total, status,
    created, ...}]; the original answers Celery's {active|reserved|scheduled: {worker: [req]}}.
    """
    rows: list[dict[str, Any]] = []
    if isinstance(data, list):
        for t in data:
            if not isinstance(t, dict):
                continue
            rows.append(
                {
                    "id": t.get("id") or t.get("task_id"),
                    "type": t.get("type") or t.get("name") or t.get("task_name"),
                    "owner": t.get("owner") or t.get("run_on") or t.get("node"),
                    "state": t.get("state"),
                    "current": t.get("current"),
                    "total": t.get("total"),
                    "status": t.get("status"),
                    "created": t.get("created"),
                }
            )
    elif isinstance(data, dict):
        for kind, state in CELERY_KINDS:
            for worker, reqs in (data.get(kind) or {}).items():
                for req in reqs or []:
                    if isinstance(req, dict) and isinstance(req.get("request"), dict):
                        req = req["request"]
                    if not isinstance(req, dict):
                        continue
                    rows.append(
                        {
                            "id": req.get("id"),
                            "type": req.get("name"),
                            "owner": str(worker).split("@", 1)[-1],
                            "state": state,
                            "current": None,
                            "total": None,
                            "status": "",
                            "created": req.get("time_start"),
                        }
                    )
    return rows


def render_task_table(painter: Painter, rows: list[dict[str, Any]]) -> str:
    table = []
    for r in rows:
        progress = f"{r['current']}/{r['total']}" if r.get("total") not in (None, "") else "-"
        table.append(
            [
                str(r.get("id") or ""),
                str(r.get("type") or "-"),
                str(r.get("owner") or "-"),
                state_cell(str(r.get("state") or "").upper()),
                progress,
                fmt_time(r.get("created")),
                str(r.get("status") or ""),
            ]
        )
    headers = ["ID", "TYPE", "OWNER", "STATE", "PROGRESS", "CREATED", "STATUS"]
    return render_table(painter, headers, table, right=[4])


@task.command("list")
@format_option
def list_tasks(fmt: str) -> None:
    """List the cluster's tasks.

    Reads GET /tasks?detail=true (every task record; without detail the API answers the
    original's Celery shape, unfinished tasks only, which this command also reads).

    \b
    Examples:
      pvc task list
      pvc task list -f json
    """
    settings = get_settings()
    resp = settings.client().get("/tasks", DETAIL, accept=(404,))
    data = resp.data if resp.status == 200 else []
    if fmt != "pretty":
        emit_json(data, fmt)
        return
    rows = normalise_tasks(data)
    if not rows:
        click.echo("No tasks.")
        return
    settings.painter.echo(render_task_table(settings.painter, rows))


@task.command()
@click.argument("task_id", metavar="ID")
@click.option("-w", "--wait", is_flag=True, help="Show a progress bar until the task ends.")
@format_option
def show(task_id: str, wait: bool, fmt: str) -> None:
    """Show the state and progress of task ID.

    Reads GET /tasks/ID?detail=true (an unknown ID is an error; without detail the API
    reads PENDING for it, like the original). With --wait the progress goes to stderr and
    the command exits non-zero if the task does not succeed.

    \b
    Examples:
      pvc task show 1a2b3c4d
      pvc task show 1a2b3c4d --wait
      pvc task show 1a2b3c4d --wait -f json
    """
    settings = get_settings()
    client = settings.client()
    data = client.get(f"/tasks/{task_id}", DETAIL).data  # 404: "Task not found."
    if wait:
        data = wait_task(client, task_id)
    data = data if isinstance(data, dict) else {"state": "PENDING"}
    if fmt != "pretty":
        emit_json(data, fmt)
        if wait and task_state(data) != "SUCCESS":
            report_task(task_id, data)
        return
    if wait:
        report_task(task_id, data)
        return
    painter = settings.painter
    pairs = [
        ("ID", task_id),
        ("State", painter.state(task_state(data))),
        ("Progress", f"{data.get('current', 0)}/{data.get('total', 1)}"),
        ("Status", str(data.get("status") or "")),
    ]
    if data.get("result") is not None:
        pairs.append(("Result", str(data.get("result"))))
    painter.echo(render_pairs(painter, pairs))
