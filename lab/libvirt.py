"""libvirtd (+ QEMU) on every lab node, each in its node's network namespace AND its own
mount namespace.

A privileged libvirtd has its QEMU driver paths compiled in (``--config`` only moves
libvirtd.conf), so two daemons on one machine are separated by bind-mounting per-node
directories over ``/etc/libvirt /run/libvirt /var/lib/libvirt /var/cache/libvirt
/var/log/libvirt`` inside a private mount namespace (``unshare -m``). Each node has a
distinct ``host_uuid`` (libvirt refuses to migrate to "the same host"), listens on TCP
16509 on its own address only (no auth: the address exists only inside the lab), and
``migration_address``/``migration_host`` make the destination QEMU listen on, and
advertise, the node's address.

Shared storage: the lab's ``shared`` directory is mounted over itself with bindfs, typed
``fuse.glusterfs``, inside each node's mount namespace; libvirt accepts that as shared
storage (no ``VIR_MIGRATE_UNSAFE``), and the path is the same for libvirtd, pvcnoded and
tests. VM disks and serial console logs live there.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
import uuid
from typing import TYPE_CHECKING, Any

from pvc_lab.services import Service
from pvc_lab.spec import LabSpec, NodeSpec

if TYPE_CHECKING:
    from pvc_lab.lab import Lab
    from pvc_lab.procs import ProcRecord

TCP_PORT = 16509
BIND_DIRS = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt",
             "cache": "/var/cache/libvirt", "log": "/var/log/libvirt"}
CAPS_SUBDIR = os.path.join("qemu", "capabilities")


def shared_dir(spec: LabSpec) -> str:
    """The directory every node sees as shared storage (disks, console logs)."""
    return os.path.join(spec.state_dir, "shared")


def console_dir(spec: LabSpec) -> str:
    return os.path.join(shared_dir(spec), "console")


def available() -> str | None:
    """None if libvirtd can run here, else what is missing."""
    for binary, pkg in (("libvirtd", "libvirt-daemon"), ("qemu-system-x86_64", "qemu-system-x86"),
                        ("bindfs", "bindfs"), ("unshare", "util-linux")):
        if shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return f"{binary} is missing (apt-get install {pkg}; see scripts/bootstrap.sh)"
    return None


def libvirtd_conf(address: str, host_uuid: str) -> str:
    return "\n".join([
        "listen_tls = 0", "listen_tcp = 1", f'listen_addr = "{address}"',
        f'tcp_port = "{TCP_PORT}"', 'auth_tcp = "none"', 'auth_unix_ro = "none"',
        'auth_unix_rw = "none"', 'unix_sock_group = "root"', 'unix_sock_rw_perms = "0770"',
        'unix_sock_dir = "/run/libvirt"', f'host_uuid = "{host_uuid}"',
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"', ""])


def qemu_conf(address: str) -> str:
    return "\n".join([
        'user = "root"', 'group = "root"', "dynamic_ownership = 0", "remember_owner = 0",
        'security_driver = "none"', 'stdio_handler = "file"',
        f'migration_address = "{address}"', f'migration_host = "{address}"', ""])


def socket_path(spec: LabSpec, node: NodeSpec) -> str:
    return os.path.join(spec.node_dir(node.name), "libvirt", "run", "libvirt-sock")


def vm_kvm_config(spec: LabSpec, node: NodeSpec) -> dict[str, Any]:
    """The ``plugins.vm_kvm`` section of a lab node's pvcnoded.yaml: short timings, and a
    dead or hung libvirtd is restarted through ``pvc-lab service-restart``."""
    import sys

    from pvc_lab.guest import cache_dir

    pvc_lab = os.path.join(os.path.dirname(sys.executable), "pvc-lab")
    return {"libvirt_uri": f"qemu+unix:///system?socket={socket_path(spec, node)}",
            "migration_address": node.address, "poll_interval": 1, "shutdown_timeout": 30,
            "migrate_timeout": 120, "probe_cache": os.path.join(cache_dir(), "kvm-probe.json"),
            "crash_limit": 3, "crash_window": 120, "libvirt_timeout": 3,
            "libvirtd_restart_after": 5,
            "libvirtd_restart_command": f"{shlex.quote(pvc_lab)} --name {spec.name} "
                                        f"service-restart {node.name} libvirtd"}


def guests_running(node: NodeSpec) -> bool:
    """True if a QEMU guest process runs in the node's network namespace."""
    from pvc_lab.chaos import qemu_guests

    return bool(qemu_guests(node.netns))


