"""This node's libvirtd: one connection (re-opened when it breaks) and the few calls PVC makes.

Domains are transient: the definition lives in ZooKeeper and libvirt only knows the
domains that run (``createXML``), so a stopped VM leaves nothing behind on any node.

libvirtd can die or hang (e.g. on stalled storage). The process runs libvirt's event loop,
so connections send keepalives (a call to a hung libvirtd fails once ``keepalive`` goes
unanswered) and deliver lifecycle events (why a domain stopped). ``probe`` asks libvirtd
on a connection of its own, bounded by a timeout; while it says libvirtd is down
(``down``), every call fails at once instead of hanging.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import xml.etree.ElementTree as ET  # noqa: N817  (building, not parsing)
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

log = logging.getLogger(__name__)

STATE_NAMES = {libvirt.VIR_DOMAIN_NOSTATE: "nostate", libvirt.VIR_DOMAIN_RUNNING: "running",
               libvirt.VIR_DOMAIN_BLOCKED: "blocked", libvirt.VIR_DOMAIN_PAUSED: "paused",
               libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown", libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
               libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended"}


def _silence(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; PVC reports them itself."""


libvirt.registerErrorHandler(_silence, None)


@dataclass
class DomInfo:
    uuid: str
    name: str
    state: int
    reason: int
    memory_mib: int
    vcpus: int

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, str(self.state))

    @property
    def incoming(self) -> bool:
        """Paused as the destination of a migration that has not finished."""
        return (self.state == libvirt.VIR_DOMAIN_PAUSED
                and self.reason in (libvirt.VIR_DOMAIN_PAUSED_MIGRATION,
                                    libvirt.VIR_DOMAIN_PAUSED_STARTING_UP))


def message(exc: Exception) -> str:
    if isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or str(exc)
    return str(exc)


_loop_lock = threading.Lock()
_loop_started = False


