"""One lab with Ceph (``pvcstor``, env ``PVC_TEST_STORAGE_LAB_NAME``) shared by the storage
lab tests of one pytest process: 3 coordinators, a monitor and manager on hv1, one OSD per
node, pools copies=3/mincopies=2. Brought up on first use, down when the last user is done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pvc_lab import ceph as labceph

LAB_NAME = os.environ.get("PVC_TEST_STORAGE_LAB_NAME", "pvcstor")

_lab = None
_users = 0
_lock = threading.Lock()


def problem() -> str | None:
    from pvc_lab.zookeeper import available as zookeeper_problem

    if os.geteuid() != 0:
        return "the lab tests need root (they create network namespaces)"
    return zookeeper_problem() or labceph.available()


def acquire(ready: Callable[[Any], bool]) -> Any:
    """The running lab; ``ready(lab)`` is polled (60 s) after the first bring-up."""
    global _lab, _users
    from pvc_lab import Lab

    with _lock:
        if _lab is None:
            lab = Lab(name=LAB_NAME)
            lab.down(grace=0, quiet=True)
            try:
                t0 = time.monotonic()
                lab.up(nodes=3, timeout=240, options={"storage": True})
                lab.bringup_seconds = round(time.monotonic() - t0, 1)
                lab.wait_for(lambda: ready(lab), 60, "the primary's first Ceph report")
            except BaseException:
                lab.down(grace=3)
                raise
            _lab = lab
        _users += 1
        return _lab


def release() -> None:
    global _lab, _users
    with _lock:
        _users -= 1
        if _users == 0 and _lab is not None:
            _lab.down(grace=3)
            _lab = None


# -- helpers of the storage lab tests ----------------------------------------------------

PVC = [sys.executable, "-m", "pvc_cli"]


def pvc(lab, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1", PVC_CLI_CONFIG="/nonexistent/pvc.json")
    return lab.admin_exec([*PVC, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(lab, *args: str, timeout: float = 300.0) -> str:
    out = pvc(lab, *args, timeout=timeout)
    assert out.returncode == 0, f"pvc {' '.join(args)}: {out.stdout} {out.stderr}"
    return out.stdout


def refused(lab, *args: str) -> str:
    out = pvc(lab, *args)
    assert out.returncode != 0, out.stdout
    return out.stdout + out.stderr


def as_json(lab, *args: str):
    return json.loads(ok(lab, *args, "-f", "json"))


def site(lab, node: str) -> labceph.CephSite:
    return labceph.lab_site(lab.spec, lab.spec.node(node))


def rbd(lab, node: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return lab.exec(node, ["rbd", "-c", site(lab, node).conf, *args], capture_output=True,
                    timeout=300, **kw)


def export(lab, node: str, spec: str, length: int) -> bytes:
    out = rbd(lab, node, "export", spec, "-")
    assert out.returncode == 0, out.stderr
    return out.stdout[:length]
