"""Administrator operations on VMs: they validate, then write desired state (never libvirt).

Used by the API routes; every write that can race is a version-checked transaction.
Errors are ``VmError(status, message)`` with the reference's messages where it has one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pvc_kernel.sdk import ConflictError, Store, schema
from pvc_plugins.vm_kvm import domxml, keys, nics, placement, records
from pvc_plugins.vm_kvm.errors import VmError
from pvc_plugins.vm_kvm.records import Record

log = logging.getLogger("pvc_plugins.vm_kvm")


def not_found(vm: str) -> VmError:
    return VmError(400, f"ERROR: Could not find VM '{vm}' in the cluster!")


def get(store: Store, vm: str, status: int = 400) -> Record:
    uuid = records.find(store, vm)
    rec = records.read(store, uuid) if uuid else None
    if rec is None:
        raise VmError(404, "VM not found.") if status == 404 else not_found(vm)
    return rec


def _tags(user: Iterable[str], protected: Iterable[str]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in user:
        out[name] = {"name": name, "type": "user", "protected": False}
    for name in protected:
        out[name] = {"name": name, "type": "user", "protected": True}
    return list(out.values())


def _parse(xml: str) -> domxml.Domain:
    try:
        return domxml.parse(xml)
    except domxml.XmlError as exc:
        raise VmError(400, f"ERROR: The provided XML is not valid: {exc}") from None


def _check_fit(store: Store, dom: domxml.Domain, node: str | None) -> list[placement.NodeInfo]:
    nodes = records.nodes(store)
    hosts = [n for n in nodes if n.hypervisor]
    if node is not None:
        target = next((n for n in nodes if n.name == node), None)
        if target is None:
            raise VmError(400, f"ERROR: Node '{node}' is not present in the cluster.")
        if not target.hypervisor:
            raise VmError(400, f"ERROR: Node '{node}' runs no hypervisor.")
        hosts = [target]
    if not hosts:
        raise VmError(400, "ERROR: No node in the cluster runs a hypervisor.")
    if not placement.could_ever_fit(hosts, dom.memory_mib, dom.vcpus):
        biggest = max(hosts, key=lambda n: n.memory_total)
        where = f"node '{node}'" if node else "any node"
        raise VmError(400, f"ERROR: VM '{dom.name}' ({dom.memory_mib} MiB, {dom.vcpus} vCPUs) "
                           f"does not fit {where}: the largest offers {biggest.memory_total} "
                           f"MiB and {biggest.cpu_count} CPUs.")
    return nodes


PLACEMENT_TRIES = 20
"""Defines placed again after a concurrent define changed the VMs first, before a 409."""


def _place(store: Store, dom: domxml.Domain, nodes: list[placement.NodeInfo],
           lacking: set[str], selector: str | None, limit: list[str] | None) -> str:
    """The node the selector picks for a new VM, counting every defined VM's load."""
    loads = records.loads_of(records.all_records(store))
    with_nets = [n for n in nodes if n.name not in lacking]
    if not any(n.hypervisor for n in with_nets):
        raise VmError(400, f"ERROR: No node has every network of VM '{dom.name}' up "
                           f"({', '.join(nics.devices(dom))}).")
    node = (placement.choose(with_nets, loads, dom.memory_mib, dom.vcpus, selector, limit)
            or placement.choose(with_nets, [], dom.memory_mib, dom.vcpus, selector, limit)
            or next((n.name for n in with_nets if n.hypervisor
                     and placement.could_ever_fit([n], dom.memory_mib, dom.vcpus)), None))
    if node is None:
        raise VmError(400, f"ERROR: No node with every network of VM '{dom.name}' can "
                           "hold it.")
    return node


