#!/usr/bin/env python3
"""The cost of observability: one Prometheus scrape of pvcapid at N nodes × M VMs, and one
health round of a node.

Scrape: a private ZooKeeper with N seeded nodes (each with a health report of 12 checks in its
stats), pvcapid with ``metrics_cache: 0`` (every scrape builds afresh), M VMs defined through
``POST /vm`` as in bench/scale.py, the first ``--running`` of them made to look running (their
desired state, observed state and stats written as a node would). Prints p50/p90 of
``GET /api/v1/metrics`` and of each group, the bytes and samples of an answer, and the
ZooKeeper requests a scrape costs (``zk_packets_received``, which also counts the pings of
pvcapid's session over the window: an upper bound).

Health round: the health plugin's own checks (load, disk, ZooKeeper, dpkg, hardware) run by
its runner against the same ZooKeeper, as a coordinator: CPU time (all threads) and ZooKeeper
requests per round.

    .venv/bin/python bench/metrics.py --nodes 3 --vms 50
    .venv/bin/python bench/metrics.py                   # 12 nodes x 1,000 VMs
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api_latency import KEY, pct, running_api  # noqa: E402
from scale import VNI, define_all, seed_hypervisors, zk_packets  # noqa: E402

from pvc_kernel.config import NodeConfig  # noqa: E402
from pvc_kernel.state import Store  # noqa: E402
from pvc_plugins.vm_kvm import keys as vm_keys  # noqa: E402
from pvc_plugins.vm_kvm import records  # noqa: E402

CHECKS = ("load", "disk", "zookeeper", "dpkg", "edac", "smart", "psu", "raid", "libvirt",
          "ceph", "ipmi", "sample")


def node_stats(i: int) -> dict:
    checks = [{"name": c, "state": "ok", "health_delta": 10 if (c == "load" and i % 4 == 0)
               else 0, "message": f"{c} fine", "data": {"n": i}, "last_run": int(time.time()),
               "fault": None} for c in CHECKS]
    return {"host": {"load": 1.25, "memory_total": 257000, "memory_used": 64000,
                     "memory_free": 193000},
            "health": {"health": 100 - sum(c["health_delta"] for c in checks),
                       "checks": checks, "at": int(time.time())}}


def make_running(store: Store, count: int, nodes: int) -> int:
    """The first ``count`` VMs as a node running them would report them."""
    uuids = sorted(store.children("vms"))[:count]
    for n, uuid in enumerate(uuids):
        node = f"hv{n % nodes + 1:02d}"
        store.set("vm.state", vm_keys.START, uuid=uuid)
        records.write_observed(store, uuid, node, vm_keys.RUNNING, libvirt_state="running")
        store.set("vm.stats", {"memory_stats": {"actual": 262144, "rss": 180000 + n},
                               "vcpu_stats": {"cpu_time": 10**9 * n, "user_time": 0,
                                              "system_time": 0}}, uuid=uuid)
    return len(uuids)


def scrape_rows(base: str, zk_port: int, count: int) -> None:
    s = requests.Session()
    s.headers["X-Api-Key"] = KEY
    print(f"{'scrape':<28} {'p50 ms':>8} {'p90 ms':>8} {'bytes':>9} {'samples':>8} "
          f"{'zk req/scrape':>14}")
    for path in ("/metrics", "/metrics/health", "/metrics/resource", "/metrics/ceph",
                 "/metrics/zookeeper"):
        s.get(base + path, timeout=60)                     # warm-up
        latencies, size, samples = [], 0, 0
        before = zk_packets(zk_port)
        for _ in range(count):
            t0 = time.perf_counter()
            r = s.get(base + path, timeout=60)
            latencies.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            size = len(r.content)
            samples = sum(1 for line in r.text.splitlines() if line and line[0] != "#")
        per = (zk_packets(zk_port) - before - 1) / count   # the final mntr counts itself
        print(f"GET {path:<24} {statistics.median(latencies):8.1f} {pct(latencies, .9):8.1f} "
              f"{size:9d} {samples:8d} {per:14.1f}", flush=True)


def health_round(zk_hosts: str, zk_port: int, rounds: int) -> None:
    from pvc_plugins.health import checks, config
    from pvc_plugins.health.runner import Runner

    store = Store(zk_hosts)
    store.start()
    try:
        cfg = NodeConfig(node="hv01", cluster="bench", coordinator=True,
                         zookeeper_hosts=[zk_hosts.split("/")[0]])
        daemon = SimpleNamespace(node="hv01", config=cfg, store=store,
                                 stopping=threading.Event())
        hcfg = config.load(cfg)
        runner = Runner(daemon, [("health", c) for c in checks.builtin(hcfg)],
                        hcfg.check_timeout, hcfg.workers, hcfg.error_delta)
        runner.round()                                      # set-up, dpkg's first look
        cpu0, wall0, zk0 = time.process_time(), time.perf_counter(), zk_packets(zk_port)
        for _ in range(rounds):
            entries = runner.round()
            store.get("config.maintenance")                 # what the agent reads per round
        cpu = (time.process_time() - cpu0) / rounds * 1000
        wall = (time.perf_counter() - wall0) / rounds * 1000
        zk = (zk_packets(zk_port) - zk0 - 1) / rounds
        runner.stop()
        print(f"\nhealth round ({len(entries)} checks; "
              f"{sum(1 for e in entries if e['state'] == 'n/a')} not applicable here): "
              f"{cpu:.1f} ms CPU, {wall:.1f} ms wall, {zk:.1f} ZooKeeper requests "
              "(+1 read-modify-write per failing check)")
    finally:
        store.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=12)
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--running", type=int, default=500, help="VMs made to look running")
    ap.add_argument("--scrapes", type=int, default=30, help="per row")
    ap.add_argument("--rounds", type=int, default=10, help="health rounds measured")
    args = ap.parse_args()
    with running_api(args.nodes, 0, 4, "pvc-bench-metrics-", {"metrics_cache": 0}) as b:
        base, store, zk = b.base, b.store, b.zk
        r = requests.post(f"{base}/network", data={"vni": VNI, "description": "bench",
                                                   "nettype": "bridged"},
                          headers={"X-Api-Key": KEY}, timeout=30)
        r.raise_for_status()
        seed_hypervisors(store, args.nodes)
        for i in range(1, args.nodes + 1):
            store.set("node.stats", node_stats(i), node=f"hv{i:02d}")
        print(f"Defining {args.vms} VMs through the API...", flush=True)
        define_all(base, args.vms, [args.vms], zk.port)
        running = make_running(store, args.running, args.nodes)
        print(f"\n{args.nodes} nodes x {args.vms} VMs ({running} running), "
              f"metrics_cache 0, {args.scrapes} scrapes per row:\n")
        scrape_rows(base, zk.port, args.scrapes)
        health_round(zk.hosts, zk.port, args.rounds)
    shutil.rmtree(b.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
