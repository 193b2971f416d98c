"""VMs for other plugins (``pvc_vm_fit``, ``pvc_vm_define``, ``pvc_vm_set_state``,
``pvc_vm_undefine``): the same checks and writes as the ``/vm`` routes, called on the
primary by plugins that make VMs (the provisioner). A refusal raises ``VmError`` with the
message an administrator reads."""

from __future__ import annotations

from typing import Any

from pvc_kernel.sdk import Store
from pvc_plugins.vm_kvm import domxml, keys, placement, records, vms
from pvc_plugins.vm_kvm.errors import VmError


def fit(store: Store, name: str, memory_mb: int, vcpus: int,
        node_limit: list[str] | None) -> dict[str, Any]:
    """Whether VM ``name`` is free and a node can take ``memory_mb``/``vcpus`` now."""
    if store.exists("vm_name", vm_name=name):
        return {"ok": False, "reason": f"a VM named '{name}' already exists", "node": None}
    nodes = records.nodes(store)
    loads = records.loads_of(records.all_records(store))
    node = placement.choose(nodes, loads, memory_mb, vcpus, None, node_limit)
    if node is None:
        where = f" of {', '.join(node_limit)}" if node_limit else ""
        return {"ok": False, "node": None,
                "reason": f"no ready node{where} has {memory_mb} MiB of memory and {vcpus} "
                          "vCPUs free for it"}
    return {"ok": True, "reason": "", "node": node}


def define(store: Store, plugins: Any, definition: dict[str, Any]) -> dict[str, str]:
    rec = vms.define(store, definition["xml"], node=definition.get("node"),
                     limit=definition.get("node_limit"),
                     selector=definition.get("node_selector"),
                     autostart=bool(definition.get("node_autostart")),
                     migration_method=definition.get("migration_method"),
                     max_downtime=definition.get("migration_max_downtime"),
                     profile=definition.get("profile"),
                     state=definition.get("state") or keys.STOP, plugins=plugins)
    return {"uuid": rec.uuid, "name": rec.name, "node": rec.node}


def set_state(store: Store, plugins: Any, vm: str, state: str, wait: float = 0.0) -> bool:
    """As ``POST /vm/<vm>/state``; with ``wait``, until started or stopped (VmError if the
    VM failed, or did not get there in time)."""
    if state not in keys.STATES:
        raise VmError(400, f"unknown VM state {state!r}")
    rec, _message = vms.set_state(store, vm, state, plugins=plugins)
    if wait <= 0 or state not in (keys.START, keys.STOP):
        return True
    done = (lambda r: r.running_on == r.node or r.display_state == keys.FAIL) \
        if state == keys.START else (lambda r: r.running_on is None)
    final = vms.wait_for(store, rec.uuid, done, wait)
    if final is None or not done(final):
        raise VmError(409, f"VM '{rec.name}' did not {state} within {wait:g} s")
    if final.display_state == keys.FAIL:
        raise VmError(409, f"VM '{rec.name}' failed to start: "
                           f"{final.observed.get('failed_reason') or 'no reason given'}")
    return True


def undefine(store: Store, vm: str) -> bool:
    if records.find(store, vm) is None:
        return False
    vms.remove(store, vm)
    return True


def modify(store: Store, plugins: Any, vm: str, xml: str) -> bool:
    vms.modify(store, vm, xml, plugins=plugins)
    return True


def volumes(store: Store, vm: str) -> dict[str, Any] | None:
    """The VM's identity, states, XML, metadata and network volumes (``pool/name``)."""
    uuid = records.find(store, vm)
    rec = records.read(store, uuid) if uuid else None
    if rec is None:
        return None
    disks = domxml.disks(domxml.parse_root(rec.xml))
    return {"uuid": rec.uuid, "name": rec.name, "node": rec.node, "state": rec.state,
            "running_on": rec.running_on, "xml": rec.xml, "meta": dict(rec.meta or {}),
            "volumes": [d["source"] for d in disks
                        if d["type"] == "network" and d["protocol"] == "rbd" and d["source"]]}


def names(store: Store, tag: str | None = None) -> list[str]:
    """Every VM's name, or only those of the VMs with tag ``tag``; sorted."""
    return sorted(r.name for r in records.all_records(store)
                  if tag is None or any(t.get("name") == tag for t in r.tags or []))


def by_mac(store: Store, mac: str) -> dict[str, Any] | None:
    """The VM with a NIC of MAC ``mac``, and its profile."""
    import xml.etree.ElementTree as ET

    mac = mac.lower()
    for rec in records.all_records(store):
        if mac not in rec.xml.lower():                  # cheap first pass
            continue
        try:
            nics = domxml.nics(ET.fromstring(rec.xml))
        except ET.ParseError:
            continue
        if any(n["mac"].lower() == mac for n in nics):
            return {"uuid": rec.uuid, "name": rec.name, "node": rec.node,
                    "profile": (rec.meta or {}).get("profile")}
    return None
