"""Detection and the fence state machine (pure logic over an ``Env``; no ZooKeeper here).

A fence record (one per node, JSON at ``/fencing/fences/<node>``) moves through::

    dead ──> power ──> storage ──> recover ──> done
             │ power off through the BMC, then poll until it reports off
             │ ok: daemon_state ``fenced``; failed: stays ``dead``
                       │ cut the node's storage access (storage plugins; Ceph: blocklist)
                                   │ policy: successful_fence (after a verified power off)
                                   │ or failed_fence (migrate only if the cut succeeded)

Every step is saved before the next starts and is safe to run twice, so the next primary
resumes a fence whose coordinator died. ``outcome`` and a fault record tell the result.

A fence whose power off failed can be confirmed by an operator (``pvc node fence confirm``):
the API writes ``confirm`` into the finished record (``request_confirm``), the fencing
coordinator checks the node is still silent and reopens the record at ``storage``
(``apply_confirm``): the rest runs as if the BMC had reported the power off.

The fault of a fence that worked (``worked``) drops to an informational record (health delta
0, ``settle_message``) once the node is back in ``run``; the fault of a failed one stays until
an administrator acknowledges it.

Only the coordinator that owns the fence may move it on: before every step (and while it
polls the BMC or recovers) the ``Fencer`` asks ``Env.lost()`` whether it still holds the
fence lock and the primary role, and ``Env.save`` is version-checked; either failing raises
``FenceLost`` and the Fencer stops at once (the owner resumes the record).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pvc_plugins.fencing_ipmi.config import MIGRATE, NONE
from pvc_plugins.fencing_ipmi.errors import BmcError, FenceLost
from pvc_plugins.fencing_ipmi.ipmi import OFF

DEAD, POWER, STORAGE, RECOVER, DONE = "dead", "power", "storage", "recover", "done"
STEPS = (DEAD, POWER, STORAGE, RECOVER, DONE)
RUN = "run"
FAULT_DELTA_FENCED = 10       # health points of a fence that worked
FAULT_DELTA_FAILED = 50       # ... of one that did not (VMs may be down)
FAULT_DELTA_INFO = 0          # a fence that worked, once its node is back; an audit record


@dataclass(frozen=True)
class Policy:
    successful_fence: str = MIGRATE
    failed_fence: str = NONE
    power_timeout: float = 10.0
    poll: float = 0.25


def dead_nodes(nodes: dict[str, tuple[str | None, float | None]], now: float,
               fence_delay: float, watching_since: float,
               delays: dict[str, float] | None = None) -> list[tuple[str, float]]:
    """The nodes to declare dead: ``[(node, silence)]``.

    ``nodes`` maps a node to (daemon_state, keepalive epoch). A node is dead when its state
    is ``run`` and it has been silent for more than its fence delay (``delays[node]``, else
    ``fence_delay``), where silence counts from its last keepalive but never from before
    ``watching_since`` (when this primary's own ZooKeeper connection was last established:
    after an outage of our own, every node gets a whole fence delay to report again).
    """
    found = []
    for node, (state, keepalive) in sorted(nodes.items()):
        if state != RUN:
            continue
        silence = now - max(keepalive or 0.0, watching_since)
        if silence > max(fence_delay, (delays or {}).get(node, fence_delay)):
            found.append((node, round(now - (keepalive or 0.0), 3)))
    return found


def new_record(node: str, by: str, silence: float, now: float | None = None) -> dict[str, Any]:
    now = now or time.time()
    return {"id": uuid.uuid4().hex[:8], "node": node, "step": DEAD, "by": by,
            "declared": round(now, 3), "updated": round(now, 3), "silence": silence,
            "power": None, "storage": None, "recovery": None, "decision": None,
            "outcome": None, "finished": None, "unfenced": None,
            "history": [[round(now, 3), DEAD, f"no keepalive for {silence:.1f} s"]]}


def decide(power_ok: bool, storage_ok: bool | None, policy: Policy,
           confirmed: str | None = None) -> tuple[str, str]:
    """(``migrate`` | ``none``, why) after the power and storage steps; a power off an
    operator confirmed (``confirmed``: who) counts as a verified one."""
    if power_ok or confirmed:
        off = f"power off confirmed by {confirmed}" if confirmed else "powered off"
        if policy.successful_fence == MIGRATE:
            return MIGRATE, f"{off}; successful_fence=migrate"
        return NONE, f"{off}; successful_fence=none"
    if policy.failed_fence != MIGRATE:
        return NONE, "power off failed; failed_fence=none"
    if storage_ok:
        return MIGRATE, ("power off failed but storage cut; failed_fence=migrate (only VMs "
                         "whose every disk the cut covers)")
    return NONE, "power off failed and storage not cut: recovery would be unsafe"


def confirmed_by(record: dict[str, Any]) -> str | None:
    """Who confirmed the node's power off, once the fencing coordinator accepted it."""
    confirm = record.get("confirm")
    if not isinstance(confirm, dict) or not confirm.get("applied"):
        return None
    return str(confirm.get("by") or "an operator")


