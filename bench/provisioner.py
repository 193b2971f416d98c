#!/usr/bin/env python3
"""The provisioner's figures.

``api`` (default): a private ZooKeeper and pvcapid (as bench/api_latency.py), N profiles
(default 500, each with its own system, network and storage template); prints p50/p90 of
``GET /api/v1/provisioner/profile`` (all of them) and of ``POST /provisioner/profile``.

``lab``: on a running lab with storage (``pvc-lab --name NAME up --storage``), the lab
profile (``examples/lab_boot.py``) end to end: one create with the time spent in each
stage (from the task's status, polled every 0.1 s), then ``--parallel`` creates at once.
Removes the VMs and volumes it made.

    .venv/bin/python bench/provisioner.py api --profiles 500
    .venv/bin/python bench/provisioner.py lab --lab pvcbench --parallel 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api_latency import KEY, pct, running_api  # noqa: E402

SCRIPT = "from daemon_lib.vmbuilder import VMBuilder\nclass VMBuilderScript(VMBuilder):\n    pass\n"
EXAMPLES = Path(__file__).resolve().parents[1] / "plugins" / "provisioner" / "examples"


def bench_api(count: int) -> None:
    with running_api(3, 0, 8, "pvc-bench-prov-") as bench:
        s = requests.Session()
        s.headers["X-Api-Key"] = KEY
        base = bench.base + "/provisioner"

        def post(path: str, **params: object) -> float:
            t0 = time.perf_counter()
            r = s.post(base + path, params=params, timeout=30)
            assert r.status_code == 200, r.text
            return time.perf_counter() - t0

        post("/script", name="noop", data=SCRIPT)
        adds = []
        for i in range(count):
            post("/template/system", name=f"sys{i}", vcpus=1, vram=512)
            post("/template/network", name=f"net{i}")
            post(f"/template/network/net{i}/net", vni=100 + i % 10)
            post("/template/storage", name=f"sto{i}")
            post(f"/template/storage/sto{i}/disk", disk_id="sda", pool="vms", disk_size=10)
            adds.append(post("/profile", name=f"prof{i}", profile_type="provisioner",
                             system_template=f"sys{i}", network_template=f"net{i}",
                             storage_template=f"sto{i}", script="noop"))
        gets = []
        for _ in range(50):
            t0 = time.perf_counter()
            r = s.get(base + "/profile", timeout=30)
            gets.append(time.perf_counter() - t0)
            assert r.status_code == 200 and len(r.json()) == count
        print(f"{count} profiles: GET /provisioner/profile p50 {pct(gets, 0.5) * 1000:.1f} ms"
              f" p90 {pct(gets, 0.9) * 1000:.1f} ms ({len(r.content)} bytes); "
              f"POST /provisioner/profile p50 {pct(adds, 0.5) * 1000:.1f} ms "
              f"p90 {pct(adds, 0.9) * 1000:.1f} ms")
        shutil.rmtree(bench.workdir, ignore_errors=True)


def pvc(lab: str, *args: str, timeout: float = 900) -> str:
    pvc_lab = os.path.join(os.path.dirname(sys.executable), "pvc-lab")
    out = subprocess.run([pvc_lab, "--name", lab, "admin", sys.executable, "-m", "pvc_cli",
                          *args],
                         capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, NO_COLOR="1", PVC_CLI_CONFIG="/nonexistent"))
    if out.returncode != 0:
        raise RuntimeError(f"pvc {' '.join(args)}: {out.stdout}{out.stderr}")
    return out.stdout


def follow(lab: str, task_id: str) -> tuple[dict[str, float], str]:
    """Seconds per stage of a create task, and its final state."""
    seen: list[tuple[str, float]] = []
    while True:
        task = json.loads(pvc(lab, "task", "show", task_id, "-f", "json"))
        status = str(task.get("status") or "")
        stage = status.split(":")[0]
        if not seen or seen[-1][0] != stage:
            seen.append((stage, time.monotonic()))
        if task.get("state") in ("SUCCESS", "FAILURE"):
            end = time.monotonic()
            spans = {a: (seen[i + 1][1] if i + 1 < len(seen) else end) - t
                     for i, (a, t) in enumerate(seen)}
            return spans, f"{task['state']}: {status}"
        time.sleep(0.1)


def bench_lab(lab: str, parallel: int) -> None:
    from pvc_lab.guest import build

    image = build()
    pool = "benchprov"
    pvc(lab, "storage", "pool", "add", pool, "32", "--replcfg", "copies=3,mincopies=2")
    made: list[str] = []
    try:
        for args in (["template", "system", "add", "bench", "-u", "1", "-m", "128", "--serial"],
                     ["template", "network", "add", "bench"],
                     ["template", "storage", "add", "bench"],
                     ["template", "storage", "disk", "add", "bench", "sda", "-p", pool, "-s",
                      "1"],
                     ["script", "add", "benchboot", str(EXAMPLES / "lab_boot.py")],
                     ["profile", "add", "bench", "-s", "bench", "-n", "bench", "-t", "bench",
                      "-x", "benchboot", "-a", f"kernel={image.bzimage}",
                      "-a", f"initrd={image.initrd}"]):
            pvc(lab, "provisioner", *args)
        t0 = time.monotonic()
        reply = pvc(lab, "provisioner", "create", "bench0", "bench")
        task_id = reply.split("follow it with: pvc task show ")[-1].strip()
        made.append("bench0")
        spans, final = follow(lab, task_id)
        print(f"one create: {time.monotonic() - t0:.1f} s, {final}")
        for stage, secs in spans.items():
            print(f"  {secs:6.2f} s  {stage}")
        results: list[str] = []

        def one(i: int) -> None:
            reply = pvc(lab, "provisioner", "create", f"bench{i}", "bench")
            results.append(follow(lab, reply.split("pvc task show ")[-1].strip())[1])
        t0 = time.monotonic()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(1, parallel + 1)]
        made += [f"bench{i}" for i in range(1, parallel + 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        ok = sum(r.startswith("SUCCESS") for r in results)
        print(f"{parallel} creates at once: {time.monotonic() - t0:.1f} s, {ok} succeeded")
    finally:
        for vm in made:
            for args in (["vm", "stop", vm, "--wait"], ["vm", "undefine", vm, "--yes"],
                         ["storage", "volume", "remove", pool, f"{vm}_sda", "--yes"]):
                try:
                    pvc(lab, *args, timeout=180)
                except RuntimeError:
                    pass
        for args in (["profile", "remove", "bench"], ["script", "remove", "benchboot"],
                     ["template", "system", "remove", "bench"],
                     ["template", "network", "remove", "bench"],
                     ["template", "storage", "remove", "bench"]):
            try:
                pvc(lab, "provisioner", *args)
            except RuntimeError:
                pass
        pvc(lab, "storage", "pool", "remove", pool, "--yes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("api", "lab"), nargs="?", default="api")
    parser.add_argument("--profiles", type=int, default=500)
    parser.add_argument("--lab", default="pvcbench", help="name of a running storage lab")
    parser.add_argument("--parallel", type=int, default=5)
    args = parser.parse_args()
    if args.mode == "api":
        bench_api(args.profiles)
    else:
        bench_lab(args.lab, args.parallel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
