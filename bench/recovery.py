"""Node hard-kill → all its VMs running elsewhere, on the real lab (root), whichever node dies.

The production layout: 3 coordinators (a ZooKeeper server and a Ceph monitor each) + hv4,
an OSD and a BMC per node; VMS guests with RBD disks. Each run moves every VM onto the
victim, pulls its plug (``Lab.kill``: the BMC did not cause it), waits until every VM runs
on another node (libvirt), reads the phases from the fence record, then powers the victim
on again and brings the VMs back with ``pvc node ready``. The victims rotate over every node
(``--victims``), so coordinators, the primary, a ZooKeeper leader and monitors die too.
Prints every run, the median of each phase per kind of victim and over all runs, and the
formula from the config the lab gave the nodes. ``--defaults`` runs pvcnoded with its
default liveness settings (keepalive, fence and suicide intervals, session timeout) instead
of the lab's short ones, and Ceph with its own monitor and client timings (the lab's
``mon_failover`` settings off). At least 5 runs (a median of fewer says little).

    sudo .venv/bin/python bench/recovery.py [--runs 8] [--vms 8] [--defaults] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from pvc_kernel import config as kconfig
from pvc_lab import Lab
from pvc_lab.chaos import as_json, fence_record, ok, phases, pvc, running_now, start_guests

MIN_RUNS = 5
POOL = "bench"
ORIGINAL = ("original PVC (defaults): 60-65 s from the death to the start of its fence "
            "(30 s + 6 saving throws of 5 s), then power cycle and VMs restarted one by one")


def place_all(lab: Lab, names: list[str], victim: str) -> None:
    """Every VM runs on ``victim`` (moved there permanently, a few at a time)."""
    now = running_now(lab)
    away = [v for v in names if v not in now[victim]]

    def move(vm: str) -> None:
        ok(lab, "vm", "move", vm, "--target", victim, "--wait", timeout=300)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(move, away))
    lab.wait_for(lambda: all(v in running_now(lab)[victim] for v in names), 120,
                 f"every VM to run on {victim}")


def roles(lab: Lab, victim: str) -> list[str]:
    out = []
    if lab.primary() == victim:
        out.append("primary")
    if lab.zk_leader() == victim:
        out.append("zk-leader")
    if victim in lab.coordinators:
        out.append("mon")
    return out or ["hypervisor"]


def one_run(lab: Lab, names: list[str], victim: str) -> dict[str, float]:
    place_all(lab, names, victim)
    time.sleep(1.0)       # let the placements' keepalives and stats settle (not measured)
    killed_at = time.time()
    lab.kill(victim)
    record = lab.wait_for(lambda: (r := fence_record(lab, victim)).get("declared", 0) > killed_at
                          and r["step"] == "done" and r, 180, "the fence")

    def all_elsewhere() -> bool:
        now = running_now(lab)
        return all(any(v in now[n] for n in now if n != victim) for v in names)

    lab.wait_for(all_elsewhere, 180, "every VM to run elsewhere")
    result = phases(record, killed_at)
    result["all_running"] = round(time.time() - killed_at, 2)
    if record["outcome"] != "fenced,recovered":
        raise SystemExit(f"fence outcome {record['outcome']}: {record}")
    lab.restore(timeout=240)                       # power back on
    lab.wait_for(lambda: fence_record(lab, victim).get("unfenced"), 120, "storage given back")
    ok(lab, "node", "ready", victim, "--wait", timeout=600)
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
            f"{victim.suicide_delay:g} s; ZooKeeper session timeout "
            f"{victim.zookeeper_session_timeout:g} s; a node is declared dead after "
            f"{delay:g} s of silence; detect = that − the age of its last keepalive at the "
            "kill + up to ½ interval; then power off + verify, storage cut, VM starts in "
            "bounded parallel")


def summary(runs: list[tuple[str, list[str], dict[str, float]]]) -> None:
    keys = list(runs[0][2])
    groups: dict[str, list[dict[str, float]]] = {"all": [r for _v, _k, r in runs]}
    for victim, kinds, r in runs:
        groups.setdefault(f"{victim} ({'+'.join(kinds)})", []).append(r)
    print("\nmedian seconds (min-max)      " + "  ".join(f"{k:>16s}" for k in keys))
    for name, rs in groups.items():
        cells = []
        for k in keys:
            values = [r[k] for r in rs]
            cells.append(f"{statistics.median(values):5.2f} ({min(values):.1f}-{max(values):.1f})")
        print(f"  {name:28s}" + "  ".join(f"{c:>16s}" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8,
                        help=f"hard kills to measure (at least {MIN_RUNS})")
    parser.add_argument("--vms", type=int, default=8)
    parser.add_argument("--victims", default="hv1,hv2,hv3,hv4",
                        help="nodes killed in turn (comma-separated)")
    parser.add_argument("--defaults", action="store_true",
                        help="pvcnoded's default liveness settings instead of the lab's")
    parser.add_argument("--name", default="pvcrecov", help="lab name")
    parser.add_argument("--subnet", default="10.249.0.0/24", help="lab subnet")
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    args = parser.parse_args()
    if args.runs < MIN_RUNS:
        parser.error(f"--runs must be at least {MIN_RUNS}: the median of fewer runs says "
                     "little (the first run of a fresh lab is often much slower)")
    victims = [v.strip() for v in args.victims.split(",") if v.strip()]
    lab = Lab(name=args.name, progress=lambda m: print(f"  {m}", flush=True))
    lab.down(grace=0, quiet=True)
    workdir = tempfile.mkdtemp(prefix="pvc-bench-recovery-")
    options = {"storage": True, "ceph_mons": "all", "bmc": True}
    if args.defaults:
        options["liveness"] = "defaults"
    try:
        lab.up(nodes=4, coordinators=3, timeout=300, subnet=args.subnet, options=options)
        lab.wait_for(lambda: "HEALTH_OK" in pvc(lab, "storage", "status").stdout, 120,
                     "Ceph to report")
        names = [f"bench{i}" for i in range(args.vms)]
        ok(lab, "storage", "pool", "add", POOL, "32", "--replcfg", "copies=3,mincopies=2")
        for n in names:
            ok(lab, "storage", "volume", "add", POOL, n, "16M")
        start_guests(lab, victims[0], names, workdir, rbd_pool=POOL, timeout=300)
        cluster = lab.store().get("config.cluster_name")
        configs = {n: daemon_config(lab, n) for n in lab.nodes}
        runs = []
        for i in range(args.runs):
            victim = victims[i % len(victims)]
            kinds = roles(lab, victim)
            r = one_run(lab, names, victim)
            runs.append((victim, kinds, r))
            print(f"run {i + 1} {victim} ({'+'.join(kinds)}): "
                  + "  ".join(f"{k} {v:5.2f} s" for k, v in r.items()), flush=True)
        print(f"\nrecovery of a hard-killed node with {args.vms} RBD-backed VMs, {len(runs)} "
              f"runs, Ceph monitors on every coordinator, lab {cluster}, "
              f"{'DEFAULT liveness and Ceph' if args.defaults else 'lab'} settings:")
        summary(runs)
        primary = lab.primary() or lab.coordinators[0]
        print(formula(configs[victims[0]], configs[primary]))
        print(ORIGINAL)
        faults = as_json(lab, "cluster", "fault", "list") or []
        print(f"faults left: {len(faults)}: " + ", ".join(
            f"{f['id']} ({f['health_delta']})" for f in faults))
        return 0
    finally:
        if not args.keep:
            lab.down(grace=2)


if __name__ == "__main__":
    sys.exit(main())
