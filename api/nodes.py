"""Node objects (the reference's Node schema) built from the keys a node daemon writes.

Every key of every node asked for is read in one pipelined batch (from the API's view when
it is loaded, which answers with every completed write); see ``pvc_api.zk``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pvc_api import zk
from pvc_api.errors import ApiError
from pvc_api.merging import merge
from pvc_kernel.state import schema

if TYPE_CHECKING:
    from pvc_api.app import Api

KEYS = ("node", "node.static", "node.daemon_state", "node.coordinator_state",
        "node.domain_state", "node.keepalive", "node.stats")
"""What is read per node; ``node`` (the registration key itself) tells whether it exists."""

UNKNOWN = "unknown"
GIVEN_UP = ("dead", "fenced")
"""Daemon states of a node the cluster declared dead: it runs nothing and holds no role."""
ACTING = ("primary", "takeover", "relinquish")
"""Coordinator states of the primary in office (or entering / leaving it)."""


def names(api: Api) -> list[str]:
    """Every registered node name, sorted."""
    (found,) = zk.fetch(api.store, [zk.children("nodes")], api.zk_timeout)
    return found


def read(api: Api, wanted: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """Raw values by short key name (``static``, ``daemon_state``...) of the existing nodes
    among ``wanted``, read in one round trip; ``primary`` is the cluster's primary node."""
    wanted = [n for n in wanted if schema.valid_segment(n)]
    values = zk.fetch(api.store, [zk.get(key, node=n) for n in wanted for key in KEYS]
                      + [zk.get("config.primary_node")], api.zk_timeout)
    primary = values.pop()
    raw = {}
    for i, name in enumerate(wanted):
        chunk = values[i * len(KEYS):(i + 1) * len(KEYS)]
        if chunk[0] is not None:  # else not registered (or removed since the listing)
            raw[name] = {key.rpartition(".")[2]: v for key, v in zip(KEYS, chunk, strict=True)}
            raw[name]["primary"] = primary or "none"
    return raw


def to_int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        return 0


def to_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and abs(number) != float("inf") else 0.0


def _text(value: Any) -> str:
    return str(value) if value not in (None, "") else UNKNOWN


def build(api: Api, name: str, raw: dict[str, str | None]) -> dict[str, Any]:
    """The Node object; missing values read as zeros, "unknown" states and health "N/A".

    Plugins fill their fields (VM counts, allocations...) through ``pvc_api_node``.
    """
    node = _core(name, raw)
    if api.plugins is not None:
        stats = zk.load_json(raw.get("stats"), {})
        stats = stats if isinstance(stats, dict) else {}
        for _plugin, part in api.plugins.call_each("pvc_api_node", obj=f"node:{name}",
                                                   stats=stats):
            if isinstance(part, dict):
                merge(node, part)
    return _truthful(node, raw.get("primary"))


def _truthful(node: dict[str, Any], primary: str | None) -> dict[str, Any]:
    """Correct what a node's own keys cannot: a dead node never rewrites them.

    Only the node named by ``config.primary_node`` shows ``primary`` (``primary`` None: not
    known, e.g. a caller without that key). A ``dead`` or ``fenced`` node is no coordinator in
    office (a ``primary``, ``takeover`` or ``relinquish`` it left behind reads ``secondary``)
    and runs nothing: its VM counts, allocations, load, memory in use and interface rates read
    0 instead of its last keepalive's.
    """
    given_up = node["daemon_state"] in GIVEN_UP
    coordinator = node["coordinator_state"]
    if coordinator in ACTING and given_up:
        node["coordinator_state"] = "secondary"
    elif coordinator == "primary" and primary is not None and primary != node["name"]:
        node["coordinator_state"] = "secondary"
    if given_up:
        node.update(load=0.0, domains_count=0, running_domains=[], interfaces={})
        node["vcpu"]["allocated"] = 0
        node["memory"].update(allocated=0, provisioned=0, used=0, free=0)
    return node


def _core(name: str, raw: dict[str, str | None]) -> dict[str, Any]:
    static = zk.load_json(raw.get("static"), {})
    host = zk.load_json(raw.get("stats"), {}).get("host")
    host = host if isinstance(host, dict) else {}
    cpu_count = to_int(static.get("cpu_count"))
    total = to_int(host.get("memory_total") or static.get("memory_total"))
    used = to_int(host.get("memory_used"))
    free = to_int(host.get("memory_free")) if "memory_free" in host else max(total - used, 0)
    return {
        "name": name,
        "daemon_state": _text(raw.get("daemon_state")),
        "coordinator_state": _text(raw.get("coordinator_state")),
        "domain_state": _text(raw.get("domain_state")),
        "pvc_version": _text(static.get("pvc_version")),
        "cpu_count": cpu_count,
        "kernel": _text(static.get("kernel")),
        "os": _text(static.get("os")),
        "arch": _text(static.get("arch")),
        "health": "N/A",
        "health_plugins": [],
        "health_details": [],
        "load": to_float(host.get("load")),
        "domains_count": 0,
        "running_domains": [],
        "vcpu": {"total": cpu_count, "allocated": 0},
        "memory": {"total": total, "allocated": 0, "provisioned": 0, "used": used, "free": free},
        "interfaces": {},
        "keepalive": to_float(raw.get("keepalive")),
    }


def get(api: Api, name: str) -> dict[str, Any] | None:
    """One Node object, or None if there is no such node."""
    raw = read(api, [name]).get(name)
    return build(api, name, raw) if raw is not None else None


def missing(name: str) -> ApiError:
    """The 400 of a mutation on a node that does not exist (the original's message)."""
    return ApiError(400, f"ERROR: No node named {name} is present in the cluster.")