class Libvirtd(Service):
    """One isolated libvirtd per node; clients use ``uri()`` (unix) or ``tcp_uri()``.

    ``prepare`` also builds the lab guest (kernel download + initramfs) once per machine.
    """

    name = "libvirtd"
    stop_grace = 8.0
    start_timeout = 120.0   # the first start of a machine probes QEMU (10-20 s per node)

    def __init__(self, caps_cache: str | None = None) -> None:
        from pvc_lab.guest import cache_dir

        self.caps_cache = caps_cache or os.path.join(cache_dir(), "libvirt-qemu-caps")

    # -- paths ------------------------------------------------------------------------
    def root(self, spec: LabSpec, node: NodeSpec) -> str:
        return os.path.join(self.dir(spec, node), "libvirt")

    def socket(self, spec: LabSpec, node: NodeSpec) -> str:
        return socket_path(spec, node)

    def uri(self, spec: LabSpec, node: NodeSpec) -> str:
        """Reaches the node's libvirtd from anywhere on this machine (any namespace)."""
        return f"qemu+unix:///system?socket={self.socket(spec, node)}"

    @staticmethod
    def tcp_uri(node: NodeSpec) -> str:
        """Reaches the node's libvirtd from inside the lab (what migrations use)."""
        return f"qemu+tcp://{node.address}/system"

    # -- Service ----------------------------------------------------------------------
    def prepare(self, spec: LabSpec, node: NodeSpec) -> None:
        from pvc_lab import guest, procs

        problem = available()
        if problem:
            raise procs.ProcError(problem)
        try:
            guest.build()
        except (guest.GuestError, OSError) as exc:
            raise procs.ProcError(f"cannot build the lab guest: {exc}") from None
        root = self.root(spec, node)
        for sub in BIND_DIRS:
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        run = os.path.join(root, "run")
        if not guests_running(node):  # a real /run is empty after a (re)boot, but a restart
            shutil.rmtree(run)        # of libvirtd alone keeps its state: its guests run on
            os.makedirs(run)
        os.makedirs(console_dir(spec), exist_ok=True)
        uuid_file = os.path.join(root, "host_uuid")
        if not os.path.exists(uuid_file):
            with open(uuid_file, "w") as fh:
                fh.write(str(uuid.uuid4()))
        with open(uuid_file) as fh:
            host_uuid = fh.read().strip()
        with open(os.path.join(root, "etc", "libvirtd.conf"), "w") as fh:
            fh.write(libvirtd_conf(node.address, host_uuid))
        with open(os.path.join(root, "etc", "qemu.conf"), "w") as fh:
            fh.write(qemu_conf(node.address))
        caps = os.path.join(root, "cache", CAPS_SUBDIR)
        warm = os.path.isdir(caps) and bool(os.listdir(caps))
        if not warm and os.path.isdir(self.caps_cache):   # skip the 4-9 s QEMU probe
            shutil.copytree(self.caps_cache, caps, dirs_exist_ok=True)

    def argv(self, spec: LabSpec, node: NodeSpec) -> list[str]:
        root = self.root(spec, node)
        shared = shared_dir(spec)
        q = shlex.quote
        lines = ["set -e"]
        for sub, target in BIND_DIRS.items():
            lines.append(f"mkdir -p {target}; mount --bind {q(os.path.join(root, sub))} {target}")
        lines += [
            f"mkdir -p {q(shared)}",
            # bindfs outlives a libvirtd that dies: the guests of this mount namespace keep
            # their console logs and disks (it ends when the node's namespace is emptied)
            "bindfs -f -o subtype=glusterfs,fsname=pvc-lab:/shared "
            f"{q(shared)} {q(shared)} &",
            "for i in $(seq 1 100); do "
            f"grep -q \" {shared} fuse.glusterfs \" /proc/self/mounts && break; sleep 0.05; done",
            "exec libvirtd --listen --pid-file /run/libvirt/libvirtd.pid "
            "--config /etc/libvirt/libvirtd.conf",
        ]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)]

    def ready(self, lab: Lab, node: NodeSpec, rec: ProcRecord) -> bool:
        """The socket answers and the QEMU capabilities are probed (slow only once)."""
        spec = lab.spec
        if not os.path.exists(self.socket(spec, node)):
            return False
        import libvirt

        conn = libvirt.open(self.uri(spec, node))
        try:
            conn.getCapabilities()
        finally:
            conn.close()
        self._save_caps(spec, node)
        return True

    def _save_caps(self, spec: LabSpec, node: NodeSpec) -> None:
        caps = os.path.join(self.root(spec, node), "cache", CAPS_SUBDIR)
        if os.path.isdir(caps) and os.listdir(caps) and not os.path.isdir(self.caps_cache):
            tmp = f"{self.caps_cache}.{os.getpid()}.tmp"
            shutil.copytree(caps, tmp)
            try:
                os.rename(tmp, self.caps_cache)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)

    def explain(self, lab: Lab, node: NodeSpec) -> str:
        if not os.path.exists(self.socket(lab.spec, node)):
            return f"no socket {self.socket(lab.spec, node)} yet"
        return "the socket does not answer"

    def describe(self, lab: Lab, node: NodeSpec) -> dict[str, Any]:
        return {"uri": self.uri(lab.spec, node), "tcp_uri": self.tcp_uri(node)}


