"""VM figures on real libvirtds driven by real pvcnoded daemons (root, the project's venv):

    .venv/bin/python bench/vm_migrate.py [--migrations 4] [--vms 6] [--concurrency 1,2,4]

Two nodes (network + mount namespaces ``pvcb-vm-*``, shared fuse.glusterfs storage), one
ZooKeeper on loopback, TCG guests of 128 MiB / 1 vCPU.

1. Single live migration, back and forth: time from the request to the VM observed running
   on the target, and the guest's pause seen from outside = the largest gap between the
   arrival of consecutive ``tick`` lines on its serial console, minus the tick period
   (the console file is watched every 10 ms).
2. Flush of N VMs from hv1 (all live-migrated to hv2), then ready (all back), with
   ``flush_concurrency`` 1, 2 and 4 (hv1's pvcnoded is restarted with each value, gracefully
   as systemd would; the VMs keep running). Time = task created → task SUCCESS.
No figure is asserted; TCG on 2 cores is slow and noisy.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid as uuidlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pvc_kernel import tasks  # noqa: E402
from pvc_kernel.state import Store, schema  # noqa: E402
from pvc_lab.guest import build, domain_xml  # noqa: E402
from pvc_lab.libvirt import LibvirtNodes  # noqa: E402
from pvc_plugins.vm_kvm import keys, records, vms  # noqa: E402
from tests.support.daemons import DaemonProcess, wait_for  # noqa: E402
from tests.support.zookeeper import ZooKeeperServer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale import zk_packets  # noqa: E402


class ArrivalWatch:
    """Arrival times (host clock) of tick lines on a console log."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seen = 0
        while not self._stop.wait(0.01):
            try:
                with open(self.path, errors="replace") as fh:
                    count = sum(1 for line in fh if line.startswith("tick "))
            except OSError:
                continue
            now = time.monotonic()
            self.arrivals += [now] * (count - seen)
            seen = max(seen, count)

    def max_gap(self, after: float) -> float:
        times = [t for t in self.arrivals if t >= after]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


