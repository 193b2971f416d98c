"""A simulated BMC per lab node: IPMI over LAN (RMCP+, what ``ipmitool -I lanplus`` speaks),
whose chassis power control really stops and starts that node.

Each BMC is one process (pyghmi's server keys its sessions by client address and BMC port,
so two BMCs in one process mix their replies up) in the lab's switch namespace, listening
on its own address of the lab bridge: node ``hvI`` has its BMC at ``<subnet>.(100+I)``:623.
Every node reaches every BMC over the bridge; a partitioned node (its switch port down)
cannot reach its own BMC, but the other nodes still can, like a separate BMC network.

* power off (also soft off): ``Lab.kill`` of the node: SIGKILL of every process in its
  namespace (pvcnoded, libvirtd and QEMU guests, the OSD, the ZooKeeper server).
* power on: the node's services are started again (in the background: IPMI clients
  retransmit a request whose answer takes more than about a second, so every handler
  answers at once).
* power status: "on" while any process of the node runs; with none, "off" if this BMC
  powered it off and "on" otherwise (a node that died by itself is powered but hung).

BMCs are not processes of their node (they must outlive it): ``Lab.kill`` and
``Lab.start`` of a node leave them alone, ``up``/``restore`` start them in the ``settle``
step, ``down`` stops them with the other PID files. They run in labs whose spec has
``extra["bmc"]`` true. The credentials are ``admin`` and a random password kept in
``<state dir>/bmc-password`` (0600); nodes get them in their ``pvcnoded.yaml`` (0600).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from pvc_lab import netns, procs
from pvc_lab.services import Service, log_tail
from pvc_lab.spec import BRIDGE, LabSpec, NodeSpec

if TYPE_CHECKING:
    from pvc_lab.lab import Lab

BMC_HOST_OFFSET = 100
IPMI_PORT = 623
USER = "admin"
PASSWORD_FILE = "bmc-password"
ON, OFF = "on", "off"


def enabled(spec: LabSpec) -> bool:
    return bool(spec.extra.get("bmc"))


def address(spec: LabSpec, node: NodeSpec) -> str:
    """The node's BMC address on the lab bridge."""
    net = ipaddress.ip_network(spec.subnet)
    return str(net.network_address + BMC_HOST_OFFSET + node.index)


def password(spec: LabSpec) -> str:
    """The lab's BMC password, made once (mode 0600)."""
    path = os.path.join(spec.state_dir, PASSWORD_FILE)
    try:
        with open(path) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        os.makedirs(spec.state_dir, exist_ok=True)
        value = secrets.token_hex(8)   # IPMI 2.0 passwords: at most 20 bytes
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
        return value


def plugin_section(spec: LabSpec, node: NodeSpec) -> dict[str, Any]:
    """``plugins.fencing_ipmi`` of the node's pvcnoded.yaml ({} in a lab without BMCs)."""
    if not enabled(spec):
        return {}
    return {"fencing_ipmi": {"bmc": {"host": address(spec, node), "port": IPMI_PORT,
                                     "user": USER, "password": password(spec)}}}


# -- the service: started by ``settle``, never as a process of its node ----------------------

class BmcService(Service):
    """The BMCs of a lab (``extra["bmc"]``); see the module docstring."""

    name = "bmc"
    stop_grace = 2.0
    start_timeout = 20.0

    def placed(self, spec: LabSpec, node: NodeSpec) -> bool:
        return False     # not a process of the node: kill/start of the node spare it

    def netns(self, spec: LabSpec, node: NodeSpec) -> str:
        return spec.switch_netns

    def config_file(self, spec: LabSpec, node: NodeSpec) -> str:
        return os.path.join(self.dir(spec, node), "bmc.json")

    def prepare(self, spec: LabSpec, node: NodeSpec) -> None:
        addr = address(spec, node)
        shown = netns.ip("-n", spec.switch_netns, "-o", "addr", "show", "dev", BRIDGE).stdout
        if f" {addr}/" not in shown:
            netns.ip("-n", spec.switch_netns, "addr", "add", f"{addr}/{spec.prefixlen}",
                     "dev", BRIDGE)
        password(spec)
        with open(self.config_file(spec, node), "w") as fh:
            json.dump({"lab": spec.name, "state_root": os.path.dirname(spec.state_dir),
                       "node": node.name, "address": addr, "port": IPMI_PORT, "user": USER,
                       "services": list(self.node_services)}, fh)

    node_services: tuple[str, ...] = ()
    """Names of the lab's node services (what power on starts); set by ``settle``."""

    def argv(self, spec: LabSpec, node: NodeSpec) -> list[str]:
        return [sys.executable, "-m", "pvc_lab.bmc", self.config_file(spec, node)]

    def env(self, spec: LabSpec, node: NodeSpec) -> dict[str, str]:
        env = super().env(spec, node)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def ready(self, lab: Lab, node: NodeSpec, rec: procs.ProcRecord) -> bool:
        return listening(rec.pid, address(lab.spec, node), IPMI_PORT)

    def settle(self, lab: Lab, timeout: float) -> None:
        """Start every BMC that does not run and wait until each listens."""
        spec = lab.spec
        if not enabled(spec):
            return
        self.node_services = tuple(s.name for s in lab.services if s.name != self.name)
        deadline = time.monotonic() + min(timeout, self.start_timeout)
        started = [(n, self.start(spec, n)[0]) for n in spec.nodes]
        for n, rec in started:
            while not self.ready(lab, n, rec):
                if not procs.alive(rec.pid, rec.start):
                    from pvc_lab.errors import LabError

                    log = self.log_file(spec, n)
                    raise LabError(f"{n.name}: BMC exited; see {log} ({log_tail(log)})")
                if time.monotonic() > deadline:
                    from pvc_lab.errors import LabError

                    raise LabError(f"{n.name}: BMC not listening on {address(spec, n)}:"
                                   f"{IPMI_PORT}")
                time.sleep(0.1)

    def cut(self, lab: Lab, node: str) -> int | None:
        """Make the node's BMC unreachable (its process is killed); ``restore`` brings it
        back. Returns the PID killed (None if it did not run)."""
        rec = self.signal(lab.spec, lab.node(node))
        return rec.pid if rec else None


