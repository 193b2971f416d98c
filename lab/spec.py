"""The shape of one lab: its name, nodes, addresses and namespace names (pure data).

A lab named ``pvc`` with 3 nodes has the namespaces ``pvc-sw`` (the switch: bridge
``br0`` and the administrator's address) and ``pvc-hv1`` .. ``pvc-hv3``; node ``hvI`` has
the address ``<subnet>.I`` on its ``eth0``, plugged into the bridge port ``hvI``.
The spec is saved as ``lab.json`` in the lab's state directory.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field

DEFAULT_NAME = "pvc"
NAME_ENV = "PVC_LAB_NAME"
STATE_ROOT_ENV = "PVC_LAB_STATE_ROOT"
DEFAULT_STATE_ROOT = "/var/tmp/pvc-lab"
DEFAULT_SUBNET = "10.250.0.0/24"
ADMIN_HOST = 254
FLOATING_HOST = 253     # the cluster's floating IP: on the primary only
MAX_NODES = 32
ZK_CLIENT_PORT = 2181
ZK_QUORUM_PORT = 2888
ZK_ELECTION_PORT = 3888
API_PORT = 7370
BRIDGE = "br0"
NODE_IFNAME = "eth0"
VLANS = (200, 201)
"""Stand-ins for VLANs of a VLAN-aware switch (this kernel has no 802.1Q): per VLAN a bridge
``vlan<id>`` in the switch namespace and, on every node, a veth named like the VLAN device
(``eth0.<id>``) plugged into it. net_bridged uses such a device as it is."""

# No '-' in lab names: namespace names are "<lab>-<node>", and a dash would let lab "a"
# and lab "a-hv1" claim each other's namespaces.
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,11}$")
_NS_RE = re.compile(r"^(sw|hv[0-9]+)$")


class SpecError(ValueError):
    """An invalid lab name, node count or state file."""


def check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise SpecError(f"invalid lab name {name!r}: use 1-12 lower-case letters, digits or '_', "
                        "starting with a letter")
    return name


def default_name() -> str:
    return os.environ.get(NAME_ENV) or DEFAULT_NAME


def state_root() -> str:
    return os.environ.get(STATE_ROOT_ENV) or DEFAULT_STATE_ROOT


def switch_netns(lab: str) -> str:
    return f"{lab}-sw"


def node_netns(lab: str, node: str) -> str:
    return f"{lab}-{node}"


def owns_netns(lab: str, ns: str) -> bool:
    """True if the namespace name ``ns`` belongs to lab ``lab``."""
    prefix = f"{lab}-"
    return ns.startswith(prefix) and bool(_NS_RE.match(ns[len(prefix):]))


@dataclass(frozen=True)
class NodeSpec:
    name: str
    index: int
    address: str
    netns: str
    coordinator: bool

    @property
    def port(self) -> str:
        """The node's bridge port (veth end) in the switch namespace."""
        return self.name


@dataclass
class LabSpec:
    name: str
    nodes: list[NodeSpec]
    subnet: str = DEFAULT_SUBNET
    api_key: str = ""
    created: float = 0.0
    state_dir: str = ""
    extra: dict = field(default_factory=dict)

    # -- derived ------------------------------------------------------------
    @property
    def switch_netns(self) -> str:
        return switch_netns(self.name)

    @property
    def admin_netns(self) -> str:
        return self.switch_netns

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    @property
    def admin_address(self) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + ADMIN_HOST)

    @property
    def floating_address(self) -> str:
        """The cluster's floating IP (net_vxlan's ``floating_ips``): the primary holds it on
        its ``eth0``, and pvcapid answers there."""
        return str(ipaddress.ip_network(self.subnet).network_address + FLOATING_HOST)

    @property
    def coordinators(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.coordinator]

    @property
    def zk_hosts(self) -> list[str]:
        return [f"{n.address}:{ZK_CLIENT_PORT}" for n in self.coordinators]

    @property
    def api_hosts(self) -> list[str]:
        return [f"{n.address}:{API_PORT}" for n in self.coordinators]

    @property
    def namespaces(self) -> list[str]:
        return [self.switch_netns] + [n.netns for n in self.nodes]

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise SpecError(f"lab {self.name} has no node {name!r} "
                        f"(nodes: {', '.join(n.name for n in self.nodes)})")

    def node_dir(self, node: str) -> str:
        return os.path.join(self.state_dir, node)

    # -- persistence --------------------------------------------------------
    def to_json(self) -> str:
        data = asdict(self)
        data.pop("state_dir")
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, state_dir: str = "") -> LabSpec:
        try:
            data = json.loads(text)
            nodes = [NodeSpec(name=str(n["name"]), index=int(n["index"]),
                              address=str(n["address"]), netns=str(n["netns"]),
                              coordinator=bool(n["coordinator"])) for n in data["nodes"]]
            spec = cls(name=check_name(str(data["name"])), nodes=nodes,
                       subnet=str(data.get("subnet", DEFAULT_SUBNET)),
                       api_key=str(data.get("api_key", "")),
                       created=float(data.get("created", 0.0)), state_dir=state_dir,
                       extra=dict(data.get("extra", {})))
        except (ValueError, KeyError, TypeError) as exc:
            raise SpecError(f"invalid lab state file: {exc}") from None
        if not spec.nodes:
            raise SpecError("invalid lab state file: no nodes")
        return spec


def build(name: str, nodes: int = 3, coordinators: int | None = None,
          subnet: str = DEFAULT_SUBNET, state_dir: str | None = None,
          api_key: str | None = None) -> LabSpec:
    """A new lab's spec: nodes hv1..hvN, the first ``coordinators`` of them coordinators."""
    check_name(name)
    if not 1 <= nodes <= MAX_NODES:
        raise SpecError(f"--nodes must be between 1 and {MAX_NODES}, not {nodes}")
    if coordinators is None:
        coordinators = min(nodes, 3)
    if not 1 <= coordinators <= nodes:
        raise SpecError(f"--coordinators must be between 1 and the node count ({nodes}), "
                        f"not {coordinators}")
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as exc:
        raise SpecError(f"invalid subnet {subnet!r}: {exc}") from None
    if net.version != 4 or net.num_addresses < 256:
        raise SpecError(f"subnet {subnet} must be IPv4 with a prefix of /24 or shorter")
    specs = [NodeSpec(name=f"hv{i}", index=i, address=str(net.network_address + i),
                      netns=node_netns(name, f"hv{i}"), coordinator=i <= coordinators)
             for i in range(1, nodes + 1)]
    return LabSpec(name=name, nodes=specs, subnet=str(net),
                   api_key=api_key or secrets.token_hex(16),
                   state_dir=state_dir or os.path.join(state_root(), name))
