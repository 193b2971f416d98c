"""JSON schemas of the response bodies (OpenAPI components), as in the PVC API v1 reference."""

from __future__ import annotations

from typing import Any


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def array_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": ref(name)}


def _obj(required: dict[str, Any], **optional: Any) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required),
            "properties": {**required, **optional}}


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
ANY: dict[str, Any] = {}
STR_LIST = {"type": "array", "items": STR}
INT_MAP = {"type": "object", "additionalProperties": INT}

COMPONENTS: dict[str, dict[str, Any]] = {
    "Message": _obj({"message": STR}),
    "TaskReply": _obj({"message": STR, "task_id": STR},
                      task_name=STR, run_on=STR),
    "MaybeTaskReply": _obj({"message": STR}, task_id=STR),
    "PrimaryNode": _obj({"primary_node": STR}),
    "HealthPlugin": _obj({"name": STR, "last_run": {"type": "integer", "nullable": True},
                          "health_delta": INT, "message": STR, "data": ANY}),
    "Node": _obj({
        "name": STR, "daemon_state": STR, "coordinator_state": STR, "domain_state": STR,
        "pvc_version": STR, "cpu_count": INT, "kernel": STR, "os": STR, "arch": STR,
        "health": {"oneOf": [INT, STR]}, "health_plugins": STR_LIST,
        "health_details": array_of("HealthPlugin"), "load": NUM, "domains_count": INT,
        "running_domains": STR_LIST,
        "vcpu": _obj({"total": INT, "allocated": INT}),
        "memory": _obj({k: INT for k in ("total", "allocated", "provisioned", "used", "free")}),
        "interfaces": {"type": "object", "additionalProperties": {"type": "object"}},
    }, keepalive={"type": "number", "description": "epoch of the last keepalive (0: never)"}),
    "NodeDaemonState": _obj({"name": STR, "daemon_state": STR}),
    "NodeCoordinatorState": _obj({"name": STR, "coordinator_state": STR}),
    "NodeDomainState": _obj({"name": STR, "domain_state": STR}),
    "NodeLog": _obj({"name": STR, "data": STR}),
    "Fault": _obj({"id": STR, "first_reported": STR, "last_reported": STR,
                   "acknowledged_at": STR, "status": STR, "health_delta": INT, "message": STR}),
    "ClusterStatus": _obj({
        "cluster_name": STR,
        "cluster_health": _obj({"health": INT, "messages": {"type": "array", "items": _obj(
            {"id": STR, "health_delta": INT, "text": STR})}}),
        "node_health": {"type": "object", "additionalProperties": _obj(
            {"health": {"oneOf": [INT, STR]}, "messages": STR_LIST})},
        "maintenance": {"type": "string", "enum": ["true", "false"]},
        "primary_node": STR, "pvc_version": STR, "upstream_ip": STR,
        "nodes": INT_MAP, "vms": INT_MAP, "networks": INT, "osds": INT_MAP, "pools": INT,
        "volumes": INT, "snapshots": INT,
        "resources": _obj({
            "memory": _obj({**{k: INT for k in ("total", "free", "used", "allocated",
                                                "provisioned")}, "utilization": NUM}),
            "cpu": _obj({"total": INT, "load": NUM, "allocated": INT, "utilization": NUM}),
            "disk": _obj({"total": INT, "used": INT, "free": INT, "utilization": NUM}),
        }),
        "detail": _obj({
            "node": {"type": "array", "items": _obj(
                {"name": STR, "daemon_state": STR, "domain_state": STR})},
            "vm": {"type": "array", "items": {"type": "object"}},
            "osd": {"type": "array", "items": {"type": "object"}},
            "faults": array_of("Fault"),
        }),
    }),
    "TaskStatus": _obj({"state": STR, "current": INT, "total": INT, "status": STR},
                       result=ANY, id=STR, type=STR, owner=STR),
    "TaskList": _obj({kind: {"type": "object", "nullable": True, "additionalProperties": {
        "type": "array", "items": {"type": "object"}}}
        for kind in ("active", "reserved", "scheduled")}),
    "Task": _obj({"id": STR, "type": STR, "owner": STR, "args": {"type": "object"},
                  "state": STR, "cancel": BOOL, "current": INT, "total": INT, "status": STR,
                  "result": ANY, "created": {"type": "number", "nullable": True},
                  "started": {"type": "number", "nullable": True},
                  "finished": {"type": "number", "nullable": True}}),
}
"""Schemas of ``components.schemas``; plugins may add theirs with ``Api.add_schema``."""
