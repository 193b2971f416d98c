#!/usr/bin/env python3
"""The control plane at scale: N nodes and M VMs defined through the API, on a real ZooKeeper.

Starts a private ZooKeeper (tests/support/zookeeper.py), writes the keys of N nodes as their
daemons would (node keys as in bench/api_latency.py, plus each node's vm_kvm facts and its
report that the bridge of one bridged network is up), runs ``pvcapid`` on a free loopback
port, adds that network through ``POST /network``, then defines M stopped VMs one by one
through ``POST /api/v1/vm`` as users would (1 vCPU, 256 MiB, one NIC on the network, the
``vms`` selector so they spread over the nodes; every 10th VM has the user tag ``web``).

Prints, figures only (nothing is asserted):

- define latency by cluster size: mean/p50 of the WINDOW POSTs ending at each checkpoint,
  with the ZooKeeper requests each POST cost, and the time to define all M;
- at M VMs: ``GET /vm`` by concurrency, its filters, ``GET /status``, ``GET /vm/<name>``
  and ``GET /node``: p50/p90/p99, requests/s, ZooKeeper requests/s and per request;
- ZooKeeper requests/s at rest (pvcapid up, keepalives running, no request), before the
  VMs and with them (``zk_packets_received`` from ``mntr`` over the window);
- a markdown table of all of it.

Each read row stops at ``--requests`` requests or after ``--seconds``, whichever is first.

    .venv/bin/python bench/scale.py --nodes 3 --vms 50
    .venv/bin/python bench/scale.py                    # 12 nodes x 1,000 VMs
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import api_latency  # noqa: E402
from api_latency import KEY, pct, running_api  # noqa: E402

from pvc_kernel.state import Store, schema  # noqa: E402
from pvc_lab.zookeeper import parse_mntr  # noqa: E402
from pvc_plugins.net_bridged import keys as net_keys  # noqa: E402
from pvc_plugins.vm_kvm import keys as vm_keys  # noqa: E402
from tests.support.zookeeper import four_letter  # noqa: E402

VNI = 100
TAG = "web"
WINDOW = 10
"""POSTs averaged at each define checkpoint (the last WINDOW up to it)."""
MEMORY_MIB = 256

Row = dict[str, Any]


def zk_packets(port: int) -> int:
    """``zk_packets_received`` of the server (every client request, pings included)."""
    return int(parse_mntr(four_letter(port, "mntr")).get("zk_packets_received", 0))


def seed_hypervisors(store: Store, count: int) -> None:
    """Every node runs vm_kvm (its published facts) and has the network's bridge up."""
    for key in (*vm_keys.KEYS, *net_keys.KEYS):
        schema.register(key)
    for i in range(1, count + 1):
        name = f"hv{i:02d}"
        store.set("vm_kvm.node", {"virt_type": "kvm", "virt_reason": "bench",
                                  "migration_uri": f"qemu+tcp://{name}/system",
                                  "libvirt_version": 9000000, "memory_total": None,
                                  "started": round(time.time(), 3), "libvirt": "up",
                                  "libvirt_error": ""}, node=name)
        store.set("network.node", {"bridge": f"vmbr{VNI}", "port": f"bond0.{VNI}",
                                   "mtu": 1500, "state": "up", "error": ""},
                  vni=str(VNI), node=name)


def vm_xml(name: str, index: int) -> str:
    """A small stopped guest: 1 vCPU, 256 MiB, one virtio NIC on the bench network."""
    mac = f"52:54:00:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}"
    return (f"<domain type='kvm'><name>{name}</name><uuid>{uuid.uuid4()}</uuid>"
            f"<memory unit='MiB'>{MEMORY_MIB}</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
            f"<interface type='bridge'><source bridge='vmbr{VNI}'/><mac address='{mac}'/>"
            "<model type='virtio'/></interface></devices></domain>")


def session() -> requests.Session:
    s = requests.Session()
    s.headers["X-Api-Key"] = KEY
    return s


