"""A node's service state (``domain_state``): flush out of service, unflush back.

The API records the desired state (``node.desired_domain_state``: ready | flushed)
and a ``node.flush`` / ``node.unflush`` task owned by the node. The node runs the
task: observed state ``flush`` → plugins' ``pvc_node_flush`` → ``flushed`` (or
``unflush`` → ``pvc_node_unflush`` → ``ready``). A newer request cancels a running
one and starts only once that one has stopped (or fails, saying so); two transitions never
run their hooks at once. At start the node resumes an interrupted or missed transition.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pvc_kernel import tasks
from pvc_kernel.events import ChildrenChanged, Event

log = logging.getLogger(__name__)

FLUSH_TASK, UNFLUSH_TASK = "node.flush", "node.unflush"
_TRANSITIONS = {
    FLUSH_TASK: ("flush", "pvc_node_flush", "flushed", "Removed node {} from active service."),
    UNFLUSH_TASK: ("unflush", "pvc_node_unflush", "ready", "Restored node {} to active service."),
}


CANCEL_WAIT = 30.0
"""Seconds a transition waits for the one it cancelled to stop (and for the daemon's
transition lock) before it fails without touching ``domain_state``."""


def task_handlers(daemon: Any) -> dict[str, tasks.Handler]:
    lock = threading.Lock()     # per daemon: one transition runs its hooks at a time

    def run(ctx: tasks.TaskContext) -> str:
        return _run_transition(ctx, lock)

    return {FLUSH_TASK: run, UNFLUSH_TASK: run}


def _newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Task record ``a`` was requested after ``b`` (ties broken by id, so two transitions
    always agree on which one is newer)."""
    return (a.get("created") or 0, a["id"]) > (b.get("created") or 0, b["id"])


def _run_transition(ctx: tasks.TaskContext, lock: threading.Lock) -> str:
    """Run one transition; never alongside another one of this daemon.

    The newest request wins: an older transition still running is cancelled and must be
    confirmed stopped (its handler returned) within ``CANCEL_WAIT`` before this one touches
    ``domain_state``; otherwise this one fails, naming it. A transition that finds a newer
    one running stops at once (that one cancels it anyway).
    """
    daemon = ctx.daemon
    during, hook, final, message = _TRANSITIONS[ctx.record["type"]]
    others = [o for o in daemon.tasks.running()
              if o.id != ctx.id and o.record["type"] in _TRANSITIONS]
    newer = [o for o in others if _newer(o.record, ctx.record)]
    if newer:
        raise tasks.TaskCancelled(f"superseded by {newer[0].record['type']} task "
                                  f"{newer[0].id}")
    for other in others:
        other.cancel()
    deadline = time.monotonic() + CANCEL_WAIT
    for other in others:
        if not daemon.tasks.wait_stopped(other.id, deadline - time.monotonic()):
            raise RuntimeError(
                f"Node {daemon.node}: {during} not started: the {other.record['type']} task "
                f"{other.id} was cancelled but is still running after {CANCEL_WAIT:g} s; "
                "domain state left unchanged (retry once that task has ended)")
    if not lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
        raise RuntimeError(
            f"Node {daemon.node}: {during} not started: another transition of this node "
            f"still runs its hooks after {CANCEL_WAIT:g} s; domain state left unchanged")
    try:
        ctx.check()             # cancelled while waiting: leave the state to the newer one
        daemon.store.set("node.domain_state", during, node=daemon.node)
        ctx.progress(0, 1, f"Node {daemon.node}: {during} started")
        failures: list[tuple[str, Exception]] = []
        daemon.plugins.call_each(hook, obj=f"node:{daemon.node}", before_each=ctx.check,
                                 passthrough=(tasks.TaskCancelled,), failures=failures,
                                 daemon=daemon, ctx=ctx)
        if failures:
            raise RuntimeError(f"{during} of {daemon.node} incomplete: "
                               + "; ".join(f"{name}: {exc}" for name, exc in failures))
        ctx.check()
        daemon.store.set("node.domain_state", final, node=daemon.node)
    finally:
        lock.release()
    log.info("node %s is now %s", daemon.node, final)
    return message.format(daemon.node)


def start(daemon: Any) -> None:
    """Resume a transition that a restart interrupted, or one requested while we were down."""
    desired = daemon.store.get("node.desired_domain_state", node=daemon.node) or "ready"
    observed = daemon.store.get("node.domain_state", node=daemon.node) or "ready"
    if observed == desired:
        return
    pending = [r for r in tasks.list_tasks(daemon.store)
               if r["owner"] == daemon.node and r["type"] in _TRANSITIONS
               and r["state"] in (tasks.PENDING, tasks.RUNNING)]
    if pending:
        return
    kind = FLUSH_TASK if desired == "flushed" else UNFLUSH_TASK
    record = tasks.create_task(daemon.store, kind, daemon.node, {"reason": "resumed at start"})
    log.info("resuming %s (observed %s, desired %s) as task %s", kind, observed, desired,
             record["id"])


def on_event(daemon: Any, event: Event) -> None:
    """Kernel-side bus handler: pick up new tasks for this node."""
    if isinstance(event, ChildrenChanged) and event.key == "tasks" and daemon.tasks:
        daemon.tasks.scan()
