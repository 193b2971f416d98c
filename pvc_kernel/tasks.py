"""Tasks: long work recorded in ZooKeeper so it survives an API restart.

A task record (JSON at ``/tasks/<id>``)::

    {"id": "1a2b3c4d", "type": "node.flush", "owner": "hv1", "args": {...},
     "state": "PENDING|RUNNING|SUCCESS|FAILURE", "cancel": false,
     "current": 0, "total": 1, "status": "Pending job start", "result": null,
     "created": 1700000000.0, "started": null, "finished": null}

Anyone (the API) creates a record; only the ``owner`` node's daemon runs it, via the
handler a plugin (or the kernel) registered for its ``type``. Every update is
version-checked. The primary prunes finished records older than the retention.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pvc_kernel.state import schema
from pvc_kernel.state.store import Store

log = logging.getLogger(__name__)

PENDING, RUNNING, SUCCESS, FAILURE = "PENDING", "RUNNING", "SUCCESS", "FAILURE"
FINISHED = (SUCCESS, FAILURE)

Handler = Callable[["TaskContext"], Any]


class TaskCancelled(Exception):
    """Raised by ``TaskContext.check`` when someone asked the task to stop."""


def new_record(task_type: str, owner: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex[:8], "type": task_type, "owner": owner, "args": args or {},
            "state": PENDING, "cancel": False, "current": 0, "total": 1,
            "status": "Pending job start", "result": None, "created": time.time(),
            "started": None, "finished": None}


def create_task(store: Store, task_type: str, owner: str,
                args: dict[str, Any] | None = None, txn: Any = None) -> dict[str, Any]:
    """Create a PENDING task owned by node ``owner``; returns the record.

    With ``txn`` (a kazoo transaction) the create is added to it instead of run now, so a
    caller can record desired state and the task atomically.
    """
    record = new_record(task_type, owner, args)
    if txn is not None:
        txn.create(schema.path("task", task_id=record["id"]), json.dumps(record).encode())
    else:
        store.create("task", json.dumps(record), task_id=record["id"])
    return record


def get_task(store: Store, task_id: str) -> dict[str, Any] | None:
    if not schema.valid_segment(task_id):
        return None
    return store.get_json("task", task_id=task_id)


def list_tasks(store: Store, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every task record, oldest first (all records are read in one round trip)."""
    texts = store.fetch([("get", "task", {"task_id": tid}) for tid in store.children("tasks")],
                        timeout)
    records = []
    for text in texts:
        if text is None:  # pruned meanwhile
            continue
        try:
            records.append(json.loads(text))
        except ValueError:
            log.warning("ignoring a task record that is not JSON")
    return sorted(records, key=lambda r: r.get("created") or 0)


def update_task(store: Store, task_id: str, **changes: Any) -> dict[str, Any] | None:
    """Apply ``changes`` to a record with a version check; None if it no longer exists."""
    def apply(text: str | None) -> str:
        if text is None:
            raise KeyError(task_id)
        record = json.loads(text)
        record.update(changes)
        return json.dumps(record)
    try:
        return json.loads(store.update("task", apply, task_id=task_id))
    except KeyError:
        return None


def request_cancel(store: Store, task_id: str) -> bool:
    """Ask a pending or running task to stop; True if it was still unfinished."""
    record = get_task(store, task_id)
    if not record or record["state"] in FINISHED:
        return False
    update_task(store, task_id, cancel=True)
    return True


def prune(store: Store, retention: float, now: float | None = None) -> int:
    """Delete finished tasks older than ``retention`` seconds; returns how many."""
    now = now or time.time()
    removed = 0
    for record in list_tasks(store):
        if record["state"] in FINISHED and now - (record.get("finished") or 0) > retention:
            store.delete("task", task_id=record["id"])
            removed += 1
    return removed


class TaskContext:
    """What a handler sees: its record, progress reporting and cancellation."""

    def __init__(self, store: Store, record: dict[str, Any], daemon: Any = None) -> None:
        self.store = store
        self.record = record
        self.daemon = daemon
        self.id: str = record["id"]
        self.args: dict[str, Any] = record.get("args") or {}
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self) -> None:
        """Raise TaskCancelled if the task should stop."""
        if self.cancelled:
            raise TaskCancelled("cancelled by a newer request")

    def progress(self, current: int, total: int, message: str = "") -> None:
        """Report progress (``current`` of ``total`` steps done) with a status line."""
        record = update_task(self.store, self.id, current=current, total=max(total, 1),
                             status=message or self.record.get("status", ""))
        if record and record.get("cancel"):
            self.cancel()