def powered_off(record: dict[str, Any]) -> bool:
    """The BMC reported the power off, or an operator confirmed it (accepted)."""
    return bool((record.get("power") or {}).get("ok")) or confirmed_by(record) is not None


def fence_info(record: dict[str, Any]) -> dict[str, Any]:
    """What the workload plugins learn of the fence (``pvc_node_recover``'s ``fence``):
    ``powered_off`` (the BMC or an operator confirmed the power off) and ``storage_cut`` (the
    plugins whose storage cut succeeded)."""
    storage = record.get("storage") or {}
    return {"powered_off": powered_off(record),
            "storage_cut": list(storage.get("cut_by") or []) if storage.get("ok") else []}


def outcome_of(record: dict[str, Any]) -> str:
    power = "fenced" if (record.get("power") or {}).get("ok") \
        else "confirmed-off" if confirmed_by(record) else "fence-failed"
    return f"{power},{'recovered' if record.get('decision') == MIGRATE else 'not-recovered'}"


def fault_id(record: dict[str, Any]) -> str:
    """The ID of the fault a finished fence raises."""
    return f"fence-{record['node']}-{record['id']}"


def confirm_fault_id(record: dict[str, Any]) -> str:
    """The ID of the audit record of an operator's confirmation."""
    return f"fence-{record['node']}-{record['id']}-confirm"


def worked(record: dict[str, Any]) -> bool:
    """A finished fence that did its job: the node was off (BMC or operator) and no VM failed
    to recover. Its fault drops to informational when the node is back; any other stays."""
    return record.get("step") == DONE and powered_off(record) \
        and not (record.get("recovery") or {}).get("failed")


def settle_message(message: str, node: str, when: str) -> str:
    """A fence fault's text once its node is back in the cluster (delta 0 then)."""
    if "[Resolved: " in message:
        return message
    return f"{message} [Resolved: node {node} rejoined the cluster at {when}.]"


# -- operator confirmation ------------------------------------------------------------------

def alive_refusal(state: str | None, keepalive: float | None, now: float,
                  delay: float) -> str | None:
    """Why a node must not be confirmed off: it is not ``dead``, or it wrote a keepalive
    within its fence delay (it runs, or ran a moment ago). None if it may."""
    if state != DEAD:
        return f"its daemon state is {state or 'unknown'}, not dead"
    age = now - (keepalive or 0.0)
    if age < delay:
        return (f"its last keepalive is only {max(age, 0.0):.1f} s old (fence delay "
                f"{delay:g} s): it is alive, not powered off")
    return None


def confirm_refusal(record: dict[str, Any] | None) -> str | None:
    """Why ``record`` cannot take an operator's power-off confirmation now, or None.

    Only a finished fence whose BMC did not confirm the power off can: not one under way,
    not one that worked, not one already confirmed (or waiting for the coordinator)."""
    if not isinstance(record, dict) or not record.get("id"):
        return "there is no fence of it on record"
    if record.get("step") != DONE:
        return (f"its fence is still under way (step {record.get('step')}); wait until it "
                "has finished")
    if (record.get("power") or {}).get("ok"):
        return "its BMC already reported the power off: it is fenced"
    confirm = record.get("confirm")
    if isinstance(confirm, dict) and confirm and not confirm.get("rejected"):
        return (f"{confirm.get('by')} already confirmed its power off at "
                f"{confirm.get('requested')}")
    return None