def define(store: Store, xml: str, node: str | None = None, limit: list[str] | None = None,
           selector: str | None = None, autostart: bool = False,
           migration_method: str | None = None, max_downtime: int | None = None,
           user_tags: Iterable[str] = (), protected_tags: Iterable[str] = (),
           profile: str | None = None, state: str = keys.STOP, plugins: Any = None) -> Record:
    """Add a VM (initial state ``stop``) on ``node`` or the node its selector picks (one
    that has every network of its NICs; ``plugins`` answers which, see ``nics``)."""
    dom = _parse(xml)
    nodes = _check_fit(store, dom, node)
    nics.refuse_unusable(plugins, store, dom)
    lacking = nics.nodes_without(plugins, store, nics.devices(dom), [n.name for n in nodes])
    if node is not None:
        _refuse_lacking(dom.name, node, lacking)
    if records.find(store, dom.uuid) or store.exists("vm_name", vm_name=dom.name):
        raise VmError(400, f"ERROR: A VM with the name '{dom.name}' or UUID '{dom.uuid}' "
                           "already exists.")
    meta = {**keys.DEFAULT_META, "node_limit": limit or None,
            "node_selector": selector if selector in keys.SELECTORS else None,
            "node_autostart": bool(autostart),
            "migration_method": migration_method if migration_method in ("live", "shutdown")
            else None,
            "migration_max_downtime": int(max_downtime or keys.DEFAULT_MAX_DOWNTIME),
            "profile": profile}
    for parent in ("vms", "vm_names"):
        if not store.exists(parent):
            store.ensure(parent)
    u = dom.uuid
    for _attempt in range(PLACEMENT_TRIES):
        # every placed define bumps this key: of two defines placed on the same view of
        # the VMs, the second fails its version check and places again (with the first's VM)
        _, placed_version = store.get_versioned("vm_kvm.placement")
        target = node or _place(store, dom, nodes, lacking, selector, limit)
        txn = store.transaction()
        txn.create(schema.path("vm", uuid=u), dom.name.encode())
        for key, value in (("vm.xml", xml), ("vm.state", state), ("vm.node", target),
                           ("vm.last_node", ""), ("vm.meta", json.dumps(meta)),
                           ("vm.tags", json.dumps(_tags(user_tags, protected_tags))),
                           ("vm.request", json.dumps({"action": "define", "at": time.time()})),
                           ("vm.observed", "{}"), ("vm.stats", "{}"), ("vm.console", "")):
            txn.create(schema.path(key, uuid=u), value.encode())
        txn.create(schema.path("vm_name", vm_name=dom.name), u.encode())
        if node is None:
            mark, where = u.encode(), schema.path("vm_kvm.placement")
            if placed_version < 0:
                txn.create(where, mark)
            else:
                txn.set_data(where, mark, version=placed_version)
        try:
            store.commit(txn)
            break
        except ConflictError:
            if records.find(store, u) or store.exists("vm_name", vm_name=dom.name):
                raise VmError(400, f"ERROR: A VM with the name '{dom.name}' or UUID '{u}' "
                                   "already exists.") from None
    else:
        raise VmError(409, f"ERROR: VM '{dom.name}' could not be placed: other defines kept "
                           "changing the cluster; try again.")
    rec = records.read(store, u)
    assert rec is not None
    return rec


def _lacking(plugins: Any, store: Store, rec: Record, nodes: list[str]) -> set[str]:
    """Those of ``nodes`` without a network of the VM's NICs up."""
    return nics.nodes_without(plugins, store, nics.xml_devices(rec.xml), nodes)


def _refuse_lacking(vm: str, node: str, lacking: set[str]) -> None:
    if node in lacking:
        raise VmError(400, f"ERROR: Node '{node}' does not have every network of VM '{vm}' "
                           "up.")


def _write(store: Store, rec: Record, **values: Any) -> None:
    """Version-checked desired-state write (``state`` and ``node`` are checked)."""
    txn = store.transaction()
    for field, value in values.items():
        key = f"vm.{field}"
        data = value if isinstance(value, str) else json.dumps(value)
        version = {"state": rec.state_version, "node": rec.node_version}.get(field, -1)
        txn.set_data(schema.path(key, uuid=rec.uuid), data.encode(), version=version)
    try:
        store.commit(txn)
    except ConflictError:
        raise VmError(409, f"ERROR: VM '{rec.name}' changed meanwhile; try again.") from None


def _request(action: str, **extra: Any) -> dict[str, Any]:
    return {"action": action, "at": round(time.time(), 3), **extra}


STATE_MESSAGES = {keys.START: "Starting VM '{}'.", keys.SHUTDOWN: "Shutting down VM '{}'",
                  keys.STOP: "Forcibly stopping VM '{}'.", keys.RESTART: "Restarting VM '{}'.",
                  keys.DISABLE: "Disabled VM '{}'."}


def set_state(store: Store, vm: str, state: str, force: bool = False,
              plugins: Any = None) -> tuple[Record, str]:
    rec = get(store, vm)
    if state in (keys.SHUTDOWN, keys.RESTART) and rec.state not in keys.RUN_STATES:
        raise VmError(400, f"ERROR: VM '{rec.name}' is not running.")
    if state == keys.START:
        nodes = records.nodes(store)
        host = next((n for n in nodes if n.name == rec.node), None)
        if host is None or not host.hypervisor:
            raise VmError(400, f"ERROR: VM '{rec.name}' is assigned to node '{rec.node}', "
                               "which runs no hypervisor.")
        if rec.state not in keys.RUN_STATES:
            _refuse_lacking(rec.name, rec.node, _lacking(plugins, store, rec, [rec.node]))
    _write(store, rec, state=state, request=_request(state, force=bool(force)))
    return rec, STATE_MESSAGES[state].format(rec.name)


