"""One dnsmasq per managed network on the primary: DHCPv4 (range and reservations), DNS for
the network's domain, router advertisements and stateless DHCPv6 when it has IPv6.

Files, under ``run_dir`` (``plugins.net_vxlan.run_dir``), per network ``<vni>``:

    dnsmasq-<vni>.pid      dnsmasq's PID (also how a leftover of a crashed pvcnoded is found)
    dnsmasq-<vni>.leases   the lease file, written from ZooKeeper's leases before a start so
                           that a new primary knows what the old one handed out
    dnsmasq-<vni>.hosts/   one file per reservation (``<mac>,<ip>[,<hostname>]``), read by
                           dnsmasq as ``--dhcp-hostsdir``: new files are picked up at once,
                           removals after a SIGHUP
    leasehook              the ``--dhcp-script`` (``leasehook.py``): relays each lease event
                           to the plugin, which writes ``/networks/<vni>/leases/<mac>``

dnsmasq runs in the foreground as our child (``--keep-in-foreground``), bound to
``vmbr<vni>`` only, with no configuration file, /etc/hosts or other interface; it is started
in the calling thread's network namespace.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("pvc_plugins.net_vxlan")

DNSMASQ = "dnsmasq"
HOOK = "leasehook"
SOCKET_ENV, VNI_ENV = "PVC_LEASE_SOCKET", "PVC_LEASE_VNI"


def bridge_name(vni: int) -> str:
    return f"vmbr{vni}"


def serves(spec: dict[str, Any]) -> bool:
    """Whether a managed network needs a dnsmasq (it has an IPv4 or IPv6 network)."""
    return bool(spec.get("ip4_network") or spec.get("ip6_network"))


def arguments(spec: dict[str, Any], files: Files, lease_time: int) -> list[str]:
    """dnsmasq's command line for network ``spec`` (pure; what decides a restart)."""
    vni = int(spec["vni"])
    bridge = bridge_name(vni)
    domain = spec.get("domain") or f"{spec.get('description')}.local"
    args = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts",
            f"--pid-file={files.pid}", "--bind-interfaces", f"--interface={bridge}",
            "--except-interface=lo", "--log-facility=-", "--dhcp-authoritative",
            f"--domain={domain}", f"--local=/{domain}/", "--expand-hosts",
            f"--dhcp-leasefile={files.leases}", f"--dhcp-hostsdir={files.hosts}",
            f"--dhcp-script={files.hook}"]
    zones = []
    if spec.get("ip4_network"):
        zones.append(spec["ip4_network"])
        if spec.get("dhcp4") and spec.get("dhcp4_start") and spec.get("dhcp4_end"):
            net = ipaddress.IPv4Network(spec["ip4_network"])
            args.append(f"--dhcp-range={spec['dhcp4_start']},{spec['dhcp4_end']},"
                        f"{net.netmask},{lease_time}")
        if spec.get("ip4_gateway"):
            args.append(f"--dhcp-option=option:router,{spec['ip4_gateway']}")
    if spec.get("ip6_network"):
        net6 = ipaddress.IPv6Network(spec["ip6_network"])
        zones.append(str(net6))
        args += ["--enable-ra", f"--dhcp-range={_range6(net6, spec.get('ip6_gateway'))},"
                 f"{lease_time}"]
    servers4 = [s for s in spec.get("name_servers") or [] if ":" not in s]
    servers6 = [s for s in spec.get("name_servers") or [] if ":" in s]
    if servers4:
        args.append(f"--dhcp-option=option:dns-server,{','.join(servers4)}")
    if servers6:
        args.append(f"--dhcp-option=option6:dns-server,{','.join(f'[{s}]' for s in servers6)}")
    args.append(f"--auth-zone={domain},{','.join(zones)}")
    args.append(f"--auth-server={domain},{bridge}")
    return args


def _range6(net: ipaddress.IPv6Network, gateway: str | None) -> str:
    """The IPv6 ``--dhcp-range`` (without the lease time): SLAAC and stateless DHCPv6 on the
    /64 of the gateway when the network is /64 or larger (SLAAC needs a /64); on a smaller
    one, stateful DHCPv6 over the half of the network the gateway is not in."""
    gw = ipaddress.IPv6Address(gateway) if gateway else net.network_address + 1
    if net.prefixlen <= 64:
        slaac = ipaddress.IPv6Network(f"{gw}/64", strict=False)
        return f"{slaac.network_address},ra-stateless,ra-names,64"
    lower, upper = net.subnets(prefixlen_diff=1)
    half = upper if gw in lower else lower
    first = max(half.network_address, net.network_address + 1)
    last = min(half.broadcast_address, net.broadcast_address - 1)
    return f"{first},{last},{net.prefixlen}"


class Files:
    """The paths of network ``vni``'s dnsmasq under ``run_dir``."""

    def __init__(self, run_dir: str, vni: int) -> None:
        base = Path(run_dir)
        self.run_dir = base
        self.pid = base / f"dnsmasq-{vni}.pid"
        self.leases = base / f"dnsmasq-{vni}.leases"
        self.hosts = base / f"dnsmasq-{vni}.hosts"
        self.hook = base / HOOK
        self.socket = base / "leases.sock"


