"""VM NICs and the networks behind them, as the network plugins describe them.

A NIC attaches to a host device (``<interface type='bridge'><source bridge='vmbr100'/>``, or
``type='direct'`` on ``dev``). The network plugins describe the devices their networks
provide (hook ``pvc_network_devices``): whether a VM may use one (``error``), and on which
nodes it is up (``nodes``). Devices no plugin knows (an administrator's own bridge) are
taken as they are. ``plugins`` is a ``PluginHost`` or None (then nothing is checked).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pvc_plugins.vm_kvm import domxml
from pvc_plugins.vm_kvm.errors import VmError

ATTACHED_TYPES = ("bridge", "direct")


def devices(dom: domxml.Domain) -> list[str]:
    """The host devices the VM's NICs attach to, in XML order, without repeats."""
    out: list[str] = []
    for nic in dom.nics:
        if nic["type"] in ATTACHED_TYPES and nic["source"] and nic["source"] not in out:
            out.append(nic["source"])
    return out


def describe(plugins: Any, store: Any, devs: list[str]) -> dict[str, dict[str, Any]]:
    """``{device: NetworkDevice}`` for the devices some network plugin knows."""
    if plugins is None or not devs:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for _name, answer in plugins.call_each("pvc_network_devices", obj="vm-nics", store=store,
                                           devices=list(devs)):
        if isinstance(answer, dict):
            found.update({d: a for d, a in answer.items() if d in devs and isinstance(a, dict)})
    return found


def devices_stamp(plugins: Any, store: Any) -> Any:
    """What changes whenever ``describe``'s answers may (every network plugin's
    ``pvc_network_devices_stamp``); a new object each call when one cannot tell."""
    if plugins is None:
        return ()
    stamps = plugins.call_each("pvc_network_devices_stamp", obj="vm-nics", store=store)
    if any(stamp is None for _name, stamp in stamps):
        return object()
    return tuple(sorted(stamps))


class Lookup:
    """``describe`` with a cache, for one request that shows many VMs."""

    def __init__(self, plugins: Any, store: Any) -> None:
        self.plugins, self.store = plugins, store
        self.known: dict[str, dict[str, Any] | None] = {}

    def __call__(self, devs: list[str]) -> dict[str, dict[str, Any]]:
        missing = [d for d in devs if d not in self.known]
        if missing:
            found = describe(self.plugins, self.store, missing)
            self.known.update({d: found.get(d) for d in missing})
        return {d: info for d in devs if (info := self.known.get(d)) is not None}


def refuse_unusable(plugins: Any, store: Any, dom: domxml.Domain) -> None:
    """A 400 naming the first NIC whose device no VM may use (its network does not exist)."""
    for dev, info in describe(plugins, store, devices(dom)).items():
        if info.get("error"):
            raise VmError(400, f"ERROR: VM '{dom.name}' has a NIC on '{dev}': "
                               f"{info['error']}.")


def xml_devices(xml: str) -> list[str]:
    """``devices`` of a VM's XML ([] when it cannot be read)."""
    try:
        return devices(domxml.parse(xml))
    except domxml.XmlError:
        return []


def nodes_without(plugins: Any, store: Any, devs: list[str], nodes: Iterable[str]) -> set[str]:
    """Those of ``nodes`` that lack one of ``devs`` (never a target for a VM on them)."""
    lacking: set[str] = set()
    names = set(nodes)
    for info in describe(plugins, store, devs).values():
        up = info.get("nodes")
        if isinstance(up, list):
            lacking |= names - set(up)
    return lacking


def users(all_records: Iterable[Any], devs: list[str]) -> dict[str, list[str]]:
    """``{device: [VM name]}`` of the VMs whose NICs attach to any of ``devs``."""
    wanted = set(devs)
    out: dict[str, list[str]] = {}
    for rec in all_records:
        try:
            dom = domxml.parse(rec.xml)
        except domxml.XmlError:
            continue
        for dev in set(devices(dom)) & wanted:
            out.setdefault(dev, []).append(rec.name)
    return {d: sorted(names) for d, names in out.items()}
