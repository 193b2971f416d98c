#!/usr/bin/env python3
"""One node daemon at scale: a real pvcnoded + libvirtd among 1,000 VMs, at rest.

Starts a private ZooKeeper, one real node (libvirtd in its namespace, pvcnoded with the
vm_kvm plugin, as the integration tests do) named ``hv1``, and the keys of 11 simulated
nodes (``hv02``..``hv12``, with keepalives). Defines M stopped VMs (``vms.define``, as the
API does), V of them on ``hv1``, the rest spread over the simulated nodes. Once the daemon
has settled, measures over a window: pvcnoded's CPU and RSS, the gaps between its
keepalives, and ZooKeeper requests/s (``mntr``), with the daemon running and stopped.
Then the same with ``resync_interval`` = ``poll_interval``, which reads every VM of the
node at every poll, as the daemon did before polls skipped settled VMs.

    .venv/bin/python bench/node_scale.py                       # 1,000 VMs, 100 on hv1
    .venv/bin/python bench/node_scale.py --vms 200 --assigned 50 --window 20
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import api_latency  # noqa: E402
from scale import zk_packets  # noqa: E402

from pvc_kernel.state import Store, schema  # noqa: E402
from pvc_kernel.state.migrations import migrate  # noqa: E402
from pvc_lab.libvirt import LibvirtNodes  # noqa: E402
from pvc_plugins.vm_kvm import keys as vm_keys  # noqa: E402
from pvc_plugins.vm_kvm import vms  # noqa: E402
from tests.integration.test_vm_support import node_config  # noqa: E402
from tests.support.daemons import DaemonProcess  # noqa: E402
from tests.support.zookeeper import ZooKeeperServer  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
KEEPALIVE = 2.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (and its waited-for children), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def define_vms(store: Store, count: int, assigned: int) -> None:
    """``count`` stopped VMs; the first ``assigned`` on hv1, the others on hv02..hv12."""
    for i in range(count):
        node = "hv1" if i < assigned else f"hv{2 + i % 11:02d}"
        xml = (f"<domain type='kvm'><name>ns{i:04d}</name><uuid>{uuid.uuid4()}</uuid>"
               "<memory unit='MiB'>256</memory><vcpu>1</vcpu>"
               "<os><type arch='x86_64'>hvm</type></os><devices/></domain>")
        vms.define(store, xml, node=node)


def keepalive_gaps(store: Store, seconds: float) -> list[float]:
    """Gaps between successive keepalive timestamps of hv1 seen over ``seconds``."""
    seen: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = float(store.get("node.keepalive", node="hv1") or 0)
        if value and (not seen or value != seen[-1]):
            seen.append(value)
        time.sleep(0.1)
    return [b - a for a, b in zip(seen, seen[1:], strict=False)]


def window(store: Store, zk_port: int, pid: int | None, seconds: float) -> dict[str, Any]:
    """ZooKeeper requests/s, and pvcnoded's CPU %, RSS and keepalive gaps if ``pid``."""
    packets, cpu, started = zk_packets(zk_port), cpu_seconds(pid) if pid else 0.0, \
        time.monotonic()
    gaps = keepalive_gaps(store, seconds) if pid else (time.sleep(seconds) or [])
    elapsed = time.monotonic() - started
    out = {"zk_per_s": (zk_packets(zk_port) - packets) / elapsed}
    if pid:
        out.update(cpu_pct=100 * (cpu_seconds(pid) - cpu) / elapsed, rss=rss_mib(pid),
                   gap_max=max(gaps, default=0.0),
                   gap_p99=api_latency.pct(gaps, 0.99) if gaps else 0.0,
                   gap_median=statistics.median(gaps) if gaps else 0.0)
    return out


