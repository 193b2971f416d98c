"""EVPN mode on one node: run FRR's zebra and bgpd, keep them alive and keep bgpd's
sessions as the cluster's nodes say (``frr`` renders what they should be).

The daemons live in ``frr_dir`` (configs, pid files, zserv socket, vty sockets, logs), run
as user ``frr`` (``-u root`` is refused by Debian's build: root is not in group frrvty),
with no TCP vty (``-P 0``); bgpd listens on the VTEP address only (``-l``). They are
started daemonized from the supervisor's thread, so in that thread's network namespace.

They outlive pvcnoded on purpose: a pvcnoded restart (an upgrade, a crash) must not drop
the EVPN routes of this node's VMs from every other node, nor the remote MACs from this
node's FDB. A new supervisor adopts the daemons its pid files name (the pid's command line
must name our config file, so a reused pid is never taken for ours) and only brings their
configuration up to date. They are ended only when the mode is no longer ``evpn``
(``terminate``) - and when the node shuts down, by the service manager. Under systemd each
is started in a transient scope of its own (``systemd-run --scope``): in pvcnoded's
control group, stopping pvcnoded.service would kill them with it.

Configuration changes (a node comes, goes, changes its VTEP or its coordinator role) are
applied to the running bgpd with ``vtysh`` commands computed from its running config: only
the sessions that change are touched. A new AS or VTEP address needs a bgpd restart.

A daemon that dies is started again (zebra: then bgpd too, whose EVPN state lives on
zebra's) and a fault ``frr-<node>`` is raised, as when FRR cannot be started or configured
twice in a row; it is cleared once the daemons have run ``STABLE`` seconds without another
problem.
"""

from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import threading
import time
from typing import Any

from pvc_kernel.sdk import faults
from pvc_plugins.net_vxlan import frr

log = logging.getLogger("pvc_plugins.net_vxlan")

BINARIES = {"zebra": "/usr/lib/frr/zebra", "bgpd": "/usr/lib/frr/bgpd"}
VTYSH = "/usr/bin/vtysh"
SYSTEMD_RUN = "/usr/bin/systemd-run"
USER = "frr"
CLIENT = "client"            # node.coordinator_state of a node that is no coordinator
FAULT_DELTA = 10
STABLE = 300.0               # s without a restart before the fault is cleared
CHECK = 1.0                  # s between liveness checks
RESYNC = 30.0                # s between configuration checks without any event


def launcher(systemd: bool | None = None) -> list[str]:
    """The prefix that starts a daemon outside pvcnoded's control group under systemd
    (the scope's command runs as systemd-run's child: same namespace); [] without it."""
    if systemd is None:
        systemd = os.path.isdir("/run/systemd/system") and os.path.exists(SYSTEMD_RUN)
    return [SYSTEMD_RUN, "--scope", "--quiet", "--collect",
            "--description=PVC FRR daemon (net_vxlan evpn)"] if systemd else []


def fault_id(node: str) -> str:
    return f"frr-{node}"


class FrrError(Exception):
    """A daemon cannot be started or told something; the message says why."""


class Files:
    """The paths of one node's FRR in ``root``."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.vty = os.path.join(root, "vty")
        self.zserv = os.path.join(root, "zserv.api")

    def conf(self, name: str) -> str:
        return os.path.join(self.root, f"{name}.conf")

    def pid(self, name: str) -> str:
        return os.path.join(self.root, f"{name}.pid")

    def log(self, name: str) -> str:
        return os.path.join(self.root, f"{name}.log")


def running_pid(files: Files, name: str) -> int | None:
    """The pid of our ``name`` daemon if it runs: from its pid file, and only if that
    process's command line names our config file."""
    try:
        with open(files.pid(name), encoding="ascii") as fh:
            pid = int(fh.read().strip() or 0)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except (OSError, ValueError):
        return None
    if pid <= 0 or files.conf(name).encode() not in argv:
        return None
    return pid


def kill(files: Files, name: str, timeout: float = 10.0) -> int | None:
    """End our ``name`` daemon (SIGTERM, SIGKILL after ``timeout``); its pid, or None if
    none ran."""
    pid = running_pid(files, name)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(files, name) == pid:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)
    return pid


