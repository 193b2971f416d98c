"""``pvc network``: client networks (entry point ``network`` in ``pvc.cli``). Talks only to
the API (``/network``)."""

from __future__ import annotations

from typing import Any

import click

from pvc_cli.sdk import (
    EXIT_USAGE,
    Painter,
    PvcError,
    api_message,
    emit_json,
    format_option,
    get_settings,
    render_pairs,
    render_table,
    show_list,
    state_cell,
)


def _client() -> Any:
    return get_settings().client()


def _get_list(path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    resp = _client().get(path, params or {}, accept=(404,))
    return resp.data if resp.status == 200 and isinstance(resp.data, list) else []


@click.group()
def network() -> None:
    """Manage client networks: managed (a VXLAN between the nodes, with PVC's gateway, DHCP
    and DNS) and bridged (a VLAN of the nodes' bridge device). Each node bridges a network
    into vmbr<VNI>, where VMs' NICs attach.

    \b
    Examples:
      pvc network list
      pvc network add 100 -d office -p managed -i 10.100.0.0/24 -g 10.100.0.1 --dhcp \\
          --dhcp-start 10.100.0.100 --dhcp-end 10.100.0.199
      pvc network add 200 -d uplink -p bridged
    """


def _options(func: Any) -> Any:
    options = [
        click.option("-m", "--mtu", help="MTU (576-65535); empty string: the largest the "
                     "nodes allow (cluster MTU - 50 for managed, the bridge MTU for "
                     "bridged)"),
        click.option("-n", "--domain", help="DNS domain of a managed network (default "
                     "DESCRIPTION.local)"),
        click.option("--dns-server", "name_servers", multiple=True,
                     help="DNS server handed out by DHCP (repeat for several)"),
        click.option("-i", "--ipnet", "ip4_network", help="IPv4 network, CIDR (managed)"),
        click.option("-g", "--gateway", "ip4_gateway", help="IPv4 gateway address (managed)"),
        click.option("-i6", "--ipnet6", "ip6_network", help="IPv6 network, CIDR (managed)"),
        click.option("-g6", "--gateway6", "ip6_gateway",
                     help="IPv6 gateway (default: the network's first address)"),
        click.option("--dhcp/--no-dhcp", "dhcp4", default=None,
                     help="Serve DHCPv4 on a managed network (needs --dhcp-start/--dhcp-end)"),
        click.option("--dhcp-start", "dhcp4_start", help="First DHCPv4 address"),
        click.option("--dhcp-end", "dhcp4_end", help="Last DHCPv4 address"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _params(**given: Any) -> dict[str, Any]:
    out = {k: v for k, v in given.items() if v is not None and v != ()}
    if "name_servers" in out:
        out["name_servers"] = ",".join(out["name_servers"])
    if "dhcp4" in out:
        out["dhcp4"] = "true" if out["dhcp4"] else "false"
    return out


@network.command("add")
@click.argument("vni", type=click.IntRange(1, 16777215))
@click.option("-d", "--description", required=True, help="A unique name (letters, digits, -_.)")
@click.option("-p", "--type", "nettype", required=True, help="managed or bridged")
@_options
def add(vni: int, description: str, nettype: str, **fields: Any) -> None:
    """Add network VNI. Every node then builds its bridge vmbr<VNI>.

    \b
    Examples:
      pvc network add 100 -d office -p managed -i 10.100.0.0/24 -g 10.100.0.1
      pvc network add 200 -d uplink -p bridged -m 9000
    """
    answer = _client().post("/network", _params(vni=vni, description=description,
                                                nettype=nettype, **fields))
    click.echo(api_message(answer.data) or f"Network {vni} added.")


@network.command("modify")
@click.argument("vni")
@click.option("-d", "--description", help="A new unique name")
@_options
def modify(vni: str, description: str | None, **fields: Any) -> None:
    """Change the given settings of network VNI (its type cannot change).

    \b
    Examples:
      pvc network modify 100 --dhcp --dhcp-start 10.100.0.100 --dhcp-end 10.100.0.199
      pvc network modify 100 -m ""
    """
    given = _params(description=description, **fields)
    if not given:
        raise PvcError("nothing to change: give at least one option (see --help)",
                       exit_code=EXIT_USAGE)
    answer = _client().request("PUT", f"/network/{vni}", given)
    click.echo(api_message(answer.data) or f"Network {vni} modified.")


@network.command("remove")
@click.argument("net")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
@click.option("--force", is_flag=True,
              help="Remove it even while VMs have NICs on it (they lose that network)")
def remove(net: str, yes: bool, force: bool) -> None:
    """Remove network NET (VNI or description); every node removes its bridge and port.

    Refused while a VM has a NIC on it, unless --force.

    \b
    Examples:
      pvc network remove 100
      pvc network remove office --yes
    """
    if not yes:
        click.confirm(f"Remove network {net}?", abort=True)
    answer = _client().request("DELETE", f"/network/{net}",
                               params={"force": "true"} if force else None)
    click.echo(api_message(answer.data) or f"Network {net} removed.")


@network.command("list")
@click.argument("limit", required=False)
@format_option
def list_(limit: str | None, fmt: str) -> None:
    """List networks (LIMIT: regex on the VNI or description).

    \b
    Examples:
      pvc network list
      pvc network list office -f json
    """
    found = _get_list("/network", {"limit": limit})
    show_list(get_settings().painter, found, fmt, "No network found.", _table)


def _state(net: dict[str, Any]) -> str:
    nodes = net.get("nodes") or {}
    bad = sorted(n for n, r in nodes.items() if (r or {}).get("state") != "up")
    if not nodes:
        return "-"
    return f"up on {len(nodes)}" if not bad else f"ERROR on {','.join(bad)}"


def _table(p: Painter, found: list[dict[str, Any]]) -> str:
    rows = [[str(n["vni"]), n["description"], n["type"], n.get("mtu") or "default",
             n["ip4"]["network"] if n["ip4"]["network"] != "None" else "",
             "yes" if n["ip4"]["dhcp_flag"] == "True" else "no", state_cell(_state(n))]
            for n in found]
    return render_table(p, ["VNI", "DESCRIPTION", "TYPE", "MTU", "IPV4", "DHCP", "NODES"],
                        rows, right=(0,))


@network.command("info")
@click.argument("net")
@format_option
def info(net: str, fmt: str) -> None:
    """Show network NET (VNI or description) and what each node built.

    \b
    Examples:
      pvc network info 100
      pvc network info office -f json
    """
    found = _get_list(f"/network/{net}")
    if not found:
        raise PvcError(f"network {net} not found")
    n = found[0]
    if fmt != "pretty":
        emit_json(n, fmt)
        return
    p = get_settings().painter
    pairs = [("VNI", str(n["vni"])), ("Description", n["description"]), ("Type", n["type"]),
             ("MTU", n.get("mtu") or "default"), ("Domain", n.get("domain") or ""),
             ("DNS servers", ", ".join(s for s in n.get("name_servers", []) if s)),
             ("IPv4", f"{n['ip4']['network']} gateway {n['ip4']['gateway']}"
              if n["ip4"]["network"] != "None" else "none"),
             ("DHCPv4", f"{n['ip4']['dhcp_start']} - {n['ip4']['dhcp_end']}"
              if n["ip4"]["dhcp_flag"] == "True" else "off"),
             ("IPv6", f"{n['ip6']['network']} gateway {n['ip6']['gateway']}"
              if n["ip6"]["network"] != "None" else "none")]
    p.echo(render_pairs(p, pairs))
    nodes = n.get("nodes") or {}
    if nodes:
        p.echo("")
        p.echo(render_table(p, ["NODE", "STATE", "BRIDGE", "MTU", "ERROR"], [
            [node, state_cell(r.get("state")), r.get("bridge") or "", str(r.get("mtu") or ""),
             r.get("error") or ""] for node, r in sorted(nodes.items())]))


def _add_subgroups() -> None:
    from pvc_plugins.net_bridged.acl_cli import acl
    from pvc_plugins.net_bridged.lease_cli import dhcp

    network.add_command(dhcp)
    network.add_command(acl)


_add_subgroups()
