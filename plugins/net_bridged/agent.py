"""The node side of the network model: keep this node's bridges ``vmbr<vni>`` as the
networks in ZooKeeper say, and report what was built.

What triggers a reconcile: the set of networks (``/networks`` children), any network's
record, the set of nodes and any node's static data (a VTEP appears, goes or changes: the
managed type's flood lists follow), and a timer every ``reconcile_interval``. Events only
ask for a reconcile; one thread of the agent runs them, one at a time, and requests that
arrive meanwhile are folded into one more run.

A reconcile, for every network: ask the plugin that owns its type for the port
(``pvc_network_port``), make ``vmbr<vni>`` with MTU min(the network's, the port's maximum)
(the maximum when the network has none), enslave the port with that MTU, bring both up,
and report ``/networks/<vni>/nodes/<node>``. Then every bridge PVC made for a network that
is gone is deleted and the port's plugin asked to remove the port
(``pvc_network_port_remove``). A problem with one network is logged and reported as its
state here and never stops the others; nothing is changed that is already right, so a
pvcnoded restart does not flap a link.

The reconcile thread is started in the namespace of the thread that calls ``start`` (as
pvcnoded runs in the host's), and opens its netlink sockets there.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from pvc_kernel.sdk import ChildrenChanged, ConflictError, Event, schema
from pvc_plugins.net_bridged import devices, keys
from pvc_plugins.net_bridged.config import NetConfig

log = logging.getLogger("pvc_plugins.net_bridged")

TIMER = "net_bridged.reconcile"


class Agent:
    """net_bridged on one node (``daemon``)."""

    def __init__(self, daemon: Any, cfg: NetConfig) -> None:
        self.daemon = daemon
        self.store = daemon.store
        self.node: str = daemon.node
        self.cfg = cfg
        self.watched: set[str] = set()
        self.wanted = threading.Event()
        self.stopping = threading.Event()
        self.done = threading.Condition()
        self.runs = 0                       # reconciles finished (tests wait on it)
        self.thread: threading.Thread | None = None
        self.problems: dict[int, str] = {}  # vni -> last error logged

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="net-reconcile", daemon=True)
        self.thread.start()
        bus = self.daemon.bus
        bus.watch_children("networks", obj="net:networks")
        bus.watch_children("nodes", obj="net:nodes")
        bus.every(self.cfg.reconcile_interval, TIMER, obj="net:reconcile")
        self.request()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reconciling (a running reconcile finishes); the devices stay."""
        self.stopping.set()
        self.wanted.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def request(self) -> None:
        """Ask for a reconcile soon (folded with any other request not yet started)."""
        self.wanted.set()

    def wait(self, runs: int, timeout: float = 30.0) -> bool:
        """Block until at least ``runs`` reconciles have finished (for tests)."""
        with self.done:
            return self.done.wait_for(lambda: self.runs >= runs, timeout)

    def _loop(self) -> None:
        while True:
            self.wanted.wait()
            if self.stopping.is_set():
                return
            self.wanted.clear()
            try:
                self.reconcile()
            except Exception as exc:
                log.warning("net_bridged: reconcile failed (%s); retrying at the next change "
                            "or in %g s", devices.message(exc), self.cfg.reconcile_interval)
            with self.done:
                self.runs += 1
                self.done.notify_all()

    # -- events ------------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        if self.stopping.is_set():
            return
        if isinstance(event, ChildrenChanged) and event.key in ("networks", "nodes"):
            self._watch(event.key, event.children)
        self.request()

    def _watch(self, key: str, children: tuple[str, ...]) -> None:
        """Watch the record of every network and the static data of every node (a watch
        stays when its key goes, and fires again if it comes back)."""
        bus = self.daemon.bus
        for child in children:
            tag = f"{key}:{child}"
            if tag in self.watched:
                continue
            self.watched.add(tag)
            if key == "networks":
                bus.watch_data("network", obj=f"net:network:{child}", vni=child)
            else:
                bus.watch_data("node.static", obj=f"net:node:{child}", node=child)

    # -- reconcile ---------------------------------------------------------------------
    def reconcile(self) -> None:
        """One pass over every network and every bridge PVC made here (see the module)."""
        present: set[int] = set()
        specs: dict[int, dict[str, Any]] = {}
        for child in self.store.children("networks"):
            if not child.isdigit():
                continue
            vni = int(child)
            present.add(vni)       # a record being written still keeps its bridge
            spec = self.store.get_json("network", vni=child)
            if isinstance(spec, dict):
                specs[vni] = {**spec, "vni": vni}
        for vni in sorted(specs):
            if self.stopping.is_set():
                return
            try:
                self.build(vni, specs[vni])
            except Exception as exc:
                log.exception("net_bridged: network %d failed on this node", vni)
                self.report(vni, {"bridge": devices.bridge_name(vni), "port": None,
                                  "mtu": None, "state": keys.ERROR,
                                  "error": devices.message(exc)})
        with devices.netlink() as ipr:
            made = devices.pvc_bridges(ipr)
        for vni in sorted(set(made) - present):
            try:
                self.remove(vni)
            except Exception as exc:
                log.warning("net_bridged: cannot remove the devices of removed network %d: %s",
                            vni, devices.message(exc))

    def build(self, vni: int, spec: dict[str, Any]) -> None:
        bridge = devices.bridge_name(vni)
        nettype = spec.get("nettype")
        port = self.daemon.plugins.call_first("pvc_network_port", obj=f"network:{vni}",
                                              daemon=self.daemon, network=spec)
        if port is None:
            self.fail(vni, bridge, f"no plugin builds networks of type {nettype!r} on this "
                                   "node")
            return
        if port.get("error") or not port.get("port"):
            self.fail(vni, bridge, str(port.get("error") or "the network's plugin named no "
                                                           "port"))
            return
        most = int(port.get("max_mtu") or 1500)
        mtu = min(int(spec.get("mtu") or most), most)
        with devices.netlink() as ipr:
            changed = devices.ensure_bridge(ipr, bridge, mtu)
            changed += devices.enslave(ipr, bridge, port["port"], mtu)
        if changed:
            log.info("net_bridged: network %d: %s with %s, mtu %d (%s)", vni, bridge,
                     port["port"], mtu, ", ".join(changed))
        if self.problems.pop(vni, None) is not None:
            log.info("net_bridged: network %d is up on this node again", vni)
        self.report(vni, {"bridge": bridge, "port": port["port"], "mtu": mtu,
                          "state": keys.UP, "error": None})

    def fail(self, vni: int, bridge: str, error: str) -> None:
        if self.problems.get(vni) != error:
            log.warning("net_bridged: network %d cannot be built on this node: %s", vni, error)
            self.problems[vni] = error
        self.report(vni, {"bridge": bridge, "port": None, "mtu": None, "state": keys.ERROR,
                          "error": error})

    def remove(self, vni: int) -> None:
        """Network ``vni`` is gone: delete its bridge, then ask each type's plugin to remove
        its port (only the owner of the type answers; the others return None)."""
        with devices.netlink() as ipr:
            devices.remove_bridge(ipr, devices.bridge_name(vni))
        removed = []
        for nettype in sorted(self.types()):
            done = self.daemon.plugins.call_first(
                "pvc_network_port_remove", obj=f"network:{vni}", daemon=self.daemon,
                network={"vni": vni, "nettype": nettype})
            if done:
                removed.append(nettype)
        self.problems.pop(vni, None)
        log.info("net_bridged: network %d is gone: removed %s%s", vni,
                 devices.bridge_name(vni),
                 f" and its {'/'.join(removed)} port" if removed else "")

    def types(self) -> set[str]:
        found: set[str] = set()
        for _name, declared in self.daemon.plugins.call_each("pvc_network_types"):
            found.update(declared or {})
        return found

    def report(self, vni: int, record: dict[str, Any]) -> None:
        """Write ``/networks/<vni>/nodes/<node>`` if it differs, and only while the network
        exists (a report must not bring back a network the API just removed)."""
        current = self.store.get_json("network.node", vni=vni, node=self.node)
        if current == record:
            return
        for _attempt in range(3):
            txn = self.store.transaction()
            txn.check(schema.path("network", vni=vni), -1)
            if not self.store.exists("network.nodes", vni=vni):
                txn.create(schema.path("network.nodes", vni=vni), b"")
            path = schema.path("network.node", vni=vni, node=self.node)
            data = json.dumps(record, sort_keys=True).encode()
            if self.store.exists("network.node", vni=vni, node=self.node):
                txn.set_data(path, data)
            else:
                txn.create(path, data)
            try:
                self.store.commit(txn)
                return
            except ConflictError:
                if not self.store.exists("network", vni=vni):
                    return
        log.warning("net_bridged: cannot report network %d: too many concurrent changes", vni)
