"""Shared fixtures of the vm_kvm integration tests (imported by the test_vm_* modules).

``vmcluster``: real libvirtds, each in its own network + mount namespace
(``pvct-vm-<random>-hv1..N``, shared storage typed fuse.glusterfs), one real pvcnoded per
node with the vm_kvm plugin (in the root namespace, talking to its libvirtd over the unix
socket; libvirtd-to-libvirtd migration traffic stays inside the namespaces), a private
ZooKeeper chroot. Everything is stopped by PID at the end.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.daemons import DaemonProcess, wait_for

BOOT_TIMEOUT = 90


def requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "python3-libvirt is missing (scripts/bootstrap.sh)"
    from pvc_lab.libvirt import available

    return available()


@dataclass
class VmCluster:
    nodes: Any                      # pvc_lab.libvirt.LibvirtNodes
    store: Any                      # pvc_kernel.state.Store
    image: Any                      # pvc_lab.guest.GuestImage
    daemons: dict[str, DaemonProcess] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def console(self, name: str) -> str:
        return os.path.join(self.nodes.shared, "console", f"{name}.log")

    def console_text(self, name: str) -> str:
        try:
            with open(self.console(name), errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def xml(self, name: str, memory: int = 128, disk: str | None = None,
            vm_uuid: str | None = None) -> str:
        from pvc_lab.guest import domain_xml

        self.names.append(name)
        try:
            os.unlink(self.console(name))
        except FileNotFoundError:
            pass
        return domain_xml(name, self.image, self.console(name), memory_mib=memory,
                          uuid=vm_uuid or str(uuidlib.uuid4()), disk=disk)

    def domains(self, node: str) -> dict[str, int]:
        from pvc_lab.libvirt import domains

        return domains(self.nodes.uri(node))

    def running_on(self) -> dict[str, list[str]]:
        """{vm name: [nodes whose libvirtd has it in state running]}."""
        from pvc_lab.libvirt import running_sets

        out: dict[str, list[str]] = {}
        uris = {n.name: self.nodes.uri(n.name) for n in self.nodes.nodes}
        for node, names in running_sets(uris).items():
            for name in names:
                out.setdefault(name, []).append(node)
        return out

    def ticks(self, name: str) -> list[tuple[int, float]]:
        out = []
        for line in self.console_text(name).splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "tick":
                try:
                    out.append((int(parts[1]), float(parts[2])))
                except ValueError:
                    pass
        return out

    def wait_booted(self, name: str, count: int = 1, timeout: float = BOOT_TIMEOUT) -> None:
        wait_for(lambda: self.console_text(name).count("GUEST-BOOTED") >= count
                 and self.ticks(name), timeout, 0.2, f"{name} to boot")

    def record(self, name: str):
        from pvc_plugins.vm_kvm import records

        uuid = records.find(self.store, name)
        return records.read(self.store, uuid) if uuid else None

    def wait_running(self, name: str, node: str, timeout: float = BOOT_TIMEOUT):
        return wait_for(lambda: (r := self.record(name)) and r.running_on == node
                        and r.observed.get("state") == "running" and r, timeout, 0.2,
                        f"{name} to run on {node}")

    def cleanup_vms(self) -> None:
        from pvc_plugins.vm_kvm import records, vms

        for uuid in records.uuids(self.store):
            try:
                vms.remove(self.store, uuid, stop_timeout=30)
            except vms.VmError:
                pass


def Sampler(cluster: VmCluster):   # noqa: N802  (reads like the class it returns)
    """The lab's invariant sampler over the cluster's libvirtds."""
    from pvc_lab.libvirt import InvariantSampler

    return InvariantSampler({n.name: cluster.nodes.uri(n.name) for n in cluster.nodes.nodes})


def node_config(cluster_nodes: Any, node: str, state_dir: str, **extra: Any) -> dict[str, Any]:
    return {"libvirt_uri": cluster_nodes.uri(node),
            "migration_address": cluster_nodes.node(node).address,
            "poll_interval": 0.5, "shutdown_timeout": 20, "migrate_timeout": 60,
            "probe_cache": os.path.join(state_dir, "kvm-probe.json"), **extra}


@pytest.fixture(scope="module")
def vmcluster(request, zk_server):
    """Two (or ``VM_NODES`` of the module) libvirt + pvcnoded nodes on one ZooKeeper chroot."""
    problem = requirements()
    if problem:
        pytest.skip(problem)
    from kazoo.client import KazooClient

    from pvc_kernel.state import Store, schema
    from pvc_lab.guest import build
    from pvc_lab.libvirt import LibvirtNodes
    from pvc_plugins.vm_kvm.keys import KEYS

    for key in KEYS:      # what the plugin host does in a daemon
        schema.register(key)
    import pvc_plugins.vm_kvm.hypervisor  # noqa: F401  (silences libvirt's stderr printing)
    count = getattr(request.module, "VM_NODES", 2)
    overrides = getattr(request.module, "VM_NODE_SETTINGS", {})
    tag = uuidlib.uuid4().hex[:4]
    state_dir = tempfile.mkdtemp(prefix="pvct-vm-")
    nodes = LibvirtNodes(f"pvct-vm-{tag}", count, state_dir,
                         f"10.248.{random.randint(1, 250)}.0/24")
    chroot = f"/vmt-{tag}"
    kz = KazooClient(hosts=zk_server.hosts)
    kz.start(timeout=30)
    kz.ensure_path(chroot)
    kz.stop()
    kz.close()
    hosts = zk_server.hosts + chroot
    store = Store(hosts, timeout=5)
    cluster = VmCluster(nodes=nodes, store=store, image=build())
    try:
        nodes.up()
        store.start()
        for n in nodes.nodes:
            settings = node_config(nodes, n.name, state_dir, **overrides.get(n.name, {}))
            d = DaemonProcess(state_dir, n.name, hosts, coordinator=n.index <= 3,
                              plugins={"vm_kvm": settings})
            cluster.daemons[n.name] = d.start()
        for n in nodes.nodes:
            try:
                wait_for(lambda n=n: store.get("node.daemon_state", node=n.name) == "run"
                         and store.exists("vm_kvm.node", node=n.name), 60, 0.2,
                         f"pvcnoded with vm_kvm on {n.name}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {cluster.daemons[n.name].log()[-3000:]}") from None
        yield cluster
    finally:
        try:
            if store.connected:
                cluster.cleanup_vms()
        finally:
            for d in cluster.daemons.values():
                d.kill()
            store.stop()
            nodes.close()
            shutil.rmtree(state_dir, ignore_errors=True)
