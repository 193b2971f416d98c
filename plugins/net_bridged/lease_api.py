"""``/network/{vni}/lease`` handlers (PVC API v1 §3.6): DHCP reservations and live leases.

Reservations are desired state written here only, under the ``networks`` lock (the lock of
every network write, so a reservation never lands on a network being removed or changed);
each change also sets the value of ``/networks/<vni>/reservations`` in the same transaction,
which is what the primary's DHCP service watches. Leases are what the primary's dnsmasq
reported; the API only reads them, and deletes one on request.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pvc_api.sdk import ApiError, Call, params, zk
from pvc_kernel.sdk import ConflictError, schema
from pvc_plugins.net_bridged import api as net_api
from pvc_plugins.net_bridged import leases

NOT_FOUND = "Lease not found."


def _records(call: Call, vni: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The reservations and leases stored for network ``vni``."""
    store, t = call.api.store, call.api.zk_timeout
    macs, lease_macs = zk.fetch(store, [zk.children("network.reservations", vni=vni),
                                        zk.children("network.leases", vni=vni)], t)
    texts = zk.fetch(store, [zk.get("network.reservation", vni=vni, mac=m) for m in macs]
                     + [zk.get("network.lease", vni=vni, mac=m) for m in lease_macs], t)
    records = [zk.load_json(x, {}) for x in texts]
    good = [r if isinstance(r, dict) and r.get("mac") else None for r in records]
    return ([r for r in good[:len(macs)] if r is not None],
            [r for r in good[len(macs):] if r is not None])


def _network(call: Call) -> dict[str, Any]:
    """The network named in the path; 404 when there is none (reads)."""
    spec = net_api._find(net_api._read_all(call), call.args["vni"])
    if spec is None:
        raise ApiError(404, net_api.NOT_FOUND)
    return spec


def list_leases(call: Call) -> list[dict[str, Any]]:
    """Reservations then live leases, filtered by ``limit`` (MAC regex) and ``static``."""
    spec = _network(call)
    match = params.name_filter(call.args.get("limit"))
    found = leases.listing(*_records(call, spec["vni"]), match=match,
                           static_only=bool(call.args.get("static")))
    if not found:
        raise ApiError(404, NOT_FOUND)
    return found


def get_lease(call: Call) -> list[dict[str, Any]]:
    """The reservation and the live lease of one MAC (exact, any case)."""
    spec = _network(call)
    mac = call.args["mac"].strip().lower()
    found = leases.listing(*_records(call, spec["vni"]), match=lambda m: m == mac)
    if not found:
        raise ApiError(404, NOT_FOUND)
    return found


def _bump(txn: Any, vni: int, exists: bool) -> None:
    """Set the reservations container's value (create it first if needed): the one change
    the DHCP service watches."""
    path = schema.path("network.reservations", vni=vni)
    stamp = str(time.time()).encode()
    if exists:
        txn.set_data(path, stamp)
    else:
        txn.create(path, stamp)


def add_reservation(call: Call) -> dict[str, str]:
    """Reserve ``ipaddress`` for ``macaddress`` (or the MAC of the path) on the network."""
    net = call.args["vni"]
    mac = call.args.get("mac") or call.args.get("macaddress")
    if not mac:
        raise ApiError(400, "Invalid parameter 'macaddress': is required")

    def work(networks: list[dict[str, Any]]) -> dict[str, str]:
        spec = net_api._stored(networks, net)
        vni = spec["vni"]
        existing, _leases = _records(call, vni)
        record = leases.reservation(spec, existing, mac, call.args.get("ipaddress"),
                                    call.args.get("hostname"))
        store = call.api.store
        txn = store.transaction()
        txn.check(schema.path("network", vni=vni), -1)
        _bump(txn, vni, store.exists("network.reservations", vni=vni))
        txn.create(schema.path("network.reservation", vni=vni, mac=record["mac"]),
                   json.dumps(record, sort_keys=True).encode())
        store.commit(txn)
        return {"message": f"DHCP reservation for {record['mac']} ({record['ip4']}) added to "
                           f"network '{spec['description']}'."}

    return _write(call, work)


def _write(call: Call, work: Any) -> dict[str, str]:
    """``work`` under the networks lock; a lease the primary changed meanwhile is a 409."""
    try:
        return net_api._write(call, work)
    except ConflictError:
        raise ApiError(409, "The network's leases changed meanwhile; try again.") from None


def remove_lease(call: Call) -> dict[str, str]:
    """Remove the reservations and live leases named by MAC, host name or IP address."""
    net, name = call.args["vni"], call.args["mac"]

    def work(networks: list[dict[str, Any]]) -> dict[str, str]:
        spec = net_api._stored(networks, net)
        vni = spec["vni"]
        reservations, live = _records(call, vni)
        gone_r, gone_l = leases.named(reservations, name), leases.named(live, name)
        if not gone_r and not gone_l:
            raise ApiError(400, f"ERROR: No DHCP reservation or lease '{name}' on network "
                                f"'{spec['description']}'.")
        store = call.api.store
        txn = store.transaction()
        txn.check(schema.path("network", vni=vni), -1)
        if gone_r:
            _bump(txn, vni, True)
        for r in gone_r:
            txn.delete(schema.path("network.reservation", vni=vni, mac=r["mac"]))
        for x in gone_l:
            txn.delete(schema.path("network.lease", vni=vni, mac=x["mac"]))
        store.commit(txn)
        what = ", ".join([f"reservation {r['mac']}" for r in gone_r]
                         + [f"lease {x['mac']}" for x in gone_l])
        return {"message": f"Removed {what} from network '{spec['description']}'."}

    return _write(call, work)
