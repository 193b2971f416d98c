"""Root, OpenAPI document and cluster status routes."""

from __future__ import annotations

from typing import Any

from pvc_api import nodes, openapi, zk
from pvc_api.merging import merge
from pvc_api.spec import Call, Reply
from pvc_kernel import __version__ as pvc_version
from pvc_kernel import faults


def root(call: Call) -> dict[str, str]:
    """The API banner (no authentication); peer clusters check it contains "PVC API"."""
    return {"message": "PVC API version 1.0"}


def openapi_document(call: Call) -> dict[str, Any]:
    """This OpenAPI 3 document, generated from the route table (no authentication)."""
    return openapi.document(call.api, call.url(""))


def _health(fault_list: list[dict[str, Any]]) -> dict[str, Any]:
    active = [f for f in fault_list if f["status"] != faults.ACK]
    active.sort(key=lambda f: (f["health_delta"], f["last_reported"]), reverse=True)
    health = 100 - sum(max(f["health_delta"], 0) for f in active)
    return {"health": min(max(health, 0), 100),
            "messages": [{"id": f["id"], "health_delta": f["health_delta"], "text": f["message"]}
                         for f in active]}


def _node_health(node: dict[str, Any]) -> dict[str, Any]:
    """A node's health and the messages of its checks that take something off it."""
    return {"health": node["health"],
            "messages": [f"'{d['name']}': {d['message']}" for d in node["health_details"]
                         if d.get("health_delta")]}


def _percent(part: float, whole: float) -> float:
    return round(part / whole * 100, 2) if whole else 0.0


def _resources(node_list: list[dict[str, Any]]) -> dict[str, Any]:
    running = [n for n in node_list if n["daemon_state"] == "run"]
    mem = {k: sum(n["memory"][k] for n in running)
           for k in ("total", "free", "used", "allocated", "provisioned")}
    cpu_total = sum(n["cpu_count"] for n in running)
    load = round(sum(n["load"] for n in running), 2)
    return {
        "memory": {**mem, "utilization": _percent(mem["used"], mem["total"])},
        "cpu": {"total": cpu_total, "load": load,
                "allocated": sum(n["vcpu"]["allocated"] for n in running),
                "utilization": _percent(load, cpu_total)},
        "disk": {"total": 0, "used": 0, "free": 0, "utilization": 0.0},
    }


def status(call: Call) -> dict[str, Any]:
    """The cluster status: health from unacknowledged faults, node states and resources.

    Plugins add their parts (VMs, networks, storage...) through the ``pvc_api_status`` hook.
    """
    api = call.api
    name, maintenance, primary = zk.fetch(api.store, [
        zk.get("config.cluster_name"), zk.get("config.maintenance"),
        zk.get("config.primary_node")], api.zk_timeout)
    fault_list = faults.list_faults(api.store, "last_reported", api.zk_timeout)
    node_names = nodes.names(api)
    raw = nodes.read(api, node_names)
    node_list = [nodes.build(api, n, raw[n]) for n in node_names if n in raw]
    counts: dict[str, int] = {"total": len(node_list)}
    for n in node_list:
        key = f"{n['daemon_state']},{n['domain_state']}"
        counts[key] = counts.get(key, 0) + 1
    result: dict[str, Any] = {
        "cluster_name": name or api.config.cluster,
        "cluster_health": _health(fault_list),
        "node_health": {n["name"]: _node_health(n) for n in node_list},
        "maintenance": "true" if maintenance == "true" else "false",
        "primary_node": primary or "none",
        "pvc_version": pvc_version,
        "upstream_ip": "",
        "nodes": counts,
        "vms": {"total": 0}, "networks": 0, "osds": {"total": 0},
        "pools": 0, "volumes": 0, "snapshots": 0,
        "resources": _resources(node_list),
        "detail": {"node": [{"name": n["name"], "daemon_state": n["daemon_state"],
                             "domain_state": n["domain_state"]} for n in node_list],
                   "vm": [], "osd": [], "faults": fault_list},
    }
    for part in api.plugin_status():
        merge(result, part)
    return result


def set_maintenance(call: Call) -> dict[str, str]:
    """Turn maintenance mode on (``state=true``) or off (``state=false``)."""
    api = call.api
    want = "true" if call.args["state"] else "false"
    mode = "maintenance mode" if call.args["state"] else "normal mode"
    (current,) = zk.fetch(api.store, [zk.get("config.maintenance")], api.zk_timeout)
    if (current or "false") == want:
        return {"message": f"Cluster is already in {mode}"}
    api.store.set("config.maintenance", want)  # an absolute value: concurrent writers agree
    return {"message": f"Successfully set cluster in {mode}"}


def primary_node(call: Call) -> Reply | dict[str, str]:
    """The current primary coordinator (no authentication); 204 while there is none."""
    api = call.api
    (primary,) = zk.fetch(api.store, [zk.get("config.primary_node")], api.zk_timeout)
    if primary in (None, "", "none"):
        return Reply(status=204)
    return {"primary_node": primary}