def run_daemon(state_dir: str, nodes: LibvirtNodes, hosts: str, store: Store,
               zk_port: int, args: argparse.Namespace, **settings: Any) -> dict[str, Any]:
    """Start pvcnoded on hv1 with these vm_kvm settings, let it settle, measure, stop it."""
    config = node_config(nodes, "hv1", state_dir, poll_interval=args.poll, **settings)
    daemon = DaemonProcess(state_dir, "hv1", hosts, coordinator=True,
                           keepalive_interval=KEEPALIVE, plugins={"vm_kvm": config}).start()
    try:
        deadline = time.monotonic() + 60
        while store.get("node.daemon_state", node="hv1") != "run":
            if time.monotonic() > deadline or not daemon.running():
                raise RuntimeError(f"pvcnoded did not start; see {daemon.log_path}")
            time.sleep(0.2)
        time.sleep(args.settle)        # the first full check of every VM happens meanwhile
        return window(store, zk_port, daemon.proc.pid, args.window)
    finally:
        daemon.terminate()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--assigned", type=int, default=100, help="VMs on the real node")
    ap.add_argument("--window", type=float, default=60.0, help="seconds measured")
    ap.add_argument("--settle", type=float, default=15.0,
                    help="seconds after the daemon runs before measuring")
    ap.add_argument("--poll", type=float, default=2.0, help="vm_kvm poll_interval")
    args = ap.parse_args()

    zk = ZooKeeperServer()
    zk.start()
    state_dir = tempfile.mkdtemp(prefix="pvcb-node-")
    nodes = LibvirtNodes(f"pvcb-ns-{uuid.uuid4().hex[:4]}", 1, state_dir,
                         f"10.246.{random.randint(1, 250)}.0/24")
    stop = threading.Event()
    store = Store(zk.hosts)
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        nodes.up()
        store.start()
        migrate(store)
        for key in vm_keys.KEYS:
            schema.register(key)
        api_latency.seed(store, 12)
        store.delete("node", node="hv01")          # hv1 is the real one (its daemon
        store.set("node.daemon_state", "stop", node="hv1")   # registers it again)
        store.set("node.static", {"cpu_count": 32, "memory_total": 10 ** 6}, node="hv1")
        for name in ["hv1", *(f"hv{i:02d}" for i in range(2, 13))]:
            store.set("vm_kvm.node", {"virt_type": "kvm", "memory_total": 10 ** 6,
                                      "libvirt": "up"}, node=name)
        threading.Thread(target=api_latency.keepalives, args=(store, 12, KEEPALIVE, stop),
                         daemon=True).start()
        started = time.monotonic()
        define_vms(store, args.vms, args.assigned)
        print(f"{args.vms} VMs defined in {time.monotonic() - started:.1f} s", flush=True)
        rows.append(("without pvcnoded (simulated keepalives only)",
                     window(store, zk.port, None, min(args.window, 20.0))))
        rows.append(("pvcnoded, polls skip settled VMs",
                     run_daemon(state_dir, nodes, zk.hosts, store, zk.port, args)))
        rows.append(("pvcnoded, every poll reads every VM (resync_interval = poll)",
                     run_daemon(state_dir, nodes, zk.hosts, store, zk.port, args,
                                resync_interval=args.poll)))
    finally:
        stop.set()
        store.stop()
        nodes.close()
        zk.cleanup()
        shutil.rmtree(state_dir, ignore_errors=True)
    print(f"\n{args.vms} VMs ({args.assigned} stopped on the real node hv1, the rest on 11 "
          f"simulated nodes), keepalive {KEEPALIVE:g} s, poll {args.poll:g} s, "
          f"window {args.window:g} s\n")
    print("| run | ZooKeeper req/s | pvcnoded CPU % | RSS MiB | keepalive gap median / "
          "p99 / max s |")
    print("|---|---:|---:|---:|---|")
    for label, r in rows:
        daemon = (f"{r['cpu_pct']:.1f} | {r['rss']:.0f} | {r['gap_median']:.2f} / "
                  f"{r['gap_p99']:.2f} / {r['gap_max']:.2f}" if "cpu_pct" in r else " | | ")
        print(f"| {label} | {r['zk_per_s']:.0f} | {daemon} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