class Bench:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="pvcb-vm-")
        self.zk = ZooKeeperServer()
        self.nodes = LibvirtNodes(f"pvcb-vm-{uuidlib.uuid4().hex[:4]}", 2, self.dir,
                                  f"10.247.{random.randint(1, 250)}.0/24")
        self.daemons: dict[str, DaemonProcess] = {}
        self.events: list[tuple[str, str]] = []   # (node, log line) explaining reboots
        self.store: Store | None = None
        self.image = build()
        for key in keys.KEYS:
            schema.register(key)

    def up(self) -> None:
        self.zk.start()
        self.nodes.up()
        self.store = Store(self.zk.hosts, timeout=5)
        self.store.start()
        for n in self.nodes.nodes:
            self.start_daemon(n.name, 2)

    def start_daemon(self, node: str, concurrency: int) -> None:
        old = self.daemons.pop(node, None)
        if old:      # as `systemctl restart pvcnoded` does: SIGTERM, state stop, no fence
            old.terminate()
            self.note_events(node, old)
        settings = {"libvirt_uri": self.nodes.uri(node), "poll_interval": 0.5,
                    "migration_address": self.nodes.node(node).address,
                    "flush_concurrency": concurrency, "shutdown_timeout": 30,
                    "probe_cache": os.path.join(self.dir, "probe.json")}
        d = DaemonProcess(self.dir, node, self.zk.hosts, keepalive_interval=1,
                          plugins={"vm_kvm": settings})
        self.daemons[node] = d.start()
        started = time.time()
        wait_for(lambda: float(self.store.get("node.keepalive", node=node) or 0) > started
                 and self.store.get("node.daemon_state", node=node) == "run"
                 and self.store.exists("vm_kvm.node", node=node), 60, 0.2, f"{node} up")

    def console(self, name: str) -> str:
        return os.path.join(self.nodes.shared, "console", f"{name}.log")

    def define_and_start(self, names: list[str], node: str) -> None:
        for name in names:
            vms.define(self.store, domain_xml(name, self.image, self.console(name)), node=node)
            vms.set_state(self.store, name, keys.START)
        for name in names:
            wait_for(lambda name=name: "tick 2 " in _read(self.console(name)), 300, 0.2,
                     f"{name} to boot")

    def running_on(self, name: str) -> str | None:
        rec = records.read(self.store, records.find(self.store, name))
        return rec.running_on if rec and rec.observed.get("state") == "running" else None

    def node_task(self, node: str, kind: str) -> float:
        desired = "flushed" if kind == "node.flush" else "ready"
        txn = self.store.transaction()
        txn.set_data(schema.path("node.desired_domain_state", node=node), desired.encode())
        rec = tasks.create_task(self.store, kind, node, {"state": desired}, txn=txn)
        t0 = time.monotonic()
        self.store.commit(txn)
        final = wait_for(lambda: (t := tasks.get_task(self.store, rec["id"]))["state"]
                         in tasks.FINISHED and t, 900, 0.1, kind)
        if final["state"] != tasks.SUCCESS:
            raise RuntimeError(f"{kind} failed: {final['status']}")
        return time.monotonic() - t0

    EVENTS = ("self-fence:", "live migration to", "for a move to", "did not shut down")

    def note_events(self, node: str, daemon: DaemonProcess) -> None:
        """Keep the log lines that explain a guest reboot (self-fence, migration fallback)."""
        for line in daemon.log().splitlines():
            if any(e in line for e in self.EVENTS) and (node, line) not in self.events:
                self.events.append((node, line))

    def close(self) -> None:
        try:
            if self.store and self.store.connected:
                for uuid in records.uuids(self.store):
                    vms.remove(self.store, uuid, stop_timeout=30)
        finally:
            for d in self.daemons.values():
                d.kill()
            if self.store:
                self.store.stop()
            self.nodes.close()
            self.zk.cleanup()
            shutil.rmtree(self.dir, ignore_errors=True)


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def migrations(b: Bench, count: int) -> None:
    b.define_and_start(["mig"], "hv1")
    watch = ArrivalWatch(b.console("mig"))
    try:
        here, there = "hv1", "hv2"
        for i in range(count):
            time.sleep(3)
            t0 = time.monotonic()
            vms.migrate(b.store, "mig", "move", node=there)
            wait_for(lambda there=there: b.running_on("mig") == there, 120, 0.02, "migration")
            took = time.monotonic() - t0
            time.sleep(3)
            pause = watch.max_gap(t0 - 1.5) - 1.0
            print(f"live migration {i + 1} {here}->{there}: {took:.2f} s request->running; "
                  f"guest pause ~{max(pause, 0) * 1000:.0f} ms (tick gap {pause + 1:.2f} s)")
            here, there = there, here
        boots = _read(b.console("mig")).count("GUEST-BOOTED")
        print(f"guest boots over {count} migrations: {boots} (1 = never rebooted)")
    finally:
        watch.stop()
        vms.remove(b.store, "mig")


def flushes(b: Bench, count: int, levels: list[int]) -> None:
    names = [f"fl{i}" for i in range(1, count + 1)]
    t0 = time.monotonic()
    b.define_and_start(names, "hv1")
    print(f"{count} VMs booted in parallel on hv1 in {time.monotonic() - t0:.1f} s")
    for level in levels:
        b.start_daemon("hv1", level)
        packets = zk_packets(b.zk.port)
        flush = b.node_task("hv1", "node.flush")
        flush_ops = zk_packets(b.zk.port) - packets
        assert all(b.running_on(n) == "hv2" for n in names)
        ready = b.node_task("hv1", "node.unflush")
        assert all(b.running_on(n) == "hv1" for n in names)
        print(f"flush of {count} VMs, concurrency {level}: {flush:.1f} s "
              f"({flush / count:.2f} s/VM); ready: {ready:.1f} s; ZooKeeper during the "
              f"flush: {flush_ops / flush:.0f} req/s, {flush_ops / count:.0f} per VM")
    boots = {n: _read(b.console(n)).count("GUEST-BOOTED") for n in names}
    print(f"reboots during the flushes: {sum(boots.values()) - count}")
    for node, d in b.daemons.items():
        b.note_events(node, d)
    for node, line in b.events:
        print(f"  {node}: {line[:200]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--migrations", type=int, default=4)
    ap.add_argument("--vms", type=int, default=6)
    ap.add_argument("--concurrency", default="1,2,4")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network and mount namespaces)")
    b = Bench()
    try:
        t0 = time.monotonic()
        b.up()
        print(f"2 nodes (libvirtd + pvcnoded) + ZooKeeper up in {time.monotonic() - t0:.1f} s")
        if a.migrations:
            migrations(b, a.migrations)
        if a.vms:
            flushes(b, a.vms, [int(x) for x in a.concurrency.split(",") if x])
    finally:
        b.close()


if __name__ == "__main__":
    main()
