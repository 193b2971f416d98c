"""The types of the hook contracts: what hooks receive and what they answer.

``hookspecs.py`` names these in its signatures; they cost nothing at run time (Protocols and
TypedDicts are checked by type checkers and read by people), except the health check base
class and its result, which plugins subclass and build. A plugin may import them to type its
implementations. The dictionaries stay plain dicts on the wire (ZooKeeper records, API
answers), so ``total=False`` marks what may be left out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict

# -- what hooks receive ---------------------------------------------------------------------


class NodeConfigFace(Protocol):
    """The parts of ``pvc_kernel.config.NodeConfig`` plugins read."""

    node: str
    cluster: str
    coordinator: bool
    keepalive_interval: float
    fence_intervals: int
    suicide_intervals: int

    @property
    def fence_delay(self) -> float: ...

    @property
    def suicide_delay(self) -> float: ...

    def plugin_section(self, name: str) -> dict[str, Any]: ...


class NodeDaemonFace(Protocol):
    """The running pvcnoded as hooks see it (``pvc_kernel.daemon.NodeDaemon``)."""

    node: str
    config: NodeConfigFace
    store: Any          # pvc_kernel.state.Store
    bus: Any            # pvc_kernel.bus.Bus: watch_children/watch_data/every, publish
    plugins: Any        # pvc_kernel.plugins.PluginHost: call_each/call_first
    stopping: threading.Event
    in_service: threading.Event

    def self_fence_deadline(self) -> float: ...


class TaskContextFace(Protocol):
    """A running task (``pvc_kernel.tasks.TaskContext``): its record, progress, cancel."""

    store: Any
    record: dict[str, Any]
    daemon: NodeDaemonFace | None

    @property
    def id(self) -> str: ...

    @property
    def args(self) -> dict[str, Any]: ...

    @property
    def cancelled(self) -> bool: ...

    def check(self) -> None: ...

    def progress(self, current: int, total: int, message: str = "") -> None: ...


class ApiFace(Protocol):
    """pvcapid's application as hooks see it (``pvc_api.app.Api``)."""

    store: Any
    config: Any
    plugins: Any
    zk_timeout: float

    def add_route(self, route: Any) -> None: ...


Progress = Callable[[int, int, str], bool]
"""``progress(done, total, message)``; True back means: stop, the caller lost its claim."""

TaskHandler = Callable[[TaskContextFace], Any]


class VmRef(TypedDict):
    uuid: str
    name: str
    node: str


class DiskInfo(TypedDict, total=False):
    """One ``<disk>`` of a domain XML."""

    type: str               # file | block | network | ...
    device: str             # disk | cdrom | ...
    source: str | None      # a path, or "pool/volume"
    protocol: str | None    # rbd | None
    format: str | None      # raw | qcow2 | None
    target: str | None      # vda
    bus: str | None         # virtio | ...


class FenceInfo(TypedDict):
    """How a dead node was fenced (``pvc_node_recover``)."""

    powered_off: bool
    storage_cut: list[str]


class NetworkSpec(TypedDict, total=False):
    """A client network as an administrator defined it (desired state; the network model
    both network plugins share, stored by the plugin that owns ``/networks``). ``nettype``
    is one that a plugin declared in ``pvc_network_types``; its nodes build bridge
    ``vmbr<vni>``."""

    vni: int
    description: str
    nettype: str
    mtu: int | None               # None: the largest the node's device allows
    domain: str
    name_servers: list[str]
    ip4_network: str | None       # CIDR
    ip4_gateway: str | None
    dhcp4: bool
    dhcp4_start: str | None
    dhcp4_end: str | None
    ip6_network: str | None
    ip6_gateway: str | None


class NetworkAcl(TypedDict):
    """One firewall rule of a network (desired state, stored by the owner of ``/networks``
    in order, per direction: ``in`` for traffic routed into the network, ``out`` out of
    it). ``rule`` is rule text for the firewall the managed-network plugin builds; the
    owner of ``/networks`` stores only text that plugin's firewall loads (see
    docs/networks.md)."""

    description: str
    rule: str


# -- what hooks answer ----------------------------------------------------------------------


class LibvirtDiskAccess(TypedDict, total=False):
    hosts: list[dict[str, Any]]     # [{"name", "port"}]
    username: str | None
    secret: str | None              # libvirt secret UUID


class DiskAnswer(TypedDict, total=False):
    """``pvc_vm_disk_prepare``."""

    ok: bool
    reason: str
    shared: bool | None
    libvirt: LibvirtDiskAccess


