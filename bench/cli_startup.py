#!/usr/bin/env python3
"""Cold-start wall time of the `pvc` CLI: a fresh process per run, median and p90.

Measures `pvc --help` (no HTTP library may load) and `pvc node list` against a real API,
given by --api HOST:PORT[,HOST:PORT...] (+ --api-key) or by $PVC_API_HOSTS/$PVC_API_KEY;
`node list` is skipped when no address accepts a TCP connection. A `python -c pass` run is
shown as the floor.

    .venv/bin/python bench/cli_startup.py
    .venv/bin/python bench/cli_startup.py --runs 30 --api 10.0.0.1:7370 --api-key SECRET
    eval "$(pvc-lab env)"; pvc-lab admin .venv/bin/python bench/cli_startup.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def pvc_command() -> list[str]:
    """The console script next to this interpreter, else `python -m pvc_cli`."""
    script = os.path.join(os.path.dirname(sys.executable), "pvc")
    if os.access(script, os.X_OK):
        return [script]
    found = shutil.which("pvc")
    return [found] if found else [sys.executable, "-m", "pvc_cli"]


def reachable(hosts: str, timeout: float = 1.0) -> bool:
    for entry in hosts.split(","):
        entry = entry.strip().split("://")[-1]
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "7370")
        try:
            with socket.create_connection((host, int(port or 7370)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


def measure(argv: list[str], runs: int, env: dict[str, str], warmup: int) -> list[float]:
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err}")
        if i >= warmup:
            times.append(elapsed)
    return times


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def report(name: str, times: list[float]) -> None:
    print(
        f"{name:<28} runs={len(times):<3} median={statistics.median(times) * 1000:7.1f} ms  "
        f"p90={p90(times) * 1000:7.1f} ms  min={min(times) * 1000:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="measured runs per command (>= 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs first")
    parser.add_argument(
        "--api",
        default=os.environ.get("PVC_API_HOSTS", ""),
        help="API address(es) for `node list` [env PVC_API_HOSTS]",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("PVC_API_KEY", ""), help="API key [env PVC_API_KEY]"
    )
    args = parser.parse_args()
    runs = max(args.runs, 10)

    pvc = pvc_command()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVC_")}
    env["NO_COLOR"] = "1"
    # no saved connections: a config path that does not exist
    env["PVC_CLI_CONFIG"] = os.path.join(tempfile.gettempdir(), "pvc-bench-none", "pvc.json")
    print(f"pvc = {' '.join(pvc)}; python {sys.version.split()[0]}")

    def bench(name: str, argv: list[str], run_env: dict[str, str]) -> None:
        report(name, measure(argv, runs, run_env, args.warmup))

    bench("python -c pass (floor)", [sys.executable, "-c", "pass"], env)
    bench("pvc --help", [*pvc, "--help"], env)
    bench("pvc node list --help", [*pvc, "node", "list", "--help"], env)
    if args.api and reachable(args.api):
        api_env = dict(env, PVC_API_HOSTS=args.api, PVC_API_KEY=args.api_key)
        bench("pvc node list", [*pvc, "node", "list"], api_env)
    else:
        print("pvc node list               skipped: no reachable API (--api or PVC_API_HOSTS)")


if __name__ == "__main__":
    main()
