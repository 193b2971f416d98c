"""The health plugin's own checks: the host and the kernel's services (load, disk space,
ZooKeeper, packages, hardware). Subsystem checks (libvirt, Ceph, networks, BMC) live in their
plugins."""

from __future__ import annotations

import glob
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from typing import Any

import psutil

from pvc_kernel.sdk import CheckResult, HealthCheck
from pvc_plugins.health.config import HealthConfig

ZK_PORT = 2181


class LoadCheck(HealthCheck):
    """The 1-minute load against the CPU count."""

    name = "load"

    def __init__(self, cfg: HealthConfig) -> None:
        self.delta = cfg.load_delta

    def run(self, daemon: Any) -> CheckResult:
        load, cpus = os.getloadavg()[0], os.cpu_count() or 1
        data = {"load": round(load, 2), "cpu_count": cpus}
        if load > cpus:
            return CheckResult(self.delta, f"load {load:.2f} exceeds {cpus} CPUs", data)
        return CheckResult(0, f"load {load:.2f} on {cpus} CPUs", data)


class DiskCheck(HealthCheck):
    """Used space and inodes of the node's data paths (one look per file system)."""

    name = "disk"

    def __init__(self, cfg: HealthConfig) -> None:
        self.cfg = cfg

    def paths(self) -> list[str]:
        seen, out = set(), []
        for path in self.cfg.disk_paths:
            try:
                dev = os.stat(path).st_dev
            except OSError:
                continue
            if dev not in seen:
                seen.add(dev)
                out.append(path)
        return out

    def setup(self, daemon: Any) -> str | None:
        return None if self.paths() else "none of disk_paths exists"

    def run(self, daemon: Any) -> CheckResult:
        cfg, delta, problems, data = self.cfg, 0, [], {}
        for path in self.paths():
            st = os.statvfs(path)
            used = 100.0 * (1 - st.f_bavail / st.f_blocks) if st.f_blocks else 0.0
            inodes = 100.0 * (1 - st.f_favail / st.f_files) if st.f_files else 0.0
            worst = max(used, inodes)
            data[path] = {"used_percent": round(used, 1), "inodes_percent": round(inodes, 1),
                          "free_bytes": st.f_bavail * st.f_frsize}
            what = "space" if used >= inodes else "inodes"
            if worst >= cfg.disk_full_percent:
                delta += cfg.disk_full_delta
                problems.append(f"{path} {worst:.0f}% full ({what})")
            elif worst >= cfg.disk_warn_percent:
                delta += cfg.disk_warn_delta
                problems.append(f"{path} {worst:.0f}% full ({what})")
        if problems:
            return CheckResult(delta, "; ".join(problems), data)
        return CheckResult(0, f"{len(data)} data path(s) below {cfg.disk_warn_percent:g}%",
                           data)


def local_zookeeper(hosts: list[str]) -> tuple[str, int] | None:
    """The member of the ensemble on an address of this host, or None."""
    mine = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family in (socket.AF_INET, socket.AF_INET6)}
    for entry in hosts:
        host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        host = host.strip("[]") or entry
        try:
            addresses = {ipaddress.ip_address(host).compressed}
        except ValueError:
            try:
                addresses = {i[4][0] for i in socket.getaddrinfo(host, None)}
            except OSError:
                continue
        if addresses & mine:
            return host, int(port or ZK_PORT)
    return None


