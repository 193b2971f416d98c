"""A node's service state (``domain_state``): flush out of service, unflush back.

The API records the desired state (``node.desired_domain_state``: ready | flushed)
and a ``node.flush`` / ``node.unflush`` task owned by the node. The node runs the
task: observed state ``flush`` → plugins' ``pvc_node_flush`` → ``flushed`` (or
``unflush`` → ``pvc_node_unflush`` → ``ready``). A newer request cancels a running
one. At start the node resumes an interrupted or missed transition.
"""

from __future__ import annotations

import logging
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


def task_handlers(daemon: Any) -> dict[str, tasks.Handler]:
    return {FLUSH_TASK: _run_transition, UNFLUSH_TASK: _run_transition}


def _run_transition(ctx: tasks.TaskContext) -> str:
    daemon = ctx.daemon
    during, hook, final, message = _TRANSITIONS[ctx.record["type"]]
    for other in daemon.tasks.running():
        if other.id != ctx.id and other.record["type"] in _TRANSITIONS:
            other.cancel()
    deadline = time.monotonic() + 30
    while any(o.id != ctx.id and o.record["type"] in _TRANSITIONS
              for o in daemon.tasks.running()) and time.monotonic() < deadline:
        time.sleep(0.1)
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