def migrate(store: Store, vm: str, action: str, node: str | None = None, force: bool = False,
            force_live: bool = False, plugins: Any = None) -> tuple[Record, str, str]:
    """migrate (temporary) | unmigrate | move (permanent); returns (record, target, message)."""
    rec = get(store, vm)
    if action == "unmigrate":
        if not rec.last_node:
            raise VmError(400, f"ERROR: VM '{rec.name}' is not migrated.")
        target, last = rec.last_node, ""
    else:
        if action == "migrate" and rec.last_node and not force:
            raise VmError(400, f"ERROR: VM '{rec.name}' has been previously migrated.")
        target = node or _choose(store, rec, plugins)
        last = (rec.last_node or rec.node) if action == "migrate" else ""
    nodes = {n.name: n for n in records.nodes(store)}
    host = nodes.get(target)
    if host is None:
        raise VmError(400, f"ERROR: Node '{target}' is not present in the cluster.")
    _refuse_lacking(rec.name, target, _lacking(plugins, store, rec, [target]))
    if target == rec.node:
        raise VmError(400, f"ERROR: VM '{rec.name}' is already running on node '{target}'.")
    running = rec.state in keys.RUN_STATES
    if running:
        if not host.hypervisor or host.daemon_state != "run":
            raise VmError(400, f"ERROR: Node '{target}' is not ready to run VMs.")
        used = placement.usage(v for v in records.loads_of(records.all_records(store))
                               if v.uuid != rec.uuid).get(target)
        if not placement.fits(host, rec.memory, rec.vcpus, used):
            raise VmError(400, f"ERROR: VM '{rec.name}' ({rec.memory} MiB) does not fit on "
                               f"node '{target}'.")
    values: dict[str, Any] = {"node": target, "last_node": last,
                              "request": _request(action, force_live=bool(force_live))}
    if running:
        values["state"] = keys.UNMIGRATE if action == "unmigrate" else keys.MIGRATE
    _write(store, rec, **values)
    verb = {"migrate": "Migrating VM '{}' to node '{}'.",
            "unmigrate": "Unmigrating VM '{}' back to node '{}'.",
            "move": "Permanently migrating VM '{}' to node '{}'."}[action]
    return rec, target, verb.format(rec.name, target)


def _choose(store: Store, rec: Record, plugins: Any = None) -> str:
    nodes = records.nodes(store)
    lacking = _lacking(plugins, store, rec, [n.name for n in nodes])
    target = placement.choose(nodes, records.loads_of(records.all_records(store)), rec.memory,
                              rec.vcpus, rec.meta.get("node_selector"),
                              rec.meta.get("node_limit"), exclude=[rec.node, *lacking],
                              moving=rec.uuid)
    if target is None:
        raise VmError(400, f"ERROR: Could not find a valid migration target for VM "
                           f"'{rec.name}'.")
    return target


def modify(store: Store, vm: str, xml: str, restart: bool = False, plugins: Any = None) -> str:
    rec = get(store, vm)
    dom = _parse(xml)
    nics.refuse_unusable(plugins, store, dom)
    if dom.uuid != rec.uuid:
        raise VmError(400, "ERROR: The UUID of a VM cannot be changed.")
    if dom.name != rec.name:
        raise VmError(400, "ERROR: Use rename to change the name of a VM.")
    _check_fit(store, dom, rec.node)
    if rec.state in keys.RUN_STATES:    # a NIC added now is plugged in on rec.node
        added = [d for d in nics.devices(dom) if d not in nics.xml_devices(rec.xml)]
        _refuse_lacking(rec.name, rec.node,
                        nics.nodes_without(plugins, store, added, [rec.node]))
    values: dict[str, Any] = {"xml": xml}
    if restart and rec.state in keys.RUN_STATES:
        values.update(state=keys.RESTART, request=_request("restart"))
    _write(store, rec, **values)
    return f"Modified VM '{rec.name}'." + (" Restarting it." if "state" in values else "")


