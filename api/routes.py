"""The core route table: the single source of the Falcon resources and the OpenAPI document.

Paths are relative to ``/api/v1``; parameter names, defaults and reply fields follow the
PVC API v1 reference. Plugins add theirs with ``api.add_route`` in ``pvc_api_routes``.
"""

from __future__ import annotations

from pvc_api.resources import cluster, faults, node, task
from pvc_api.schemas import array_of, ref
from pvc_api.spec import Param, Route, text_body
from pvc_kernel.faults import DEFAULT_SORT, SORT_KEYS

MSG = ref("Message")

DAEMON_STATES = ("init", "run", "shutdown", "stop", "dead", "fenced")
COORDINATOR_STATES = ("primary", "secondary", "takeover", "relinquish", "client")
DOMAIN_STATES = ("ready", "flush", "flushed", "unflush", "fence-flush")

NODE = Param("node", location="path", description="The node's name")
TASK_ID = Param("task_id", location="path", description="The task's ID")
TASK_DETAIL = Param("detail", "bool", default=False,
                    description="true: this API's task records (404 for an unknown id); "
                                "false: the original's Celery shapes")
FAULT_ID = Param("fault_id", location="path", description="The fault's ID")
CONFLICT = ("Concurrent changes to the same fault; retry", MSG)