def request_confirm(record: dict[str, Any], by: str, source: str,
                    now: float | None = None) -> dict[str, Any]:
    """The record with an operator's confirmation for the fencing coordinator to apply."""
    now = round(now or time.time(), 3)
    out = {**record, "confirm": {"by": by, "source": source, "requested": now,
                                 "applied": None, "rejected": None},
           "updated": now}
    out["history"] = [*record.get("history", []),
                      [now, DONE, f"power off confirmed by {by} (from {source}); waiting for "
                                  "the fencing coordinator"]]
    return out


def confirm_pending(record: dict[str, Any]) -> bool:
    """A confirmation the fencing coordinator has neither applied nor rejected yet."""
    confirm = record.get("confirm")
    return record.get("step") == DONE and isinstance(confirm, dict) and bool(confirm) \
        and not confirm.get("applied") and not confirm.get("rejected")


def apply_confirm(record: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The record reopened at ``storage`` (its cut stays as it was): the decision and the
    recovery run again, now as after a verified power off."""
    now = round(now or time.time(), 3)
    confirm = {**record["confirm"], "applied": now}
    out = {**record, "confirm": confirm, "step": STORAGE, "decision": None, "recovery": None,
           "outcome": None, "finished": None, "updated": now}
    out["history"] = [*record.get("history", []),
                      [now, STORAGE, f"power off confirmed by {confirm['by']}: recovering as "
                                     "if fenced"]]
    return out


def reject_confirm(record: dict[str, Any], why: str,
                   now: float | None = None) -> dict[str, Any]:
    """The record with its pending confirmation refused by the fencing coordinator."""
    now = round(now or time.time(), 3)
    out = {**record, "confirm": {**record["confirm"], "rejected": why}, "updated": now}
    out["history"] = [*record.get("history", []),
                      [now, DONE, f"confirmation by {record['confirm'].get('by')} refused: "
                                  f"{why}"]]
    return out


class Env(Protocol):
    """What the state machine acts on (the plugin gives ZooKeeper + hooks, tests fakes)."""

    def bmc_power_off(self, node: str) -> None: ...
    def bmc_power_state(self, node: str) -> str: ...
    def set_daemon_state(self, node: str, state: str) -> None: ...
    def storage_cut(self, node: str) -> dict[str, Any]: ...
    def recover(self, node: str, progress: Callable[[int, int, str], bool],
                fence: dict[str, Any]) -> dict[str, Any]: ...
    def set_domain_state(self, node: str, observed: str, desired: str | None) -> None: ...
    def lost(self) -> str | None:
        """Why this coordinator no longer owns the fence, or None while it does."""
    def save(self, record: dict[str, Any]) -> None:
        """Write the record, version-checked; FenceLost if someone else wrote it meanwhile."""
    def fault(self, fault_id: str, message: str, delta: int) -> None: ...
    def log(self, message: str) -> None: ...


class Fencer:
    """Runs one node's fence record to ``done``, saving it after every step."""

    def __init__(self, env: Env, policy: Policy, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.env = env
        self.policy = policy
        self.clock = clock
        self.sleep = sleep

    def run(self, record: dict[str, Any], by: str = "") -> dict[str, Any]:
        """Run the record to ``done``; ``by`` (this coordinator) is noted when it resumes a
        fence another coordinator declared. Raises FenceLost (nothing more done or saved)
        as soon as this coordinator no longer owns the fence."""
        if by and record["step"] != DONE and by != record.get("by") \
                and record.get("resumed_by") != by:
            record["resumed_by"] = by
            record["history"].append([round(self.clock(), 3), record["step"],
                                      f"resumed by {by}"])
        while record["step"] != DONE:
            record = self.step(record)
        return record

    def check(self) -> None:
        """FenceLost unless this coordinator still owns the fence."""
        why = self.env.lost()
        if why:
            raise FenceLost(why)

    def step(self, record: dict[str, Any]) -> dict[str, Any]:
        """Run the record's next step and save it (FenceLost before any action if this
        coordinator no longer owns the fence)."""
        self.check()
        step = record["step"]
        if step == DEAD:
            record["power"] = self.power_off(record["node"])
            nxt = POWER
            text = ("powered off" if record["power"]["ok"]
                    else f"power off failed: {record['power']['detail']}")
        elif step == POWER:
            if record["power"] and record["power"]["ok"]:
                self.env.set_daemon_state(record["node"], "fenced")
            self.check()
            record["storage"] = self.env.storage_cut(record["node"])
            nxt, text = STORAGE, f"storage: {record['storage'].get('detail') or 'cut'}"
        elif step == STORAGE:
            decision, why = decide(bool((record["power"] or {}).get("ok")),
                                   (record["storage"] or {}).get("ok"), self.policy,
                                   confirmed_by(record))
            record["decision"] = decision
            nxt, text = RECOVER, f"decision {decision}: {why}"
        elif step == RECOVER:
            record["recovery"] = self.recover(record)
            record["outcome"] = outcome_of(record)
            record["finished"] = round(self.clock(), 3)
            nxt, text = DONE, f"outcome {record['outcome']}"
            self.report(record)   # before the save: a crash in between reports it again
        else:
            raise ValueError(f"unknown fence step {step!r}")
        now = round(self.clock(), 3)
        record["history"].append([now, nxt, text])
        record.update(step=nxt, updated=now)
        self.env.save(record)
        self.env.log(f"fence of {record['node']}: {text}")
        return record

    # -- steps -------------------------------------------------------------------------
    def power_off(self, node: str) -> dict[str, Any]:
        """Power the node off through its BMC and wait until the BMC reports it off."""
        started = self.clock()
        try:
            if self.env.bmc_power_state(node) != OFF:
                self.env.bmc_power_off(node)
            deadline = started + self.policy.power_timeout
            while True:
                state = self.env.bmc_power_state(node)
                if state == OFF:
                    return {"ok": True, "detail": "BMC reports power off",
                            "seconds": round(self.clock() - started, 3)}
                if self.clock() >= deadline:
                    return {"ok": False, "detail": f"BMC still reports power {state} after "
                            f"{self.policy.power_timeout:g} s",
                            "seconds": round(self.clock() - started, 3)}
                self.sleep(self.policy.poll)
                self.check()
        except BmcError as exc:
            return {"ok": False, "detail": str(exc), "seconds": round(self.clock() - started, 3)}

    def recover(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Restart the node's workloads elsewhere (policy ``migrate``). The workload plugins
        learn how the node was fenced (``fence_info``): after a failed power off they may
        recover only what the storage cut protects. A partial recovery (the fence was lost
        meanwhile) is never saved: FenceLost."""
        node = record["node"]
        if record["decision"] != MIGRATE:
            return None
        self.env.set_domain_state(node, "fence-flush", "flushed")

        def progress(done: int, total: int, message: str) -> bool:
            self.env.log(f"recovery of {node}: {done}/{total} {message}")
            return self.env.lost() is not None      # true: stop, we lost the fence

        result = self.env.recover(node, progress, fence_info(record))
        self.check()
        self.env.set_domain_state(node, "flushed", None)
        return result

    def report(self, record: dict[str, Any]) -> None:
        node = record["node"]
        power = record["power"] or {}
        storage = record["storage"] or {}
        rec = record["recovery"] or {}
        parts = [f"Node {node} was declared dead (no keepalive for {record['silence']:.0f} s)"]
        parts.append("and powered off through its BMC" if power.get("ok")
                     else f"but the power off failed ({power.get('detail')})")
        if not power.get("ok") and confirmed_by(record):
            parts.append(f"; {confirmed_by(record)} confirmed it was off")
        if storage.get("ok"):
            parts.append("; its storage access was cut")
        elif storage.get("ok") is False:
            parts.append(f"; cutting its storage failed ({storage.get('detail')})")
        if record["decision"] == MIGRATE:
            stopped = list(rec.get("stopped", []))
            parts.append(f"; VMs recovered: {len(rec.get('recovered', []))}, stopped: "
                         f"{len(stopped)}, failed: {len(rec.get('failed', []))}")
            if stopped:
                more = f" (+{len(stopped) - 3} more)" if len(stopped) > 3 else ""
                parts.append("; stopped: " + "; ".join(stopped[:3]) + more)
        else:
            parts.append("; its VMs were NOT recovered elsewhere")
        delta = FAULT_DELTA_FENCED if worked({**record, "step": DONE}) else FAULT_DELTA_FAILED
        self.env.fault(fault_id(record), " ".join(parts).replace(" ;", ";"), delta)