def set_meta(store: Store, vm: str, changes: dict[str, Any]) -> str:
    rec = get(store, vm, status=404)
    updates = {k: v for k, v in changes.items() if v is not None}
    if not updates:
        raise VmError(400, "ERROR: No updates to apply.")
    meta = dict(rec.meta)
    if "node_limit" in updates:
        limit = updates["node_limit"]
        if isinstance(limit, str):
            limit = [n.strip() for n in limit.split(",") if n.strip()]
        meta["node_limit"] = limit or None
    if "node_selector" in updates:
        selector = updates["node_selector"]
        meta["node_selector"] = selector if selector in keys.SELECTORS else None
    if "migration_method" in updates:
        method = updates["migration_method"]
        meta["migration_method"] = method if method in ("live", "shutdown") else None
    for k in ("node_autostart", "migration_max_downtime", "profile"):
        if k in updates:
            meta[k] = updates[k]
    _write(store, rec, meta=meta)
    return f"Successfully modified PVC metadata of VM '{rec.name}'."


def tag(store: Store, vm: str, action: str, name: str | None, protected: bool = False) -> str:
    rec = get(store, vm, status=404)
    if not name:
        raise VmError(400, "ERROR: A tag name is required.")
    tags = [t for t in rec.tags if t.get("name") != name]
    if action == "add":
        tags.append({"name": name, "type": "user", "protected": bool(protected)})
        message = f"Added tag '{name}' to VM '{rec.name}'."
    else:
        found = next((t for t in rec.tags if t.get("name") == name), None)
        if found is None:
            raise VmError(400, f"ERROR: VM '{rec.name}' has no tag '{name}'.")
        if found.get("type") != "user":
            raise VmError(400, f"ERROR: Tag '{name}' is not a user tag.")
        if found.get("protected"):
            raise VmError(400, f"ERROR: Tag '{name}' is protected.")
        message = f"Removed tag '{name}' from VM '{rec.name}'."
    _write(store, rec, tags=tags)
    return message


def rename(store: Store, vm: str, new_name: str | None) -> str:
    rec = get(store, vm)
    if not new_name:
        raise VmError(400, "ERROR: A new name is required.")
    if rec.state not in (keys.STOP, keys.DISABLE) or rec.running_on:
        raise VmError(400, f"ERROR: VM '{rec.name}' is not stopped.")
    try:
        xml = domxml.rename(rec.xml, new_name)
        domxml.parse(xml)
    except domxml.XmlError as exc:
        raise VmError(400, f"ERROR: {exc}") from None
    if store.exists("vm_name", vm_name=new_name):
        raise VmError(400, f"ERROR: A VM named '{new_name}' already exists.")
    txn = store.transaction()
    txn.set_data(schema.path("vm.state", uuid=rec.uuid), rec.state.encode(),
                 version=rec.state_version)
    txn.set_data(schema.path("vm.xml", uuid=rec.uuid), xml.encode())
    txn.set_data(schema.path("vm", uuid=rec.uuid), new_name.encode())
    txn.delete(schema.path("vm_name", vm_name=rec.name))
    txn.create(schema.path("vm_name", vm_name=new_name), rec.uuid.encode())
    try:
        store.commit(txn)
    except ConflictError:
        raise VmError(400, f"ERROR: VM '{rec.name}' changed meanwhile or the name "
                           f"'{new_name}' was taken; try again.") from None
    return f"Renamed VM '{rec.name}' to '{new_name}'."


CONFIRMED_OFF = "fenced"
"""The daemon state of a node the cluster confirmed powered off (nothing runs there)."""
CAN_STOP = ("run", "init")
"""Daemon states of a node whose vm_kvm may still stop a VM and say so."""


def _hosts(rec: Record) -> list[str]:
    """The nodes the VM may be running on (a live migration runs it on both ends)."""
    obs = rec.observed
    if obs.get("state") not in keys.LIVE:
        return []
    return sorted({n for n in (obs.get("node"), obs.get("target")) if n})


def _not_off(store: Store, rec: Record) -> list[tuple[str, str]]:
    """[(node, daemon state)] of the nodes the VM may run on that are not confirmed off."""
    out = []
    for node in _hosts(rec):
        state = store.get("node.daemon_state", node=node) or "unknown"
        if state != CONFIRMED_OFF:
            out.append((node, state))
    return out


