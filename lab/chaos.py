"""Breaking a lab on purpose and checking that no VM ever runs twice: the tools shared by
the chaos tests (``tests/lab/test_chaos_*.py``) and the recovery benchmark.

``Invariant`` samples every node all along: the domains its libvirtd reports running, or,
when that libvirtd does not answer (killed, powered off), the QEMU processes left in the
node's namespace. It fails on any VM seen on two nodes at one instant (two passes in the
same order, see ``pvc_lab.libvirt.double_runs``), and when most of its samples failed (it
would have proven nothing); ``check_running`` fails on a VM that should run and runs
nowhere, or whose guest no longer prints. ``vm_lock_held`` holds a VM's cluster lock (as
any operation on the VM does), so a recovery cannot get past that VM until it is released.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pvc_lab import netns

if TYPE_CHECKING:
    from pvc_lab.lab import Lab

PVC = [sys.executable, "-m", "pvc_cli"]


def pvc(lab: Lab, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """The ``pvc`` CLI in the admin namespace, talking to the lab's API."""
    env = dict(os.environ, NO_COLOR="1", PVC_CLI_CONFIG="/nonexistent/pvc.json")
    return lab.admin_exec([*PVC, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(lab: Lab, *args: str, timeout: float = 300.0) -> str:
    out = pvc(lab, *args, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"pvc {' '.join(args)}: {out.stdout} {out.stderr}")
    return out.stdout


def as_json(lab: Lab, *args: str) -> Any:
    return json.loads(ok(lab, *args, "-f", "json"))


# -- what runs where ----------------------------------------------------------------------

def qemu_guests(ns: str) -> set[str]:
    """Names of the guests whose QEMU process lives in namespace ``ns``."""
    return {name for name, _pid in qemu_processes(ns)}


def qemu_processes(ns: str, incoming: bool = True) -> list[tuple[str, int]]:
    """(guest name, PID) of every QEMU process in namespace ``ns`` (a guest twice if it
    has two processes); ``incoming=False`` leaves out those started as a migration target
    (``-incoming``), which may still be waiting for it."""
    found = []
    for pid in netns.pids(ns):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if not argv or b"qemu-system" not in argv[0]:
            continue
        if not incoming and b"-incoming" in argv:
            continue
        for i, arg in enumerate(argv[:-1]):
            if arg == b"-name":
                name = argv[i + 1].decode(errors="replace")
                found.append((name.split("guest=", 1)[-1].split(",", 1)[0], pid))
    return sorted(found)


def _quiet_libvirt() -> None:
    """libvirt prints every error to stderr; a powered-off node's socket is expected here."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def running_now(lab: Lab) -> dict[str, set[str]]:
    """{node: VMs running there}, read node after node."""
    from pvc_lab.libvirt import running_sets

    _quiet_libvirt()

    svc = lab.service("libvirtd")
    out = {}

    def left_running(ns: str) -> set[str]:
        # libvirtd down or hung: the QEMU processes left are what runs, but not a migration
        # target's, which libvirt would show paused (this misses a guest that came in by a
        # live migration while libvirtd is down: a narrow blind spot, never a false alarm)
        return {name for name, _pid in qemu_processes(ns, incoming=False)}

    for n in lab.spec.nodes:
        rec = svc.record(lab.spec, n)
        if rec is None or stopped(rec.pid):   # a stopped libvirtd would hang the question
            out[n.name] = left_running(n.netns)
            continue
        try:
            out[n.name] = running_sets({n.name: svc.uri(lab.spec, n)})[n.name]
        except Exception:
            out[n.name] = left_running(n.netns)
    return out


def stopped(pid: int) -> bool:
    """True if the process is stopped (SIGSTOP) — or gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return True


class Invariant:
    """``with Invariant(lab) as inv:`` — a VM on two nodes at once fails the block."""

    def __init__(self, lab: Lab, interval: float = 0.1) -> None:
        self.lab = lab
        self.interval = interval
        self.samples = 0
        self.failed = 0                 # samples that raised (nothing was checked)
        self.last_error = ""
        self.violations: list[tuple] = []
        self.last: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-invariant", daemon=True)

    def _run(self) -> None:
        from pvc_lab.libvirt import double_runs

        while not self._stop.is_set():
            try:
                first, second = running_now(self.lab), running_now(self.lab)
            except Exception as exc:
                self.failed += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(self.interval)
                continue
            self.violations += [(round(time.time(), 3), *v) for v in double_runs(first, second)]
            self.last = second
            self.samples += 1
            self._stop.wait(self.interval)

    def where(self, vm: str) -> list[str]:
        return sorted(n for n, names in self.last.items() if vm in names)

    def __enter__(self) -> Invariant:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)
        if exc[0] is None:
            assert self.samples > 0, "the invariant checker never sampled the nodes"
            assert self.failed <= self.samples, (
                f"most invariant samples failed ({self.failed} of "
                f"{self.failed + self.samples}; last: {self.last_error})")
            assert not self.violations, f"VMs ran on two nodes at once: {self.violations[:5]}"


@contextmanager
def vm_lock_held(lab: Lab, vm: str, timeout: float = 15.0) -> Iterator[None]:
    """Hold VM ``vm``'s cluster lock (``/locks/vm-<uuid>``, taken by every operation on the
    VM and by its recovery) for the block. Recovery places a fenced node's VMs one at a time,
    each under its lock, so it cannot finish before the block ends. Released on exit (retried
    through a ZooKeeper reconnect; an expired session releases it anyway)."""
    from kazoo.exceptions import KazooException

    from pvc_plugins.vm_kvm import keys

    store = lab.store()
    lock = store.lock(keys.lock_name(as_json(lab, "vm", "info", vm)["uuid"]), "chaos-test")
    if not lock.acquire(timeout=timeout):
        raise AssertionError(f"could not take the lock of VM {vm} within {timeout:g} s")
    try:
        yield
    finally:
        deadline = time.monotonic() + 60
        while True:
            try:
                lock.release()
                break
            except KazooException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def check_running(lab: Lab, vms: dict[str, str], timeout: float = 60.0) -> dict[str, str]:
    """Every VM of ``{name: console log}`` runs on exactly one node and its guest keeps
    printing ticks; returns {name: node}."""
    def placed() -> dict[str, str] | None:
        now = running_now(lab)
        where = {v: [n for n, names in now.items() if v in names] for v in vms}
        if any(len(nodes) > 1 for nodes in where.values()):
            raise AssertionError(f"VMs on two nodes: {where}")
        return {v: nodes[0] for v, nodes in where.items()} if all(where.values()) else None

    found = lab.wait_for(placed, timeout, f"{', '.join(vms)} to run")
    sizes = {v: _size(log) for v, log in vms.items()}
    lab.wait_for(lambda: all(_ticks_after(log, sizes[v]) for v, log in vms.items()), timeout,
                 "every guest to print again")
    return found


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _ticks_after(path: str, offset: int) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return b"tick " in fh.read()
    except OSError:
        return False


# -- guests --------------------------------------------------------------------------------

def guest_xml(lab: Lab, name: str, rbd: str | None = None, memory: int = 128) -> tuple[str, str]:
    """(domain XML, console log path) of a lab guest; ``rbd`` = "pool/volume" adds that
    volume as its disk (the guest writes ``tick N`` to its first sector every second)."""
    import uuid

    from pvc_lab.guest import build, domain_xml
    from pvc_lab.libvirt import console_dir

    console = os.path.join(console_dir(lab.spec), f"{name}.log")
    xml = domain_xml(name, build(), console, memory_mib=memory, uuid=str(uuid.uuid4()))
    if rbd:
        hosts = "".join(f"<host name='{n.address}' port='6789'/>" for n in lab.spec.coordinators)
        disk = (f"<disk type='network' device='disk'><driver name='qemu' type='raw' "
                f"cache='none'/><source protocol='rbd' name='{rbd}'>{hosts}</source>"
                "<target dev='vda' bus='virtio'/></disk>")
        xml = xml.replace("<serial ", disk + "\n    <serial ", 1)
    return xml, console


def start_guests(lab: Lab, node: str, names: list[str], workdir: str,
                 rbd_pool: str | None = None, timeout: float = 180.0) -> dict[str, str]:
    """Define and start guests on ``node`` through the CLI; wait until every guest printed.
    Returns {name: console log}."""
    consoles = {}
    for name in names:
        xml, console = guest_xml(lab, name, f"{rbd_pool}/{name}" if rbd_pool else None)
        if os.path.exists(console):
            os.unlink(console)
        path = os.path.join(workdir, f"{name}.xml")
        with open(path, "w") as fh:
            fh.write(xml)
        ok(lab, "vm", "define", path, "--target", node)
        consoles[name] = console
    for name in names:
        ok(lab, "vm", "start", name)
    lab.wait_for(lambda: all(_ticks_after(c, 0) for c in consoles.values()), timeout,
                 f"{', '.join(names)} to boot on {node}")
    return consoles


def fence_record(lab: Lab, node: str) -> dict[str, Any]:
    from pvc_kernel.state import schema
    from pvc_plugins.fencing_ipmi import keys

    for key in keys.KEYS:
        schema.register(key)
    return lab.store().get_json("fencing.fence", {}, node=node) or {}


def phases(record: dict[str, Any], killed_at: float) -> dict[str, float]:
    """Seconds of each phase of a fence: detect (kill → declared dead), fence (power off and
    verify), storage (cut), recover (VMs restarted), total."""
    at: dict[str, float] = {}
    for t, step, _text in record.get("history", []):
        at.setdefault(step, t)
    declared = record["declared"]
    return {"detect": round(declared - killed_at, 2),
            "fence": round(at.get("power", declared) - declared, 2),
            "storage": round(at.get("storage", declared) - at.get("power", declared), 2),
            "recover": round(at.get("done", declared) - at.get("recover", declared), 2),
            "total": round(at.get("done", declared) - killed_at, 2)}