def four_letter(address: tuple[str, int], word: str, timeout: float) -> str:
    with socket.create_connection(address, timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class ZooKeeperCheck(HealthCheck):
    """This coordinator's ZooKeeper server: ``ruok`` answered ``imok`` and ``mntr`` shows it
    serving (leader, follower or standalone)."""

    name = "zookeeper"
    timeout = 8.0

    def __init__(self, cfg: HealthConfig) -> None:
        self.delta = cfg.zookeeper_delta
        self.address: tuple[str, int] | None = None

    def setup(self, daemon: Any) -> str | None:
        if not daemon.config.coordinator:
            return "not a coordinator"
        self.address = local_zookeeper(daemon.config.zookeeper_hosts)
        return None if self.address else "no server of the ensemble runs on this node"

    def run(self, daemon: Any) -> CheckResult:
        assert self.address is not None
        where = f"{self.address[0]}:{self.address[1]}"
        try:
            ok = four_letter(self.address, "ruok", 3.0)
            stats = dict(line.split("\t", 1) for line in
                         four_letter(self.address, "mntr", 3.0).splitlines() if "\t" in line)
        except OSError as exc:
            return CheckResult(self.delta, f"server {where} does not answer: {exc}",
                               {"address": where})
        data = {k: stats[k] for k in ("zk_server_state", "zk_avg_latency",
                                      "zk_outstanding_requests", "zk_num_alive_connections",
                                      "zk_znode_count") if k in stats}
        state = stats.get("zk_server_state", "")
        if ok.strip() != "imok" or state not in ("leader", "follower", "standalone"):
            return CheckResult(self.delta, f"server {where} is not serving (ruok: "
                               f"{ok.strip() or 'no answer'}, state: {state or 'unknown'})",
                               data)
        return CheckResult(0, f"server {where} serving as {state}", data)


class DpkgCheck(HealthCheck):
    """Packages, as the original judged them: +1 when any package is broken (half-installed,
    unconfigured...), +1 when any can be upgraded (``apt-get -s dist-upgrade``). Looked at
    every 10 minutes at most (apt's simulation takes seconds)."""

    name = "dpkg"
    EVERY = 600.0
    timeout = 60.0

    def __init__(self) -> None:
        self.cached: tuple[float, CheckResult] | None = None

    def setup(self, daemon: Any) -> str | None:
        return None if shutil.which("dpkg-query") else "dpkg-query is not installed"

    @staticmethod
    def upgradable() -> list[str] | None:
        """Packages apt would upgrade (None: apt-get is missing or failed)."""
        if not shutil.which("apt-get"):
            return None
        proc = subprocess.run(["apt-get", "-s", "-o", "Debug::NoLocking=true", "dist-upgrade"],
                              capture_output=True, text=True, timeout=50, check=False)
        if proc.returncode != 0:
            return None
        return sorted(line.split()[1] for line in proc.stdout.splitlines()
                      if line.startswith("Inst ") and len(line.split()) > 1)

    def run(self, daemon: Any) -> CheckResult:
        if self.cached and time.monotonic() - self.cached[0] < self.EVERY:
            return self.cached[1]
        out = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package}\n"],
                             capture_output=True, text=True, timeout=30, check=False).stdout
        broken = sorted(line.split()[-1] for line in out.splitlines()
                        if len(line.split()) >= 2 and line[:2] not in ("ii", "rc", "un", "pn"))
        total = sum(1 for line in out.splitlines() if line.startswith("ii"))
        upgradable = self.upgradable()
        data = {"installed": total, "broken": broken, "upgradable": upgradable}
        parts, delta = [], 0
        if broken:
            delta += 1
            parts.append(f"{len(broken)} broken: {', '.join(broken[:5])}")
        if upgradable:
            delta += 1
            parts.append(f"{len(upgradable)} upgradable")
        result = CheckResult(delta, "; ".join(parts) if parts else
                             f"{total} packages installed, none broken or upgradable", data)
        self.cached = (time.monotonic(), result)
        return result


class EdacCheck(HealthCheck):
    """Memory errors the kernel's EDAC counted: an uncorrectable one takes 50."""

    name = "edac"
    ROOT = "/sys/devices/system/edac/mc"

    def setup(self, daemon: Any) -> str | None:
        return None if glob.glob(f"{self.ROOT}/mc*") else "no EDAC memory controller"

    def run(self, daemon: Any) -> CheckResult:
        data = {}
        for mc in sorted(glob.glob(f"{self.ROOT}/mc*")):
            counts = {}
            for what in ("ce_count", "ue_count"):
                try:
                    with open(os.path.join(mc, what)) as f:
                        counts[what] = int(f.read().strip() or 0)
                except (OSError, ValueError):
                    counts[what] = 0
            data[os.path.basename(mc)] = counts
        ue = sum(c["ue_count"] for c in data.values())
        ce = sum(c["ce_count"] for c in data.values())
        if ue:
            return CheckResult(50, f"{ue} uncorrectable memory error(s)", data)
        return CheckResult(0, f"{ce} corrected memory error(s)", data)


