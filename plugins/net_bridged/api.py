"""``/network`` handlers (PVC API v1 §3.6); the route table is in ``routes.py``.

Networks are desired state written here only, under the ``networks`` lock so that two
requests never make two networks of one VNI or description; nodes report what they built
under each network (``nodes``, an addition to the v1 shape).
"""

from __future__ import annotations

import json
from typing import Any

from pvc_api.sdk import ApiError, Call, params, zk
from pvc_kernel.sdk import LockBusy
from pvc_plugins.net_bridged import attach, model

LOCK = "networks"
NOT_FOUND = "Network not found."


def _declared(call: Call) -> dict[str, list[str]]:
    """Each network type the loaded plugins declared, with the plugins declaring it."""
    plugins = getattr(call.api, "plugins", None)
    owners: dict[str, list[str]] = {}
    for name, types in plugins.call_each("pvc_network_types") if plugins is not None else []:
        for t in types or {}:
            owners.setdefault(t, []).append(name)
    return owners


def _types(call: Call, nettype: str) -> list[str]:
    """The types a network may have; 400 for ``nettype`` when two plugins declare it (which
    one would build it?)."""
    owners = _declared(call)
    if len(owners.get(nettype, [])) > 1:
        raise ApiError(400, f"Invalid parameter 'nettype': {nettype!r} is declared by more "
                            f"than one plugin ({', '.join(sorted(owners[nettype]))}); "
                            "disable all but one")
    return sorted(t for t, names in owners.items() if len(names) == 1)


def _read_all(call: Call) -> list[dict[str, Any]]:
    """Every stored network (with ``nodes``: what each node reported), by VNI."""
    store, t = call.api.store, call.api.zk_timeout
    (vnis,) = zk.fetch(store, [zk.children("networks")], t)
    vnis = sorted((v for v in vnis if v.isdigit()), key=int)
    texts = zk.fetch(store, [zk.get("network", vni=v) for v in vnis]
                     + [zk.children("network.nodes", vni=v) for v in vnis], t)
    specs = [zk.load_json(x, {}) for x in texts[:len(vnis)]]
    nodes = texts[len(vnis):]
    pairs = [(v, n) for v, names in zip(vnis, nodes, strict=True) for n in names]
    reports = zk.fetch(store, [zk.get("network.node", vni=v, node=n) for v, n in pairs], t)
    observed: dict[str, dict[str, Any]] = {}
    for (vni, node), text in zip(pairs, reports, strict=True):
        observed.setdefault(vni, {})[node] = zk.load_json(text, {})
    out = []
    for vni, spec in zip(vnis, specs, strict=True):
        if isinstance(spec, dict) and spec.get("description"):
            out.append({**spec, "nodes": observed.get(vni, {})})
    return out


def _answer(spec: dict[str, Any]) -> dict[str, Any]:
    nodes = {n: {k: r.get(k) for k in ("state", "error", "bridge", "port", "mtu")}
             for n, r in sorted(spec.get("nodes", {}).items()) if isinstance(r, dict)}
    return {**model.wire(spec), "nodes": nodes}


def _find(networks: list[dict[str, Any]], net: str) -> dict[str, Any] | None:
    """A network by VNI or description (exact)."""
    for spec in networks:
        if str(spec["vni"]) == net or spec["description"] == net:
            return spec
    return None


def _stored(networks: list[dict[str, Any]], net: str) -> dict[str, Any]:
    """The stored record of network ``net`` (without ``nodes``); 400 when there is none, as
    the original answers a change of a missing object."""
    spec = _find(networks, net)
    if spec is None:
        raise ApiError(400, f"ERROR: Could not find network '{net}' in the cluster!")
    return {k: v for k, v in spec.items() if k != "nodes"}


def _refuse_clash(networks: list[dict[str, Any]], spec: dict[str, Any], new: bool) -> None:
    """400 when another network has the VNI (for a new one) or the description."""
    for other in networks:
        if new and other["vni"] == spec["vni"]:
            raise ApiError(400, f"Network with VNI {spec['vni']} already exists.")
        if other["vni"] != spec["vni"] and other["description"] == spec["description"]:
            raise ApiError(400, f"Network with description '{spec['description']}' "
                                "already exists.")


