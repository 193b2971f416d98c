"""``pvc network dhcp``: DHCP reservations and live leases of a managed network (the
``/network/{vni}/lease`` routes)."""

from __future__ import annotations

import time
from typing import Any

import click

from pvc_cli.sdk import (
    Painter,
    PvcError,
    api_message,
    format_option,
    get_settings,
    render_table,
    show_list,
)


@click.group()
def dhcp() -> None:
    """DHCP reservations and live leases of a managed network.

    \b
    Examples:
      pvc network dhcp add office 10.100.0.50 web1 52:54:00:12:34:56
      pvc network dhcp list office
      pvc network dhcp remove office 52:54:00:12:34:56
    """


@dhcp.command("add")
@click.argument("net")
@click.argument("ipaddr")
@click.argument("hostname")
@click.argument("macaddr")
def add(net: str, ipaddr: str, hostname: str, macaddr: str) -> None:
    """Reserve IPADDR with HOSTNAME for the client MACADDR on network NET (VNI or
    description). The primary's DHCP server hands it out from then on.

    \b
    Examples:
      pvc network dhcp add 100 10.100.0.50 web1 52:54:00:12:34:56
    """
    answer = get_settings().client().post(f"/network/{net}/lease", {
        "macaddress": macaddr, "ipaddress": ipaddr, "hostname": hostname})
    click.echo(api_message(answer.data) or f"Reservation for {macaddr} added.")


@dhcp.command("remove")
@click.argument("net")
@click.argument("macaddr")
def remove(net: str, macaddr: str) -> None:
    """Remove the reservation or live lease MACADDR (a MAC, host name or IP address) from
    network NET.

    \b
    Examples:
      pvc network dhcp remove office 52:54:00:12:34:56
      pvc network dhcp remove office web1
    """
    answer = get_settings().client().request("DELETE", f"/network/{net}/lease/{macaddr}")
    click.echo(api_message(answer.data) or f"{macaddr} removed.")


@dhcp.command("list")
@click.argument("net")
@click.argument("limit", required=False)
@click.option("-s", "--static", is_flag=True, help="Reservations only")
@format_option
def list_(net: str, limit: str | None, static: bool, fmt: str) -> None:
    """List the reservations, then the live leases, of network NET (LIMIT: regex on the
    MAC address).

    \b
    Examples:
      pvc network dhcp list office
      pvc network dhcp list office -s -f json
    """
    resp = get_settings().client().get(f"/network/{net}/lease",
                                       {"limit": limit, "static": static}, accept=(404,))
    if resp.status == 404 and api_message(resp.data) == "Network not found.":
        raise PvcError(f"network {net} not found")
    found = resp.data if resp.status == 200 and isinstance(resp.data, list) else []
    show_list(get_settings().painter, found, fmt, "No DHCP reservation or lease found.", _table)


def _expiry(stamp: str) -> str:
    if stamp == "static":
        return "static"
    if stamp in ("", "0"):
        return "never"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(stamp)))
    except ValueError:
        return stamp


def _table(p: Painter, found: list[dict[str, Any]]) -> str:
    rows = [[x.get("hostname") or "", x.get("ip4_address") or "", x.get("mac_address") or "",
             _expiry(str(x.get("timestamp") or ""))] for x in found]
    return render_table(p, ["HOSTNAME", "IP ADDRESS", "MAC ADDRESS", "EXPIRES"], rows)