def terminate(root: str) -> list[int]:
    """End the FRR daemons PVC runs in ``root`` (bgpd first); their pids."""
    files = Files(root)
    return [pid for name in ("bgpd", "zebra") if (pid := kill(files, name)) is not None]


def vtysh(files: Files, *commands: str, daemon: str | None = "bgpd",
          timeout: float = 10.0) -> str:
    """Run ``commands`` in one vtysh; its output (FrrError if it fails)."""
    argv = [VTYSH, "--vty_socket", files.vty]
    if daemon:
        argv += ["-d", daemon]
    for command in commands:
        argv += ["-c", command]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        text = (proc.stderr or proc.stdout).strip().replace("\n", " ")
        raise FrrError(f"vtysh {' '.join(commands)!r} failed: {text or proc.returncode}")
    return proc.stdout


def peers(daemon: Any) -> list[frr.Peer]:
    """The other nodes with a VTEP (``vtep`` of their static data) and whether they are
    coordinators (the kernel's ``node.coordinator_state`` is ``client`` on the others)."""
    found = []
    for node in daemon.store.children("nodes"):
        if node == daemon.node:
            continue
        static = daemon.store.get_json("node.static", {}, node=node)
        vtep = static.get("vtep") if isinstance(static, dict) else None
        if not isinstance(vtep, str) or not vtep:
            continue
        state = daemon.store.get("node.coordinator_state", node=node)
        found.append(frr.Peer(node, vtep, state not in (None, "", CLIENT)))
    return found


