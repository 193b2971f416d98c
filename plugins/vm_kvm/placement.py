"""Where a VM may run: memory fit checks and target selection (pure functions).

A node's VM memory capacity is its ``memory_total`` (the host's, or the plugin's
``memory_total`` override the node publishes). Its *allocated* memory is the sum of the
memory of the VMs assigned to it (desired node) in a running state, so decisions taken a
moment ago count before the VMs actually arrive. A VM fits a node when
``allocated + vm memory <= memory_total`` and its vCPUs are at most the node's CPUs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pvc_plugins.vm_kvm import keys


@dataclass
class NodeInfo:
    name: str
    memory_total: int
    cpu_count: int
    daemon_state: str = "run"
    domain_state: str = "ready"
    load: float = 0.0
    hypervisor: bool = True
    """The node runs vm_kvm (published its libvirt facts)."""
    usable: bool = True
    """Its libvirtd answers (a node whose libvirtd is down is no target)."""


@dataclass
class VmLoad:
    uuid: str
    node: str
    state: str
    memory: int
    vcpus: int


@dataclass
class Usage:
    allocated: int = 0
    provisioned: int = 0
    vcpus: int = 0
    vms: int = 0
    members: list[str] = field(default_factory=list)


def usage(vms: Iterable[VmLoad]) -> dict[str, Usage]:
    """Per node: memory of running-state VMs (allocated), of all VMs (provisioned), vCPUs of
    running-state VMs, and the number of VMs assigned."""
    out: dict[str, Usage] = {}
    for vm in vms:
        u = out.setdefault(vm.node, Usage())
        u.provisioned += vm.memory
        u.vms += 1
        u.members.append(vm.uuid)
        if vm.state in keys.RUN_STATES:
            u.allocated += vm.memory
            u.vcpus += vm.vcpus
    return out


def fits(node: NodeInfo, memory: int, vcpus: int, used: Usage | None) -> bool:
    allocated = used.allocated if used else 0
    return memory + allocated <= node.memory_total and vcpus <= node.cpu_count


def could_ever_fit(nodes: Iterable[NodeInfo], memory: int, vcpus: int) -> bool:
    """True if some hypervisor node is big enough for the VM when empty (define-time check)."""
    return any(n.hypervisor and memory <= n.memory_total and vcpus <= n.cpu_count
               for n in nodes)


def _score(selector: str, node: NodeInfo, used: Usage) -> tuple:
    """Smaller is better; ties go to the node name."""
    if selector == "memprov":
        return (-(node.memory_total - used.provisioned), node.name)
    if selector == "load":
        return (node.load, node.name)
    if selector == "vcpus":
        return (used.vcpus, node.name)
    if selector == "vms":
        return (used.vms, node.name)
    return (-(node.memory_total - used.allocated), node.name)   # mem


def choose(nodes: Iterable[NodeInfo], vms: Iterable[VmLoad], memory: int, vcpus: int,
           selector: str | None = None, node_limit: list[str] | None = None,
           exclude: Iterable[str] = (), moving: str | None = None) -> str | None:
    """The best node for a VM of ``memory`` MiB / ``vcpus``, or None if none fits.

    Candidates: usable hypervisor nodes in daemon state ``run`` and domain state ``ready``, in
    ``node_limit`` (if given), not in ``exclude``, on which the VM fits. ``moving`` is the
    uuid of the VM being placed: its own current assignment does not count against it.
    """
    selector = selector if selector in keys.SELECTORS else "mem"
    excluded = set(exclude)
    limit = set(node_limit or [])
    loads = [v for v in vms if v.uuid != moving]
    used = usage(loads)
    best = None
    for node in nodes:
        if (not node.hypervisor or not node.usable or node.daemon_state != "run"
                or node.domain_state != "ready"
                or node.name in excluded or (limit and node.name not in limit)):
            continue
        u = used.get(node.name, Usage())
        if not fits(node, memory, vcpus, u):
            continue
        score = _score(selector, node, u)
        if best is None or score < best[0]:
            best = (score, node.name)
    return best[1] if best else None