def listening(pid: int, addr: str, port: int) -> bool:
    """True if ``addr:port`` is a bound UDP socket in the network namespace of ``pid``."""
    want = f"{_hex_ip(addr)}:{port:04X}"
    try:
        with open(f"/proc/{pid}/net/udp") as fh:
            return any(line.split()[1] == want for line in fh.readlines()[1:])
    except (OSError, IndexError):
        return False


def _hex_ip(addr: str) -> str:
    return "".join(f"{b:02X}" for b in reversed(ipaddress.ip_address(addr).packed))


# -- the BMC process -------------------------------------------------------------------------

class NodePower:
    """Power control of one lab node, through the lab's own kill and start."""

    def __init__(self, lab: Lab, node: str, log_path: str) -> None:
        self.lab = lab
        self.node = node
        self.log_path = log_path
        self.powered = True      # what the last power command left
        self.lock = threading.Lock()

    def note(self, action: str, started: float, detail: str = "") -> None:
        with open(self.log_path, "a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {self.node} {action} "
                     f"{time.monotonic() - started:.2f}s {detail}\n")

    def running(self) -> bool:
        spec = self.lab.spec
        n = spec.node(self.node)
        if netns.pids(n.netns):
            return True
        return any(s.record(spec, n) for s in self.lab._node_services(n))

    def state(self) -> str:
        if self.running():
            self.powered = True
            return ON
        return ON if self.powered else OFF

    def off(self) -> None:
        t0 = time.monotonic()
        with self.lock:
            killed = self.lab.kill(self.node)
            self.powered = False
        self.note("off", t0, f"killed {len(killed)} processes")

    def on(self) -> None:
        with self.lock:
            if self.powered and self.running():
                return
            self.powered = True
        threading.Thread(target=self._boot, name="power-on", daemon=True).start()

    def _boot(self) -> None:
        t0 = time.monotonic()
        with self.lock:
            try:
                self.lab.start(self.node, wait=False)
                self.note("on", t0, "services started")
            except Exception as exc:
                self.note("on", t0, f"FAILED: {exc}")


class PowerControl(Protocol):
    """What a simulated BMC acts on."""

    def state(self) -> str: ...
    def off(self) -> None: ...
    def on(self) -> None: ...


def run_bmc(addr: str, port: int, user: str, secret: str, power: PowerControl) -> None:
    """Serve IPMI over LAN on ``addr:port`` for ``power`` until the process ends (one BMC
    per process: see the module docstring)."""
    from pyghmi.ipmi import bmc as pyghmi_bmc
    from pyghmi.ipmi.private import serversession

    # pyghmi's server always answers an open-session request with cipher suite 3 (SHA-1),
    # but pyghmi's client proposes SHA-256 first and breaks on the SHA-1 answer. Refusing a
    # non-SHA-1 proposal (status 0x11) makes that client retry with SHA-1; ipmitool asks
    # for the cipher suites first and is not affected.
    original = serversession.ServerSession.create_open_session_response

    def sha1_only(self: Any, request: bytearray) -> Any:
        if len(request) >= 13 and request[12] != 1:
            self.clientsessionid = request[4:8]
            return bytearray([request[0], 0x11, 0, 0]) + bytearray(request[4:8])
        return original(self, request)

    serversession.ServerSession.create_open_session_response = sha1_only

    class SimulatedBmc(pyghmi_bmc.Bmc):
        def get_power_state(self) -> str:
            return power.state()

        def power_off(self) -> None:
            power.off()

        def power_shutdown(self) -> None:
            power.off()

        def power_on(self) -> None:
            power.on()

        def power_reset(self) -> None:
            power.off()
            power.on()

        def power_cycle(self) -> None:
            power.off()
            power.on()

        def cold_reset(self) -> None:
            pass

        def is_active(self) -> bool:
            return power.state() == ON

        def get_boot_device(self) -> str:
            return "default"

        def set_boot_device(self, bootdevice: Any) -> None:
            pass

    SimulatedBmc({user: secret}, port=port, address=addr)
    print(f"BMC listening on {addr}:{port}", flush=True)
    pyghmi_bmc.Bmc.listen(timeout=30)


def _serve(config_path: str) -> None:
    from pvc_lab.lab import Lab
    from pvc_lab.services import default_services

    with open(config_path) as fh:
        cfg = json.load(fh)
    known = {s.name: s for s in default_services()}
    services = [known[n] for n in cfg["services"] if n in known]
    lab = Lab(name=cfg["lab"], state_root=cfg["state_root"], services=services)
    node_dir = os.path.dirname(os.path.abspath(config_path))
    power = NodePower(lab, cfg["node"], os.path.join(node_dir, "bmc-actions.log"))
    run_bmc(cfg["address"], cfg["port"], cfg["user"], password(lab.spec), power)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pvc_lab.bmc",
                                     description="One lab node's simulated BMC (IPMI over LAN).")
    parser.add_argument("config", help="the BMC's bmc.json (written by BmcService.prepare)")
    args = parser.parse_args(argv)
    _serve(args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