class NetworkPort(TypedDict, total=False):
    """``pvc_network_port``: this node's uplink device of a network."""

    port: str           # the device to enslave to the network's bridge (exists now)
    max_mtu: int        # the largest MTU the network may have on this node
    error: str          # set (and port absent) when the device could not be made


class NetworkDevice(TypedDict, total=False):
    """``pvc_network_devices``: what a network plugin knows of a host device that VM NICs
    attach to (a bridge ``vmbr<vni>``, an SR-IOV VF, ...)."""

    network: str | None   # the network's description (None if the device names none)
    vni: int | None
    nettype: str | None
    error: str | None     # set when no VM may use the device (e.g. its network is gone)
    nodes: list[str]      # the nodes where the device is up now (VMs run only there)
    leases: dict[str, str]  # MAC -> address handed out on this network (live DHCP leases)


class UnlockAnswer(TypedDict, total=False):
    """``pvc_vm_disk_unlock``."""

    ok: bool
    reason: str
    removed: int


class StorageCutAnswer(TypedDict):
    """``pvc_storage_fence`` and ``pvc_storage_unfence``."""

    ok: bool
    reason: str
    addresses: list[str]


class RecoverAnswer(TypedDict):
    """``pvc_node_recover``: names, with a reason for the stopped and failed ones."""

    recovered: list[str]
    stopped: list[str]
    failed: list[str]


class HypervisorSecret(TypedDict):
    """``pvc_hypervisor_secrets``: ``value`` base64, never logged."""

    uuid: str
    usage_type: str
    usage_name: str
    value: str


class ClusterFaults(TypedDict):
    """``pvc_cluster_faults``: the faults (ID → (message, health delta)) that hold now, and
    the ID prefixes this plugin's cluster faults have (so that a new primary clears the ones
    whose condition ended before it took over)."""

    prefixes: list[str]
    faults: dict[str, tuple[str, int]]


class VmDefinition(TypedDict, total=False):
    """``pvc_vm_define``: a new VM from its complete domain XML; ``node`` None lets the VM
    plugin place it; ``state`` is its first desired state (``stop`` or ``provision``)."""

    xml: str
    node: str | None
    node_limit: list[str] | None
    node_selector: str | None
    node_autostart: bool
    migration_method: str | None
    migration_max_downtime: int | None
    profile: str | None
    state: str


class VmFit(TypedDict):
    """``pvc_vm_fit``: whether a VM of that name and size can be defined now; ``node`` the
    node it would go to, ``reason`` why not."""

    ok: bool
    reason: str
    node: str | None


class VmIdentity(TypedDict):
    """``pvc_vm_by_mac``: the VM that has a NIC with that MAC, and the profile it was made
    from (None if it was not made from one)."""

    uuid: str
    name: str
    node: str
    profile: str | None


class VolumeFacts(TypedDict, total=False):
    """``pvc_volume_facts``: what a VM's disk XML needs to reach the storage: the monitor
    hosts and port and the hypervisor secret's UUID, or nothing (storage without them)."""

    hosts: list[str]
    port: str
    secret: str | None


# -- health checks (``pvc_health_checks``) ---------------------------------------------------
# Unlike the types above, these two are used at run time: a check subclasses HealthCheck.

@dataclass
class CheckResult:
    """One run of a health check.

    ``delta``: what it takes off the node's health (0: healthy); ``message``: one line for
    ``pvc node info``; ``data``: details (JSON-serialisable) shown on request; ``fault``: the
    ID of a fault the plugin itself raises for this condition, so that the health plugin does
    not raise a second one for it.
    """

    delta: int = 0
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    fault: str | None = None


class HealthCheck:
    """A node health check, run by the health plugin on every node every interval.

    Set ``name`` (short, lower case, unique among all checks: it names the check in ``pvc
    node info`` and its fault ``NODE_PLUGIN_<NAME>_<NODE>``) and override ``run``. ``timeout``:
    seconds a run may take (None: the health plugin's ``check_timeout``); a run that takes
    longer or raises is reported as such, with the health plugin's ``error_delta``.
    """

    name: str = ""
    timeout: float | None = None

    def setup(self, daemon: NodeDaemonFace) -> str | None:
        """Once, before the first run: None if the check applies to this node, else why not
        (no such hardware or service); it is then shown as not applicable and never run."""
        return None

    def run(self, daemon: NodeDaemonFace) -> CheckResult:
        """Look at the node once (from a worker thread; may block up to ``timeout``)."""
        raise NotImplementedError

    def cleanup(self, daemon: NodeDaemonFace) -> None:
        """Once, when the daemon stops."""
