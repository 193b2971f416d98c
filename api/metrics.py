"""Prometheus metrics: ``GET /metrics`` and ``/metrics/{health,resource,ceph,zookeeper}``.

Each group's families come from the kernel (cluster, node and ZooKeeper figures) and from
every plugin's ``pvc_api_metrics(api, group)`` (VMs, Ceph...), as ``prometheus_client``
metric families; the text is ``prometheus_client``'s exposition. An answer is reused for
``api.metrics_cache`` seconds, so scrapes by several Prometheus servers, or of every
coordinator, cost ZooKeeper nothing more; a fresh one reads the API's view (one catch-up).
The metric names are listed in docs/metrics.md.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric

from pvc_api import nodes
from pvc_api.resources import cluster
from pvc_api.spec import Call, PlainText
from pvc_kernel import __version__ as pvc_version

GROUPS = ("health", "resource", "ceph", "zookeeper")
MiB = 1024 * 1024
ZK_TIMEOUT = 2.0
ZK_FIELDS = {  # mntr key → (metric suffix, help); latencies come in ms
    "zk_avg_latency": ("avg_latency_seconds", "Average request latency"),
    "zk_max_latency": ("max_latency_seconds", "Largest request latency"),
    "zk_outstanding_requests": ("outstanding_requests", "Requests queued"),
    "zk_num_alive_connections": ("connections", "Client connections"),
    "zk_znode_count": ("znodes", "Znodes in the data tree"),
    "zk_watch_count": ("watches", "Watches set"),
    "zk_approximate_data_size": ("data_size_bytes", "Approximate size of the data tree"),
    "zk_packets_received": ("packets_received", "Packets received since start"),
    "zk_packets_sent": ("packets_sent", "Packets sent since start"),
}


class _Families:
    """A collector answering a fixed list of families (one registry per answer)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def render(families: Iterable[Metric]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry).decode()


def gauge(name: str, doc: str, labels: Iterable[str] = (),
          samples: Iterable[tuple[Iterable[str], float]] = ()) -> GaugeMetricFamily:
    """A gauge family with one sample per (label values, value)."""
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


# -- the kernel's families ----------------------------------------------------------------

def _nodes(call: Call) -> list[dict[str, Any]]:
    api = call.api
    names = nodes.names(api)
    raw = nodes.read(api, names)
    return [nodes.build(api, n, raw[n]) for n in names if n in raw]


def health_families(call: Call, status: dict[str, Any],
                    node_list: list[dict[str, Any]]) -> list[Metric]:
    info = InfoMetricFamily("pvc", "This PVC cluster",
                            value={"version": pvc_version, "cluster": status["cluster_name"],
                                   "primary_node": status["primary_node"]})
    faults = status["detail"]["faults"]
    by_status = {s: sum(1 for f in faults if f["status"] == s) for s in ("new", "ack")}
    states = [("daemon_state", "pvc_node_daemon_state"),
              ("coordinator_state", "pvc_node_coordinator_state"),
              ("domain_state", "pvc_node_domain_state")]
    out: list[Metric] = [
        info,
        gauge("pvc_cluster_health", "Cluster health: 100 minus the unacknowledged faults' "
              "deltas", samples=[((), status["cluster_health"]["health"])]),
        gauge("pvc_cluster_faults", "Faults by status (new, ack)", ["status"],
              [((s,), n) for s, n in by_status.items()]),
        gauge("pvc_cluster_maintenance", "1 while the cluster is in maintenance mode",
              samples=[((), 1 if status["maintenance"] == "true" else 0)]),
        gauge("pvc_node_health", "Node health: 100 minus its checks' deltas (-1: no checks "
              "reported)", ["node"],
              [((n["name"],), n["health"] if isinstance(n["health"], int) else -1)
               for n in node_list]),
        gauge("pvc_node_health_check_delta", "What one health check takes off its node's "
              "health", ["node", "check"],
              [((n["name"], d["name"]), d["health_delta"]) for n in node_list
               for d in n["health_details"]]),
    ]
    for key, name in states:
        out.append(gauge(name, f"1 for the node's current {key.replace('_', ' ')}",
                         ["node", "state"], [((n["name"], n[key]), 1) for n in node_list]))
    return out


def _n_minus_one(used: float, per_node: list[float]) -> float:
    """``used`` as a share of what is left with the largest node gone (the N-1 rule)."""
    left = sum(per_node) - max(per_node, default=0)
    return round(used / left, 4) if left > 0 else 0.0


def _memory(key: str) -> Any:
    return lambda n: n["memory"][key] * MiB


