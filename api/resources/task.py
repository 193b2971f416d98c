"""Task routes: our tasks are ZooKeeper records (``pvc_kernel.tasks``), not Celery jobs.

By default both routes answer the original's shapes (Celery ``inspect`` per worker; a
TaskStatus that reads PENDING for an unknown id), so the original's clients work unchanged.
``detail=true`` gives our task records instead (the ``pvc`` CLI uses it).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from pvc_api import nodes, zk
from pvc_api.errors import ApiError
from pvc_api.spec import Call
from pvc_kernel import tasks
from pvc_kernel.state import schema

if TYPE_CHECKING:
    from pvc_api.app import Api

STATUS_FIELDS = ("state", "current", "total", "status", "result", "id", "type", "owner")
UNKNOWN_STATUS = {"state": tasks.PENDING, "current": 0, "total": 1,
                  "status": "Pending job start"}
"""What the original (Celery) answers for a task id it does not know."""
WORKER = "pvcworkerd@{}"
"""The original's Celery worker names, one per node."""
CELERY_KINDS = ("active", "reserved", "scheduled")


def _celery_request(record: dict[str, Any], active: bool) -> dict[str, Any]:
    """One task record as a Celery ``inspect`` request (the fields the original exposes)."""
    owner = str(record.get("owner") or "")
    args = record.get("args")
    return {"id": record.get("id"), "name": record.get("type"), "args": [],
            "kwargs": args if isinstance(args, dict) else {}, "type": record.get("type"),
            "hostname": WORKER.format(owner), "time_start": record.get("started") if active
            else None, "acknowledged": active,
            "delivery_info": {"exchange": "", "routing_key": owner, "priority": 0,
                              "redelivered": False},
            "worker_pid": None}


def celery_list(records: list[dict[str, Any]], workers: list[str]) -> dict[str, Any]:
    """The original's TaskList: unfinished tasks per worker, RUNNING as ``active``, PENDING as
    ``reserved`` (nothing is ever ``scheduled``); finished tasks are not listed."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {kind: {} for kind in CELERY_KINDS}
    for name in workers:
        for kind in CELERY_KINDS:
            out[kind][WORKER.format(name)] = []
    for record in records:
        state = record.get("state")
        if state not in (tasks.PENDING, tasks.RUNNING):
            continue
        kind = "active" if state == tasks.RUNNING else "reserved"
        worker = WORKER.format(record.get("owner") or "")
        for each in CELERY_KINDS:
            out[each].setdefault(worker, [])
        out[kind][worker].append(_celery_request(record, state == tasks.RUNNING))
    return out


def list_tasks(call: Call) -> dict[str, Any] | list[dict[str, Any]]:
    """The unfinished tasks in the original's Celery shape ``{active, reserved, scheduled}``
    per worker ``pvcworkerd@<node>``; with ``detail=true`` every task record, oldest first."""
    records = tasks.list_tasks(call.api.store)
    if call.args.get("detail"):
        return records
    return celery_list(records, nodes.names(call.api))


def get_task(call: Call) -> dict[str, Any]:
    """The status of one task (TaskStatus plus its id, type and owner node).

    An unknown id reads PENDING, as in the original; with ``detail=true`` the answer is the
    whole task record, or 404 for an unknown id.
    """
    record = tasks.get_task(call.api.store, call.args["task_id"])
    detail = bool(call.args.get("detail"))
    if record is None:
        if detail:
            raise ApiError(404, "Task not found.")
        return dict(UNKNOWN_STATUS)
    if detail:
        return record
    return {name: record.get(name) for name in STATUS_FIELDS}


def wait(api: Api, task_id: str, timeout: float) -> dict[str, Any] | None:
    """Block until the task finishes, ``timeout`` passes or the API stops; the last record read.

    A one-shot watch on the record wakes the wait; the record is re-read at least every second.
    None if the record disappeared.
    """
    if not schema.valid_segment(task_id):
        return None
    deadline = time.monotonic() + timeout
    woke = threading.Event()
    armed = False
    while True:
        watch = None if armed else (lambda _event: woke.set())
        (text,) = zk.fetch(api.store, [zk.get("task", task_id=task_id)], api.zk_timeout, watch)
        armed = True
        record = zk.load_json(text, {})
        if not record:
            return None
        remaining = deadline - time.monotonic()
        if record.get("state") in tasks.FINISHED or remaining <= 0 or api.stopping.is_set():
            return record
        if woke.wait(min(remaining, 0.5)):
            woke.clear()
            armed = False
