"""This node's VXLAN devices ``vxlan<vni>`` (managed networks), through netlink (pyroute2
``IPRoute``, no ``ip``/``bridge`` commands).

``vxlan<vni>``: VXLAN id = VNI, UDP port 4789, local address = this node's VTEP, lower
device ``cluster_device``. In ``static`` mode learning is on and its flood list (the
all-zero MAC fdb entries ``00:00:00:00:00:00 dst <VTEP>``, head-end replication) is kept
exactly equal to the other nodes' VTEPs. In ``evpn`` mode it is ``nolearning`` and PVC
writes no fdb entry: zebra installs the flood list and the remote MACs from BGP EVPN routes.
A device made for the other mode differs in learning and is made again, which also drops
the flood entries PVC wrote in static mode. The bridge ``vmbr<vni>`` it is a port of is
net_bridged's.

As there: a device already right gets no request (no flap on a restart), and PVC marks what
it creates with the alias ``pvc`` and deletes only such devices. Each function takes an open
``IPRoute`` (``ipr``) or opens one in the calling thread (so in its network namespace).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("pvc_plugins.net_vxlan")

ALIAS = "pvc"                      # IFLA_IFALIAS of every device PVC made (as net_bridged)
PORT = 4789
FLOOD_MAC = "00:00:00:00:00:00"
ENODEV = 19
AF_INET = 2


class DeviceError(Exception):
    """A device cannot be made as asked; the message says which and why."""


@contextmanager
def netlink(ipr: Any = None) -> Iterator[Any]:
    """``ipr`` as given, or a new ``IPRoute`` (closed afterwards) in the thread's namespace."""
    if ipr is not None:
        yield ipr
        return
    from pyroute2 import IPRoute

    own = IPRoute()
    try:
        yield own
    finally:
        own.close()


def _get(ipr: Any, name: str) -> Any:
    """The RTM_NEWLINK message of ``name``, or None."""
    try:
        msgs = ipr.link("get", ifname=name)
    except Exception as exc:
        if getattr(exc, "code", None) == ENODEV:
            return None
        raise
    return msgs[0] if msgs else None


def port_name(vni: int) -> str:
    return f"vxlan{vni}"


def vtep_address(cfg: Any, ipr: Any = None) -> str | None:
    """This node's VTEP: ``vtep_address`` if set, else the first IPv4 address of
    ``cluster_device``; None if neither gives one."""
    if cfg.vtep_address:
        return cfg.vtep_address
    if not cfg.cluster_device:
        return None
    try:
        with netlink(ipr) as nl:
            link = _get(nl, cfg.cluster_device)
            if link is None:
                return None
            for msg in nl.get_addr(family=AF_INET, index=link["index"]):
                address = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
                if address:
                    return address
    except Exception as exc:
        log.warning("net_vxlan: cannot read the addresses of %s: %s", cfg.cluster_device, exc)
    return None


def peer_vteps(daemon: Any, cfg: Any) -> list[str]:
    """The other nodes' VTEPs (``vtep`` of their ``node.static``), sorted, without ours."""
    found = set()
    for node in daemon.store.children("nodes"):
        if node == daemon.node:
            continue
        static = daemon.store.get_json("node.static", {}, node=node)
        vtep = static.get("vtep") if isinstance(static, dict) else None
        if isinstance(vtep, str) and vtep:
            found.add(vtep)
    found.discard(cfg.vtep_address or "")
    return sorted(found, key=_sort_key)


def _sort_key(address: str) -> tuple[int, str]:
    try:
        return int(ipaddress.ip_address(address)), address
    except ValueError:
        return -1, address


def vxlan_port(cfg: Any, network: dict[str, Any], peers: list[str] | None,
               ipr: Any = None) -> dict[str, Any]:
    """Make or keep ``vxlan<vni>`` and its flood list (= ``peers``; None: EVPN mode, no
    learning and no flood list of ours). ``{"port", "max_mtu"}`` or ``{"error"}``."""
    vni = int(network["vni"])
    name = port_name(vni)
    if not cfg.cluster_device:
        return {"error": "cluster_device is not set in plugins.net_vxlan on this node"}
    try:
        with netlink(ipr) as nl:
            lower = _get(nl, cfg.cluster_device)
            if lower is None:
                return {"error": f"cluster_device {cfg.cluster_device} does not exist"}
            local = vtep_address(cfg, nl)
            if local is None:
                return {"error": f"no VTEP address: vtep_address is not set and "
                                 f"{cfg.cluster_device} has no IPv4 address"}
            index = ensure_vxlan(nl, name, vni, local, lower["index"], peers is not None)
            if peers is not None:
                sync_flood(nl, index, name, peers)
    except Exception as exc:
        return {"error": f"cannot make {name}: {message(exc)}"}
    return {"port": name, "max_mtu": cfg.max_mtu}


