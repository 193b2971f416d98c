"""The metadata service guests reach at ``http://169.254.169.254/`` on managed networks.

It runs in pvcnoded on the primary only; the managed network plugin holds the address on
each managed network's gateway (``pvc_network_gateway_addresses``), so it moves with the
primary like the gateways. A request is answered for the VM whose address it comes from:
source address → the network's DHCP lease or reservation → MAC → the VM with that NIC
(``pvc_vm_by_mac``) → the profile it was made from. A source no VM is found for gets 404,
never another VM's data. Paths (EC2 style, any version name, e.g. ``latest``)::

    /<version>/meta-data                 the keys below, one per line
    /<version>/meta-data/instance-id     the VM's UUID
    /<version>/meta-data/name            the VM's name (also local-hostname, hostname)
    /<version>/meta-data/profile         the profile it was made from
    /<version>/user-data                 the profile's cloud-init user data (404 if none)
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pvc_plugins.provisioner import model

log = logging.getLogger("pvc_plugins.provisioner")

ADDRESS = "169.254.169.254"
PORT = 80
IP_FREEBIND = 15                       # bind before the gateway holds the address
META_KEYS = ("instance-id", "name", "local-hostname", "hostname", "profile")


def mac_of(store: Any, source: str) -> str | None:
    """The MAC a managed network leases or reserves ``source`` to (three pipelined reads,
    however many networks and leases there are)."""
    kinds = (("network.leases", "network.lease"),
             ("network.reservations", "network.reservation"))
    pairs = [(vni, many, one) for vni in store.children("networks") for many, one in kinds]
    lists = store.fetch([("children", many, {"vni": vni}) for vni, many, _ in pairs])
    keys = [(one, {"vni": vni, "mac": mac})
            for (vni, _, one), macs in zip(pairs, lists, strict=True) for mac in macs]
    texts = store.fetch([("get", one, kw) for one, kw in keys])
    for (_one, kw), text in zip(keys, texts, strict=True):
        try:
            entry = json.loads(text) if text else {}
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("ip4") == source:
            return str(entry.get("mac") or kw["mac"]).lower()
    return None


def answer(daemon: Any, source: str, path: str) -> tuple[int, str]:
    """(status, body) of a request for ``path`` from ``source``."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if not parts:
        return 200, "latest\n"
    rest = parts[1:]
    if rest and rest[0] not in ("meta-data", "user-data"):
        return 404, "not found\n"
    mac = mac_of(daemon.store, source)
    vm = daemon.plugins.call_first("pvc_vm_by_mac", daemon=daemon, mac=mac) if mac else None
    if vm is None:
        return 404, "no VM has this address\n"
    if not rest:
        return 200, "meta-data\nuser-data\n"
    if rest[0] == "meta-data":
        if len(rest) == 1:
            return 200, "\n".join(META_KEYS) + "\n"
        values = {"instance-id": vm["uuid"], "name": vm["name"], "local-hostname": vm["name"],
                  "hostname": vm["name"], "profile": vm.get("profile") or ""}
        value = values.get(rest[1])
        return (200, value) if value is not None and len(rest) == 2 else (404, "not found\n")
    profile = _object(daemon.store, model.PROFILE, vm.get("profile"))
    userdata = _object(daemon.store, model.USERDATA, (profile or {}).get(model.USERDATA))
    if userdata is None or len(rest) != 1:
        return 404, "no user data for this VM\n"
    return 200, userdata["userdata"]


def _object(store: Any, kind: str, name: str | None) -> dict[str, Any] | None:
    if not name:
        return None
    text = store.get("provisioner.object", kind=kind, obj=name)
    return json.loads(text) if text else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        super().server_bind()


class MetadataService:
    """The HTTP server; ``start`` on becoming primary, ``stop`` when no longer."""

    def __init__(self, daemon: Any, address: str = ADDRESS, port: int = PORT) -> None:
        self.daemon, self.address, self.port = daemon, address, port
        self.server: _Server | None = None

    def start(self) -> None:
        if self.server is not None:
            return
        daemon = self.daemon

        class Handler(BaseHTTPRequestHandler):
            server_version = "PVC-metadata"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                try:
                    status, body = answer(daemon, self.client_address[0], self.path)
                except Exception as exc:
                    log.exception("provisioner: metadata request %s failed", self.path)
                    status, body = 503, f"metadata unavailable: {exc}\n"
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("metadata: %s %s", self.client_address[0], fmt % args)

        self.server = _Server((self.address, self.port), Handler)
        threading.Thread(target=self.server.serve_forever, name="provisioner-metadata",
                         daemon=True).start()
        log.info("provisioner: metadata service on %s:%d", self.address, self.port)

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()