def define_all(base: str, count: int, checkpoints: list[int],
               zk_port: int) -> tuple[list[Row], float]:
    """Define ``count`` VMs one by one; a row per checkpoint and the total seconds."""
    s = session()
    latencies: list[float] = []
    errors: list[tuple[int, str]] = []
    windows = {k: (max(0, k - WINDOW), k) for k in checkpoints}
    marks = {j for w in windows.values() for j in w}
    packets = {0: zk_packets(zk_port)}
    rows: list[Row] = []
    start = time.perf_counter()
    for i in range(1, count + 1):
        name = f"vm{i:04d}"
        data: dict[str, Any] = {"xml": vm_xml(name, i), "selector": "vms"}
        if i % 10 == 0:
            data["user_tags"] = [TAG]
        t0 = time.perf_counter()
        r = s.post(f"{base}/vm", data=data, timeout=120)
        latencies.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            errors.append((i, f"{name}: {r.status_code} {r.text.strip()[:200]}"))
        if i in marks:
            packets[i] = zk_packets(zk_port)
        if i in windows:
            lo, hi = windows[i]
            lat = latencies[lo:hi]
            ops = (packets[hi] - packets[lo]) / len(lat)
            rows.append({"figure": f"POST /vm at {i} VMs", "clients": 1, "n": len(lat),
                         "mean": statistics.fmean(lat), "p50": statistics.median(lat),
                         "p90": pct(lat, .9), "p99": pct(lat, .99), "zk_req": ops,
                         "errors": sum(1 for j, _ in errors if lo < j <= hi)})
            print(f"  {i:>6} VMs: POST mean {rows[-1]['mean']:8.1f} ms, p50 "
                  f"{rows[-1]['p50']:8.1f} ms, {ops:8.0f} ZooKeeper requests per POST "
                  f"({time.perf_counter() - start:.0f} s so far)", flush=True)
    total = time.perf_counter() - start
    for _, e in errors[:5]:
        print(f"  define error: {e}")
    if len(errors) > 5:
        print(f"  ... {len(errors)} define errors in all")
    rows.append({"figure": f"define {count} VMs (total s)", "clients": 1, "n": count,
                 "mean": statistics.fmean(latencies), "p50": statistics.median(latencies),
                 "p90": pct(latencies, .9), "p99": pct(latencies, .99),
                 "total_s": total, "rate": count / total, "errors": len(errors)})
    return rows, total


def at_rest(zk_port: int, seconds: float, label: str) -> Row:
    """ZooKeeper requests/s over ``seconds`` with no API request."""
    before = zk_packets(zk_port)
    time.sleep(seconds)
    ops = (zk_packets(zk_port) - before) / seconds
    print(f"  ZooKeeper at rest, {label}: {ops:.1f} requests/s over {seconds:g} s", flush=True)
    return {"figure": f"ZooKeeper at rest, {label}", "zk_s": ops}


def measure(label: str, url: str, total: int, clients: int, seconds: float,
            zk_port: int) -> Row:
    """One read row: GETs of ``url`` from ``clients`` clients, with ZooKeeper's cost."""
    before = zk_packets(zk_port)
    lat, wall, errors = api_latency.run(url, total, clients, seconds)
    ops = zk_packets(zk_port) - before
    row = {"figure": label, "clients": clients, "n": len(lat), "mean": statistics.fmean(lat),
           "p50": statistics.median(lat), "p90": pct(lat, .9), "p99": pct(lat, .99),
           "rate": len(lat) / wall, "zk_s": ops / wall, "zk_req": ops / len(lat),
           "errors": errors}
    print(f"  {label:<28}{clients:>4}{len(lat):>6}{row['p50']:>10.1f}{row['p90']:>10.1f}"
          f"{row['p99']:>10.1f}{row['rate']:>9.1f}{row['zk_s']:>10.0f}{row['zk_req']:>9.0f}"
          f"{errors:>7}", flush=True)
    return row


COLUMNS: list[tuple[str, str, Callable[[float], str]]] = [
    ("clients", "clients", str), ("n", "requests", str),
    ("mean", "mean ms", lambda v: f"{v:.1f}"), ("p50", "p50 ms", lambda v: f"{v:.1f}"),
    ("p90", "p90 ms", lambda v: f"{v:.1f}"), ("p99", "p99 ms", lambda v: f"{v:.1f}"),
    ("rate", "req/s", lambda v: f"{v:.1f}"), ("total_s", "total s", lambda v: f"{v:.1f}"),
    ("zk_s", "ZK req/s", lambda v: f"{v:.0f}"), ("zk_req", "ZK req/request",
                                                  lambda v: f"{v:.0f}"),
    ("errors", "errors", str)]


