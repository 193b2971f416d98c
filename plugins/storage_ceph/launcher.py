"""Start and stop OSD daemons on this node.

``systemd`` (real hosts): ``systemctl start|stop ceph-osd@ID``. ``spawn`` (the lab, tests):
pvcnoded starts ``ceph-osd -f`` detached in a new session (re-parented to PID 1 once the
short-lived middle process exits). Either way a daemon is found by the PID file Ceph itself
writes (``pid_file`` of the ceph.conf), and stopped by that PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from pvc_plugins.storage_ceph import bluestore
from pvc_plugins.storage_ceph.errors import StorageError


def pid_of(run: bluestore.Runner, conf: str, osd_id: int) -> int | None:
    """The running OSD daemon's PID from its pid_file (None if not running)."""
    try:
        path = bluestore.conf_value(run, conf, f"osd.{osd_id}", "pid_file")
        with open(path) as fh:
            pid = int(fh.read().strip())
    except (bluestore.BluestoreError, OSError, ValueError):
        return None
    return pid if _is_osd(pid, osd_id) else None


def _is_osd(pid: int, osd_id: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state in ("Z", "X"):
        return False
    name = os.path.basename(argv[0].decode(errors="replace")) if argv else ""
    ids = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in (b"-i", b"--id")]
    return name == "ceph-osd" and str(osd_id).encode() in ids


def start(mode: str, conf: str, osd_id: int, run: bluestore.Runner = bluestore.local_run,
          log_dir: str | None = None) -> None:
    if pid_of(run, conf, osd_id):
        return
    if mode == "systemd":
        proc = run(["systemctl", "start", f"ceph-osd@{osd_id}"], 60)
        if proc.returncode != 0:
            raise StorageError(f"systemctl start ceph-osd@{osd_id} failed: "
                               f"{(proc.stderr or proc.stdout).strip()}")
        return
    log = os.path.join(log_dir or "/tmp", f"ceph-osd.{osd_id}.stdout")
    with open(log, "ab") as out:
        # setsid + a middle process that exits: the daemon is not our child
        subprocess.run(["setsid", "-f", *bluestore.osd_argv(conf, osd_id)], stdout=out,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=True,
                       timeout=30)


def stop(mode: str, conf: str, osd_id: int, run: bluestore.Runner = bluestore.local_run,
         timeout: float = 30.0) -> None:
    """Stop the OSD daemon (SIGTERM, SIGKILL after ``timeout``); nothing if not running."""
    if mode == "systemd":
        run(["systemctl", "stop", f"ceph-osd@{osd_id}"], timeout + 10)
    pid = pid_of(run, conf, osd_id)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = False
    while _is_osd(pid, osd_id):
        if time.monotonic() > deadline:
            if killed:
                raise StorageError(f"OSD {osd_id} (pid {pid}) survives SIGKILL")
            os.kill(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + 10
        time.sleep(0.1)