def _largest_mtu(call: Call, nettype: str) -> int | None:
    """The smallest ``max_mtu_<type>`` the nodes published (``pvc_node_static`` of the
    type's plugin), or None if none did."""
    store, t = call.api.store, call.api.zk_timeout
    (nodes,) = zk.fetch(store, [zk.children("nodes")], t)
    statics = zk.fetch(store, [zk.get("node.static", node=n) for n in nodes], t)
    found = [zk.load_json(text, {}).get(f"max_mtu_{nettype}") for text in statics]
    sizes = [int(v) for v in found if isinstance(v, int)]
    return min(sizes) if sizes else None


def _refuse_limits(call: Call, networks: list[dict[str, Any]], spec: dict[str, Any]) -> None:
    model.refuse_overlap(networks, spec)
    model.refuse_mtu(spec, _largest_mtu(call, spec["nettype"]))


def list_networks(call: Call) -> list[dict[str, Any]]:
    """Every network whose VNI or description matches ``limit``; 404 when none."""
    match = params.name_filter(call.args.get("limit"))
    found = [_answer(s) for s in _read_all(call)
             if match(str(s["vni"])) or match(s["description"])]
    if not found:
        raise ApiError(404, NOT_FOUND)
    return found


def get_network(call: Call) -> list[dict[str, Any]]:
    """One network (by VNI or description) as a one-element array; 404 when absent."""
    spec = _find(_read_all(call), call.args["vni"])
    if spec is None:
        raise ApiError(404, NOT_FOUND)
    return [_answer(spec)]


def _fields(call: Call) -> dict[str, Any]:
    fields = {name: call.args.get(name) for name in model.FIELDS}
    if fields["name_servers"] == []:
        fields["name_servers"] = None
    return fields


def _write(call: Call, work: Any) -> dict[str, str]:
    try:
        with call.api.store.locked(LOCK, "pvcapid", timeout=10, what="the networks"):
            return work(_read_all(call))
    except LockBusy as exc:
        raise ApiError(503, f"{exc}; try again") from None
    except model.ModelError as exc:
        raise ApiError(400, str(exc)) from None


def add_network(call: Call) -> dict[str, str]:
    """Add a network; 400 naming the field for bad input, a VNI or description in use."""
    vni = call.args["vni"]
    if isinstance(vni, str):        # POST /network/{vni}: the path names it
        if not vni.isdigit():
            raise ApiError(400, f"Invalid parameter 'vni': {vni!r} is not an integer")
        vni = int(vni)

    def work(networks: list[dict[str, Any]]) -> dict[str, str]:
        nettype = call.args["nettype"]
        spec = model.build(vni, nettype, _fields(call), _types(call, nettype))
        _refuse_clash(networks, spec, new=True)
        _refuse_limits(call, networks, spec)
        call.api.store.set("network", json.dumps(spec), vni=str(vni))
        return {"message": f"Network '{spec['description']}' added successfully!"}

    return _write(call, work)


def modify_network(call: Call) -> dict[str, str]:
    """Change the given fields of a network (not its type); 400 when it does not exist."""
    net = call.args["vni"]

    def work(networks: list[dict[str, Any]]) -> dict[str, str]:
        stored = _stored(networks, net)
        spec = model.change(stored, _fields(call))
        _refuse_clash(networks, spec, new=False)
        _refuse_limits(call, networks, spec)
        if spec != stored:
            call.api.store.set("network", json.dumps(spec), vni=str(spec["vni"]))
        return {"message": f"Network '{net}' modified successfully!"}

    return _write(call, work)


def remove_network(call: Call) -> dict[str, str]:
    """Remove a network (by VNI or description); every node removes its devices. 409 while
    a VM has a NIC on it, unless ``force`` (those NICs then lose their network)."""
    net = call.args["vni"]

    def work(networks: list[dict[str, Any]]) -> dict[str, str]:
        stored = _stored(networks, net)
        using = attach.users(call.api.plugins, call.api.store, int(stored["vni"]))
        if using and not call.args["force"]:
            raise ApiError(409, f"Network '{stored['description']}' is used by VM(s) "
                                f"{', '.join(using)}: remove their NICs first, or force")
        call.api.store.delete("network", vni=str(stored["vni"]))
        return {"message": f"Network '{stored['description']}' removed successfully!"}

    return _write(call, work)


def status(api: Any) -> dict[str, Any]:
    """``networks`` of ``GET /status``: how many networks there are."""
    (vnis,) = zk.fetch(api.store, [zk.children("networks")], api.zk_timeout)
    return {"networks": len([v for v in vnis if v.isdigit()])}