CORE_ROUTES: list[Route] = [
    # -- root and cluster -------------------------------------------------------------------
    Route("GET", "/", cluster.root, "API banner", auth=False, zookeeper=False, tag="root",
          responses={200: ("The banner", MSG)}),
    Route("GET", "/openapi.json", cluster.openapi_document, "OpenAPI 3 document", auth=False,
          zookeeper=False, tag="root",
          responses={200: ("This document", {"type": "object"})}),
    Route("GET", "/status", cluster.status, "Cluster status", tag="cluster",
          responses={200: ("The cluster status", ref("ClusterStatus"))}),
    Route("POST", "/status", cluster.set_maintenance, "Set maintenance mode", tag="cluster",
          params=(Param("state", "bool", required=True,
                        description="true: maintenance mode; false: normal mode"),),
          responses={200: ("Done, or nothing to do", MSG)}),
    Route("GET", "/status/primary_node", cluster.primary_node, "Current primary node",
          auth=False, tag="cluster",
          responses={200: ("The primary node", ref("PrimaryNode")),
                     204: ("There is no primary node right now", None)}),
    # -- faults ---------------------------------------------------------------------------
    Route("GET", "/faults", faults.list_faults, "List faults", tag="faults",
          params=(Param("sort_key", choices=SORT_KEYS, default=DEFAULT_SORT,
                        description="Sort by this field: times newest first, others "
                                    "ascending"),),
          responses={200: ("The faults, sorted", array_of("Fault"))}),
    Route("PUT", "/faults", faults.acknowledge_all, "Acknowledge every fault", tag="faults",
          responses={200: ("Done", MSG), 409: CONFLICT}),
    Route("DELETE", "/faults", faults.delete_all, "Delete every fault", tag="faults",
          responses={200: ("Done", MSG)}),
    Route("GET", "/faults/{fault_id}", faults.get_fault, "Fault details", tag="faults",
          params=(FAULT_ID,),
          responses={200: ("A one-element array, or an empty one", array_of("Fault"))}),
    Route("PUT", "/faults/{fault_id}", faults.acknowledge, "Acknowledge a fault",
          tag="faults", params=(FAULT_ID,),
          responses={200: ("Acknowledged", MSG), 404: ("No such fault", MSG),
                     409: CONFLICT}),
    Route("DELETE", "/faults/{fault_id}", faults.delete, "Delete a fault", tag="faults",
          params=(FAULT_ID,),
          responses={200: ("Deleted", MSG), 404: ("No such fault", MSG)}),
    # -- tasks ----------------------------------------------------------------------------
    Route("GET", "/tasks", task.list_tasks, "List tasks", tag="tasks",
          params=(TASK_DETAIL,),
          responses={200: ("The original's TaskList (unfinished tasks per worker), or with "
                           "detail=true every task record, oldest first",
                           {"anyOf": [ref("TaskList"), array_of("Task")]})}),
    Route("GET", "/tasks/{task_id}", task.get_task, "Task status", tag="tasks",
          params=(TASK_ID, TASK_DETAIL),
          responses={200: ("The task's status (PENDING for an unknown id), or with "
                           "detail=true its whole record",
                           {"anyOf": [ref("TaskStatus"), ref("Task")]}),
                     404: ("detail=true and no such task", MSG)}),
    # -- nodes ----------------------------------------------------------------------------
    Route("GET", "/node", node.list_nodes, "List nodes", tag="node",
          params=(Param("limit", description="Regex on the node name; fuzzy unless it starts "
                                             "with ^ or ends with $"),
                  Param("daemon_state", choices=DAEMON_STATES,
                        description="Only nodes in this daemon state (filters are OR-ed)"),
                  Param("coordinator_state", choices=COORDINATOR_STATES,
                        description="Only nodes in this coordinator state"),
                  Param("domain_state", choices=DOMAIN_STATES,
                        description="Only nodes in this domain state")),
          responses={200: ("The nodes, sorted by name", array_of("Node")),
                     404: ("No node matches", MSG)}),
    Route("GET", "/node/{node}", node.get_node, "Node details", tag="node", params=(NODE,),
          responses={200: ("A one-element array", array_of("Node")),
                     404: ("No such node", MSG)}),
    Route("GET", "/node/{node}/daemon-state", node.daemon_state, "Node daemon state",
          tag="node", params=(NODE,),
          responses={200: ("The daemon state", ref("NodeDaemonState"))}),
    Route("GET", "/node/{node}/coordinator-state", node.coordinator_state,
          "Node coordinator state", tag="node", params=(NODE,),
          responses={200: ("The coordinator state", ref("NodeCoordinatorState"))}),
    Route("POST", "/node/{node}/coordinator-state", node.set_coordinator_state,
          "Make a coordinator primary or secondary", tag="node",
          params=(NODE, Param("state", required=True, choices=("primary", "secondary"),
                              description="The coordinator state wanted")),
          responses={200: ("Handover requested, or nothing to do", MSG),
                     400: ("Unknown, non-coordinator or inactive node", MSG)}),
    Route("GET", "/node/{node}/domain-state", node.domain_state, "Node domain state",
          tag="node", params=(NODE,),
          responses={200: ("The observed domain state", ref("NodeDomainState"))}),
    Route("POST", "/node/{node}/domain-state", node.set_domain_state,
          "Flush a node or make it ready", tag="node",
          params=(NODE,
                  Param("state", required=True, choices=("flush", "ready"),
                        description="flush: take out of service; ready: return to service"),
                  Param("wait", "bool", default=False,
                        description="Answer only when the node's task has finished")),
          responses={200: ("Task created (or finished with wait), or nothing to do (no "
                           "task_id)", ref("MaybeTaskReply")),
                     202: ("wait=true and the task is still running after api.wait_timeout",
                           ref("TaskReply")),
                     400: ("Unknown node, or the task failed", MSG),
                     409: ("Concurrent changes to the same node; retry", MSG)}),
    Route("GET", "/node/{node}/log", node.node_log, "Node daemon log", tag="node",
          params=(NODE, Param("lines", "int", default=10, minimum=0,
                              description="How many of the last lines")),
          responses={200: ("The last lines", ref("NodeLog")),
                     400: ("Unknown node or bad parameter", MSG)}),
]


def metrics_routes(auth: bool) -> list[Route]:
    """``GET /metrics`` and one route per group (``api.metrics``); ``auth``: scrapes need an
    API key (``api.metrics_auth``)."""
    from pvc_api import metrics

    reply = {200: ("Prometheus text exposition", text_body())}
    return [Route("GET", "/metrics", metrics.all_metrics, "Every Prometheus metric",
                  auth=auth, tag="metrics", responses=reply)] + [
        Route("GET", f"/metrics/{group}", metrics.group_metrics(group),
              f"Prometheus metrics: {group}", auth=auth, tag="metrics", responses=reply)
        for group in metrics.GROUPS]
