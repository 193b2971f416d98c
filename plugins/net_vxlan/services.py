"""The primary-only services of managed networks: gateway addresses, one dnsmasq per network
(DHCP, DNS, RA) and the firewall (one nftables table for all of them, ``firewall``).

On ``pvc_become_primary`` every managed network's gateways are raised on ``vmbr<vni>`` and
announced (gratuitous ARP / unsolicited NA), then its dnsmasq is started; on
``pvc_become_secondary`` (also on a shutdown while primary) they are dropped in reverse
order. Both hooks return only when the work is done (or ``handover_timeout`` passed), so the
election announces the new primary, or releases the lock, after the services moved: the old
primary drops them before the new one raises them. A node that is not primary drops what a
crashed pvcnoded of its own may have left (addresses on ``vmbr<vni>``, a dnsmasq found by
its pid file).

While primary the set is kept as ZooKeeper says: a network added, changed or removed (the
``net:*`` bus events of net_bridged's watches), a reservation added or removed (a data
watch on ``/networks/<vni>/reservations``) and a change of its ACLs (a data watch on
``/networks/<vni>/acls``) trigger a reconcile; a network that cannot be
served yet (its bridge not built) is retried every ``retry_interval``. A dnsmasq that ends
without being asked is restarted (with a growing delay if it keeps failing) and a fault is
raised. Lease events reach us from dnsmasq's script over a unix socket (``leasehook``) and
are written to ``/networks/<vni>/leases/<mac>``.

All work runs on one thread of this object, started in the namespace of the thread that
calls ``start`` (pvcnoded's: the host's), so netlink sockets and dnsmasq live there.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from pvc_kernel.sdk import ConflictError, faults, schema
from pvc_plugins.net_vxlan import dhcp, firewall, gateway
from pvc_plugins.net_vxlan.config import NAME, SETTINGS, floating

log = logging.getLogger("pvc_plugins.net_vxlan")

MANAGED = "managed"
FAULT_DELTA = 10
FIREWALL = -1       # the firewall's entry in ``problems`` (keyed by VNI otherwise)
FLOATING = -2       # the floating IPs' entry
STABLE = 30.0       # seconds a restarted dnsmasq must run before its crash count resets
LEASE_RESYNC = 10.0  # seconds between looks at dnsmasq's lease files for lost events
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


def fault_id(vni: int) -> str:
    return f"net-dnsmasq-{vni}"


class Services:
    """The primary-only services of this node (``daemon``)."""

    def __init__(self, daemon: Any) -> None:
        values = SETTINGS.values(daemon.config, NAME)
        self.daemon = daemon
        self.store = daemon.store
        self.node: str = daemon.node
        self.run_dir = Path(values["run_dir"]) / self.node   # nodes may share a file system
        self.lease_time: int = values["dhcp_lease_time"]
        self.retry_interval: float = values["retry_interval"]
        self.handover_timeout: float = values["handover_timeout"]
        self.floating = [floating(entry) for entry in values["floating_ips"] or []]
        self.floating_problem: str | None = None
        self.primary = False
        self.firewall_up: bool | None = None   # None: unknown (a crashed pvcnoded's table?)
        self.dnsmasq: dict[int, dhcp.Dnsmasq] = {}
        self.failures: dict[int, tuple[int, float]] = {}   # vni -> (crashes in a row, next try)
        self.problems: dict[int, str] = {}
        self.services_wanted: set[str] = set()    # other plugins' addresses (on lo)
        self.watched: set[int] = set()
        self.wanted = threading.Event()
        self.stopping = threading.Event()
        self.done = threading.Condition()
        self.asked = self.finished = 0
        self.thread: threading.Thread | None = None
        self.relay: socket.socket | None = None
        self.lease_files: dict[int, float] = {}   # vni -> mtime of its lease file last read
        self.relay_inode = 0                        # of the lease socket we bound

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for path in (self.run_dir.parent, self.run_dir):
            path.chmod(0o755)                # dnsmasq reads its files as user nobody
        files = dhcp.Files(str(self.run_dir), 0)
        self._bind_relay()
        dhcp.write_hook(files)
        threading.Thread(target=self._relay_loop, name="net-leases", daemon=True).start()
        self.thread = threading.Thread(target=self._loop, name="net-primary", daemon=True)
        self.thread.start()
        self.request()            # as a secondary: drop what a crashed pvcnoded left

    def stop(self) -> None:
        """Drop the services if still primary (or a drop is under way), then stop the
        threads."""
        if self.primary or self.dnsmasq:
            self.become_secondary()
        self.stopping.set()
        self.wanted.set()
        if self.thread is not None:
            self.thread.join(self.handover_timeout)
        if self.relay is not None:
            self.relay.close()
            path = dhcp.Files(str(self.run_dir), 0).socket
            try:
                if path.stat().st_ino == self.relay_inode:   # not another daemon's
                    path.unlink()
            except FileNotFoundError:
                pass

    def become_primary(self) -> bool:
        """Raise every managed network's services; True when done within the time-out."""
        started = time.monotonic()
        self.primary = True
        done = self.sync()
        log.info("net_vxlan: primary services of %d network(s) up in %.2f s",
                 len(self.dnsmasq), time.monotonic() - started)
        return done

    def become_secondary(self) -> bool:
        """Drop every managed network's services; True when done within the time-out."""
        self.primary = False
        return self.sync()

    def request(self) -> None:
        """Ask for a reconcile soon."""
        with self.done:
            self.asked += 1
        self.wanted.set()

    def sync(self) -> bool:
        """Ask for a reconcile and wait until one that started after the request ended."""
        with self.done:
            self.asked += 1
            ticket = self.asked
        self.wanted.set()
        with self.done:
            return self.done.wait_for(lambda: self.finished >= ticket, self.handover_timeout)

    def on_event(self, event: Any) -> None:
        """A network changed (net_bridged's watches): reconcile (a secondary too: its
        bridges must not configure themselves from the primary's advertisements)."""
        if not self.stopping.is_set():
            self.request()

    def _loop(self) -> None:
        while True:
            retry = self.retry_interval if self.problems or self.failures else None
            self.wanted.wait(retry)
            if self.stopping.is_set():
                return
            self.wanted.clear()            # before the ticket: no request is lost between
            with self.done:
                ticket = self.asked
            try:
                self.reconcile()
            except Exception as exc:
                log.exception("net_vxlan: primary services reconcile failed")
                self.problems[0] = str(exc)   # retried every retry_interval
            with self.done:
                self.finished = max(self.finished, ticket)
                self.done.notify_all()

    # -- reconcile ---------------------------------------------------------------------
    def managed(self) -> dict[int, dict[str, Any]]:
        """Every managed network in ZooKeeper, by VNI."""
        out = {}
        for child in self.store.children("networks"):
            if child.isdigit():
                spec = self.store.get_json("network", vni=child)
                if isinstance(spec, dict) and spec.get("nettype") == MANAGED:
                    out[int(child)] = {**spec, "vni": int(child)}
        return out

    def reconcile(self) -> None:
        specs = self.managed()
        missing = {vni: f"{dhcp.bridge_name(vni)} does not exist (yet)" for vni in specs
                   if not gateway.quiet(dhcp.bridge_name(vni))}
        if not self.primary:
            self.hold_floating(False)
            self._drop_services(set())
            self.firewall_drop()
            for vni in sorted(set(specs) | set(self.dnsmasq) | self._leftovers(), reverse=True):
                self.drop(vni)
            self.problems = missing          # retried until the bridge is there and quiet
            self.failures.clear()
            return
        for vni in sorted(set(self.dnsmasq) - set(specs)):
            self.drop(vni)
        before, self.problems = self.problems, {}
        self.hold_floating(True)
        self.services_wanted = set()
        for vni, spec in sorted(specs.items()):      # gateways first: guests ping at once
            self._guard(vni, self.raise_gateways, spec, before)
        if not any(v in self.problems for v in specs):
            self._drop_services(self.services_wanted)     # none left over
        for vni, spec in sorted(specs.items()):
            if vni not in self.problems:
                self._guard(vni, self.raise_dhcp, spec, before)
        try:
            self.firewall_apply(specs)
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            if before.get(FIREWALL) != text:
                log.warning("net_vxlan: firewall not loaded: %s (retrying every %g s)", text,
                            self.retry_interval)
            self.problems[FIREWALL] = text
        for vni in sorted(specs):
            if vni in before and vni not in self.problems:
                log.info("net_vxlan: network %d: primary services up", vni)

    def _guard(self, vni: int, step: Any, spec: dict[str, Any], before: dict[int, str]) -> None:
        try:
            step(vni, spec)
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            if before.get(vni) != text:
                log.warning("net_vxlan: network %d: primary services not up yet: %s (retrying "
                            "every %g s)", vni, text, self.retry_interval)
            self.problems[vni] = text

    def service_addresses(self, spec: dict[str, Any]) -> list[str]:
        """What other plugins serve on the network's gateway (``pvc_network_gateway_
        addresses``), valid IPv4 addresses only."""
        plugins = getattr(self.daemon, "plugins", None)
        found: list[str] = []
        for name, answer in plugins.call_each("pvc_network_gateway_addresses",
                                              daemon=self.daemon, network=spec) \
                if plugins is not None else []:
            for cidr in answer or []:
                try:
                    text = str(ipaddress.IPv4Interface(cidr))
                except ValueError:
                    log.error("net_vxlan: plugin %s asked for gateway address %r: not an "
                              "address/prefix", name, cidr)
                    continue
                if text not in found:
                    found.append(text)
        return found

    def raise_gateways(self, vni: int, spec: dict[str, Any]) -> None:
        bridge = dhcp.bridge_name(vni)
        addresses = gateway.wanted(spec)
        services = self.service_addresses(spec)
        self.services_wanted.update(services)
        for version in gateway.route({ipaddress.ip_interface(a).version for a in addresses}):
            log.info("net_vxlan: IPv%d forwarding turned on (this node routes the managed "
                     "networks)", version)
        added, removed = gateway.ensure(bridge, addresses)
        held, _ = gateway.hold_services(gateway.service_addresses() | set(services))
        if held:
            log.info("net_vxlan: service address %s held (for the managed networks)",
                     ", ".join(held))
        if added or held:
            gateway.announce(bridge, added + services)
        if added or removed:
            log.info("net_vxlan: network %d: gateway %s on %s%s", vni, ", ".join(added) or "-",
                     bridge, f" (removed {', '.join(removed)})" if removed else "")

    def _drop_services(self, keep: set[str]) -> None:
        """Release the service addresses not in ``keep`` (all of them when not primary,
        also those a crashed primary left)."""
        try:
            _, removed = gateway.hold_services(gateway.service_addresses() & keep)
        except Exception as exc:
            log.warning("net_vxlan: cannot release the service addresses: %s", exc)
            return
        if removed:
            log.info("net_vxlan: service address %s released", ", ".join(removed))

    def raise_dhcp(self, vni: int, spec: dict[str, Any]) -> None:
        """Start, restart or update the network's dnsmasq as ``spec`` and its reservations
        say (stopped when the network has no addresses to serve)."""
        self._watch(vni)
        if not dhcp.serves(spec):
            self._stop_dnsmasq(vni)
            return
        files = dhcp.Files(str(self.run_dir), vni)
        _changed, removed = dhcp.sync_hosts(files, self._records("network.reservation",
                                                                 "network.reservations", vni))
        args = dhcp.arguments(spec, files, self.lease_time)
        current = self.dnsmasq.get(vni)
        if current is not None and current.running() and current.args == args:
            if removed:
                current.reload()
            if time.monotonic() - current.started > STABLE:
                self.failures.pop(vni, None)
            return
        if current is not None and not current.running() and not current.stopping:
            crashes, not_before = self.failures.get(vni, (0, 0.0))
            if time.monotonic() < not_before:
                raise RuntimeError(f"dnsmasq ended ({current.exit_message()}); restarting "
                                   f"in {not_before - time.monotonic():.0f} s")
            message = (f"Network {vni}: dnsmasq on {self.node} ended unexpectedly "
                       f"({current.exit_message()}); restarted")
            log.error("net_vxlan: %s", message)
            faults.report(self.store, fault_id(vni), message, FAULT_DELTA)
            self.failures[vni] = (crashes + 1, time.monotonic() + min(60.0, 2.0 ** crashes))
        if current is not None:
            current.stop()
        new = dhcp.Dnsmasq(files, vni, args, on_exit=self._exited)
        new.start(self._live_leases(vni))
        self.dnsmasq[vni] = new
        log.info("net_vxlan: network %d: dnsmasq started (pid %d)", vni, new.pid)

    def hold_floating(self, primary: bool) -> None:
        """Raise (and announce) or drop the floating IPs; a device that is missing is a
        problem retried like a network's."""
        for cidr, device in self.floating:
            try:
                if gateway.hold(device, cidr, primary):
                    if primary:
                        gateway.announce(device, [cidr])
                    log.info("net_vxlan: floating IP %s %s %s", cidr,
                             "raised on" if primary else "dropped from", device)
                self.floating_problem = None
            except Exception as exc:
                text = f"floating IP {cidr} on {device}: {exc}"
                if self.floating_problem != text:
                    log.warning("net_vxlan: %s (retrying every %g s)", text,
                                self.retry_interval)
                self.floating_problem = self.problems[FLOATING] = text

    def firewall_apply(self, specs: dict[int, dict[str, Any]]) -> None:
        """Make the firewall table what every managed network and its ACLs say (a no-op when
        it already is); ACLs this node's nft refuses are left out, logged and a fault."""
        for vni in specs:
            self._watch(vni)
        acls = {vni: self.store.get_json("network.acls", {}, vni=vni) or {} for vni in specs}
        applied = firewall.apply(list(specs.values()), acls)
        self.firewall_up = True
        if applied.changed:
            log.info("net_vxlan: firewall of %d network(s) loaded", len(specs))
        for vni, direction, name, why in applied.skipped:
            message = (f"Network {vni}: ACL {name!r} ({direction}) left out of the firewall "
                       f"on {self.node}: {why}")
            log.error("net_vxlan: %s", message)
            faults.report(self.store, f"net-acl-{vni}-{name}", message, FAULT_DELTA)

    def firewall_drop(self) -> None:
        """Remove the firewall table here (also one a crashed pvcnoded left: once at start)."""
        if self.firewall_up is not False:
            firewall.remove()
            self.firewall_up = False

    def drop(self, vni: int) -> None:
        """Drop network ``vni``'s services here: dnsmasq, gateways (the firewall is dropped
        for all networks at once, first)."""
        self._stop_dnsmasq(vni)
        removed = gateway.drop(dhcp.bridge_name(vni))
        if removed:
            log.info("net_vxlan: network %d: gateway %s dropped", vni, ", ".join(removed))
        self.problems.pop(vni, None)

    def _stop_dnsmasq(self, vni: int) -> None:
        current = self.dnsmasq.pop(vni, None)
        if current is not None:
            current.stop()
            log.info("net_vxlan: network %d: dnsmasq stopped", vni)
        files = dhcp.Files(str(self.run_dir), vni)
        old = dhcp.leftover(files)
        if old is not None:
            log.info("net_vxlan: network %d: stopping a leftover dnsmasq (pid %d)", vni, old)
            dhcp.kill(old)

    def _leftovers(self) -> set[int]:
        """Networks whose dnsmasq pid file is in the run directory."""
        found = set()
        for path in self.run_dir.glob("dnsmasq-*.pid"):
            vni = path.name[len("dnsmasq-"):-len(".pid")]
            if vni.isdigit():
                found.add(int(vni))
        return found

    def _exited(self, proc: dhcp.Dnsmasq) -> None:
        if self.dnsmasq.get(proc.vni) is proc and self.primary:
            log.warning("net_vxlan: network %d: dnsmasq (pid %s) ended: %s", proc.vni, proc.pid,
                        proc.exit_message())
            self.request()

    def _watch(self, vni: int) -> None:
        """Reconcile when the network's reservations change (the API sets the container's
        value with every change; a data watch also sees it appear)."""
        if vni in self.watched:
            return
        self.watched.add(vni)

        def changed(_data: Any, _stat: Any) -> bool:
            if self.primary and not self.stopping.is_set():
                self.request()
            return not self.stopping.is_set()

        self.store.data_watch("network.reservations", changed, vni=vni)
        self.store.data_watch("network.acls", changed, vni=vni)

    def _live_leases(self, vni: int) -> list[dict[str, Any]]:
        """The network's leases in ZooKeeper; expired ones are deleted (no dnsmasq will say
        ``del`` for a lease it never knew)."""
        live, now = [], time.time()
        for record in self._records("network.lease", "network.leases", vni):
            expiry = int(record.get("expiry") or 0)
            if expiry and expiry <= now:
                self.store.delete("network.lease", vni=vni, mac=record["mac"])
            else:
                live.append(record)
        return live

    def _records(self, item: str, container: str, vni: int) -> list[dict[str, Any]]:
        out = []
        for mac in self.store.children(container, vni=vni):
            record = self.store.get_json(item, vni=vni, mac=mac)
            if isinstance(record, dict) and record.get("mac"):
                out.append(record)
        return out

    # -- leases --------------------------------------------------------------------------
    def _bind_relay(self) -> None:
        """Bind the lease socket afresh (whatever file is at its path goes)."""
        path = dhcp.Files(str(self.run_dir), 0).socket
        path.unlink(missing_ok=True)
        relay = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        relay.bind(str(path))
        relay.settimeout(0.5)
        self.relay_inode = path.stat().st_ino
        old, self.relay = self.relay, relay
        if old is not None:
            old.close()

    def _check_relay(self) -> None:
        """Bind the lease socket again when its file was removed, so that the hook's events
        reach us again; warn when another process bound its path (two daemons sharing one
        ``run_dir`` under the same node name: only one of them gets the events)."""
        path = dhcp.Files(str(self.run_dir), 0).socket
        try:
            inode = path.stat().st_ino
        except FileNotFoundError:
            log.warning("net_vxlan: the lease socket %s was removed; binding it again", path)
            self._bind_relay()
            return
        if inode != self.relay_inode:
            log.warning("net_vxlan: another process bound the lease socket %s (is run_dir "
                        "shared by two daemons named %s?); binding it again", path, self.node)
            self._bind_relay()

    def _relay_loop(self) -> None:
        resynced = time.monotonic()
        while not self.stopping.is_set():
            assert self.relay is not None
            try:
                data = self.relay.recv(65536)
            except TimeoutError:
                data = b""
            except OSError:
                if self.stopping.wait(0.5):
                    return
                data = b""
            if data:
                try:
                    self.record_lease(json.loads(data))
                except Exception:
                    log.exception("net_vxlan: cannot record a lease event %r", data[:200])
            if time.monotonic() - resynced >= LEASE_RESYNC:
                resynced = time.monotonic()
                try:
                    self._check_relay()
                except OSError as exc:
                    log.warning("net_vxlan: cannot bind the lease socket: %s", exc)
                self.resync_leases()

    def resync_leases(self) -> None:
        """Record what each running dnsmasq's lease file holds, when the file changed since
        the last look: a lease whose event the hook could not deliver is written anyway
        (``record_lease`` leaves an unchanged lease alone)."""
        for vni, server in list(self.dnsmasq.items()):
            try:
                mtime = server.files.leases.stat().st_mtime
                if not server.running() or self.lease_files.get(vni) == mtime:
                    continue
                for event in dhcp.read_leases(server.files.leases.read_text(), vni):
                    self.record_lease(event)
                self.lease_files[vni] = mtime
            except Exception as exc:      # retried at the next look
                log.warning("net_vxlan: network %d: cannot read its lease file: %s", vni, exc)

    def record_lease(self, event: dict[str, Any]) -> None:
        """Write (add, old) or delete (del) ``/networks/<vni>/leases/<mac>``, only while the
        network exists."""
        vni, mac = int(event["vni"]), str(event["mac"])
        if not _MAC.match(mac):
            return
        current = self.store.get_json("network.lease", vni=vni, mac=mac)
        if event["action"] == "del":
            if isinstance(current, dict) and current.get("ip4") == event["ip4"]:
                self.store.delete("network.lease", vni=vni, mac=mac)
            return
        record = {"mac": mac, "ip4": event["ip4"], "hostname": event.get("hostname"),
                  "expiry": int(event.get("expiry") or 0), "client_id": event.get("client_id"),
                  "node": self.node}
        if current == record:
            return
        for _attempt in range(3):
            txn = self.store.transaction()
            txn.check(schema.path("network", vni=vni), -1)
            if not self.store.exists("network.leases", vni=vni):
                txn.create(schema.path("network.leases", vni=vni), b"")
            path = schema.path("network.lease", vni=vni, mac=mac)
            data = json.dumps(record, sort_keys=True).encode()
            if self.store.exists("network.lease", vni=vni, mac=mac):
                txn.set_data(path, data)
            else:
                txn.create(path, data)
            try:
                self.store.commit(txn)
                return
            except ConflictError:
                if not self.store.exists("network", vni=vni):
                    return
        log.warning("net_vxlan: cannot record the lease of %s on network %d", mac, vni)