class TaskRunner:
    """Runs, on one node, the pending tasks that node owns (called from the bus/watch)."""

    def __init__(self, store: Store, node: str, handlers: dict[str, Handler],
                 daemon: Any = None, workers: int = 4) -> None:
        self.store = store
        self.node = node
        self.handlers = handlers
        self.daemon = daemon
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task")
        self._running: dict[str, TaskContext] = {}
        self._lock = threading.Lock()
        self._ended = threading.Condition(self._lock)  # notified when a task stops running

    def recover(self) -> None:
        """Mark tasks this node was running before a restart as failed."""
        for record in list_tasks(self.store):
            if record["owner"] == self.node and record["state"] == RUNNING \
                    and record["id"] not in self._running:
                update_task(self.store, record["id"], state=FAILURE, finished=time.time(),
                            status="Interrupted: the node daemon restarted")

    def scan(self) -> None:
        """Start every pending task of ours; pass cancel requests to running ones."""
        for record in list_tasks(self.store):
            if record["owner"] != self.node:
                continue
            if record["state"] == RUNNING and record.get("cancel"):
                with self._lock:
                    ctx = self._running.get(record["id"])
                if ctx:
                    ctx.cancel()
            if record["state"] == PENDING:
                self._claim(record)

    def running(self, task_type: str | None = None) -> list[TaskContext]:
        with self._lock:
            return [c for c in self._running.values()
                    if task_type is None or c.record["type"] == task_type]

    def wait_stopped(self, task_id: str, timeout: float) -> bool:
        """Wait until task ``task_id`` no longer runs here (its handler returned and its
        record is final); True if so within ``timeout`` seconds."""
        with self._ended:
            return self._ended.wait_for(lambda: task_id not in self._running,
                                        max(timeout, 0.0))

    def _claim(self, record: dict[str, Any]) -> None:
        text, version = self.store.get_versioned("task", task_id=record["id"])
        if text is None:
            return
        current = json.loads(text)
        if current["state"] != PENDING:
            return
        handler = self.handlers.get(current["type"])
        if handler is None:
            current.update(state=FAILURE, finished=time.time(),
                           status=f"No handler for task type {current['type']!r} on {self.node}")
            self.store.set_if_version("task", json.dumps(current), version, task_id=current["id"])
            return
        if current.get("cancel"):
            current.update(state=FAILURE, finished=time.time(), status="Cancelled before start")
            self.store.set_if_version("task", json.dumps(current), version, task_id=current["id"])
            return
        current.update(state=RUNNING, started=time.time(), status="Running")
        if not self.store.set_if_version("task", json.dumps(current), version,
                                         task_id=current["id"]):
            return  # somebody changed it; the next scan sees the new version
        ctx = TaskContext(self.store, current, self.daemon)
        with self._lock:
            self._running[ctx.id] = ctx
        self._pool.submit(self._run, ctx, handler)

    def _run(self, ctx: TaskContext, handler: Handler) -> None:
        try:
            result = handler(ctx)
        except TaskCancelled as exc:
            update_task(self.store, ctx.id, state=FAILURE, finished=time.time(),
                        status=f"Cancelled: {exc}", current=1, total=1)
        except Exception as exc:
            log.exception("task %s (%s) failed", ctx.id, ctx.record["type"])
            update_task(self.store, ctx.id, state=FAILURE, finished=time.time(),
                        status=f"{type(exc).__name__}: {exc}", current=1, total=1)
        else:
            final = update_task(self.store, ctx.id) or ctx.record
            total = max(final.get("total", 1), 1)
            update_task(self.store, ctx.id, state=SUCCESS, finished=time.time(), result=result,
                        current=total, total=total,
                        status=result if isinstance(result, str) else final.get("status", "Done"))
        finally:
            with self._ended:
                self._running.pop(ctx.id, None)
                self._ended.notify_all()

    def stop(self, wait: float = 2.0) -> None:
        """Cancel running tasks and stop taking new ones."""
        for ctx in self.running():
            ctx.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
