"""Node hard-kill → all its VMs running elsewhere, on the real lab (root).

A lab of 3 coordinators + hv4 (Ceph, a BMC per node); VMS guests with RBD disks run on hv4.
Each run pulls hv4's plug (``Lab.kill``: the BMC did not cause it), waits until every one of
its VMs runs on another node (libvirt), reads the phases from the fence record, then powers
hv4 on again and brings the VMs back with ``pvc node ready`` for the next run. Prints every
run, the median of each phase and the formula from the config the lab gave hv4's pvcnoded
(and the detection delay the primary applies to it). At least 5 runs (a median of fewer says
little).

    sudo .venv/bin/python bench/recovery.py [--runs 5] [--vms 4] [--no-rbd] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from pvc_kernel import config as kconfig
from pvc_lab import Lab
from pvc_lab.chaos import fence_record, ok, phases, pvc, running_now, start_guests

VICTIM = "hv4"
MIN_RUNS = 5
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


def daemon_config(lab: Lab, node: str) -> kconfig.NodeConfig:
    """The pvcnoded.yaml the lab wrote for ``node``, as the daemon read it (defaults filled)."""
    return kconfig.load(lab.service("pvcnoded").config_file(lab.spec, lab.spec.node(node)))


def formula(victim: kconfig.NodeConfig, primary: kconfig.NodeConfig) -> str:
    ka, fence, suicide = (victim.keepalive_interval, victim.fence_intervals,
                          victim.suicide_intervals)
    delay = primary.fence_delay_for({kconfig.LIVENESS: victim.liveness()})
    return (f"formula: fence delay = keepalive_interval {ka:g} s × fence_intervals {fence} = "
            f"{victim.fence_delay:g} s; suicide delay = {ka:g} s × suicide_intervals {suicide} = "
            f"{victim.suicide_delay:g} s; the primary ({primary.node}) declares {victim.node} "
            f"dead after {delay:g} s of silence (max of its own fence delay "
            f"{primary.fence_delay:g} s and {victim.node}'s suicide delay + one interval); "
            "detect = that − time since the last keepalive + up to ½ interval; then power off "
            "+ verify, storage cut, VM starts in bounded parallel")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=MIN_RUNS,
                        help=f"hard kills to measure (at least {MIN_RUNS})")
    parser.add_argument("--vms", type=int, default=4)
    parser.add_argument("--name", default="pvcrecov", help="lab name")
    parser.add_argument("--no-rbd", action="store_true", help="diskless guests")
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    args = parser.parse_args()
    if args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS}: the median of fewer runs says "
                     "little (the first run of a fresh lab is often much slower)")
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
        victim_cfg = daemon_config(lab, VICTIM)
        primary_cfg = daemon_config(lab, lab.primary() or lab.coordinators[0])
        runs = []
        for i in range(args.runs):
            r = one_run(lab, names)
            runs.append(r)
            print(f"run {i + 1}: " + "  ".join(f"{k} {v:5.2f} s" for k, v in r.items()),
                  flush=True)
        print(f"\nrecovery of a hard-killed node with {args.vms} "
              f"{'RBD-backed' if pool else 'diskless'} VMs, median of {len(runs)} runs "
              f"(lab {cfg}):")
        for key in runs[0]:
            values = [r[key] for r in runs]
            print(f"  {key:12s} {statistics.median(values):6.2f} s   (min {min(values):.2f}, "
                  f"max {max(values):.2f})")
        print(formula(victim_cfg, primary_cfg))
        print(ORIGINAL)
        return 0
    finally:
        if not args.keep:
            lab.down(grace=2)


if __name__ == "__main__":
    sys.exit(main())
