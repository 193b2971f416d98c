"""This node's network devices, through netlink (pyroute2 ``IPRoute``, no ``ip`` commands):
the bridges ``vmbr<vni>`` and the ``bridged`` type's port ``<bridge_device>.<vni>``.

Rules every function keeps:

* idempotent, and a device that is already right gets no request at all: a pvcnoded
  restart (or the periodic reconcile) must not flap a link VMs use;
* every device PVC creates carries the interface alias ``pvc`` (``IFLA_IFALIAS``, shown by
  ``ip link`` as ``alias pvc``); removal only ever deletes devices with it, so a device an
  administrator made (a VLAN device of the right name, a bridge) stays as it was.

Each function takes an open ``IPRoute`` (``ipr``) or opens one in the calling thread (so in
that thread's network namespace).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

ALIAS = "pvc"            # IFLA_IFALIAS of every device PVC made
IFF_UP = 0x1
ENODEV = 19
IFNAMSIZ = 15            # longest interface name
BRIDGE_PREFIX = "vmbr"


class DeviceError(Exception):
    """A device cannot be made as asked; the message says which and why."""


@dataclass(frozen=True)
class Link:
    """What this module needs to know of one link."""

    index: int
    name: str
    kind: str | None
    mtu: int
    up: bool
    alias: str | None
    master: int | None

    @property
    def ours(self) -> bool:
        return self.alias == ALIAS


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


def _code(exc: Exception) -> int | None:
    return getattr(exc, "code", None)


def get_link(ipr: Any, name: str) -> Link | None:
    """The link called ``name``, or None if there is none."""
    try:
        msgs = ipr.link("get", ifname=name)
    except Exception as exc:
        if _code(exc) == ENODEV:
            return None
        raise
    if not msgs:
        return None
    msg = msgs[0]
    return Link(index=msg["index"], name=msg.get("ifname") or name,
                kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                mtu=msg.get("mtu"), up=bool(msg["flags"] & IFF_UP),
                alias=msg.get("ifalias"), master=msg.get("master") or None)


def mark(ipr: Any, name: str) -> Link:
    """Give the link PVC just created the alias that says so (the kernel ignores an alias
    in the creating request); a device that cannot be marked is deleted again, so no
    unmarked device of PVC's stays behind."""
    link = get_link(ipr, name)
    if link is None:
        raise DeviceError(f"{name} vanished right after it was created")
    try:
        ipr.link("set", index=link.index, ifalias=ALIAS)
    except Exception:
        ipr.link("del", index=link.index)
        raise
    return get_link(ipr, name) or link


def delete_if_ours(ipr: Any, name: str) -> bool:
    """Delete ``name`` if PVC made it; True if deleted."""
    link = get_link(ipr, name)
    if link is None or not link.ours:
        return False
    try:
        ipr.link("del", index=link.index)
    except Exception as exc:
        if _code(exc) == ENODEV:
            return False
        raise
    return True


def set_mtu_up(ipr: Any, link: Link, mtu: int | None, up: bool = True) -> list[str]:
    """Set the MTU and bring the link up, each only if it differs; what was changed."""
    changed = []
    if mtu is not None and link.mtu != mtu:
        ipr.link("set", index=link.index, mtu=mtu)
        changed.append(f"mtu {link.mtu}->{mtu}")
    if up and not link.up:
        ipr.link("set", index=link.index, state="up")
        changed.append("up")
    return changed


def bridge_name(vni: int) -> str:
    return f"{BRIDGE_PREFIX}{vni}"


def ensure_bridge(ipr: Any, name: str, mtu: int) -> list[str]:
    """Make bridge ``name`` with ``mtu``, up. An existing one is kept (never deleted and made
    again) and changed only where it differs; what was changed (empty: nothing was sent)."""
    link = get_link(ipr, name)
    changed = []
    if link is None:
        ipr.link("add", ifname=name, kind="bridge")
        link = mark(ipr, name)
        changed.append("created")
    elif link.kind != "bridge":
        raise DeviceError(f"{name} exists and is not a bridge (kind {link.kind})")
    # Set after creation: an MTU set on the bridge stays, instead of following its ports.
    return changed + set_mtu_up(ipr, link, mtu)


