"""The PVC node daemon (``pvcnoded``) on every node, with a lab config file.

Short timings so failures show within seconds: keepalive every 2 s, a 4 s ZooKeeper
session. Coordinators enable the API on their own address with the lab's key.
"""

from __future__ import annotations

import http.client
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import yaml

from pvc_lab import netns
from pvc_lab.bmc import plugin_section as bmc_plugin_section
from pvc_lab.ceph import plugin_section as ceph_plugin_section
from pvc_lab.libvirt import vm_kvm_config
from pvc_lab.services import Service
from pvc_lab.spec import API_PORT, LabSpec, NodeSpec

if TYPE_CHECKING:
    from pvc_lab.lab import Lab
    from pvc_lab.procs import ProcRecord

KEEPALIVE_INTERVAL = 2
SESSION_TIMEOUT = 4
BINARY_ENV = "PVC_LAB_PVCNODED"


def binary() -> str:
    """``pvcnoded`` next to the running interpreter (the project's venv), or $PVC_LAB_PVCNODED."""
    return os.environ.get(BINARY_ENV) or os.path.join(os.path.dirname(sys.executable), "pvcnoded")


def node_config(spec: LabSpec, node: NodeSpec) -> dict[str, Any]:
    """The node's pvcnoded.yaml as a mapping (see pvc_kernel.config)."""
    return {
        "node": node.name,
        "cluster": spec.name,
        "coordinator": node.coordinator,
        "zookeeper": {"hosts": spec.zk_hosts, "session_timeout": SESSION_TIMEOUT},
        "keepalive_interval": KEEPALIVE_INTERVAL,
        "log": {"level": "info"},
        "api": {"enabled": node.coordinator, "listen_address": node.address,
                "port": API_PORT, "keys": [spec.api_key]},
        "plugins": {"vm_kvm": vm_kvm_config(spec, node), **ceph_plugin_section(spec, node),
                    **bmc_plugin_section(spec, node)},
    }


def api_answers(spec: LabSpec, node: NodeSpec) -> bool:
    """True if the node's API answers 200 to a keyed request that reads ZooKeeper (call it
    inside the node's namespace)."""
    conn = http.client.HTTPConnection(node.address, API_PORT, timeout=3)
    try:
        conn.request("GET", f"/api/v1/node/{node.name}/daemon-state",
                     headers={"X-Api-Key": spec.api_key})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class NodeDaemon(Service):
    name = "pvcnoded"
    stop_grace = 8.0
    start_timeout = 60.0

    def config_file(self, spec: LabSpec, node: NodeSpec) -> str:
        return os.path.join(self.dir(spec, node), "pvcnoded.yaml")

    def prepare(self, spec: LabSpec, node: NodeSpec) -> None:
        path = self.config_file(spec, node)
        with open(path + ".tmp", "w") as fh:
            yaml.safe_dump(node_config(spec, node), fh, sort_keys=False)
        os.chmod(path + ".tmp", 0o600)   # holds the API key
        os.replace(path + ".tmp", path)

    def env(self, spec: LabSpec, node: NodeSpec) -> dict[str, str]:
        env = super().env(spec, node)
        env["PATH"] = os.path.dirname(binary()) + ":" + env["PATH"]
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def argv(self, spec: LabSpec, node: NodeSpec) -> list[str]:
        return [binary(), "--config", self.config_file(spec, node)]

    def ready(self, lab: Lab, node: NodeSpec, rec: ProcRecord) -> bool:
        """daemon_state ``run`` with a keepalive written by this process (after its start),
        and on a coordinator its API answers a keyed request from ZooKeeper (pvcapid
        answers 503 until its own ZooKeeper session is up)."""
        st = lab.node_state(node.name)
        if not (st.get("daemon_state") == "run" and (st.get("keepalive") or 0) > rec.started_at):
            return False
        return not node.coordinator or netns.call_in(node.netns, api_answers, lab.spec, node)

    def healthy(self, lab: Lab, node: NodeSpec, rec: ProcRecord) -> bool:
        """Ready, and its last keepalive is recent (e.g. after a partition healed)."""
        st = lab.node_state(node.name)
        return (st.get("daemon_state") == "run" and (st.get("keepalive") or 0) > rec.started_at
                and time.time() - st["keepalive"] < 2 * KEEPALIVE_INTERVAL + 1)

    def explain(self, lab: Lab, node: NodeSpec) -> str:
        st = lab.node_state(node.name)
        ka = (f"last keepalive {time.time() - st['keepalive']:.0f} s ago" if st.get("keepalive")
              else "no keepalive")
        return f"daemon_state {st.get('daemon_state') or 'unset'}, {ka}"