class Supervisor:
    """zebra + bgpd of this node (``daemon``) in ``cfg.frr_dir``."""

    def __init__(self, daemon: Any, cfg: Any, vtep: Any) -> None:
        self.daemon = daemon
        self.node: str = daemon.node
        self.cfg = cfg
        self.vtep = vtep                     # callable: this node's VTEP address or None
        self.files = Files(cfg.frr_dir)
        self.wanted = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.restarts = 0
        self.faulted: float | None = None    # when the fault was last reported
        self.synced = 0                      # configuration checks done (tests wait on it)
        self.applied: list[list[str]] = []   # vtysh changes sent (for the log and tests)
        self._seen: dict[str, int | None] | None = None   # pids at the last check

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start (or adopt) the daemons and supervise them, in this thread's namespace."""
        self.thread = threading.Thread(target=self._loop, name="frr-supervisor", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop supervising; the daemons keep running (see the module)."""
        self.stopping.set()
        self.wanted.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def request(self) -> None:
        """Check the configuration soon (nodes changed)."""
        self.wanted.set()

    def _loop(self) -> None:
        prepared = False
        next_sync = 0.0
        backoff = CHECK
        while not self.stopping.is_set():
            try:
                if not prepared:
                    self._prepare()
                    prepared = True
                self._keep_alive()
                if self.wanted.is_set() or time.monotonic() >= next_sync:
                    self.wanted.clear()
                    self.sync()
                    next_sync = time.monotonic() + RESYNC
                backoff = CHECK
            except Exception as exc:
                log.warning("net_vxlan: FRR: %s; retrying in %g s", exc, backoff)
                if backoff > CHECK:          # failed twice in a row: not a glitch
                    self._fault(f"Node {self.node}: FRR cannot run BGP EVPN: {exc}")
                backoff = min(backoff * 2, 30.0)
                next_sync = 0.0
                self.stopping.wait(backoff)
            self.wanted.wait(CHECK)

    def _fault(self, message: str) -> None:
        self.faulted = time.monotonic()
        faults.report(self.daemon.store, fault_id(self.node), message, FAULT_DELTA)

    # -- files -------------------------------------------------------------------------
    def _prepare(self) -> None:
        user = pwd.getpwnam(USER)
        for path in (self.files.root, self.files.vty):
            os.makedirs(path, mode=0o755, exist_ok=True)
            os.chown(path, user.pw_uid, user.pw_gid)
        self._write("zebra", frr.zebra_conf(self.node, self.files.log("zebra")))

    def _write(self, name: str, text: str) -> None:
        path = self.files.conf(name)
        try:
            with open(path, encoding="utf-8") as fh:
                if fh.read() == text:
                    return
        except OSError:
            pass
        with open(path + ".new", "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(path + ".new", path)

    def desired(self) -> frr.Bgp | None:
        vtep = self.vtep()
        if not vtep:
            return None
        return frr.desired(self.cfg.bgp_as, vtep, bool(self.daemon.config.coordinator),
                           peers(self.daemon))

    # -- processes ---------------------------------------------------------------------
    def _spawn(self, name: str, extra: list[str]) -> int:
        argv = [*launcher(), BINARIES[name], "-d", "-P", "0", "-f", self.files.conf(name),
                "-i", self.files.pid(name), "-z", self.files.zserv,
                "--vty_socket", self.files.vty, *extra]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=30)
        deadline = time.monotonic() + 10
        while (pid := running_pid(self.files, name)) is None:
            if time.monotonic() > deadline:
                text = (proc.stderr or proc.stdout).strip().replace("\n", " ")
                raise FrrError(f"{name} did not start (exit {proc.returncode}): {text}")
            time.sleep(0.02)
        log.info("net_vxlan: started %s (pid %d)", name, pid)
        return pid

    def _start_bgpd(self) -> None:
        want = self.desired()
        if want is None:
            raise FrrError("no VTEP address on this node: bgpd cannot start")
        self._write("bgpd", frr.bgpd_conf(self.node, self.files.log("bgpd"), want))
        self._spawn("bgpd", ["-l", want.router_id])

    def _keep_alive(self) -> None:
        """Start what does not run; adopt what does. A daemon that died after this
        supervisor saw it running is a fault."""
        zebra = running_pid(self.files, "zebra")
        bgpd = running_pid(self.files, "bgpd")
        seen = self._seen
        if seen is None:
            for name, pid in (("zebra", zebra), ("bgpd", bgpd)):
                if pid is not None:
                    log.info("net_vxlan: adopted running %s (pid %d)", name, pid)
        else:
            died = [n for n, pid in (("zebra", zebra), ("bgpd", bgpd))
                    if pid is None and seen.get(n) is not None]
            if died:
                self._died(died, seen)
        if zebra is None:
            if bgpd is not None:            # its EVPN state went with zebra
                kill(self.files, "bgpd")
                bgpd = None
            zebra = self._spawn("zebra", [])
        self._seen = {"zebra": zebra, "bgpd": bgpd}
        if bgpd is None:
            self._start_bgpd()
            self._seen["bgpd"] = running_pid(self.files, "bgpd")
            self.wanted.set()
        if self.faulted is not None and time.monotonic() - self.faulted > STABLE:
            self.restarts, self.faulted = 0, None
            faults.clear(self.daemon.store, fault_id(self.node))
            log.info("net_vxlan: FRR has run %g s without a problem", STABLE)

    def _died(self, died: list[str], seen: dict[str, int | None]) -> None:
        self.restarts += 1
        what = " and ".join(f"{n} (pid {seen[n]})" for n in died)
        log.error("net_vxlan: FRR %s died; starting it again", what)
        self._fault(f"Node {self.node}: FRR {what} died and was restarted ({self.restarts} "
                    "restart(s)); EVPN routes were briefly withdrawn")

    # -- configuration -----------------------------------------------------------------
    def sync(self) -> list[str]:
        """Bring the running bgpd to what the cluster says; the commands sent."""
        want = self.desired()
        if want is None:
            raise FrrError("no VTEP address on this node")
        self._write("bgpd", frr.bgpd_conf(self.node, self.files.log("bgpd"), want))
        running = frr.parse_running(vtysh(self.files, "show running-config"))
        if frr.needs_restart(running, want):
            log.info("net_vxlan: bgpd runs AS %s router-id %s, wanted AS %d router-id %s: "
                     "starting it again", running.asn, running.router_id, want.asn,
                     want.router_id)
            kill(self.files, "bgpd")
            self._start_bgpd()
            commands: list[str] = ["(restart)"]
        else:
            commands = frr.changes(running, want)
            if commands:
                vtysh(self.files, "configure terminal", *commands)
                log.info("net_vxlan: bgpd now peers with %s (%s)",
                         ", ".join(want.neighbors) or "nobody", "; ".join(commands))
        if commands:
            self.applied.append(commands)
        self.synced += 1
        return commands