def enslave(ipr: Any, bridge: str, port: str, mtu: int) -> list[str]:
    """Put ``port`` into ``bridge`` with ``mtu``, up; only what differs is sent."""
    br = get_link(ipr, bridge)
    if br is None:
        raise DeviceError(f"bridge {bridge} does not exist")
    link = get_link(ipr, port)
    if link is None:
        raise DeviceError(f"port {port} of {bridge} does not exist")
    changed = set_mtu_up(ipr, link, mtu, up=False)
    if link.master != br.index:
        ipr.link("set", index=link.index, master=br.index)
        changed.append(f"into {bridge}")
    if not link.up:
        ipr.link("set", index=link.index, state="up")
        changed.append("up")
    return changed


def remove_bridge(ipr: Any, name: str) -> bool:
    """Delete bridge ``name`` if PVC made it (its ports are released, not deleted)."""
    return delete_if_ours(ipr, name)


def pvc_bridges(ipr: Any) -> dict[int, str]:
    """The bridges ``vmbr<vni>`` PVC made on this node: {vni: name}."""
    found = {}
    for msg in ipr.get_links():
        name = msg.get("ifname") or ""
        vni = name[len(BRIDGE_PREFIX):]
        if (name.startswith(BRIDGE_PREFIX) and vni.isdigit() and msg.get("ifalias") == ALIAS
                and msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "bridge"):
            found[int(vni)] = name
    return found


# -- the bridged type -------------------------------------------------------------------

def vlan_name(cfg: Any, vni: int) -> str | None:
    return f"{cfg.bridge_device}.{vni}" if cfg.bridge_device else None


def bridged_port(cfg: Any, network: dict[str, Any], ipr: Any = None) -> dict[str, Any]:
    """The port of a bridged network: ``<bridge_device>.<vni>``. An existing device of that
    name is used as it is (an administrator's, or one made earlier); else an 802.1Q VLAN
    device (id = VNI) on ``bridge_device`` is made. ``{"port", "max_mtu"}`` or
    ``{"error"}``."""
    vni = int(network["vni"])
    name = vlan_name(cfg, vni)
    if name is None:
        return {"error": "bridge_device is not set in plugins.net_bridged on this node"}
    try:
        with netlink(ipr) as nl:
            if get_link(nl, name) is None:
                make_vlan(nl, cfg.bridge_device, name, vni)
    except Exception as exc:
        return {"error": f"cannot make {name}: {message(exc)}"}
    return {"port": name, "max_mtu": cfg.bridge_mtu}


def make_vlan(ipr: Any, parent: str, name: str, vid: int) -> None:
    """Create the 802.1Q device ``name`` (VLAN ``vid``) on ``parent`` and mark it."""
    if len(name) > IFNAMSIZ:
        raise DeviceError(f"the name is longer than {IFNAMSIZ} characters")
    if not 1 <= vid <= 4094:
        raise DeviceError(f"VLAN id {vid} is not within 1-4094")
    lower = get_link(ipr, parent)
    if lower is None:
        raise DeviceError(f"bridge_device {parent} does not exist")
    ipr.link("add", ifname=name, kind="vlan", link=lower.index, vlan_id=vid)
    mark(ipr, name)


def remove_bridged_port(cfg: Any, network: dict[str, Any], ipr: Any = None) -> bool:
    """Delete ``<bridge_device>.<vni>`` if PVC made it; an administrator's one stays."""
    name = vlan_name(cfg, int(network["vni"]))
    if name is None:
        return False
    with netlink(ipr) as nl:
        return delete_if_ours(nl, name)


def message(exc: Exception) -> str:
    """A netlink error as one line (pyroute2's NetlinkError carries errno and text)."""
    if isinstance(exc, DeviceError):
        return str(exc)
    args = getattr(exc, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return f"{args[1]} (errno {args[0]})"
    return str(exc) or type(exc).__name__
