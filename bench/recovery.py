"""Node hard-kill → all its VMs running elsewhere, on the real lab (root).

A lab of 3 coordinators + hv4 (Ceph, a BMC per node); VMS guests with RBD disks run on hv4.
Each run pulls hv4's plug (``Lab.kill``: the BMC did not cause it), waits until every one of
its VMs runs on another node (libvirt), reads the phases from the fence record, then powers
hv4 on again and brings the VMs back with ``pvc node ready`` for the next run. Prints every
run, the median of each phase and the formula from the config.

    sudo .venv/bin/python bench/recovery.py [--runs 5] [--vms 4] [--no-rbd] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from pvc_lab import Lab
from pvc_lab.chaos import fence_record, ok, phases, pvc, running_now, start_guests
from pvc_lab.pvcnoded import KEEPALIVE_INTERVAL

VICTIM = "hv4"
POOL = "bench"
ORIGINAL = "original PVC: 60-65 s before its fence even starts, then VMs restarted one by one"


def one_run(lab: Lab, names: list[str]) -> dict[str, float]:
    killed_at = time.time()
    lab.kill(VICTIM)
    record = lab.wait_for(lambda: (r := fence_record(lab, VICTIM)).get("declared", 0) > killed_at
                          and r["step"] == "done" and r, 120, "the fence")

    def all_elsewhere() -> bool:
        now = running_now(lab)
        return all(any(v in now[n] for n in now if n != VICTIM) for v in names)

    lab.wait_for(all_elsewhere, 120, "every VM to run elsewhere")
    result = phases(record, killed_at)
    result["all_running"] = round(time.time() - killed_at, 2)
    if record["outcome"] != "fenced,recovered":
        raise SystemExit(f"fence outcome {record['outcome']}: {record}")
    lab.restore(timeout=180)                       # power back on
    lab.wait_for(lambda: fence_record(lab, VICTIM).get("unfenced"), 90, "storage given back")
    ok(lab, "node", "ready", VICTIM, "--wait", timeout=600)
    lab.wait_for(lambda: names and all(v in running_now(lab)[VICTIM] for v in names), 300,
                 "the VMs to be back on the victim")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vms", type=int, default=4)
    parser.add_argument("--name", default="pvcrecov", help="lab name")
    parser.add_argument("--no-rbd", action="store_true", help="diskless guests")
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    args = parser.parse_args()
    lab = Lab(name=args.name, progress=lambda m: print(f"  {m}", flush=True))
    lab.down(grace=0, quiet=True)
    workdir = tempfile.mkdtemp(prefix="pvc-bench-recovery-")
    try:
        lab.up(nodes=4, coordinators=3, timeout=300,
               options={"storage": True, "ceph_mons": "all", "bmc": True})
        lab.wait_for(lambda: "HEALTH_OK" in pvc(lab, "storage", "status").stdout, 120,
                     "Ceph to report")
        names = [f"bench{i}" for i in range(args.vms)]
        pool = None
        if not args.no_rbd:
            ok(lab, "storage", "pool", "add", POOL, "32", "--replcfg", "copies=3,mincopies=2")
            for n in names:
                ok(lab, "storage", "volume", "add", POOL, n, "16M")
            pool = POOL
        start_guests(lab, VICTIM, names, workdir, rbd_pool=pool)
        cfg = lab.store().get("config.cluster_name")   # connects the observer early
        runs = []
        for i in range(args.runs):
            r = one_run(lab, names)
            runs.append(r)
            print(f"run {i + 1}: " + "  ".join(f"{k} {v:5.2f} s" for k, v in r.items()),
                  flush=True)
        fence_intervals, suicide_intervals = 4, 2      # the kernel defaults the lab keeps
        print(f"\nrecovery of a hard-killed node with {args.vms} "
              f"{'RBD-backed' if pool else 'diskless'} VMs, median of {len(runs)} runs "
              f"(lab {cfg}):")
        for key in runs[0]:
            values = [r[key] for r in runs]
            print(f"  {key:12s} {statistics.median(values):6.2f} s   (min {min(values):.2f}, "
                  f"max {max(values):.2f})")
        print(f"formula: fence delay = keepalive_interval {KEEPALIVE_INTERVAL} s × "
              f"fence_intervals {fence_intervals} = {KEEPALIVE_INTERVAL * fence_intervals} s; "
              f"suicide delay = {KEEPALIVE_INTERVAL} s × {suicide_intervals} = "
              f"{KEEPALIVE_INTERVAL * suicide_intervals} s; detect = fence delay − time since "
              "the last keepalive + up to ½ interval; then power off + verify, storage cut, "
              "VM starts in bounded parallel")
        print(ORIGINAL)
        return 0
    finally:
        if not args.keep:
            lab.down(grace=2)


if __name__ == "__main__":
    sys.exit(main())
