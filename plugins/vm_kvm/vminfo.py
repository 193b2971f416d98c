"""The reference's VM object (``GET /vm``) built from a record (pure; no ZooKeeper here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc_plugins.vm_kvm import domxml, keys, nics
from pvc_plugins.vm_kvm.records import Record, display_state


def crashes_object(found: dict[str, Any]) -> dict[str, Any]:
    """``crashes``: count (in all), recent (within the crash window when last counted),
    last (epoch or null), node, reason."""
    return {"count": int(found.get("count") or 0), "recent": len(found.get("recent") or []),
            "last": found.get("last"), "node": found.get("node") or "",
            "reason": found.get("reason") or ""}


def _vni(source: str) -> str:
    for prefix in ("vmbr", "br"):
        if source.startswith(prefix) and len(source) > len(prefix):
            return source[len(prefix):]
    return source


def _networks(dom: domxml.Domain, stats: dict[str, Any],
              networks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    net_stats = stats.get("net") or []
    out = []
    for i, nic in enumerate(dom.nics):
        known = networks.get(nic["source"]) or {}
        leases = {m.lower(): a for m, a in (known.get("leases") or {}).items()}
        s = net_stats[i] if i < len(net_stats) and isinstance(net_stats[i], dict) else {}
        vni = _vni(nic["source"]) if nic["type"] == "bridge" else \
            f"macvtap:{nic['source']}" if nic["type"] == "direct" else nic["source"]
        out.append({"type": nic["type"], "vni": vni, "mac": nic["mac"], "source": nic["source"],
                    "model": nic["model"], "network": known.get("network"),
                    "address": leases.get(nic["mac"].lower()),
                    "rd_bytes": s.get("rx.bytes", 0), "rd_packets": s.get("rx.pkts", 0),
                    "rd_errors": s.get("rx.errs", 0), "rd_drops": s.get("rx.drop", 0),
                    "wr_bytes": s.get("tx.bytes", 0), "wr_packets": s.get("tx.pkts", 0),
                    "wr_errors": s.get("tx.errs", 0), "wr_drops": s.get("tx.drop", 0)})
    return out


def _disks(dom: domxml.Domain, stats: dict[str, Any]) -> list[dict[str, Any]]:
    by_dev = {b.get("name"): b for b in stats.get("block") or [] if isinstance(b, dict)}
    out = []
    for d in dom.disks:
        if d["type"] not in ("file", "block", "network"):
            out.append({})
            continue
        s = by_dev.get(d["target"], {})
        out.append({"type": d["protocol"] or d["type"], "name": d["source"] or "",
                    "dev": d["target"], "bus": d["bus"],
                    "rd_req": s.get("rd.reqs", 0), "rd_bytes": s.get("rd.bytes", 0),
                    "wr_req": s.get("wr.reqs", 0), "wr_bytes": s.get("wr.bytes", 0)})
    return out


def build(rec: Record, networks: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None
          ) -> dict[str, Any]:
    """The VM object; raises domxml.XmlError when the stored XML cannot be read.
    ``networks`` describes the devices of its NICs (``nics.Lookup``): each NIC shows its
    network's name and its live DHCP lease address."""
    dom = domxml.parse_cached(rec.xml)
    meta = rec.meta
    running = rec.observed.get("state") in keys.LIVE
    stats = rec.stats if running else {}
    return {
        "name": rec.name, "uuid": rec.uuid,
        "state": display_state(rec.state, rec.state_version, rec.observed),
        "node": rec.node, "last_node": rec.last_node,
        "migrated": f"from {rec.last_node}" if rec.last_node else "no",
        "failed_reason": rec.observed.get("failed_reason") or "",
        "node_limit": meta.get("node_limit") or None,
        "node_selector": meta.get("node_selector"),
        "node_autostart": bool(meta.get("node_autostart")),
        "migration_method": meta.get("migration_method"),
        "migration_max_downtime": int(meta.get("migration_max_downtime")
                                      or keys.DEFAULT_MAX_DOWNTIME),
        "tags": [{"name": t.get("name"), "type": t.get("type", "user"),
                  "protected": bool(t.get("protected"))} for t in rec.tags],
        "snapshots": [],
        "description": dom.description or "N/A",
        "profile": meta.get("profile"),
        "memory": dom.memory_mib,
        "memory_stats": stats.get("memory_stats") or {},
        "vcpu": dom.vcpus, "vcpu_topology": dom.vcpu_topology,
        "vcpu_stats": stats.get("vcpu_stats") or {},
        "networks": _networks(dom, stats, networks(nics.devices(dom)) if networks else {}),
        "type": dom.virt_type, "arch": dom.arch, "machine": dom.machine,
        "console": dom.console_type, "vnc": dom.vnc, "emulator": dom.emulator,
        "features": dom.features, "disks": _disks(dom, stats),
        "controllers": dom.controllers,
        "xml": rec.xml.replace('"', "'"),
        "crashes": crashes_object(rec.crashes),
        "running_on": rec.observed.get("node") if running else None,
        "libvirt_state": rec.observed.get("libvirt_state") if running else "shutoff",
    }


def meta_object(rec: Record) -> dict[str, Any]:
    meta = rec.meta
    autostart = meta.get("node_autostart")
    return {"name": rec.name, "node_limit": meta.get("node_limit") or None,
            "node_selector": meta.get("node_selector"),
            "node_autostart": None if autostart is None else str(bool(autostart)),
            "migration_method": meta.get("migration_method"),
            "migration_max_downtime": int(meta.get("migration_max_downtime")
                                          or keys.DEFAULT_MAX_DOWNTIME)}