def host_lines(reservations: list[dict[str, Any]]) -> dict[str, str]:
    """The hostsdir files (name → content) of the reservations."""
    out = {}
    for r in reservations:
        fields = [r["mac"], r["ip4"]] + ([r["hostname"]] if r.get("hostname") else [])
        out[r["mac"].replace(":", "")] = ",".join(fields) + "\n"
    return out


def lease_lines(leases: list[dict[str, Any]], now: float | None = None) -> str:
    """A dnsmasq lease file holding the unexpired ``leases`` (IPv4)."""
    now = time.time() if now is None else now
    lines = []
    for x in sorted(leases, key=lambda x: x.get("mac", "")):
        expiry = int(x.get("expiry") or 0)
        if expiry and expiry <= now or not x.get("ip4") or not x.get("mac"):
            continue
        lines.append(f"{expiry} {x['mac']} {x['ip4']} {x.get('hostname') or '*'} "
                     f"{x.get('client_id') or '*'}")
    return "".join(line + "\n" for line in lines)


def read_leases(text: str, vni: int) -> list[dict[str, Any]]:
    """The IPv4 leases of a dnsmasq lease file (``lease_lines``' format) as lease events
    (``leasehook.event``'s shape, action ``old``); other lines are left out."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not parts[0].isdigit() or parts[1].count(":") != 5:
            continue
        out.append({"vni": vni, "action": "old", "mac": parts[1].lower(), "ip4": parts[2],
                    "hostname": None if parts[3] == "*" else parts[3],
                    "expiry": int(parts[0]), "client_id": None if parts[4] == "*" else parts[4]})
    return out


def write_hook(files: Files) -> None:
    """The ``--dhcp-script``: this interpreter running ``leasehook.main``."""
    text = (f"#!{sys.executable}\nfrom pvc_plugins.net_vxlan.leasehook import main\n"
            "raise SystemExit(main())\n")
    if not files.hook.exists() or files.hook.read_text() != text:
        tmp = files.hook.with_suffix(".new")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(files.hook)


def sync_hosts(files: Files, reservations: list[dict[str, Any]]) -> tuple[bool, bool]:
    """Make the hostsdir hold exactly the reservations; returns (changed, removed)."""
    files.hosts.mkdir(parents=True, exist_ok=True)
    want = host_lines(reservations)
    have = {p.name: p for p in files.hosts.iterdir()}
    changed = removed = False
    for name in sorted(set(have) - set(want)):
        have[name].unlink()
        changed = removed = True
    for name, text in want.items():
        path = files.hosts / name
        if name in have and path.read_text() == text:
            continue
        if name in have:
            removed = True               # dnsmasq keeps the old record until a SIGHUP
        tmp = files.hosts.parent / f".{name}.new"
        tmp.write_text(text)
        tmp.replace(path)
        changed = True
    return changed, removed


def leftover(files: Files) -> int | None:
    """The PID of a dnsmasq that serves these files but is not ours to wait on (pvcnoded
    crashed): its pid file names a live dnsmasq whose command line has that pid file."""
    try:
        pid = int(files.pid.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    mine = f"--pid-file={files.pid}".encode()
    return pid if cmdline and Path(cmdline[0].decode()).name == DNSMASQ and mine in cmdline \
        else None


def kill(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM ``pid`` and wait (by polling, it is not our child) until it is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


class Dnsmasq:
    """The dnsmasq of network ``vni``: our child process, whose log lines (stderr) a thread
    passes on to our log; when it ends without being asked, ``on_exit(self)`` is called."""

    def __init__(self, files: Files, vni: int, args: list[str],
                 on_exit: Callable[[Dnsmasq], None] | None = None) -> None:
        self.files = files
        self.vni = vni
        self.args = args
        self.on_exit = on_exit
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.last_lines: deque[str] = deque(maxlen=5)
        self.started = 0.0

    def start(self, leases: list[dict[str, Any]]) -> None:
        """Write the lease file from ``leases`` and start dnsmasq (in this thread's network
        namespace); stops a leftover of a crashed pvcnoded first."""
        self.files.run_dir.mkdir(parents=True, exist_ok=True)
        old = leftover(self.files)
        if old is not None:
            log.info("net_vxlan: stopping a leftover dnsmasq (pid %d) of network %d", old,
                     self.vni)
            kill(old)
        self.files.leases.write_text(lease_lines(leases))
        self.started = time.monotonic()
        env = {**os.environ, SOCKET_ENV: str(self.files.socket), VNI_ENV: str(self.vni)}
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=env, start_new_session=True, text=True,
                                     errors="replace")
        threading.Thread(target=self._follow, args=(self.proc,), daemon=True,
                         name=f"dnsmasq-{self.vni}").start()

    def _follow(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip()
            self.last_lines.append(line)
            log.debug("dnsmasq %d: %s", self.vni, line)
        proc.wait()
        proc.stderr.close()
        if not self.stopping and self.on_exit is not None:
            self.on_exit(self)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_message(self) -> str:
        """How the process ended: the signal, or the exit code and dnsmasq's last words."""
        if self.proc is None or self.proc.returncode is None:
            return "running"
        code = self.proc.returncode
        if code < 0:
            return f"killed by signal {-code}"
        last = [line for line in self.last_lines if line][-1:]
        return f"exit code {code}" + (f": {last[0]}" if last else "")

    def reload(self) -> None:
        """SIGHUP: dnsmasq re-reads the hostsdir (removed reservations go)."""
        if self.running():
            self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
