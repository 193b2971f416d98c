"""``pvc network acl``: a network's firewall rules (``/network/{vni}/acl``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from pvc_cli.sdk import Painter, api_message, format_option, get_settings, render_table, show_list


def _client() -> Any:
    return get_settings().client()


def _direction(direction: bool | None) -> str | None:
    return None if direction is None else ("in" if direction else "out")


@click.group()
def acl() -> None:
    """Manage the firewall rules (ACLs) of a managed network: nft rule text applied, in order,
    to traffic routed into the network (--in) or out of it (--out).

    \b
    Examples:
      pvc network acl add office --in -d ssh-from-lan -r "ip saddr 10.0.0.0/8 tcp dport 22 accept"
      pvc network acl list office
      pvc network acl remove office ssh-from-lan --yes
    """


@acl.command("add")
@click.argument("net")
@click.option("--in/--out", "direction", default=True, show_default=True,
              help="Traffic routed into the network (in) or out of it (out)")
@click.option("-d", "--description", required=True,
              help="A name unique in the network (letters, digits, _.:@+=,-)")
@click.option("-r", "--rule", required=True, help="nft rule text, e.g. \"ip saddr "
              "10.0.0.0/8 tcp dport 22 accept\" (checked with nft before it is stored)")
@click.option("-o", "--order", type=click.IntRange(min=0),
              help="Position among the direction's rules (0-based; default: last)")
def add(net: str, direction: bool, description: str, rule: str, order: int | None) -> None:
    """Add an ACL to network NET (VNI or description).

    \b
    Examples:
      pvc network acl add office --in -d web -r "tcp dport { 80, 443 } accept"
      pvc network acl add 100 --out -d no-smtp -r "tcp dport 25 drop" -o 1
    """
    answer = _client().post(f"/network/{quote(net, safe='')}/acl", {
        "description": description, "direction": _direction(direction), "rule": rule,
        "order": order})
    click.echo(api_message(answer.data) or f"ACL {description} added.")


@acl.command("remove")
@click.argument("net")
@click.argument("description")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation")
def remove(net: str, description: str, yes: bool) -> None:
    """Remove ACL DESCRIPTION of network NET; the rules after it move up.

    \b
    Examples:
      pvc network acl remove office web
      pvc network acl remove 100 no-smtp --yes
    """
    if not yes:
        click.confirm(f"Remove ACL {description} of network {net}?", abort=True)
    answer = _client().request(
        "DELETE", f"/network/{quote(net, safe='')}/acl/{quote(description, safe='')}")
    click.echo(api_message(answer.data) or f"ACL {description} removed.")


@acl.command("list")
@click.argument("net")
@click.argument("limit", required=False)
@click.option("--in/--out", "direction", default=None,
              help="Only the rules of one direction (default: both)")
@format_option
def list_(net: str, limit: str | None, direction: bool | None, fmt: str) -> None:
    """List the ACLs of network NET (LIMIT: regex on the description): in, then out, each
    in the order they apply.

    \b
    Examples:
      pvc network acl list office
      pvc network acl list 100 ssh --in -f json
    """
    resp = _client().get(f"/network/{quote(net, safe='')}/acl",
                         {"limit": limit, "direction": _direction(direction)}, accept=(404,))
    found = resp.data if resp.status == 200 and isinstance(resp.data, list) else []
    show_list(get_settings().painter, found, fmt, "No ACL found.", _table)


def _table(p: Painter, found: list[dict[str, Any]]) -> str:
    rows = [[a["direction"], str(a["order"]), a["description"], a["rule"]] for a in found]
    return render_table(p, ["DIRECTION", "ORDER", "DESCRIPTION", "RULE"], rows, right=(1,))
