"""Every hook contract between the kernel and its plugins.

A plugin is a module (or object) registered in the entry-point group
``pvc.plugins``; its functions marked ``@hookimpl`` implement the hooks below.
A hook implementation whose name is not specified here stops the daemon at
start (fail fast on typos). Each hook says who calls it, when, on which node
and what it must return. ``daemon`` is the running ``pvc_kernel.daemon.NodeDaemon``
(``daemon.config``, ``daemon.store``, ``daemon.bus``, ``daemon.node``, ``daemon.log``).

Hooks are called one implementation at a time by the kernel: a raising
implementation is logged with its plugin and object and does not stop the
others (see ``pvc_kernel.plugins.PluginHost.call_each``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "pvc"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- configuration and schema (every process that loads plugins) -------------------------

@hookspec
def pvc_config_validate(config: Any) -> list[str]:
    """Check the plugin's own section of ``pvcnoded.yaml`` (``config.plugin_section(name)``).

    Called by pvcnoded (and pvcapid) right after the file is read, on every node.
    Return a list of problems, each naming the key: ``"key 'plugins.x.y': must be ..."``;
    an empty list means the section is fine. Any problem stops the daemon.
    """


@hookspec
def pvc_schema_keys() -> list[Any]:
    """Return the ZooKeeper keys this plugin uses, as ``pvc_kernel.state.schema.Key`` objects.

    Called once at start in every process, before anything touches ZooKeeper. The keys are
    registered in the one schema registry; a name clash with another plugin stops the process.
    """


@hookspec
def pvc_schema_migrate(store: Any, version: int) -> None:
    """Bring this plugin's keys to the cluster schema ``version`` (just reached by the kernel).

    Called under the schema-migration lock by the one node that migrates; must be idempotent.
    """


# -- node daemon lifecycle (pvcnoded, every node) ----------------------------------------

@hookspec
def pvc_node_static(daemon: Any) -> dict[str, Any]:
    """Return static facts about this host to add to the node's registration (may be {})."""


@hookspec
def pvc_node_start(daemon: Any) -> None:
    """The node is registered and connected: set up watches (``daemon.bus``) and local services.

    Called once per daemon start, on every node, before the first keepalive.
    """


@hookspec
def pvc_node_stop(daemon: Any) -> None:
    """The daemon is shutting down (SIGTERM): stop what ``pvc_node_start`` started.

    Called once, on every node, after the node has given up the primary role. Keep it short:
    the whole shutdown must finish within 5 seconds.
    """


@hookspec
def pvc_keepalive_stats(daemon: Any) -> dict[str, dict[str, Any]]:
    """Return this plugin's stats for this keepalive as ``{namespace: {stat: value}}``.

    Called on every node once per keepalive interval, from the keepalive thread; the merged
    result is written in the same ZooKeeper transaction as the keepalive timestamp. Must be
    fast (well under the interval) and JSON-serialisable.
    """


# -- coordinator role (pvcnoded, coordinators only) ------------------------------------------

@hookspec
def pvc_become_primary(daemon: Any) -> None:
    """This coordinator is taking over as primary: start cluster-wide duties.

    Called from the election thread while the coordinator state is ``takeover``; the node is
    announced as primary when every implementation has returned.
    """


@hookspec
def pvc_become_secondary(daemon: Any) -> None:
    """This coordinator is giving up the primary role: stop cluster-wide duties.

    Called while the coordinator state is ``relinquish`` (planned handover, shutdown or lost
    ZooKeeper session); the lock is released when every implementation has returned.
    """


# -- the event bus -----------------------------------------------------------------------

@hookspec
def pvc_event(daemon: Any, event: Any) -> None:
    """Handle one event from the bus (a ``pvc_kernel.events.Event`` subclass).

    Called on the node whose bus produced the event, from a bus worker thread. Events of one
    object (``event.obj``) are delivered in order, one at a time; different objects run in
    parallel. Ignore events you do not care about (check ``isinstance``/``event.obj``).
    """


# -- tasks and node service state ------------------------------------------------------------

@hookspec
def pvc_task_handlers() -> dict[str, Callable[[Any], Any]]:
    """Return ``{task type: handler}`` for this plugin's long work (e.g. ``"storage.benchmark"``).

    A handler gets a ``pvc_kernel.tasks.TaskContext`` on the task's owner node, reports with
    ``ctx.progress(current, total, message)``, checks ``ctx.cancelled`` and returns a
    JSON-serialisable result (or raises to fail the task with the exception's message).
    """


@hookspec
def pvc_node_flush(daemon: Any, ctx: Any) -> None:
    """Take this node out of service (``pvc node flush``): move or stop what runs on it.

    Called on the flushed node inside its ``node.flush`` task; report progress through
    ``ctx``, stop early when ``ctx.cancelled`` becomes true.
    """


@hookspec
def pvc_node_unflush(daemon: Any, ctx: Any) -> None:
    """Return this node to service (``pvc node ready``): bring back what flush moved away.

    Called on the node inside its ``node.unflush`` task, like ``pvc_node_flush``.
    """


# -- API (pvcapid) -----------------------------------------------------------------------

@hookspec
def pvc_api_routes(api: Any) -> None:
    """Add this plugin's REST routes to the API (``api.add_route(...)``, see ``pvc_api``).

    Called once in every pvcapid process at start.
    """


@hookspec
def pvc_api_status(api: Any) -> dict[str, Any]:
    """Return this plugin's part of the cluster status (``GET /api/v1/status``).

    Called in pvcapid on every ``GET /status`` request, after the core fields are read; ``api``
    is the running ``pvc_api.app.Api`` (``api.store``, ``api.config``). Return a dict of
    ClusterStatus fields; it is merged into the answer recursively (dicts are updated key by key,
    other values replace the core value), e.g. ``{"vms": {"total": 3, "start,ready": 3},
    "detail": {"vm": [...]}}``. Must be fast (one ZooKeeper round trip or so) and keep the types
    of the ClusterStatus schema. A raising implementation is logged and left out.
    """
