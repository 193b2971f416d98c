"""REST route of the fencing plugin (pvcapid): an operator's power-off confirmation.

``POST /node/{node}/fence/confirm`` says "I powered this node off myself" for a dead node whose
fence failed (its BMC did not report the power off), like Pacemaker's
``stonith_admin --confirm``. The API only checks and records the request in the node's fence
record (a transaction checked against the keepalive, the daemon state and the record it
judged); the fencing coordinator (the primary's monitor) checks again, logs it, raises an
informational fault naming who and when, and recovers the node's VMs as if it was fenced.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from pvc_api.sdk import ApiError, Call, Param, Reply, Route, ref, zk
from pvc_kernel.sdk import schema
from pvc_plugins.fencing_ipmi.fence import alive_refusal, confirm_refusal, request_confirm

log = logging.getLogger("pvc_plugins.fencing_ipmi")
NOT_FOUND = "Node not found."
OPERATOR = re.compile(r"^[\w.@+:/ -]{1,64}$")


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def confirm(call: Call) -> Reply:
    """Confirm that a dead node whose fence failed is powered off, so that its VMs are
    recovered elsewhere as after a successful fence. Refused (409) while the node is not dead,
    its fence is under way or worked, or its keepalive is younger than its fence delay."""
    api, node = call.api, call.args["node"]
    operator = (call.args.get("operator") or "").strip() or "an unnamed operator"
    if not OPERATOR.match(operator):
        raise ApiError(400, "Parameter 'operator' must be 1-64 letters, digits or .@+:/_- "
                            "characters.")
    if not schema.valid_segment(node):
        raise ApiError(404, NOT_FOUND)
    exists, (state, state_version), (ka_text, ka_version), static, (text, version) = zk.fetch(
        api.store, [zk.get("node", node=node), zk.versioned("node.daemon_state", node=node),
                    zk.versioned("node.keepalive", node=node), zk.get("node.static", node=node),
                    zk.versioned("fencing.fence", node=node)], api.zk_timeout)
    if exists is None:
        raise ApiError(404, NOT_FOUND)
    try:
        keepalive = float(ka_text or 0)
    except ValueError:
        keepalive = 0.0
    static_data = _json(static)
    delay = api.config.fence_delay_for(static_data if isinstance(static_data, dict) else {})
    record = _json(text)
    why = alive_refusal(state, keepalive, time.time(), delay) or confirm_refusal(record)
    if why:
        raise ApiError(409, f"Refusing to confirm the power off of node {node}: {why}.")
    source = call.req.remote_addr or "unknown"
    new = request_confirm(record, operator, source)
    txn = api.store.transaction()
    if ka_version >= 0:
        txn.check(schema.path("node.keepalive", node=node), ka_version)
    txn.check(schema.path("node.daemon_state", node=node), state_version)
    txn.set_data(schema.path("fencing.fence", node=node), json.dumps(new).encode(),
                 version=version)
    if any(isinstance(r, Exception) for r in txn.commit()):
        raise ApiError(409, f"Node {node} changed while its power off was being confirmed; "
                            "check its state and try again.")
    log.warning("power off of node %s confirmed by %s (from %s) for fence %s", node,
                operator, source, record.get("id"))
    return Reply({"message": f"Power off of node {node} confirmed by {operator}; the primary "
                             "recovers its VMs as if it was fenced."}, status=202)


ROUTES = [
    Route("POST", "/node/{node}/fence/confirm", confirm,
          "Confirm that a dead node is powered off (its fence failed)", tag="node",
          params=(Param("node", location="path", description="The node's name"),
                  Param("operator", description="Who confirms, for the audit record (the CLI "
                                                "sends user@host); the client address is "
                                                "recorded too")),
          responses={202: ("Recorded; the primary recovers the node's VMs", ref("Message")),
                     400: ("Bad parameter", ref("Message")),
                     404: ("No such node", ref("Message")),
                     409: ("Refused: the node is not dead, its keepalive is fresh, its fence "
                           "is under way, worked or was confirmed already", ref("Message"))}),
]


def add_to(api: Any) -> None:
    """Add the fencing routes to the API (``pvc_api_routes``)."""
    for route in ROUTES:
        api.add_route(route)
