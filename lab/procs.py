"""Processes: start detached inside a namespace, track by PID file, check, signal, wait.

A process is started through a short-lived middle process that forks it and exits,
so the daemon is re-parented to PID 1 (which reaps it) and never stays a child, or a
zombie, of ``pvc-lab`` or of a test run. The PID file holds the PID and the kernel's
start time of the process, so a recycled PID is never mistaken for ours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

# Runs in the middle process: argv[1] = JSON {argv, log, cwd, env}; prints the child's PID.
_SPAWN = """
import json, os, sys
spec = json.loads(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0); os.dup2(log, 1); os.dup2(log, 2)
    os.closerange(3, 1024)
    os.chdir(spec["cwd"])
    try:
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as exc:
        os.write(2, ("pvc-lab: cannot run %s: %s\\n" % (spec["argv"][0], exc)).encode())
        os._exit(127)
print(pid, flush=True)
"""


class ProcError(Exception):
    """A process could not be started."""


@dataclass(frozen=True)
class ProcRecord:
    """What a PID file holds."""

    pid: int
    start: int           # start time in clock ticks since boot (/proc/PID/stat field 22)
    started_at: float    # wall clock when we started it
    argv: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "start": self.start, "started_at": self.started_at,
                           "argv": list(self.argv)})

    @classmethod
    def from_json(cls, text: str) -> ProcRecord | None:
        """Parse a PID file's text; None if it is not a valid record."""
        try:
            data = json.loads(text)
            return cls(pid=int(data["pid"]), start=int(data["start"]),
                       started_at=float(data.get("started_at", 0.0)),
                       argv=tuple(str(a) for a in data.get("argv", [])))
        except (ValueError, KeyError, TypeError):
            return None


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat split after the command name: [state, ppid, ...]; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    fields = stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def alive(pid: int, start: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, if given, has that start time."""
    fields = stat_fields(pid)
    if not fields or fields[0] in ("Z", "X", "x"):
        return False
    return start is None or int(fields[19]) == start


def spawn(argv: list[str], log: str, env: dict[str, str], cwd: str = "/") -> ProcRecord:
    """Start ``argv`` detached with stdout and stderr appended to ``log``."""
    spec = json.dumps({"argv": argv, "log": log, "cwd": cwd, "env": env})
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", _SPAWN, spec],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or not proc.stdout.strip().isdigit():
        raise ProcError(f"cannot start {argv[0]}: {proc.stderr.strip() or 'no PID'}")
    pid = int(proc.stdout.strip())
    start = start_time(pid)
    if start is None:  # it died already; the log says why
        raise ProcError(f"{argv[0]} exited at once; see {log}")
    return ProcRecord(pid=pid, start=start, started_at=time.time(), argv=tuple(argv))


def write_record(path: str, rec: ProcRecord) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(rec.to_json())
    os.replace(tmp, path)


def read_record(path: str) -> ProcRecord | None:
    try:
        with open(path) as fh:
            return ProcRecord.from_json(fh.read())
    except OSError:
        return None


def send(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def wait_gone(pids: dict[int, int | None], timeout: float) -> list[int]:
    """Wait until none of ``{pid: start}`` runs; returns those still running at the end."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p, s in pids.items() if alive(p, s)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def terminate(pids: dict[int, int | None], grace: float) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL what is left and wait for it."""
    if grace > 0:
        for pid, start in pids.items():
            if alive(pid, start):
                send(pid, signal.SIGTERM)
        left = wait_gone(pids, grace)
    else:
        left = list(pids)
    for pid in left:
        if alive(pid, pids[pid]):
            send(pid, signal.SIGKILL)
    wait_gone({p: pids[p] for p in left}, 10)
