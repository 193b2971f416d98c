"""Guest crashes: what counts as one, how long to wait before the next start, when to give up.

A VM that should run on this node and was running here ended without PVC asking. libvirt's
lifecycle event says why (``VIR_DOMAIN_EVENT_STOPPED_*``): the emulator failed or the guest
crashed → a crash; the guest powered itself off (or rebooted with ``on_reboot=destroy``), a
destroy from outside PVC or an outgoing migration → not a crash (it starts again at once, as
in the original PVC); no event (e.g. it ended while pvcnoded was down) → counted as a crash.

Each crash is kept in the VM's crash record (``vm.crashes``, written by the node running the
VM): ``{"count", "recent": [epochs in the window], "last", "node", "reason"}``. The next
start waits ``backoff × 2^(n-1)`` s (at most ``backoff_max``), n being the crashes within
``window``; at ``limit`` crashes within ``window`` the VM is put in ``fail`` instead, with
the reason, and its recent crashes are forgotten so that a new start request gets a fresh
budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# libvirt's VIR_DOMAIN_EVENT_STOPPED_* details (stable ABI values; no libvirt import here)
SHUTDOWN, DESTROYED, CRASHED, MIGRATED, SAVED, FAILED, FROM_SNAPSHOT = range(7)
DETAILS = {SHUTDOWN: "the guest powered off", DESTROYED: "destroyed outside PVC",
           CRASHED: "the guest crashed", MIGRATED: "migrated away", SAVED: "saved",
           FAILED: "the emulator (QEMU) failed or was killed",
           FROM_SNAPSHOT: "restored from a snapshot"}
UNKNOWN = "it ended for an unknown reason (no libvirt event)"
FAULT_DELTA = 10          # health points of a VM that crashed recently
FAULT_DELTA_FAILED = 50   # ... of one put in fail after a crash loop


@dataclass(frozen=True)
class CrashPolicy:
    limit: int = 5
    window: float = 600.0
    backoff: float = 1.0
    backoff_max: float = 60.0


def why(detail: int | None) -> tuple[bool, str]:
    """(is it a crash, what happened) for a stop event's detail (None: no event seen)."""
    if detail is None:
        return True, UNKNOWN
    if detail in (FAILED, CRASHED):
        return True, DETAILS[detail]
    return False, DETAILS.get(detail, f"stopped (libvirt detail {detail})")


def fault_id(uuid: str) -> str:
    return f"vm-crash-{uuid}"


def add(record: dict[str, Any] | None, now: float, node: str, reason: str,
        policy: CrashPolicy) -> tuple[dict[str, Any], float | None]:
    """The crash record after one more crash, and the delay before the next start (None:
    give up, the VM goes to ``fail``)."""
    old = record if isinstance(record, dict) else {}
    recent = [t for t in old.get("recent") or [] if isinstance(t, (int, float))
              and now - t < policy.window] + [round(now, 3)]
    new = {"count": int(old.get("count") or 0) + 1, "recent": recent, "last": round(now, 3),
           "node": node, "reason": reason}
    if len(recent) >= policy.limit:
        new["recent"] = []
        new["failed"] = round(now, 3)
        return new, None
    return new, min(policy.backoff_max, policy.backoff * 2 ** (len(recent) - 1))


def describe_window(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