def _differences(msg: Any, vni: int, local: str, lower: int, learning: bool) -> list[str]:
    if msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") != "vxlan":
        return ["not a vxlan"]
    data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    want = {"IFLA_VXLAN_ID": vni, "IFLA_VXLAN_PORT": PORT, "IFLA_VXLAN_LOCAL": local,
            "IFLA_VXLAN_LINK": lower, "IFLA_VXLAN_LEARNING": int(learning)}
    have = {k: data.get(k) if data is not None else None for k in want}
    return [f"{k[11:].lower()} {have[k]} (want {v})" for k, v in want.items() if have[k] != v]


def ensure_vxlan(ipr: Any, name: str, vni: int, local: str, lower: int,
                 learning: bool = True) -> int:
    """Make ``name`` as described, up; an existing right one gets no request. One PVC made
    with other parameters (a new VTEP address, say) is made again; someone else's is an
    error. Its MTU is left to the bridge's reconcile (the kernel starts it at the lower
    device's minus 50). Returns its index."""
    msg = _get(ipr, name)
    if msg is not None:
        wrong = _differences(msg, vni, local, lower, learning)
        if not wrong:
            if not msg["flags"] & 1:
                ipr.link("set", index=msg["index"], state="up")
            return msg["index"]
        if msg.get("ifalias") != ALIAS:
            raise DeviceError(f"{name} exists, was not made by PVC and differs: "
                              + ", ".join(wrong))
        log.warning("net_vxlan: %s differs (%s); making it again", name, ", ".join(wrong))
        ipr.link("del", index=msg["index"])
    ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_port=PORT,
             vxlan_local=local, vxlan_link=lower, vxlan_learning=int(learning))
    msg = _get(ipr, name)
    if msg is None:
        raise DeviceError(f"{name} vanished right after it was created")
    try:
        ipr.link("set", index=msg["index"], ifalias=ALIAS)
    except Exception:
        ipr.link("del", index=msg["index"])
        raise
    ipr.link("set", index=msg["index"], state="up")
    return msg["index"]


def flood_entries(ipr: Any, index: int) -> set[str]:
    """The destinations of the all-zero MAC fdb entries of device ``index``."""
    found = set()
    for entry in ipr.fdb("dump", ifindex=index):
        if (entry["ifindex"] == index and entry.get("NDA_LLADDR") == FLOOD_MAC
                and entry.get("NDA_DST")):
            found.add(entry.get("NDA_DST"))
    return found


def sync_flood(ipr: Any, index: int, name: str, peers: list[str]) -> list[str]:
    """Make the flood list of ``index`` exactly ``peers``: append the missing, delete the
    stale, leave the right ones. What was changed."""
    have = flood_entries(ipr, index)
    want = set(peers)
    changed = []
    for dst in sorted(want - have, key=_sort_key):
        ipr.fdb("append", ifindex=index, lladdr=FLOOD_MAC, dst=dst)
        changed.append(f"+{dst}")
    for dst in sorted(have - want, key=_sort_key):
        ipr.fdb("del", ifindex=index, lladdr=FLOOD_MAC, dst=dst)
        changed.append(f"-{dst}")
    if changed:
        log.info("net_vxlan: %s floods to %s (%s)", name, ", ".join(sorted(want)) or "nobody",
                 " ".join(changed))
    return changed


def remove_vxlan_port(network: dict[str, Any], ipr: Any = None) -> bool:
    """Delete ``vxlan<vni>`` if PVC made it; True if deleted."""
    name = port_name(int(network["vni"]))
    with netlink(ipr) as nl:
        msg = _get(nl, name)
        if msg is None or msg.get("ifalias") != ALIAS:
            return False
        try:
            nl.link("del", index=msg["index"])
        except Exception as exc:
            if getattr(exc, "code", None) == ENODEV:
                return False
            raise
    return True


def message(exc: Exception) -> str:
    """A netlink error as one line (pyroute2's NetlinkError carries errno and text)."""
    if isinstance(exc, DeviceError):
        return str(exc)
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return f"{args[1]} (errno {args[0]})"
    return str(exc) or type(exc).__name__
