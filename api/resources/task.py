"""Task routes: our tasks are ZooKeeper records (``pvc_kernel.tasks``), not Celery jobs."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from pvc_api import zk
from pvc_api.errors import ApiError
from pvc_api.spec import Call
from pvc_kernel import tasks
from pvc_kernel.state import schema

if TYPE_CHECKING:
    from pvc_api.app import Api

STATUS_FIELDS = ("state", "current", "total", "status", "result", "id", "type", "owner")


def list_tasks(call: Call) -> list[dict[str, Any]]:
    """Every task record, oldest first (an empty list when there is none)."""
    return tasks.list_tasks(call.api.store)


def get_task(call: Call) -> dict[str, Any]:
    """The status of one task (TaskStatus plus its id, type and owner node)."""
    record = tasks.get_task(call.api.store, call.args["task_id"])
    if record is None:
        raise ApiError(404, "Task not found.")
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