def domains(uri: str) -> dict[str, int]:
    """{domain name: libvirt state} of every domain a libvirtd knows (for checks in tests)."""
    import libvirt

    conn = libvirt.open(uri)
    try:
        return {d.name(): d.state()[0] for d in conn.listAllDomains()}
    finally:
        conn.close()



class LibvirtNodes:
    """Throwaway libvirtd nodes for integration tests and benches (no ZooKeeper, no pvcnoded).

    Namespaces ``<prefix>-sw`` (bridge) and ``<prefix>-hv1..N`` on ``10.<a>.<b>.0/24``, one
    ``Libvirtd`` per node, state under ``state_dir``. ``close()`` stops every process in
    those namespaces (all started here) by PID and deletes them.
    """

    def __init__(self, prefix: str, count: int, state_dir: str, subnet: str) -> None:
        from pvc_lab.spec import LabSpec, NodeSpec

        base = subnet.rsplit(".", 1)[0]
        self.prefix = prefix
        self.switch = f"{prefix}-sw"
        self.nodes = [NodeSpec(f"hv{i}", i, f"{base}.{i}", f"{prefix}-hv{i}", True)
                      for i in range(1, count + 1)]
        self.spec = LabSpec(name=prefix.replace("-", "_")[:12], nodes=self.nodes, subnet=subnet,
                            state_dir=state_dir)
        self.service = Libvirtd()

    @property
    def shared(self) -> str:
        return shared_dir(self.spec)

    def node(self, name: str) -> NodeSpec:
        return self.spec.node(name)

    def uri(self, name: str) -> str:
        return self.service.uri(self.spec, self.node(name))

    def up(self, timeout: float = 90.0) -> None:
        from pvc_lab import netns, procs

        problem = available()
        if problem:
            raise RuntimeError(problem)
        prefixlen = self.spec.prefixlen
        netns.add(self.switch)
        netns.add_bridge(self.switch, "br0", self.spec.subnet.rsplit(".", 1)[0] + ".254",
                         prefixlen)
        for n in self.nodes:
            netns.add(n.netns)
            netns.add_port(self.switch, "br0", n.name, n.netns, n.address, prefixlen)
        started = [(n, self.service.start(self.spec, n)[0]) for n in self.nodes]
        deadline = time.monotonic() + timeout

        class _View:    # what Service.ready needs of a Lab
            spec = self.spec

        for n, rec in started:
            while True:
                try:
                    if self.service.ready(_View, n, rec):   # type: ignore[arg-type]
                        break
                except Exception:
                    pass
                if not procs.alive(rec.pid, rec.start):
                    raise RuntimeError(f"libvirtd on {n.name} exited; see "
                                       f"{self.service.log_file(self.spec, n)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"libvirtd on {n.name} not ready after {timeout:g} s")
                time.sleep(0.2)

    def close(self) -> None:
        from pvc_lab import netns, procs

        for ns in [n.netns for n in self.nodes] + [self.switch]:
            pids = {p: procs.start_time(p) for p in netns.pids(ns)}
            procs.terminate(pids, 3.0)
            netns.delete(ns)


def running_sets(uris: dict[str, str]) -> dict[str, set[str]]:
    """{node: names of the domains in state running there}, the nodes read one by one."""
    import libvirt

    return {node: {name for name, state in domains(uri).items()
                   if state == libvirt.VIR_DOMAIN_RUNNING} for node, uri in uris.items()}


def double_runs(first: dict[str, set[str]], second: dict[str, set[str]]) -> list[tuple]:
    """(vm, node, node) for each VM provably running on two nodes at one instant.

    The nodes are read one after another, so one pass alone can see a live migration's
    source before its switchover and its destination after it. With two passes in the same
    order, node X before node Y: if X ran v in both of its reads and Y ran v in its first
    read (which lies between them), or Y ran v in both reads and X in its second read (also
    between), v ran on both at that moment.
    """
    order = list(first)
    found = []
    for i, x in enumerate(order):
        for y in order[i + 1:]:
            for v in (first[x] & second[x] & first[y]) | (first[y] & second[y] & second[x]):
                found.append((v, x, y))
    return found


class InvariantSampler:
    """``with InvariantSampler(uris):`` reads every node's libvirtd in a thread all along and
    raises AssertionError at the end if any VM ever ran on two nodes at once."""

    def __init__(self, uris: dict[str, str], interval: float = 0.05) -> None:
        import threading

        self.uris = uris
        self.interval = interval
        self.samples = 0
        self.violations: list[tuple] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vm-invariant", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first, second = running_sets(self.uris), running_sets(self.uris)
            except Exception:      # a libvirtd restarting: skip this sample
                self._stop.wait(self.interval)
                continue
            self.violations += [(round(time.time(), 3), *v) for v in double_runs(first, second)]
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> InvariantSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        if exc[0] is None:
            assert self.samples > 0, "the invariant sampler never read the libvirtds"
            assert not self.violations, f"VMs ran on two nodes at once: {self.violations[:5]}"
