"""Running the node's health checks: a bounded pool, a time-out per check, and the round's
summary (what the keepalive publishes and the API shows).

A check's entry in a round::

    {"name": "load", "state": "ok" | "problem" | "error" | "timeout" | "n/a",
     "health_delta": 0, "message": "...", "data": {...}, "last_run": 1733333333 | None,
     "fault": None | "<ID of the fault its plugin raises itself>"}

``n/a``: the check's ``setup`` said it does not apply here (shown, never run, delta 0).
``error``: ``setup`` or ``run`` raised; ``timeout``: ``run`` took longer than its time-out
(a run still going is not started again; its thread is freed when it returns). Both take
``error_delta``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvc_kernel.sdk import CheckResult, HealthCheck

log = logging.getLogger("pvc_plugins.health")

OK, PROBLEM, ERROR, TIMEOUT, NOT_APPLICABLE = "ok", "problem", "error", "timeout", "n/a"


@dataclass
class _Entry:
    check: HealthCheck
    plugin: str
    ready: bool = False              # setup said it applies
    not_applicable: str | None = None
    future: cf.Future | None = None
    started: float = 0.0
    last: dict[str, Any] | None = None


def node_health(entries: list[dict[str, Any]]) -> int:
    """100 − Σ deltas, at least 0."""
    return max(0, 100 - sum(max(int(e.get("health_delta") or 0), 0) for e in entries))


def fault_delta(delta: int) -> int:
    """The delta of the fault a check's positive delta raises: half of it, rounded up."""
    return math.ceil(delta / 2) if delta > 0 else 0


class Pool:
    """A fixed number of daemon worker threads (``concurrent.futures``' executor joins its
    threads at exit, so one hung check would hold the daemon's exit forever)."""

    def __init__(self, workers: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[cf.Future, Callable[..., Any], tuple] | None] = \
            queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"health-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the round
                future.set_exception(exc)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


class Runner:
    """The checks of one node; ``round()`` runs them all once and answers their entries."""

    def __init__(self, daemon: Any, checks: list[tuple[str, HealthCheck]], timeout: float,
                 workers: int, error_delta: int) -> None:
        self.daemon = daemon
        self.timeout = timeout
        self.error_delta = error_delta
        self.pool = Pool(workers)
        self.entries: list[_Entry] = []
        seen: set[str] = set()
        for plugin, check in checks:
            name = str(getattr(check, "name", "") or "")
            if not name or name in seen:
                log.error("health: a check of plugin %s has %s; it is left out", plugin,
                          f"the name {name!r} of another" if name else "no name")
                continue
            seen.add(name)
            self.entries.append(_Entry(check, plugin))

    def names(self) -> list[str]:
        return [e.check.name for e in self.entries]

    def _setup(self, entry: _Entry) -> dict[str, Any] | None:
        """Set the check up if not done yet; its entry if it cannot run (n/a or error)."""
        if entry.ready:
            return None
        if entry.not_applicable is not None:
            return self._entry(entry, NOT_APPLICABLE, 0, f"not applicable: "
                               f"{entry.not_applicable}", last_run=None)
        try:
            reason = entry.check.setup(self.daemon)
        except Exception as exc:      # tried again next round
            log.warning("health: check %s (%s) failed to set up: %s", entry.check.name,
                        entry.plugin, exc)
            return self._entry(entry, ERROR, self.error_delta,
                               f"set-up failed: {type(exc).__name__}: {exc}")
        if reason is not None:
            entry.not_applicable = str(reason)
            log.info("health: check %s does not apply to this node: %s", entry.check.name,
                     reason)
            return self._setup(entry)
        entry.ready = True
        return None

    def _entry(self, entry: _Entry, state: str, delta: int, message: str,
               data: dict[str, Any] | None = None, fault: str | None = None,
               last_run: int | None | bool = True) -> dict[str, Any]:
        when = int(time.time()) if last_run is True else last_run
        out = {"name": entry.check.name, "state": state, "health_delta": int(delta),
               "message": message, "data": data or {}, "last_run": when, "fault": fault}
        entry.last = out
        return out

    def _limit(self, entry: _Entry) -> float:
        return float(entry.check.timeout or self.timeout)

    def round(self) -> list[dict[str, Any]]:
        """Run every applicable check once (in parallel) and answer every check's entry, in
        the order the checks were given. Returns after the slowest check's time-out at most."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self.entries:
            early = self._setup(entry)
            if early is not None:
                out[entry.check.name] = early
            elif entry.future is None or entry.future.done():
                entry.started = time.monotonic()
                entry.future = self.pool.submit(entry.check.run, self.daemon)
        running = [e for e in self.entries if e.check.name not in out]
        while True:
            pending = [e for e in running if not e.future.done()
                       and time.monotonic() - e.started < self._limit(e)]
            if not pending:
                break
            wait = min(self._limit(e) - (time.monotonic() - e.started) for e in pending)
            cf.wait([e.future for e in pending], timeout=max(wait, 0.01),
                    return_when=cf.FIRST_COMPLETED)
        for entry in running:
            out[entry.check.name] = self._finish(entry)
        return [out[e.check.name] for e in self.entries]

    def _finish(self, entry: _Entry) -> dict[str, Any]:
        future = entry.future
        assert future is not None
        name = entry.check.name
        if not future.done():
            took = time.monotonic() - entry.started
            log.warning("health: check %s (%s) is still running after %.1f s", name,
                        entry.plugin, took)
            return self._entry(entry, TIMEOUT, self.error_delta,
                               f"timed out: not finished after {took:.1f} s "
                               f"(limit {self._limit(entry):g} s)")
        try:
            result = future.result()
            if not isinstance(result, CheckResult):
                raise TypeError(f"run() answered {type(result).__name__}, not a CheckResult")
        except Exception as exc:
            log.warning("health: check %s (%s) failed: %s: %s", name, entry.plugin,
                        type(exc).__name__, exc)
            return self._entry(entry, ERROR, self.error_delta,
                               f"failed: {type(exc).__name__}: {exc}")
        delta = max(int(result.delta), 0)
        return self._entry(entry, PROBLEM if delta else OK, delta, str(result.message),
                           result.data if isinstance(result.data, dict) else {},
                           result.fault)

    def stop(self) -> None:
        self.pool.shutdown()
        for entry in self.entries:
            if entry.future is not None:
                entry.future.cancel()
        for entry in self.entries:
            if entry.ready:
                try:
                    entry.check.cleanup(self.daemon)
                except Exception as exc:
                    log.warning("health: check %s failed to clean up: %s", entry.check.name,
                                exc)