def resource_families(call: Call, status: dict[str, Any],
                      node_list: list[dict[str, Any]]) -> list[Metric]:
    counts = [("pvc_nodes", "Nodes", status["nodes"].get("total", 0)),
              ("pvc_vms", "VMs", status["vms"].get("total", 0)),
              ("pvc_networks", "Client networks", status["networks"]),
              ("pvc_osds", "Ceph OSDs", status["osds"].get("total", 0)),
              ("pvc_pools", "Ceph pools", status["pools"]),
              ("pvc_volumes", "Ceph RBD volumes", status["volumes"]),
              ("pvc_snapshots", "Ceph RBD snapshots", status["snapshots"])]
    out: list[Metric] = [gauge(name, doc, samples=[((), value)]) for name, doc, value in counts]
    per_node = [
        ("pvc_node_cpus", "CPU threads", lambda n: n["cpu_count"]),
        ("pvc_node_load", "1-minute load average", lambda n: n["load"]),
        ("pvc_node_vcpus_allocated", "vCPUs of the VMs on the node",
         lambda n: n["vcpu"]["allocated"]),
        ("pvc_node_domains", "VMs running on the node", lambda n: n["domains_count"]),
    ] + [(f"pvc_node_memory_{k}_bytes", f"Memory {k}", _memory(k))
         for k in ("total", "used", "free", "allocated", "provisioned")]
    for name, doc, value in per_node:
        out.append(gauge(name, doc, ["node"], [((n["name"],), value(n)) for n in node_list]))
    running = [n for n in node_list if n["daemon_state"] == "run"]
    res = status["resources"]
    out += [
        gauge("pvc_cluster_memory_total_bytes", "Memory of the running nodes",
              samples=[((), res["memory"]["total"] * MiB)]),
        gauge("pvc_cluster_memory_allocated_bytes", "Memory allocated to VMs",
              samples=[((), res["memory"]["allocated"] * MiB)]),
        gauge("pvc_cluster_memory_used_bytes", "Memory in use on the running nodes",
              samples=[((), res["memory"]["used"] * MiB)]),
        gauge("pvc_cluster_cpus", "CPU threads of the running nodes",
              samples=[((), res["cpu"]["total"])]),
        gauge("pvc_cluster_vcpus_allocated", "vCPUs allocated to VMs",
              samples=[((), res["cpu"]["allocated"])]),
        gauge("pvc_cluster_memory_n_minus_one_utilisation", "Allocated VM memory as a share of "
              "the running nodes' memory without the largest node (over 1: the VMs do not fit "
              "if a node fails)",
              samples=[((), _n_minus_one(res["memory"]["allocated"],
                                         [n["memory"]["total"] for n in running]))]),
        gauge("pvc_cluster_cpu_n_minus_one_utilisation", "Allocated vCPUs as a share of the "
              "running nodes' CPU threads without the largest node",
              samples=[((), _n_minus_one(res["cpu"]["allocated"],
                                         [n["cpu_count"] for n in running]))]),
    ]
    return out


def _mntr(host: str) -> dict[str, str] | None:
    address, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    try:
        with socket.create_connection((address or host, int(port or 2181)),
                                      timeout=ZK_TIMEOUT) as s:
            s.sendall(b"mntr")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except (OSError, ValueError):
        return None
    text = b"".join(chunks).decode("utf-8", "replace")
    found = dict(line.split("\t", 1) for line in text.splitlines() if "\t" in line)
    return found or None


def servers(hosts: Iterable[str]) -> list[str]:
    """``host:port`` of each ensemble member (a chroot suffix and comma lists split off)."""
    out: list[str] = []
    for entry in hosts:
        out += [h.strip() for h in entry.split("/", 1)[0].split(",") if h.strip()]
    return list(dict.fromkeys(out))


def zookeeper_families(call: Call) -> list[Metric]:
    """Every ensemble member's ``mntr`` (asked in parallel; a silent one reads as down)."""
    hosts = servers(call.api.config.zookeeper_hosts)
    with ThreadPoolExecutor(max_workers=max(len(hosts), 1)) as pool:
        answers = dict(zip(hosts, pool.map(_mntr, hosts), strict=True))
    out = [gauge("pvc_zookeeper_up", "1 if the ZooKeeper server answers mntr", ["server"],
                 [((h,), 1 if a else 0) for h, a in answers.items()]),
           gauge("pvc_zookeeper_leader", "1 for the ensemble's leader (or a standalone server)",
                 ["server"], [((h,), 1 if a and a.get("zk_server_state") in
                               ("leader", "standalone") else 0) for h, a in answers.items()])]
    for key, (suffix, doc) in ZK_FIELDS.items():
        samples = []
        for h, a in answers.items():
            try:
                scale = 0.001 if key.endswith("_latency") else 1
                samples.append(((h,), float(a[key]) * scale))
            except (TypeError, KeyError, ValueError):
                continue
        out.append(gauge(f"pvc_zookeeper_{suffix}", doc, ["server"], samples))
    return out


# -- the routes ----------------------------------------------------------------------------

class Cache:
    """The last answer of each group, reused for ``api.metrics_cache`` seconds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: dict[str, tuple[float, str]] = {}


def _families(call: Call, group: str) -> list[Metric]:
    api = call.api
    out: list[Metric] = []
    if group in ("health", "resource"):
        status = cluster.status(call)
        node_list = _nodes(call)
        out += (health_families if group == "health" else resource_families)(
            call, status, node_list)
    elif group == "zookeeper":
        out += zookeeper_families(call)
    if api.plugins is not None:
        for _plugin, families in api.plugins.call_each("pvc_api_metrics", obj="metrics",
                                                       api=api, group=group):
            out += [f for f in families or () if isinstance(f, Metric)]
    return out


def text(call: Call, groups: Iterable[str]) -> str:
    api = call.api
    cache: Cache = api.extras.setdefault("metrics", Cache())
    parts = []
    for group in groups:
        with cache.lock:
            at, kept = cache.kept.get(group, (0.0, ""))
            if time.monotonic() - at >= api.config.api.metrics_cache or not kept:
                kept = render(_families(call, group))
                cache.kept[group] = (time.monotonic(), kept)
        parts.append(kept)
    return "".join(parts)


def _reply(body: str) -> PlainText:
    return PlainText(body, content_type=CONTENT_TYPE_LATEST)


def all_metrics(call: Call) -> PlainText:
    """Every metric (health, resource, ceph and zookeeper) in Prometheus' text format."""
    return _reply(text(call, GROUPS))


def group_metrics(group: str) -> Any:
    def handler(call: Call) -> PlainText:
        return _reply(text(call, [group]))
    handler.__doc__ = f"The {group} metrics in Prometheus' text format."
    handler.__name__ = f"{group}_metrics"
    return handler
