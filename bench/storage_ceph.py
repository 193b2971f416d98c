"""Storage figures (run as root with the project's venv):

    .venv/bin/python bench/storage_ceph.py [--name pvcbstor] [--runs 3] [--keep] [--no-vm]

1. Standalone Ceph (one namespace, mon + mgr + 2 bluestore-on-file OSDs): time from nothing
   to HEALTH_OK, RSS of every daemon.
2. The lab with Ceph (3 nodes; mon + mgr on hv1, one OSD per node): time of
   ``Lab.up(storage)`` to HEALTH_OK, RSS of the Ceph daemons.
3. ``pvc storage volume clone --snapshot`` (copy-on-write) and a full copy of a 256 MiB
   volume with data, through the CLI (the API round trip included).
4. The storage benchmark (task on the primary; fio's rbd engine; the lab's settings:
   512 MiB volume, 4 s per test).
5. VM start from an RBD clone: upload the lab guest's bootable disk image into a volume,
   snapshot it, clone the snapshot, define a VM that boots from the clone (BIOS → SYSLINUX →
   kernel, all read from RBD), `pvc vm start --wait`, until the guest prints GUEST-BOOTED.
No figure is asserted; they vary with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from pvc_lab import Lab
from pvc_lab import ceph as labceph

PVC = [sys.executable, "-m", "pvc_cli"]


def pvc(lab: Lab, *args: str, timeout: float = 900) -> str:
    env = dict(os.environ, NO_COLOR="1", PVC_CLI_CONFIG="/nonexistent/pvc.json")
    out = lab.admin_exec([*PVC, *args], env=env, capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"pvc {' '.join(args)} failed: {out.stdout}{out.stderr}")
    return out.stdout


def timed(fn, *args, **kw) -> float:
    t0 = time.monotonic()
    fn(*args, **kw)
    return time.monotonic() - t0


def standalone() -> None:
    base = tempfile.mkdtemp(prefix="pvc-ceph-bench-")
    cluster = labceph.CephCluster(base, f"pvccephb-{os.getpid()}", osds=2)
    try:
        steps = cluster.up()
        time.sleep(3)
        mem = cluster.memory()
        print(f"standalone Ceph: HEALTH_OK after {steps['health_ok']:.1f} s {steps}")
        print(f"  RSS MiB: { {k: round(v / 1024) for k, v in mem.items()} } "
              f"total {sum(mem.values()) / 1024:.0f}")
    finally:
        cluster.cleanup()


def lab_up(name: str, reuse: bool) -> Lab:
    lab = Lab(name=name)
    if reuse and lab.is_up():
        return lab
    lab.down(grace=0, quiet=True)
    t0 = time.monotonic()
    lab.up(nodes=3, timeout=240, options={"storage": True})
    print(f"lab with Ceph (3 nodes): up to HEALTH_OK in {time.monotonic() - t0:.1f} s")
    lab.wait_for(lambda: "HEALTH_OK" in pvc(lab, "storage", "status"), 60, "a Ceph report")
    rss = {f"{n}/{s.name}": labceph.rss_kb(r.pid) // 1024 for s in lab.services
           if s.name.startswith("ceph-") for n in lab.nodes
           if (r := s.record(lab.spec, lab.spec.node(n)))}
    print(f"  Ceph RSS MiB: {rss} total {sum(rss.values())}")
    return lab


def clones(lab: Lab, runs: int) -> None:
    conf = labceph.lab_site(lab.spec, lab.spec.node("hv1")).conf
    pvc(lab, "storage", "volume", "add", "bench", "base", "256M")
    subprocess.run(["ip", "netns", "exec", lab.spec.node("hv1").netns, "rbd", "-c", conf,
                    "bench", "--io-type", "write", "--io-size", "4M", "--io-total", "256M",
                    "bench/base"], check=True, capture_output=True)
    pvc(lab, "storage", "volume", "snapshot", "add", "bench", "base", "gold")
    cow, full = [], []
    for i in range(runs):
        cow.append(timed(pvc, lab, "storage", "volume", "clone", "bench", "base", f"cow{i}",
                         "--snapshot", "gold"))
        full.append(timed(pvc, lab, "storage", "volume", "clone", "bench", "base", f"full{i}"))
    print(f"clone from snapshot (copy-on-write, CLI): median {statistics.median(cow):.2f} s "
          f"{[round(x, 2) for x in cow]}")
    print(f"full copy of 256 MiB with data (CLI): median {statistics.median(full):.2f} s "
          f"{[round(x, 2) for x in full]}")


def benchmark(lab: Lab) -> None:
    t0 = time.monotonic()
    pvc(lab, "storage", "benchmark", "run", "bench", "--name", "bench1", "--wait")
    total = time.monotonic() - t0
    (rec,) = json.loads(pvc(lab, "storage", "benchmark", "list", "bench1", "-f", "json"))
    print(f"storage benchmark ({total:.0f} s in all):")
    for test, doc in rec["benchmark_result"].items():
        side = doc["jobs"][0]["write" if "write" in test else "read"]
        lat = side.get("clat_ns", {}).get("mean", 0) / 1e6
        print(f"  {test:24} {side['bw_bytes'] / 2**20:8.1f} MiB/s {side['iops']:9.0f} IOPS "
              f"{lat:8.2f} ms mean latency")


def vm_from_clone(lab: Lab, runs: int) -> None:
    from pvc_lab.guest import boot_disk, build, domain_xml
    from pvc_lab.libvirt import console_dir

    image = build()
    with tempfile.TemporaryDirectory() as tmp:
        disk = boot_disk(os.path.join(tmp, "boot.img"), image, seed="bench")
        pvc(lab, "storage", "volume", "add", "bench", "vmbase", f"{disk.size // 2**20}M")
        pvc(lab, "storage", "volume", "upload", "bench", "vmbase", disk.path)
    pvc(lab, "storage", "volume", "snapshot", "add", "bench", "vmbase", "gold")
    times = []
    for i in range(runs):
        name = f"clonevm{i}"
        pvc(lab, "storage", "volume", "clone", "bench", "vmbase", name, "--snapshot", "gold")
        console = os.path.join(console_dir(lab.spec), f"{name}.log")
        disk_xml = (f"<disk type='network' device='disk'><driver name='qemu' type='raw' "
                    f"cache='none'/><source protocol='rbd' name='bench/{name}'/>"
                    f"<target dev='vda' bus='virtio'/></disk>\n    <serial ")
        xml = domain_xml(name, image, console, uuid=str(uuid.uuid4()),
                         boot_from_disk=True).replace("<serial ", disk_xml, 1)
        with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as fh:
            fh.write(xml)
        pvc(lab, "vm", "define", fh.name, "--target", f"hv{i % 3 + 1}")
        os.unlink(fh.name)
        t0 = time.monotonic()
        pvc(lab, "vm", "start", name, "--wait")
        lab.wait_for(lambda c=console: os.path.exists(c) and "GUEST-BOOTED" in open(c).read(),
                     120, "the guest to boot")
        times.append(time.monotonic() - t0)
        pvc(lab, "vm", "stop", name, "--wait")
        pvc(lab, "vm", "undefine", name, "--yes")
    print(f"VM boot from an RBD clone (BIOS, disk only) to GUEST-BOOTED: median "
          f"{statistics.median(times):.1f} s {[round(x, 1) for x in times]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", default="pvcbstor")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="use the lab if it is up")
    ap.add_argument("--keep", action="store_true", help="leave the lab up")
    ap.add_argument("--no-vm", action="store_true", help="skip the VM start figure")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")
    standalone()
    lab = lab_up(args.name, args.reuse)
    try:
        pvc(lab, "storage", "pool", "add", "bench", "32", "--replcfg", "copies=3,mincopies=2")
        clones(lab, args.runs)
        benchmark(lab)
        if not args.no_vm:
            vm_from_clone(lab, args.runs)
    finally:
        if not args.keep:
            lab.down(grace=3)


if __name__ == "__main__":
    main()
