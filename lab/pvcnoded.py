"""The PVC node daemon (``pvcnoded``) on every node, with a lab config file.

Short timings so failures show within seconds: keepalive every 2 s, a 4 s ZooKeeper
session. Coordinators enable the API on their own address with the lab's key.
"""

from __future__ import annotations

import hashlib
import hmac
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
from pvc_lab.spec import API_PORT, NODE_IFNAME, LabSpec, NodeSpec

if TYPE_CHECKING:
    from pvc_lab.lab import Lab
    from pvc_lab.procs import ProcRecord

KEEPALIVE_INTERVAL = 2
FENCE_INTERVALS = 4      # fence delay 8 s
SUICIDE_INTERVALS = 2    # suicide delay 4 s
SESSION_TIMEOUT = 4
BINARY_ENV = "PVC_LAB_PVCNODED"


def binary() -> str:
    """``pvcnoded`` next to the running interpreter (the project's venv), or $PVC_LAB_PVCNODED."""
    return os.environ.get(BINARY_ENV) or os.path.join(os.path.dirname(sys.executable), "pvcnoded")


def keepalive_interval(spec: LabSpec) -> float:
    """The keepalive interval the lab gave its nodes."""
    if spec.extra.get("liveness") == "defaults":
        from pvc_kernel.config import NodeConfig

        return NodeConfig(node="", cluster="", zookeeper_hosts=[]).keepalive_interval
    return KEEPALIVE_INTERVAL


def zookeeper_secret(spec: LabSpec) -> str:
    """The lab's ``zookeeper.secret`` (pvcnoded's ZooKeeper identity, the same on every
    node): derived from the lab's random API key, so it needs no file of its own (a lab
    shortcut: a real cluster uses an independent random secret)."""
    return hmac.new(spec.api_key.encode(), b"pvc-lab zookeeper.secret",
                    hashlib.sha256).hexdigest()


def node_config(spec: LabSpec, node: NodeSpec) -> dict[str, Any]:
    """The node's pvcnoded.yaml as a mapping (see pvc_kernel.config). The lab option
    ``liveness: defaults`` keeps pvcnoded's default keepalive, fence and session settings
    (what ``bench/recovery.py --defaults`` measures)."""
    short = spec.extra.get("liveness") != "defaults"
    timings = {"keepalive_interval": KEEPALIVE_INTERVAL, "fence_intervals": FENCE_INTERVALS,
               "suicide_intervals": SUICIDE_INTERVALS} if short else {}
    return {
        "node": node.name,
        "cluster": spec.name,
        "coordinator": node.coordinator,
        "zookeeper": {"hosts": spec.zk_hosts, "secret": zookeeper_secret(spec),
                      **({"session_timeout": SESSION_TIMEOUT} if short else {})},
        **timings,
        "log": {"level": "info"},
        "api": {"enabled": node.coordinator, "listen_address": "0.0.0.0",  # + floating IP
                "port": API_PORT, "keys": [spec.api_key]},
        "plugins": {"vm_kvm": vm_kvm_config(spec, node), **ceph_plugin_section(spec, node),
                    **bmc_plugin_section(spec, node),
                    "net_vxlan": {"cluster_device": NODE_IFNAME, "mode": "evpn",  # FRR
                                  "frr_dir": os.path.join(spec.node_dir(node.name), "frr"),
                                  # per lab: two labs' nodes share names (hv1...)
                                  "run_dir": os.path.join(spec.node_dir(node.name),
                                                          "net_vxlan"),
                                  "floating_ips": [f"{spec.floating_address}/"
                                                   f"{spec.prefixlen} {NODE_IFNAME}"]},
                    "net_bridged": {"bridge_device": NODE_IFNAME},     # VLANs: spec.VLANS
                    # volume mappings' state, per lab (two labs' nodes share names)
                    "provisioner": {"work_dir": os.path.join(spec.node_dir(node.name),
                                                             "provisioner")},
                    "health": health_config(spec, node)},
    }


HEALTH_INTERVAL = 2.0


def health_data_path(spec: LabSpec, node: NodeSpec) -> str:
    """A data path of the node's disk check that the lab itself does not create (a test
    mounts a small file system there to fill it)."""
    return os.path.join(spec.node_dir(node.name), "data")


def health_config(spec: LabSpec, node: NodeSpec) -> dict[str, Any]:
    """Checks every 2 s; no load check: the lab's nodes share the host's CPUs, so its load
    says nothing about one node."""
    return {"interval": HEALTH_INTERVAL, "load_delta": 0,
            "disk_paths": ["/", health_data_path(spec, node)]}


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
        os.chmod(path + ".tmp", 0o600)   # holds the API key and the ZooKeeper secret
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
                and time.time() - st["keepalive"] < 2 * keepalive_interval(lab.spec) + 1)

    def explain(self, lab: Lab, node: NodeSpec) -> str:
        st = lab.node_state(node.name)
        ka = (f"last keepalive {time.time() - st['keepalive']:.0f} s ago" if st.get("keepalive")
              else "no keepalive")
        return f"daemon_state {st.get('daemon_state') or 'unset'}, {ka}"
