"""dnsmasq's ``--dhcp-script``: relay one lease event to the plugin in pvcnoded.

dnsmasq runs it as ``leasehook ACTION MAC IP [HOSTNAME]`` (ACTION add, old or del; ``old``
also for every lease in the lease file at start) with the lease's details in ``DNSMASQ_*``
variables. It sends one JSON datagram to the plugin's unix socket (``PVC_LEASE_SOCKET``,
set by the plugin when it starts dnsmasq, with ``PVC_LEASE_VNI``), which writes the lease to
``/networks/<vni>/leases/<mac>`` with pvcnoded's own ZooKeeper session: no ZooKeeper
client, hosts or credentials here, and the event costs no new session. The socket is a path
in the file system, so it reaches pvcnoded whatever network namespace dnsmasq runs in.

An event that cannot be delivered (pvcnoded restarting) is not lost for good: the next
start of the network's dnsmasq replays every lease as ``old``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

ACTIONS = ("add", "old", "del")


def event(argv: list[str], env: dict[str, str]) -> dict[str, Any] | None:
    """The event of one call (None for what is not a DHCPv4 lease change)."""
    if len(argv) < 3 or argv[0] not in ACTIONS or env.get("DNSMASQ_IAID"):
        return None
    expires = env.get("DNSMASQ_LEASE_EXPIRES")
    if expires is None and env.get("DNSMASQ_LEASE_LENGTH"):   # dnsmasq without a clock
        length = int(env["DNSMASQ_LEASE_LENGTH"])
        expires = str(int(time.time()) + length if length else 0)
    return {"vni": int(env.get("PVC_LEASE_VNI") or 0), "action": argv[0],
            "mac": argv[1].lower(), "ip4": argv[2],
            "hostname": argv[3] if len(argv) > 3 and argv[3] else None,
            "expiry": int(expires or 0), "client_id": env.get("DNSMASQ_CLIENT_ID") or None}


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    env = dict(os.environ) if env is None else env
    found = event(argv, env)
    if found is None:
        return 0
    path = env.get("PVC_LEASE_SOCKET")
    if not path:
        print("leasehook: PVC_LEASE_SOCKET is not set", file=sys.stderr)
        return 2
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(json.dumps(found).encode(), path)
    except OSError as exc:
        print(f"leasehook: cannot reach pvcnoded at {path}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
