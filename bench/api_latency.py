#!/usr/bin/env python3
"""Latency and throughput of ``GET /api/v1/node`` on a real ZooKeeper with seeded nodes.

Starts a private ZooKeeper (tests/support/zookeeper.py), writes the keys of N nodes as their
daemons would, runs ``pvcapid`` as a subprocess on a free loopback port and sends a bounded
number of requests from C concurrent clients (threads, one HTTP session each). Prints p50/p90/
p99 latency and requests per second per concurrency level; a ``GET /status`` row for context.

    .venv/bin/python bench/api_latency.py
    .venv/bin/python bench/api_latency.py --nodes 12 --requests 2000 --concurrency 1,4,8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvc_kernel.state import Store  # noqa: E402
from pvc_kernel.state.migrations import migrate  # noqa: E402
from tests.support.zookeeper import ZooKeeperServer  # noqa: E402

KEY = "bench-api-key"


def keepalives(store: Store, count: int, interval: float, stop: threading.Event) -> None:
    """Every node's keepalive + stats every ``interval`` seconds, as the daemons write them."""
    while not stop.wait(interval):
        for i in range(1, count + 1):
            name = f"hv{i:02d}"
            store.set("node.keepalive", str(time.time()), node=name)
            store.set("node.stats", {"host": {"load": round(1 + i / 10, 2),
                                              "memory_total": 257000, "memory_used": 64000 + i,
                                              "memory_free": 193000 - i}}, node=name)


def seed(store: Store, count: int) -> None:
    """N nodes with every key a daemon writes (3 coordinators, the rest hypervisors)."""
    for i in range(1, count + 1):
        name = f"hv{i:02d}"
        store.set("node.static", {"cpu_count": 32, "memory_total": 257000, "kernel": "6.1.0",
                                  "os": "debian 12", "arch": "x86_64", "pvc_version": "0.1.0"},
                  node=name)
        store.set("node.daemon_state", "run", node=name)
        store.set("node.coordinator_state",
                  ("primary" if i == 1 else "secondary") if i <= 3 else "client", node=name)
        store.set("node.domain_state", "ready", node=name)
        store.set("node.desired_domain_state", "ready", node=name)
        store.set("node.keepalive", str(time.time()), node=name)
        store.set("node.stats", {"host": {"load": 1.25, "memory_total": 257000,
                                          "memory_used": 64000, "memory_free": 193000}},
                  node=name)
    store.set("config.primary_node", "hv01")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(workdir: str, zk_hosts: str, port: int, threads: int,
              api: dict | None = None) -> subprocess.Popen:
    """pvcapid on ``port``; ``api``: more settings of its ``api`` section."""
    config = os.path.join(workdir, "pvcnoded.yaml")
    with open(config, "w") as fh:
        json.dump({"node": "hv01", "cluster": "bench", "zookeeper": {"hosts": [zk_hosts]},
                   "log": {"level": "warning"},
                   "api": {"port": port, "keys": [KEY], "threads": threads, **(api or {})}},
                  fh)
    pvcapid = str(Path(sys.executable).with_name("pvcapid"))
    proc = subprocess.Popen([pvcapid, "--config", config], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(workdir, "pvcapid.log"), "wb"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"http://127.0.0.1:{port}/api/v1/status",
                             headers={"X-Api-Key": KEY}, timeout=2)
            if r.status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"pvcapid did not come up; see {workdir}/pvcapid.log")


@dataclass
class Bench:
    """A private ZooKeeper with N seeded nodes (keepalives running) and pvcapid on it."""

    zk: ZooKeeperServer
    store: Store
    base: str
    workdir: str


@contextmanager
def running_api(nodes: int, keepalive: float, threads: int, prefix: str,
                api: dict | None = None) -> Iterator[Bench]:
    """Start all of it; stop it all (by PID) at the end. ``workdir`` (pvcapid.log) is the
    caller's to remove."""
    zk = ZooKeeperServer()
    zk.start()
    workdir = tempfile.mkdtemp(prefix=prefix)
    proc = None
    stop = threading.Event()
    store = Store(zk.hosts)
    try:
        store.start()
        migrate(store)
        seed(store, nodes)
        if keepalive > 0:
            threading.Thread(target=keepalives, args=(store, nodes, keepalive, stop),
                             daemon=True).start()
        port = free_port()
        proc = start_api(workdir, zk.hosts, port, threads, api)
        yield Bench(zk, store, f"http://127.0.0.1:{port}/api/v1", workdir)
    finally:
        stop.set()
        store.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        zk.cleanup()


def run(url: str, total: int, clients: int,
        seconds: float = 0.0) -> tuple[list[float], float, int]:
    """(latencies in ms, wall seconds, errors) for ``total`` GETs shared by ``clients``;
    with ``seconds`` > 0 no client starts a request after that long (fewer may be done)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]

    def client(count: int) -> None:
        nonlocal errors
        session = requests.Session()
        session.headers["X-Api-Key"] = KEY
        mine, bad = [], 0
        for _ in range(count):
            if seconds > 0 and time.perf_counter() - start > seconds:
                break
            t0 = time.perf_counter()
            r = session.get(url, timeout=30)
            mine.append((time.perf_counter() - t0) * 1000)
            bad += r.status_code != 200
        with lock:
            latencies.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client, args=(n,)) for n in per_client]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - start, errors


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=12)
    ap.add_argument("--requests", type=int, default=2000, help="per concurrency level")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--threads", type=int, default=8, help="waitress threads (api.threads)")
    ap.add_argument("--keepalive", type=float, default=5.0,
                    help="seconds between simulated node keepalives (0: none)")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    with running_api(args.nodes, args.keepalive, args.threads, "pvc-bench-api-") as b:
        run(f"{b.base}/node", 100, 2)  # warm-up
        print(f"pvcapid, {args.nodes} nodes (keepalive every {args.keepalive:g} s), "
              f"{args.threads} waitress threads, {args.requests} requests per row")
        print(f"{'route':<14}{'clients':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
              f"{'req/s':>9}{'errors':>8}")
        rows = [("/node", c) for c in levels] + [("/status", levels[-1])]
        for path, clients in rows:
            lat, wall, errors = run(b.base + path, args.requests, clients)
            print(f"GET {path:<10}{clients:>8}{statistics.median(lat):>9.2f}{pct(lat, .9):>9.2f}"
                  f"{pct(lat, .99):>9.2f}{len(lat) / wall:>9.0f}{errors:>8}")
    shutil.rmtree(b.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
