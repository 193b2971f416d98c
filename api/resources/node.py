"""Node routes: list, states, primary handover, flush/ready and the node log."""

from __future__ import annotations

from typing import Any

from pvc_api import nodes, params, zk
from pvc_api.errors import ApiError
from pvc_api.resources import task
from pvc_api.spec import Call, Reply
from pvc_kernel import tasks
from pvc_kernel.state import ConflictError, schema

STATE_FILTERS = ("daemon_state", "coordinator_state", "domain_state")
NOT_FOUND = "Node not found."
ATTEMPTS = 5
"""Version-checked writes are retried this often before answering 409."""

_DOMAIN = {
    # state: (desired domain state, task type, accepted, finished, nothing to do)
    "flush": ("flushed", "node.flush", "Removing node {} from active service.",
              "Removed node {} from active service.", "Node {} is already flushed."),
    "ready": ("ready", "node.unflush", "Restoring node {} to active service.",
              "Restored node {} to active service.", "Node {} is already ready."),
}


def list_nodes(call: Call) -> list[dict[str, Any]]:
    """List nodes sorted by name; the state filters are OR-ed. 404 when nothing matches."""
    api = call.api
    match = params.name_filter(call.args["limit"])
    names = [n for n in nodes.names(api) if match(n)]
    raw = nodes.read(api, names)
    found = [nodes.build(call.api, n, raw[n]) for n in names if n in raw]
    wanted = {k: call.args[k] for k in STATE_FILTERS if call.args.get(k)}
    if wanted:
        found = [n for n in found if any(n[k] == v for k, v in wanted.items())]
    if not found:
        raise ApiError(404, NOT_FOUND)
    return found


def get_node(call: Call) -> list[dict[str, Any]]:
    """One node, as a one-element array like every "get one" route of API v1."""
    node = nodes.get(call.api, call.args["node"])
    if node is None:
        raise ApiError(404, NOT_FOUND)
    return [node]


def _one_key(call: Call, field: str) -> dict[str, str]:
    name = call.args["node"]
    if not schema.valid_segment(name):
        raise ApiError(404, NOT_FOUND)
    exists, value = zk.fetch(call.api.store, [zk.get("node", node=name),
                                              zk.get(f"node.{field}", node=name)],
                             call.api.zk_timeout)
    if exists is None:
        raise ApiError(404, NOT_FOUND)
    return {"name": name, field: value or nodes.UNKNOWN}


def daemon_state(call: Call) -> dict[str, str]:
    """The node daemon's state (init, run, shutdown, stop, dead, fenced)."""
    return _one_key(call, "daemon_state")


def coordinator_state(call: Call) -> dict[str, str]:
    """The node's coordinator state (primary, secondary, takeover, relinquish, client), as
    ``GET /node`` shows it: only the cluster's current primary reads ``primary``."""
    node = nodes.get(call.api, call.args["node"])
    if node is None:
        raise ApiError(404, NOT_FOUND)
    return {"name": node["name"], "coordinator_state": node["coordinator_state"]}


def domain_state(call: Call) -> dict[str, str]:
    """The node's observed domain state (ready, flush, flushed, unflush, fence-flush)."""
    return _one_key(call, "domain_state")


def set_coordinator_state(call: Call) -> dict[str, str]:
    """Ask for a planned primary handover by writing the desired primary.

    ``primary`` makes this node the desired primary; ``secondary`` on the current primary picks
    another running secondary coordinator. The coordinators carry the handover out; follow it
    with ``GET /node/<node>`` (coordinator_state).
    """
    api, name, want = call.api, call.args["node"], call.args["state"]
    node = nodes.get(api, name)
    if node is None:
        raise nodes.missing(name)
    if node["coordinator_state"] in ("client", nodes.UNKNOWN):
        raise ApiError(400, f"ERROR: Cannot change coordinator state on non-coordinator "
                            f"node {name}")
    if node["daemon_state"] != "run":
        raise ApiError(400, f"ERROR: Node {name} is not active")
    (primary,) = zk.fetch(api.store, [zk.get("config.primary_node")], api.zk_timeout)
    is_primary = primary == name or node["coordinator_state"] in ("primary", "takeover")
    if is_primary == (want == "primary"):
        return {"message": f"Node {name} is already in {want} coordinator state."}
    target = name
    if want == "secondary":
        others = nodes.read(api, [n for n in nodes.names(api) if n != name])
        ready = [n for n, raw in sorted(others.items())
                 if raw["coordinator_state"] == "secondary" and raw["daemon_state"] == "run"]
        if not ready:
            raise ApiError(400, f"ERROR: No other coordinator is available to take over "
                                f"from node {name}.")
        target = ready[0]
    api.store.set("config.desired_primary", target)  # last request wins, like the original
    return {"message": f"Setting node {name} in {want} coordinator state."}