def markdown(rows: list[Row]) -> str:
    """All rows as one markdown table (blank where a figure does not apply)."""
    lines = ["| figure | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for row in rows:
        cells = [fmt(row[key]) if key in row else "" for key, _, fmt in COLUMNS]
        lines.append(f"| {row['figure']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_rows(base: str, args: argparse.Namespace, levels: list[int], zk_port: int,
              count: int) -> list[Row]:
    """The read rows at the final size."""
    some = f"vm{max(1, count // 2):04d}"
    print(f"  {'route':<28}{'clients':>4}{'n':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}"
          f"{'req/s':>9}{'ZK req/s':>10}{'ZK/req':>9}{'errors':>7}")
    plan = [("GET /vm", "/vm", c) for c in levels]
    plan += [(f"GET /vm?limit={some}", f"/vm?limit={some}", 1),
             ("GET /vm?node=hv03", "/vm?node=hv03", 1),
             ("GET /vm?state=stop", "/vm?state=stop", 1),
             (f"GET /vm?tag={TAG}", f"/vm?tag={TAG}", 1),
             ("GET /status", "/status", 1), (f"GET /vm/{some}", f"/vm/{some}", 1),
             ("GET /node", "/node", 1)]
    return [measure(label, base + path, args.requests, clients, args.seconds, zk_port)
            for label, path, clients in plan]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=12)
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--checkpoints", default="10,100,500,1000",
                    help="VM counts at which define latency is shown (those <= --vms)")
    ap.add_argument("--requests", type=int, default=200, help="per read row (at most)")
    ap.add_argument("--seconds", type=float, default=20.0,
                    help="time budget of each read row (0: none)")
    ap.add_argument("--concurrency", default="1,4,8", help="clients of the GET /vm rows")
    ap.add_argument("--threads", type=int, default=8, help="waitress threads (api.threads)")
    ap.add_argument("--keepalive", type=float, default=5.0,
                    help="seconds between simulated node keepalives (0: none)")
    ap.add_argument("--rest", type=float, default=10.0,
                    help="seconds of each ZooKeeper at-rest window")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",") if 0 < int(c) <= args.vms}
                         | {args.vms})

    failed = True
    with running_api(args.nodes, args.keepalive, args.threads, "pvc-bench-scale-") as b:
        base, store, zk = b.base, b.store, b.zk
        r = session().post(f"{base}/network", data={"vni": VNI, "description": "bench",
                                                     "nettype": "bridged"}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"POST /network: {r.status_code} {r.text}")
        seed_hypervisors(store, args.nodes)
        print(f"pvcapid, {args.nodes} nodes (keepalive every {args.keepalive:g} s), "
              f"{args.threads} waitress threads; {args.vms} VMs; read rows: at most "
              f"{args.requests} requests or {args.seconds:g} s", flush=True)
        rows = [at_rest(zk.port, args.rest, "0 VMs")]
        print(f"Defining {args.vms} VMs one by one (POST /vm):", flush=True)
        define_rows, _ = define_all(base, args.vms, checkpoints, zk.port)
        rows += define_rows
        rows.append(at_rest(zk.port, args.rest, f"{args.vms} VMs"))
        api_latency.run(f"{base}/vm", 2, 1)  # warm-up
        print(f"Reads at {args.vms} VMs:", flush=True)
        rows += read_rows(base, args, levels, zk.port, args.vms)
        print(f"\n{args.nodes} nodes x {args.vms} VMs, {args.threads} waitress threads, "
              f"keepalive {args.keepalive:g} s\n")
        print(markdown(rows))
        failed = any(row.get("errors") for row in rows)
    log = os.path.join(b.workdir, "pvcapid.log")
    if os.path.exists(log) and "Traceback" in Path(log).read_text(errors="replace"):
        failed = True
    if failed:
        print(f"\nSome requests failed; pvcapid's log is kept: {log}")
    else:
        shutil.rmtree(b.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