def remove(store: Store, vm: str, stop_timeout: float = 60.0) -> str:
    """Undefine: stop it (hard) if it runs, then delete its record (disks are kept).

    Refused (409, nothing deleted) unless the VM is confirmed stopped or every node it may
    run on is ``fenced`` (confirmed powered off): a record deleted while the VM still runs
    on a dead node or under a hung daemon would let it run twice later.
    """
    rec = get(store, vm)
    if rec.running_on or rec.state in keys.RUN_STATES:
        silent = [(n, st) for n, st in _not_off(store, rec) if st not in CAN_STOP]
        if silent:
            raise VmError(409, _still_runs(rec, silent, "its node cannot stop it"))
        if rec.state != keys.STOP:
            _write(store, rec, state=keys.STOP, request=_request("stop", by="remove"))
        wait_for(store, rec.uuid, lambda r: not _not_off(store, r), stop_timeout,
                 also=[("node.daemon_state", {"node": n}) for n in _hosts(rec)])
        current = records.read(store, rec.uuid)
        left = _not_off(store, current) if current is not None else []
        if left:
            raise VmError(409, _still_runs(current, left, f"it did not stop within "
                                           f"{stop_timeout:g} s (it was asked to stop)"))
    store.delete("vm_name", vm_name=rec.name)
    store.delete("vm", uuid=rec.uuid)
    store.delete("lock", lock=keys.lock_name(rec.uuid))
    return f"Removed VM '{rec.name}' from the cluster."


def _still_runs(rec: Record, nodes: list[tuple[str, str]], why: str) -> str:
    where = ", ".join(f"'{n}' (daemon state {st})" for n, st in nodes)
    return (f"ERROR: VM '{rec.name}' may still run on node {where}: {why}. It was not "
            "removed; remove it once it is stopped, or once the node is fenced (confirmed "
            "powered off).")


WATCHED = ("vm", "vm.state", "vm.node", "vm.observed")
"""The keys of a VM whose changes decide a wait: its existence, desired state and node, and
observed state (what ``done`` predicates look at); xml, meta, tags... are read, not watched."""
RECHECK = 2.0
"""Seconds after which a wait re-reads the record though no watch fired (a missed watch, or
a condition that also depends on keys not watched)."""
STOP_CHECK = 0.25
"""Seconds between looks at a wait's ``stop`` flag (local: no ZooKeeper access)."""
ERROR_RETRY = 0.5
"""Seconds before a wait that tolerates ZooKeeper errors reads again after one."""


class _Watches:
    """One-shot ZooKeeper watches on some keys (schema name, path arguments), all setting
    ``changed``; armed again before every read, so a change after the read always wakes
    the waiter.

    They are one-shot watches (``Store.watch_once``), not a ``data_watch``: nothing re-arms
    them once the wait returns, so none outlives it past its key's next change (or the
    connection's next loss), whereas a DataWatch stops only when its function is next called
    and re-registers itself across reconnections.
    """

    def __init__(self, store: Store, keys: Iterable[tuple[str, dict[str, str]]]) -> None:
        self.store = store
        self.keys = list(keys)
        self.changed = threading.Event()

    def _fired(self, _event: Any) -> None:
        self.changed.set()

    def arm(self) -> None:
        self.changed.clear()
        self.store.watch_once(self.keys, self._fired)


def wait_for(store: Store, uuid: str, done: Callable[[Record], bool], timeout: float,
             stop: Any = None, *, also: Iterable[tuple[str, dict[str, str]]] = (),
             recheck: float = RECHECK,
             errors: tuple[type[BaseException], ...] = ()) -> Record | None:
    """Wait until ``done(record)`` or the VM is gone; returns that record (None if gone),
    or None on timeout or once ``stop`` (anything with ``is_set()``, e.g. an Event) is set.

    Woken by watches on the VM's ``WATCHED`` keys and the schema keys in ``also`` (name,
    path arguments); the record is also re-read every ``recheck`` seconds. Exceptions of
    the ``errors`` types (e.g. ZooKeeper's, during an outage) are retried after
    ``ERROR_RETRY`` seconds until the deadline; any other propagates.
    """
    deadline = time.monotonic() + timeout
    watches = _Watches(store, [*((key, {"uuid": uuid}) for key in WATCHED), *also])
    while True:
        last = time.monotonic() >= deadline     # one more read at the deadline, unwatched
        pause = recheck
        try:
            if not last:
                watches.arm()
            rec = records.read(store, uuid)
            if rec is None or done(rec):
                return rec
        except errors as exc:
            log.debug("VM %s: waiting: %s; retrying", uuid, exc or type(exc).__name__)
            pause = ERROR_RETRY
        if last:
            return None
        until = min(deadline, time.monotonic() + pause)
        while True:
            if stop is not None and stop.is_set():
                return None
            left = until - time.monotonic()
            if left <= 0:
                break
            if watches.changed.wait(min(left, STOP_CHECK) if stop is not None else left):
                break
