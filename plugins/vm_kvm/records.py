"""Reading VM records and the cluster's nodes from ZooKeeper, and version-checked writes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from pvc_kernel.sdk import Store, schema
from pvc_plugins.vm_kvm import domxml, keys
from pvc_plugins.vm_kvm.placement import NodeInfo, VmLoad


@dataclass
class Record:
    """One VM: desired state (with the version of its state key) and observed state."""

    uuid: str
    name: str
    xml: str
    state: str
    state_version: int
    node: str
    last_node: str
    meta: dict[str, Any]
    tags: list[dict[str, Any]]
    request: dict[str, Any]
    observed: dict[str, Any]
    node_version: int = -1
    memory: int = 0
    vcpus: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    crashes: dict[str, Any] = field(default_factory=dict)

    @property
    def display_state(self) -> str:
        """The state the API shows: ``fail`` while the last request failed, else desired."""
        return display_state(self.state, self.state_version, self.observed)

    @property
    def running_on(self) -> str | None:
        """The node the VM may be running on (observed), or None."""
        obs = self.observed
        return obs.get("node") if obs.get("state") in keys.LIVE else None


def display_state(state: str, version: int, observed: dict[str, Any]) -> str:
    if (observed.get("state") == keys.FAILED and observed.get("fail_version") == version
            and state in keys.RUN_STATES):
        return keys.FAIL
    return state


_READS = (("get", "vm"), ("get", "vm.xml"), ("versioned", "vm.state"), ("versioned", "vm.node"),
          ("get", "vm.last_node"), ("get", "vm.meta"), ("get", "vm.tags"), ("get", "vm.request"),
          ("get", "vm.observed"))
_SHOWN = (("get", "vm.stats"), ("get", "vm.crashes"))
"""Read too for what the API shows."""


def read(store: Store, uuid: str) -> Record | None:
    """The VM's record, or None if it is not defined."""
    if not schema.valid_segment(uuid):
        return None
    found = read_many(store, [uuid])
    return found[0] if found else None


def read_many(store: Store, uuids: list[str], shown: bool = False,
              timeout: float = 10.0) -> list[Record]:
    """The records of those of ``uuids`` that are defined, in one pipelined read; with
    ``shown`` their stats and crashes too (what the API shows)."""
    reads = _READS + _SHOWN if shown else _READS
    values = store.fetch([(kind, key, {"uuid": u}) for u in uuids for kind, key in reads],
                         timeout)
    out = []
    for i, uuid in enumerate(uuids):
        name, xml, (state, version), (node, node_version), last_node, meta, tags, request, \
            observed, *more = values[i * len(reads):(i + 1) * len(reads)]
        if name is None:
            continue
        rec = Record(uuid=uuid, name=name, xml=xml or "", state=state or keys.STOP,
                     state_version=version, node=node or "", node_version=node_version,
                     last_node=last_node or "", meta=keys.meta(meta),
                     tags=_typed(tags, []), request=_typed(request, {}),
                     observed=_typed(observed, {}))
        if more:
            rec.stats, rec.crashes = _typed(more[0], {}), _typed(more[1], {})
        try:
            dom = domxml.parse_cached(rec.xml)
            rec.memory, rec.vcpus = dom.memory_mib, dom.vcpus
        except domxml.XmlError:
            pass
        out.append(rec)
    return out


def _typed(text: str | None, default: Any) -> Any:
    """A stored JSON value, ``default`` when absent, invalid or not of its type."""
    value = keys.loads(text, default)
    return value if isinstance(value, type(default)) else default


def uuids(store: Store) -> list[str]:
    return store.children("vms")


def find(store: Store, name_or_uuid: str) -> str | None:
    """The uuid of a VM given by name or uuid."""
    if not schema.valid_segment(name_or_uuid):
        return None
    if store.exists("vm", uuid=name_or_uuid):
        return name_or_uuid
    return store.get("vm_name", vm_name=name_or_uuid)


def all_records(store: Store) -> list[Record]:
    """Every VM's record; with a view (pvcapid) kept between calls and read again only for
    VMs whose keys changed, so the records are shared: never change one."""
    kept = store.per_child("vm_kvm.records", "vms",
                           lambda found: {r.uuid: r for r in read_many(store, found)})
    return list(kept.values()) if kept is not None else read_many(store, uuids(store))


def loads_of(records: list[Record]) -> list[VmLoad]:
    return [VmLoad(r.uuid, r.node, r.state, r.memory, r.vcpus) for r in records]


def nodes(store: Store) -> list[NodeInfo]:
    """Every registered node as placement sees it."""
    out = []
    for name in store.children("nodes"):
        static = keys.loads(store.get("node.static", node=name), {})
        stats = keys.loads(store.get("node.stats", node=name), {})
        host = stats.get("host") if isinstance(stats.get("host"), dict) else {}
        vm_node = keys.loads(store.get("vm_kvm.node", node=name), None)
        total = (vm_node or {}).get("memory_total") or static.get("memory_total") or 0
        out.append(NodeInfo(
            name=name, memory_total=int(total), cpu_count=int(static.get("cpu_count") or 0),
            daemon_state=store.get("node.daemon_state", node=name) or "",
            domain_state=store.get("node.domain_state", node=name) or "",
            load=float(host.get("load") or 0.0), hypervisor=vm_node is not None,
            usable=(vm_node or {}).get("libvirt") != "down"))
    return out


def set_state_if(store: Store, rec: Record, state: str) -> bool:
    """Move the desired state on, only if nobody changed it since ``rec`` was read."""
    return store.set_if_version("vm.state", state, rec.state_version, uuid=rec.uuid)


def write_desired(store: Store, rec: Record, state: str, node: str | None = None,
                  last_node: str | None = None, meta: dict[str, Any] | None = None,
                  request: dict[str, Any] | None = None) -> None:
    """Change a VM's desired state in one transaction, version-checked against ``rec``
    (state, and node when given); raises ConflictError if someone changed it meanwhile."""
    txn = store.transaction()
    u = rec.uuid
    txn.set_data(schema.path("vm.state", uuid=u), state.encode(), version=rec.state_version)
    if node is not None:
        txn.set_data(schema.path("vm.node", uuid=u), node.encode(), version=rec.node_version)
    if last_node is not None:
        txn.set_data(schema.path("vm.last_node", uuid=u), last_node.encode())
    if meta is not None:
        txn.set_data(schema.path("vm.meta", uuid=u), json.dumps(meta).encode())
    if request is not None:
        txn.set_data(schema.path("vm.request", uuid=u),
                     json.dumps({**request, "at": round(time.time(), 3)}).encode())
    store.commit(txn)


def write_observed(store: Store, uuid: str, node: str, state: str, **extra: Any) -> None:
    value = {"node": node, "state": state, "since": round(time.time(), 3), **extra}
    store.set("vm.observed", json.dumps(value), uuid=uuid)
