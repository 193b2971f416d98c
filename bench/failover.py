"""Failover figures on a real lab (run as root with the project's venv):

    .venv/bin/python bench/failover.py [--runs 5] [--window 20] [--name pvcbench] [--reuse]

1. Takeover: SIGKILL the primary's pvcnoded, time until another coordinator is primary
   (``config.primary_node`` names it and it reports ``primary``), polled every 20 ms.
2. Planned handover: write ``config.desired_primary`` = another coordinator, time until it
   is primary.
3. ZooKeeper load of keepalives, over an idle window W:
   - keepalives per node = growth of the version of its ``node.keepalive`` znode (each
     keepalive writes it exactly once);
   - requests per node = growth of the last client xid (``lcxid``, ``cons`` four-letter word)
     of the node's session (found as the ephemeral owner of its ``alive.node`` key): every
     request the daemon sends, reads and writes, except pings;
   - write transactions = growth of the ensemble's zxid (``srvr`` on the leader); a
     multi-op is one transaction;
   - bytes = growth of ``zk_bytes_received_count`` (``mntr``) summed over all servers:
     everything clients sent, pings and reads included.
   Per keepalive = growth / keepalives. The bench's own requests in the window are a handful
   of reads at its two snapshots.
No figure is asserted; timings vary with the machine.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time

from pvc_kernel.state import schema
from pvc_lab import Lab, LabError
from pvc_lab.pvcnoded import KEEPALIVE_INTERVAL, SESSION_TIMEOUT
from pvc_lab.zookeeper import parse_mntr

POLL = 0.02
_CONS = re.compile(r"sid=0x([0-9a-f]+).*?lcxid=0x([0-9a-f]+)")


def wait_primary(lab: Lab, pred, timeout: float = 60.0) -> tuple[str, float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            p = lab.primary()
        except Exception:
            p = None
        if p and pred(p):
            return p, time.monotonic() - t0
        time.sleep(POLL)
    raise LabError(f"no suitable primary after {timeout:.0f} s")


def takeover(lab: Lab, runs: int) -> list[float]:
    print(f"== takeover after SIGKILL of the primary's pvcnoded "
          f"(session timeout {SESSION_TIMEOUT} s)")
    times = []
    for i in range(1, runs + 1):
        lab.restore()
        old = lab.primary()
        t0 = time.monotonic()
        lab.daemon_kill(old, "KILL")
        new, _ = wait_primary(lab, lambda p, old=old: p != old)
        dt = time.monotonic() - t0
        times.append(dt)
        print(f"  run {i}: {old} -> {new} in {dt:.2f} s")
        lab.daemon_start(old)
    print(f"  median {statistics.median(times):.2f} s")
    return times


def handover(lab: Lab, runs: int) -> list[float]:
    print("== planned handover (config.desired_primary = another coordinator)")
    lab.restore()
    store = lab.store()
    times = []
    for i in range(1, runs + 1):
        old = lab.primary() or wait_primary(lab, lambda p: True)[0]
        target = next(c for c in lab.coordinators[lab.coordinators.index(old) + 1:]
                      + lab.coordinators if c != old)
        t0 = time.monotonic()
        store.set("config.desired_primary", target)
        wait_primary(lab, lambda p, target=target: p == target)
        dt = time.monotonic() - t0
        times.append(dt)
        print(f"  run {i}: {old} -> {target} in {dt:.2f} s")
    print(f"  median {statistics.median(times):.2f} s")
    return times


def snapshot(lab: Lab) -> dict:
    client = lab.store().client
    snap: dict = {"versions": {}, "sessions": {}, "lcxid": {}, "bytes": 0, "zxid": None}
    for n in lab.nodes:
        ka = client.exists(schema.path("node.keepalive", node=n))
        alive = client.exists(schema.path("alive.node", node=n))
        snap["versions"][n] = ka.version if ka else None
        snap["sessions"][n] = alive.ephemeralOwner if alive else None
    for c in lab.coordinators:
        for sid, lcxid in _CONS.findall(lab.zk_command(c, "cons")):
            snap["lcxid"][int(sid, 16)] = int(lcxid, 16)
        mntr = parse_mntr(lab.zk_command(c, "mntr"))
        snap["bytes"] += int(mntr.get("zk_bytes_received_count", 0))
        if mntr.get("zk_server_state") in ("leader", "standalone"):
            m = re.search(r"Zxid: 0x([0-9a-f]+)", lab.zk_command(c, "srvr"))
            snap["zxid"] = int(m.group(1), 16) if m else None
    snap["payload"] = {n: sum((client.exists(schema.path(k, node=n)) or _Empty).dataLength
                              for k in ("node.keepalive", "node.stats")) for n in lab.nodes}
    return snap


class _Empty:
    dataLength = 0


def zk_load(lab: Lab, window: float) -> None:
    print(f"== ZooKeeper load over an idle window of {window:.0f} s "
          f"(keepalive every {KEEPALIVE_INTERVAL} s)")
    lab.restore()
    lab.store().set("config.desired_primary", "")
    time.sleep(2 * KEEPALIVE_INTERVAL)   # let the restore settle before measuring
    a = snapshot(lab)
    time.sleep(window)
    b = snapshot(lab)
    primary = lab.primary()
    total_ka = 0
    for n in lab.nodes:
        kas = (b["versions"][n] or 0) - (a["versions"][n] or 0)
        total_ka += kas
        sid = a["sessions"][n]
        role = "primary" if n == primary else (
            "coordinator" if n in lab.coordinators else "client")
        if sid is None or sid != b["sessions"][n] or sid not in a["lcxid"] \
                or sid not in b["lcxid"]:
            print(f"  {n} ({role}): {kas} keepalives; session changed, requests not counted")
            continue
        reqs = b["lcxid"][sid] - a["lcxid"][sid]
        print(f"  {n} ({role}): {kas} keepalives, {reqs} requests = "
              f"{reqs / max(kas, 1):.1f} requests/keepalive ({reqs / window:.1f}/s), "
              f"keepalive payload {b['payload'][n]} bytes")
    if a["zxid"] is not None and b["zxid"] is not None and a["zxid"] >> 32 == b["zxid"] >> 32:
        txns = b["zxid"] - a["zxid"]
        print(f"  cluster: {total_ka} keepalives, {txns} write transactions = "
              f"{txns / max(total_ka, 1):.2f} transactions/keepalive")
    else:
        print("  cluster: ZooKeeper leader changed during the window; transactions not counted")
    nbytes = b["bytes"] - a["bytes"]
    print(f"  cluster: {nbytes} bytes received by the servers = "
          f"{nbytes / max(total_ka, 1):.0f} bytes/keepalive (all client traffic, pings incl.)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="pvcbench", help="lab name (default pvcbench)")
    ap.add_argument("--nodes", type=int, default=4, help="nodes (3 coordinators + clients)")
    ap.add_argument("--runs", type=int, default=5, help="runs per timing (default 5)")
    ap.add_argument("--window", type=float, default=20.0, help="load window in seconds")
    ap.add_argument("--reuse", action="store_true", help="use a running lab; leave it up")
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = ap.parse_args(argv)
    lab = Lab(name=args.name)
    started = False
    try:
        if not (args.reuse and lab.is_up()):
            t0 = time.monotonic()
            lab.down(quiet=True)
            lab.up(nodes=args.nodes, coordinators=min(3, args.nodes))
            started = True
            print(f"lab {lab.name} up in {time.monotonic() - t0:.1f} s: {len(lab.nodes)} nodes, "
                  f"coordinators {', '.join(lab.coordinators)}")
        takeover(lab, args.runs)
        handover(lab, args.runs)
        zk_load(lab, args.window)
    except LabError as exc:
        print(f"failover: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.close()
        if started and not args.keep:
            lab.down(grace=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
