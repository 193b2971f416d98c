"""The node's side: publish its BMC, check it (a fault when it does not answer), and tell
the kernel whether the node may rejoin after the cluster gave it up."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NoAuthError

from pvc_kernel.sdk import CheckResult, HealthCheck, faults, schema
from pvc_plugins.fencing_ipmi.config import FenceConfig
from pvc_plugins.fencing_ipmi.fence import DONE
from pvc_plugins.fencing_ipmi.ipmi import IpmiClient

log = logging.getLogger("pvc_plugins.fencing_ipmi")
FAULT_DELTA_BMC = 10


def bmc_fault_id(node: str) -> str:
    return f"bmc-{node}"


def secret_fault_id(node: str) -> str:
    return f"bmc-secret-{node}"


def publish_secret(store: Any, node: str, password: str | None) -> bool:
    """Write (or, with None, remove) this node's BMC password, a secret key the Store
    protects with pvcnoded's ACL. False, with a fault, if ZooKeeper refuses (the key was
    protected under another ``zookeeper.secret``, or this node has none)."""
    fid = secret_fault_id(node)
    try:
        if password is None:
            store.delete("fencing.secret", node=node)
        else:
            store.set("fencing.secret", password, node=node)
    except NoAuthError:
        where = schema.path("fencing.secret", node=node)
        have = ("a different zookeeper.secret" if getattr(store, "authenticated", False)
                else "no zookeeper.secret")
        log.error("ZooKeeper refuses this node access to its BMC password at %s: this node "
                  "has %s; set the same zookeeper.secret on every node", where, have)
        faults.report(store, fid, f"Node {node} cannot publish its BMC password: ZooKeeper "
                      f"denies access to {where} (this node has {have}; every node needs "
                      "the same zookeeper.secret)", FAULT_DELTA_BMC)
        return False
    if faults.get(store, fid):
        faults.clear(store, fid)
    return True


def publish_and_check(daemon: Any, cfg: FenceConfig) -> dict[str, Any]:
    """Publish this node's BMC (the password to its own key only) and check it answers."""
    store, node = daemon.store, daemon.node
    if cfg.bmc is None:
        info = {"host": None, "port": None, "user": None, "reachable": False, "power": None,
                "error": "no BMC configured (plugins.fencing_ipmi.bmc)",
                "checked": round(time.time(), 3)}
        store.set("fencing.bmc", info, node=node)
        publish_secret(store, node, None)
        faults.report(store, bmc_fault_id(node), f"Node {node} has no BMC configured "
                      "(plugins.fencing_ipmi.bmc): the cluster cannot fence it",
                      FAULT_DELTA_BMC)
        return info
    publish_secret(store, node, cfg.bmc.password)
    check = IpmiClient(cfg.bmc, timeout=cfg.ipmi_timeout).check()
    info = {**cfg.bmc.public(), **check, "checked": round(time.time(), 3)}
    store.set("fencing.bmc", info, node=node)
    if check["reachable"]:
        if faults.get(store, bmc_fault_id(node)):
            faults.clear(store, bmc_fault_id(node))
            log.info("BMC of %s at %s answers again", node, cfg.bmc.host)
    else:
        log.warning("BMC of %s at %s does not answer: %s", node, cfg.bmc.host, check["error"])
        faults.report(store, bmc_fault_id(node), f"Node {node}: its BMC at {cfg.bmc.host}:"
                      f"{cfg.bmc.port} does not answer ({check['error']}): the cluster "
                      "cannot fence this node", FAULT_DELTA_BMC)
    return info


def rejoin_wait(daemon: Any) -> str | None:
    """Why this node, its workloads stopped, must wait before rejoining: a fence of it is not
    finished, or its storage access was cut and is not given back yet (it asks for it)."""
    store, node = daemon.store, daemon.node
    record = store.get_json("fencing.fence", None, node=node)
    if not isinstance(record, dict):
        return None
    if record.get("step") != DONE:
        return (f"the cluster is fencing this node (fence {record.get('id')}, step "
                f"{record.get('step')})")
    if (record.get("storage") or {}).get("ok") and not record.get("unfenced"):
        try:
            asked = float(store.get("fencing.rejoin", node=node) or 0)
        except ValueError:
            asked = 0.0
        if asked <= (record.get("finished") or 0):
            store.set("fencing.rejoin", f"{time.time():.3f}", node=node)
        return "waiting for the primary to give this node its storage access back"
    return None


class BmcCheck(HealthCheck):
    """Node health check ``ipmi``: the BMC answered at the plugin's last self-check
    (``last_check()``); FAULT_DELTA_BMC otherwise, standing for the fault ``bmc-<node>``."""

    name = "ipmi"

    def __init__(self, last_check: Callable[[], dict[str, Any] | None]) -> None:
        self.last_check = last_check

    def run(self, daemon: Any) -> CheckResult:
        info = self.last_check()
        if info is None:
            return CheckResult(0, "BMC not checked yet")
        data = {k: info.get(k) for k in ("host", "port", "power", "checked")}
        if not info.get("reachable"):
            return CheckResult(FAULT_DELTA_BMC, f"BMC does not answer: {info.get('error')}",
                               data, fault=bmc_fault_id(daemon.node))
        return CheckResult(0, f"BMC at {info.get('host')} answers (power "
                           f"{info.get('power')})", data)
