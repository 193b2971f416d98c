"""``/network/{vni}/acl`` handlers (PVC API v1 §3.6) and their route table.

ACLs are desired state written here only: under the ``networks`` lock (a network removed
meanwhile cannot get an orphan ACL record) and with a version check on the one key that
holds all of a network's ACLs (``network.acls``), so a change and the renumbering of the
others are one write. A rule is checked with nft (``acl.check_rule``) before it is stored.
"""

from __future__ import annotations

import json
from typing import Any

from pvc_api.sdk import ApiError, Call, Param, Route, array_of, params, ref, zk
from pvc_kernel.sdk import LockBusy
from pvc_plugins.net_bridged import acl, model
from pvc_plugins.net_bridged import api as net_api

NOT_FOUND = "ACL not found."


def _network(call: Call) -> dict[str, Any]:
    """The network of the path (VNI or description); 400 as the original answers."""
    net = call.args["vni"]
    spec = net_api._find(net_api._read_all(call), net)
    if spec is None:
        raise ApiError(400, f"ERROR: Could not find network '{net}' in the cluster!")
    return spec


def _acls(call: Call, vni: int) -> tuple[dict[str, list[dict[str, str]]], int]:
    """The network's ACLs and the version of their key (-1: none stored yet)."""
    ((text, version),) = zk.fetch(call.api.store, [zk.versioned("network.acls", vni=vni)],
                                  call.api.zk_timeout)
    return acl.normalise(zk.load_json(text, {})), version


def list_acls(call: Call) -> list[dict[str, Any]]:
    """The network's ACLs whose description matches ``limit`` (in, then out, by order)."""
    match = params.name_filter(call.args.get("limit"))
    acls, _ = _acls(call, _network(call)["vni"])
    found = [a for a in acl.wire(acls, call.args.get("direction")) if match(a["description"])]
    if not found:
        raise ApiError(404, NOT_FOUND)
    return found


def get_acl(call: Call) -> list[dict[str, Any]]:
    """One ACL (exact description) as a one-element array; 404 when absent."""
    acls, _ = _acls(call, _network(call)["vni"])
    found = [a for a in acl.wire(acls) if a["description"] == call.args["description"]]
    if not found:
        raise ApiError(404, NOT_FOUND)
    return found


def _change(call: Call, work: Any) -> dict[str, str]:
    """Run ``work(network, acls) -> (new acls, message)`` on the network's ACLs and store
    the result."""
    try:
        with call.api.store.locked(net_api.LOCK, "pvcapid", timeout=10, what="the networks"):
            spec = _network(call)
            vni = spec["vni"]
            acls, version = _acls(call, vni)
            new, message = work(spec, acls)
            if not call.api.store.set_if_version("network.acls", json.dumps(new), version,
                                                 vni=vni):
                raise ApiError(409, "The network's ACLs changed meanwhile; try again")
            return {"message": message}
    except LockBusy as exc:
        raise ApiError(503, f"{exc}; try again") from None
    except acl.AclError as exc:
        raise ApiError(400, str(exc)) from None


def add_acl(call: Call) -> dict[str, str]:
    """Add an ACL at ``order`` (absent, 0 or past the end: appended) of ``direction``
    (default in). The rule is checked before the lock is taken: nft may take a moment."""
    direction = call.args.get("direction") or "in"
    try:
        description = acl.check_description(call.args["description"])
        rule = acl.check_rule(call.args["rule"])
    except acl.AclError as exc:
        raise ApiError(400, str(exc)) from None
    except acl.CheckUnavailable as exc:
        raise ApiError(503, f"Cannot check the rule: {exc}") from None

    def work(spec: dict[str, Any], acls: dict[str, list[dict[str, str]]]) -> tuple[Any, str]:
        if spec.get("nettype") != model.SERVICES_TYPE:
            raise ApiError(400, f"Invalid parameter 'vni': network '{call.args['vni']}' is "
                                f"{spec.get('nettype')}: PVC does not route it, so ACLs "
                                f"apply to {model.SERVICES_TYPE} networks only")
        new = acl.insert(acls, direction, description, rule, call.args.get("order"))
        return new, f"Firewall rule '{description}' added successfully!"

    return _change(call, work)


def remove_acl(call: Call) -> dict[str, str]:
    """Remove an ACL (exact description); the ones after it move up."""
    description = call.args["description"]

    def work(_spec: dict[str, Any], acls: dict[str, list[dict[str, str]]]) -> tuple[Any, str]:
        return acl.remove(acls, description), \
            f"Firewall rule '{description}' removed successfully!"

    return _change(call, work)


TAG = "network"
MSG = ref("Message")
NET = Param("vni", location="path", description="The network's VNI or description")
DESC_PATH = Param("description", location="path", description="The ACL's description")
DIRECTION = Param("direction", choices=acl.DIRECTIONS,
                  description="in: traffic routed into the network; out: out of it "
                              "(default in)")
RULE = Param("rule", required=True, description="nft rule text, e.g. 'ip saddr "
             "10.0.0.0/24 tcp dport 22 accept' (one statement list; checked with nft)")
ORDER = Param("order", "int", minimum=0, description="Position in the direction's list "
              "(0-based; absent, 0 or past the end: appended)")
SCHEMAS: dict[str, dict[str, Any]] = {
    "NetworkAcl": {"type": "object", "required": ["direction", "order", "description", "rule"],
                   "properties": {"direction": {"type": "string", "enum": list(acl.DIRECTIONS)},
                                  "order": {"type": "integer"},
                                  "description": {"type": "string"},
                                  "rule": {"type": "string"}}},
}


def _ok(what: str) -> dict:
    return {200: (what, MSG), 400: ("Refused (the message names the field)", MSG),
            409: ("Changed meanwhile", MSG), 503: ("Busy, or nft cannot run here", MSG)}


ROUTES = [
    Route("GET", "/network/{vni}/acl", list_acls, "List a network's ACLs", tag=TAG, params=(
        NET, Param("limit", description="Regex on the description (fuzzy unless ^/$)"),
        Param("direction", choices=acl.DIRECTIONS, description="in or out (absent: both)")),
        responses={200: ("The ACLs: in, then out, each by order", array_of("NetworkAcl")),
                   404: ("None", MSG), 400: ("Bad filter or no such network", MSG)}),
    Route("POST", "/network/{vni}/acl", add_acl, "Add an ACL", tag=TAG, params=(
        NET, Param("description", required=True, description="A name unique in the network "
                   "(letters, digits, _.:@+=,-)"), RULE, DIRECTION, ORDER),
        responses=_ok("Added")),
    Route("GET", "/network/{vni}/acl/{description}", get_acl, "One ACL", tag=TAG,
          params=(NET, DESC_PATH),
          responses={200: ("A one-element array", array_of("NetworkAcl")),
                     404: ("No such ACL", MSG), 400: ("No such network", MSG)}),
    Route("POST", "/network/{vni}/acl/{description}", add_acl,
          "Add an ACL with this description", tag=TAG,
          params=(NET, DESC_PATH, RULE, DIRECTION, ORDER), responses=_ok("Added")),
    Route("DELETE", "/network/{vni}/acl/{description}", remove_acl, "Remove an ACL "
          "(the ones after it move up)", tag=TAG, params=(NET, DESC_PATH),
          responses=_ok("Removed")),
]


def add_to(api: Any) -> None:
    for name, schema in SCHEMAS.items():
        api.add_schema(name, schema)
    for route in ROUTES:
        api.add_route(route)