def start_event_loop() -> None:
    """Run libvirt's default event loop in a thread of this process (once): it carries the
    client keepalives and domain events of every connection opened afterwards."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:   # never let the loop die
                    log.exception("libvirt event loop")
                    time.sleep(0.5)

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


StopListener = Callable[[str, str, int], None]
"""Called with (uuid, name, VIR_DOMAIN_EVENT_STOPPED_* detail) when a domain stops."""


class Hypervisor:
    """Thread-safe access to one libvirtd (libvirt connections may be shared by threads)."""

    def __init__(self, uri: str, keepalive: tuple[int, int] = (2, 3),
                 on_stop: StopListener | None = None) -> None:
        self.uri = uri
        self.keepalive = keepalive
        self.on_stop = on_stop
        self.down: str | None = None
        """Why libvirtd is considered down (set by the health check), or None."""
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._probe_result: dict[str, Any] = {}

    def conn(self) -> libvirt.virConnect:
        """The shared connection (opened or re-opened as needed); raises libvirtError at once
        while libvirtd is down, so no caller blocks on a hung daemon."""
        with self._lock:
            current = self._conn
        if current is not None:
            try:
                if current.isAlive():
                    return current
            except libvirt.libvirtError:
                pass
        if self.down:
            raise libvirt.libvirtError(f"libvirtd at {self.uri} is not answering: {self.down}")
        with self._open_lock:
            with self._lock:
                if self._conn is not None and self._conn is not current:
                    return self._conn
                old, self._conn = self._conn, None
            if old is not None:
                log.warning("libvirt connection to %s lost; reconnecting", self.uri)
                _close(old)
            conn = libvirt.open(self.uri)
            self._prepare(conn)
            with self._lock:
                self._conn = conn
            return conn

    def _prepare(self, conn: libvirt.virConnect) -> None:
        """Keepalives and lifecycle events on a new connection (with the event loop)."""
        if not _loop_started:
            return
        try:
            conn.setKeepAlive(*self.keepalive)
        except libvirt.libvirtError as exc:
            log.debug("no keepalive on %s: %s", self.uri, message(exc))
        if self.on_stop is not None:
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                        self._lifecycle, None)

    def _lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        if event != libvirt.VIR_DOMAIN_EVENT_STOPPED or self.on_stop is None:
            return
        try:
            self.on_stop(dom.UUIDString(), dom.name(), detail)
        except Exception:
            log.exception("domain stop listener")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            _close(conn)

    def drop(self) -> None:
        """Forget the shared connection without closing it (it may hang on a dead daemon)."""
        with self._lock:
            self._conn = None

    # -- health ----------------------------------------------------------------------
    def probe(self, timeout: float) -> str | None:
        """Ask libvirtd something on a connection of its own; None if it answered within
        ``timeout`` s, else why not. A probe still waiting on a hung libvirtd is not
        repeated: it counts as "no answer" until it returns."""
        if self._probe is not None and self._probe.is_alive():
            self._probe.join(timeout)
            if self._probe.is_alive():
                return f"no answer for {time.monotonic() - self._probe_result['at']:.0f} s"
        result: dict[str, Any] = {"at": time.monotonic()}

        def ask() -> None:
            try:
                conn = libvirt.open(self.uri)
                try:
                    conn.getLibVersion()
                finally:
                    _close(conn)
                result["ok"] = True
            except Exception as exc:
                result["error"] = message(exc)

        self._probe_result = result
        self._probe = threading.Thread(target=ask, name="libvirt-probe", daemon=True)
        self._probe.start()
        self._probe.join(timeout)
        if self._probe.is_alive():
            return f"no answer within {timeout:g} s"
        return None if result.get("ok") else result.get("error") or "no answer"

    # -- secrets ---------------------------------------------------------------------
    def set_secret(self, uuid: str, usage_type: str, usage_name: str, value_b64: str) -> None:
        """Define (or update) a private, persistent secret and set its value."""
        conn = self.conn()
        try:
            secret = conn.secretLookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_SECRET:
                raise
            root = ET.Element("secret", ephemeral="no", private="yes")
            ET.SubElement(root, "uuid").text = uuid
            ET.SubElement(ET.SubElement(root, "usage", type=usage_type), "name").text = usage_name
            secret = conn.secretDefineXML(ET.tostring(root, encoding="unicode"))
        secret.setValue(base64.b64decode(value_b64))

    # -- reading ---------------------------------------------------------------------
    def domains(self) -> dict[str, DomInfo]:
        """Every active domain, by UUID."""
        out = {}
        for dom in self.conn().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                out[dom.UUIDString()] = _info(dom)
            except libvirt.libvirtError:   # it went away meanwhile
                continue
        return out

    def lookup(self, uuid: str) -> libvirt.virDomain | None:
        try:
            dom = self.conn().lookupByUUIDString(uuid)
            return dom if dom.isActive() else None
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def info(self, uuid: str) -> DomInfo | None:
        dom = self.lookup(uuid)
        if dom is None:
            return None
        try:
            return _info(dom)
        except libvirt.libvirtError:
            return None

    def stats(self, uuid: str) -> dict[str, Any]:
        """Counters of a running domain, in the shapes the API reports."""
        dom = self.lookup(uuid)
        if dom is None:
            return {}
        out: dict[str, Any] = {"updated": round(time.time(), 3)}
        try:
            out["memory_stats"] = dom.memoryStats()
        except libvirt.libvirtError:
            out["memory_stats"] = {}
        found = self.conn().domainListGetStats(
            [dom], libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_INTERFACE
            | libvirt.VIR_DOMAIN_STATS_BLOCK)
        raw = found[0][1] if found else {}
        cpu_time = raw.get("cpu.time") or dom.info()[4]    # no cgroups: from /proc via info
        out["vcpu_stats"] = {"cpu_time": cpu_time, "user_time": raw.get("cpu.user", 0),
                             "system_time": raw.get("cpu.system", 0)}
        out["net"] = [{k: raw.get(f"net.{i}.{k}", 0) for k in (
            "name", "rx.bytes", "rx.pkts", "rx.errs", "rx.drop", "tx.bytes", "tx.pkts",
            "tx.errs", "tx.drop")} for i in range(raw.get("net.count", 0))]
        out["block"] = [{k: raw.get(f"block.{i}.{k}", 0) for k in (
            "name", "path", "rd.reqs", "rd.bytes", "wr.reqs", "wr.bytes")}
            for i in range(raw.get("block.count", 0))]
        return out

    # -- acting ----------------------------------------------------------------------
    def create(self, xml: str) -> DomInfo:
        return _info(self.conn().createXML(xml, 0))

    def destroy(self, uuid: str) -> bool:
        """Hard stop; True if a domain was running."""
        dom = self.lookup(uuid)
        if dom is None:
            return False
        try:
            dom.destroy()
        except libvirt.libvirtError as exc:
            if self.lookup(uuid) is not None:
                raise
            log.debug("destroy raced with the domain's end: %s", message(exc))
        return True

    def press_power_button(self, uuid: str) -> bool:
        dom = self.lookup(uuid)
        if dom is None:
            return False
        try:
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError:
            if self.lookup(uuid) is not None:
                raise
        return True

    def migrate(self, uuid: str, dest_uri: str, max_downtime_ms: int, timeout: float,
                unsafe: bool = False) -> float:
        """Live peer-to-peer migration (the source libvirtd pushes to ``dest_uri``).

        Returns the seconds it took; raises libvirtError (an overrun of ``timeout`` aborts
        the job, leaving the VM running here).
        """
        dom = self.lookup(uuid)
        if dom is None:
            raise libvirt.libvirtError("the domain is not running here")
        try:
            dom.migrateSetMaxDowntime(max_downtime_ms, 0)
        except libvirt.libvirtError as exc:
            log.warning("cannot set the max downtime of %s: %s", uuid, message(exc))
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
                 | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)
        if unsafe:
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        timer = threading.Timer(timeout, _abort, (dom,))
        timer.daemon = True
        started = time.monotonic()
        timer.start()
        try:
            dom.migrateToURI3(dest_uri, {}, flags)
        finally:
            timer.cancel()
        return time.monotonic() - started

    def attach(self, uuid: str, device_xml: str, detach: bool = False) -> None:
        dom = self.lookup(uuid)
        if dom is None:
            raise libvirt.libvirtError("the domain is not running here")
        if detach:
            dom.detachDeviceFlags(device_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        else:
            dom.attachDeviceFlags(device_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def _close(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


def _info(dom: libvirt.virDomain) -> DomInfo:
    state, reason = dom.state()
    _st, _max, mem_kib, vcpus, _cpu = dom.info()
    return DomInfo(uuid=dom.UUIDString(), name=dom.name(), state=state, reason=reason,
                   memory_mib=mem_kib // 1024, vcpus=vcpus)


def _abort(dom: libvirt.virDomain) -> None:
    try:
        dom.abortJob()
        log.warning("aborted a migration of %s that exceeded its time limit", dom.name())
    except libvirt.libvirtError:
        pass