def set_domain_state(call: Call) -> Reply | dict[str, Any]:
    """Flush the node (move its workloads away) or make it ready again, as a task.

    The desired state and the task for the node's daemon are written in one transaction. With
    ``wait=true`` the answer comes when the task has finished (or 202 after api.wait_timeout).
    """
    api, name, state = call.api, call.args["node"], call.args["state"]
    desired, task_type, accepted, finished, nothing = _DOMAIN[state]
    for _ in range(ATTEMPTS):
        observed, current, version = _domain_states(call)
        if observed == desired and (current or desired) == desired:
            return {"message": nothing.format(name)}
        txn = api.store.transaction()
        path = schema.path("node.desired_domain_state", node=name)
        if version < 0:
            txn.create(path, desired.encode())
        else:
            txn.set_data(path, desired.encode(), version=version)
        record = tasks.create_task(api.store, task_type, name, {"state": desired}, txn=txn)
        try:
            api.store.commit(txn)
        except ConflictError:  # a concurrent request changed the desired state, or no node
            continue
        return _task_reply(call, record, accepted.format(name), finished.format(name))
    raise ConflictError(f"node {name}: too many concurrent domain state changes")


def _domain_states(call: Call) -> tuple[str | None, str | None, int]:
    """(observed, desired, desired's version) of a node that must exist."""
    name = call.args["node"]
    if not schema.valid_segment(name):
        raise nodes.missing(name)
    exists, observed, (desired, version) = zk.fetch(call.api.store, [
        zk.get("node", node=name), zk.get("node.domain_state", node=name),
        zk.versioned("node.desired_domain_state", node=name)], call.api.zk_timeout)
    if exists is None:
        raise nodes.missing(name)
    return observed, desired, version


def _task_reply(call: Call, record: dict[str, Any], accepted: str,
                finished: str) -> Reply | dict[str, Any]:
    task_id = record["id"]
    if not call.args.get("wait"):
        return {"message": accepted, "task_id": task_id}
    final = task.wait(call.api, task_id, call.api.wait_timeout)
    if final and final.get("state") == tasks.SUCCESS:
        return {"message": finished, "task_id": task_id}
    if final and final.get("state") == tasks.FAILURE:
        return Reply({"message": str(final.get("status") or "The task failed."),
                      "task_id": task_id}, status=400)
    if final is None:
        return Reply({"message": f"Task {task_id} disappeared before it finished.",
                      "task_id": task_id}, status=400)
    return Reply({"message": f"{accepted} Still running: follow task {task_id}.",
                  "task_id": task_id, "task_name": record["type"], "run_on": record["owner"]},
                 status=202, headers={"Location": call.url(f"/tasks/{task_id}")})


def node_log(call: Call) -> dict[str, str]:
    """The last ``lines`` lines of the node daemon's log."""
    api, name, lines = call.api, call.args["node"], call.args["lines"]
    if not schema.valid_segment(name):
        raise nodes.missing(name)
    exists, text = zk.fetch(api.store, [zk.get("node", node=name), zk.get("node.log", node=name)],
                            api.zk_timeout)
    if exists is None:
        raise nodes.missing(name)
    kept = (text or "").splitlines()[-lines:] if lines > 0 else []
    return {"name": name, "data": "\n".join(kept)}