class SmartCheck(HealthCheck):
    """Disks whose SMART overall health is not PASSED/OK: +10 each."""

    name = "smart"
    timeout = 30.0

    def setup(self, daemon: Any) -> str | None:
        if not shutil.which("smartctl"):
            return "smartctl is not installed"
        return None if self.disks() else "smartctl finds no disk"

    @staticmethod
    def disks() -> list[str]:
        out = subprocess.run(["smartctl", "--scan"], capture_output=True, text=True,
                             timeout=20, check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith("/dev/")]

    def run(self, daemon: Any) -> CheckResult:
        bad, data = [], {}
        for disk in self.disks():
            out = subprocess.run(["smartctl", "-H", disk], capture_output=True, text=True,
                                 timeout=20, check=False).stdout
            ok = "PASSED" in out or "SMART Health Status: OK" in out
            data[disk] = "ok" if ok else "failing"
            if not ok:
                bad.append(disk)
        if bad:
            return CheckResult(10 * len(bad), f"SMART reports failing disk(s): "
                               f"{', '.join(bad)}", data)
        return CheckResult(0, f"{len(data)} disk(s) healthy", data)


class PsuCheck(HealthCheck):
    """Power supplies, from the local BMC's sensors (``ipmitool sdr type 'Power Supply'``):
    one not ``ok`` takes 10."""

    name = "psu"

    def setup(self, daemon: Any) -> str | None:
        if not shutil.which("ipmitool"):
            return "ipmitool is not installed"
        return None if glob.glob("/dev/ipmi*") else "no local IPMI device"

    def run(self, daemon: Any) -> CheckResult:
        out = subprocess.run(["ipmitool", "sdr", "type", "Power Supply"], capture_output=True,
                             text=True, timeout=20, check=False).stdout
        rows = [[c.strip() for c in line.split("|")] for line in out.splitlines() if "|" in line]
        data = {r[0]: r[2] for r in rows if len(r) >= 3}
        bad = [name for name, status in data.items() if status not in ("ok", "ns")]
        if bad:
            return CheckResult(10, f"power supply problem: {', '.join(bad)}", data)
        return CheckResult(0, f"{len(data)} power supply sensor(s) ok", data)


class RaidCheck(HealthCheck):
    """Hardware RAID through the vendor's tool (storcli/perccli/ssacli): a degraded or
    failed array takes 50."""

    name = "raid"
    TOOLS = {"storcli64": ["/call/vall", "show"], "storcli": ["/call/vall", "show"],
             "perccli64": ["/call/vall", "show"], "ssacli": ["ctrl", "all", "show", "config"]}

    def __init__(self) -> None:
        self.tool: tuple[str, list[str]] | None = None

    def setup(self, daemon: Any) -> str | None:
        for tool, args in self.TOOLS.items():
            if shutil.which(tool):
                self.tool = (tool, args)
                return None
        return "no hardware RAID tool (storcli, perccli, ssacli) is installed"

    def run(self, daemon: Any) -> CheckResult:
        assert self.tool is not None
        tool, args = self.tool
        out = subprocess.run([tool, *args], capture_output=True, text=True, timeout=30,
                             check=False).stdout
        bad = [line.strip() for line in out.splitlines()
               if any(w in line for w in ("Dgrd", "Degraded", "Failed", "OfLn", "Rebuilding"))]
        if bad:
            return CheckResult(50, f"{tool}: {bad[0]}", {"lines": bad})
        return CheckResult(0, f"{tool}: arrays optimal", {})


def builtin(cfg: HealthConfig) -> list[HealthCheck]:
    return [LoadCheck(cfg), DiskCheck(cfg), ZooKeeperCheck(cfg), DpkgCheck(), EdacCheck(),
            SmartCheck(), PsuCheck(), RaidCheck()]
