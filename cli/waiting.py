"""--wait support: polling with tolerance for short outages, and task progress display."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pvc_cli.client import ApiClient
from pvc_cli.errors import EXIT_API, EXIT_INTERRUPTED, PvcError

POLL_INTERVAL = 0.5
OUTAGE_GRACE = 60.0  # how long polling rides out an unreachable API (e.g. a primary handover)
ACTIVE_STATES = {"PENDING", "RECEIVED", "STARTED", "RUNNING", "PROGRESS", "RETRY", "SCHEDULED"}

T = TypeVar("T")


def poll(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    interval: float | None = None,
    timeout: float | None = None,
    on_update: Callable[[T], None] | None = None,
    what: str = "the operation",
) -> T:
    """Call fetch() until done(result); transient errors are retried for OUTAGE_GRACE seconds."""
    interval = POLL_INTERVAL if interval is None else interval
    start = last_ok = time.monotonic()
    while True:
        try:
            result = fetch()
        except PvcError as exc:
            if not exc.transient or time.monotonic() - last_ok > OUTAGE_GRACE:
                raise
        else:
            last_ok = time.monotonic()
            if on_update is not None:
                on_update(result)
            if done(result):
                return result
        if timeout is not None and time.monotonic() - start > timeout:
            raise PvcError(f"gave up waiting for {what} after {timeout:g}s", EXIT_API)
        time.sleep(interval)


def task_state(status: dict[str, Any]) -> str:
    return str(status.get("state") or "PENDING").upper()


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class TaskProgress:
    """A click progress bar on a terminal; one line per status change otherwise (logs, CI)."""

    def __init__(self, task_id: str):
        self.task_id = task_id
        self.stream = sys.stderr
        self.bar: Any = None
        self.last_line = ""
        if self.stream.isatty():
            self.bar = click.progressbar(
                length=1,
                label=f"Task {task_id}",
                file=self.stream,
                show_pos=True,
                show_eta=False,
                item_show_func=lambda s: s,
            )
            self.bar.__enter__()

    def update(self, status: dict[str, Any]) -> None:
        current = _int(status.get("current"), 0)
        total = max(_int(status.get("total"), 1), 1, current)
        text = str(status.get("status") or task_state(status).capitalize())
        if self.bar is not None:
            self.bar.length = total
            self.bar.update(max(current - self.bar.pos, 0), text[:60])
            return
        if task_state(status) not in ACTIVE_STATES:
            return  # the caller reports the final state
        line = f"[{current}/{total}] {task_state(status)}: {text}"
        if line != self.last_line:
            self.last_line = line
            click.echo(line, file=self.stream)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def wait_task(client: ApiClient, task_id: str, interval: float | None = None) -> dict[str, Any]:
    """Poll GET /tasks/<id> until the task leaves PENDING/RUNNING; return the final TaskStatus."""
    progress = TaskProgress(task_id)

    def fetch() -> dict[str, Any]:
        data = client.get(f"/tasks/{task_id}").data
        return data if isinstance(data, dict) else {"state": "PENDING"}

    try:
        final = poll(
            fetch,
            lambda s: task_state(s) not in ACTIVE_STATES,
            interval=interval,
            on_update=progress.update,
            what=f"task {task_id}",
        )
    except KeyboardInterrupt:
        progress.close()
        raise PvcError(
            f"stopped waiting; task {task_id} goes on (pvc task show {task_id} --wait)",
            EXIT_INTERRUPTED,
        ) from None
    finally:
        progress.close()
    return final


def report_task(task_id: str, final: dict[str, Any]) -> None:
    """Print "<STATE>: <status>"; a task that did not succeed is an error (exit 1)."""
    state = task_state(final)
    text = str(final.get("status") or "")
    if state == "SUCCESS":
        click.echo(f"{state}: {text}" if text else state)
        return
    raise PvcError(f"task {task_id} ended in {state}" + (f": {text}" if text else ""))
