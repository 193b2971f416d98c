"""`pvc connection`: saved cluster connections (a local file; no HTTP except `detail`)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import click

from pvc_cli.connections import (
    DEFAULT_PORT,
    SCHEMES,
    Connection,
    env_connection,
    load_store,
    split_addresses,
)
from pvc_cli.context import get_settings
from pvc_cli.errors import EXIT_CONFIG, PvcError
from pvc_cli.output import (
    GREEN,
    RED,
    Painter,
    emit_json,
    format_option,
    render_table,
    show_list,
)

DETAIL_TIMEOUT = 3.0
NO_CONNECTIONS = "No connections; add one with `pvc connection add NAME --address HOST`."


def complete_saved(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    try:
        return [n for n in sorted(load_store().connections) if n.startswith(incomplete)]
    except Exception:
        return []


@click.group()
def connection() -> None:
    """Manage saved cluster connections.

    They live in $PVC_CLI_CONFIG, else $XDG_CONFIG_HOME/pvc/pvc.json (~/.config/pvc/pvc.json),
    written with mode 0600. The connection used is -c NAME, else $PVC_CLUSTER, else the
    ad-hoc one from $PVC_API_HOSTS (+ $PVC_API_KEY), else the default or only saved one.

    \b
    Examples:
      pvc connection add prod --address 10.0.0.1,10.0.0.2 --api-key-file ~/.pvc-key --default
      pvc connection list
      pvc connection detail
      pvc -c prod node list
    """


@connection.command()
@click.argument("name")
@click.option(
    "-a",
    "--address",
    "addresses",
    multiple=True,
    required=True,
    metavar="HOST[,HOST...]",
    help="API address(es), tried in order; HOST, HOST:PORT, [V6]:PORT or URL. Repeatable.",
)
@click.option(
    "-p",
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port for addresses that do not name one.",
)
@click.option("-k", "--api-key", help="The API key (sent as X-Api-Key).")
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False),
    help="Read the API key from this file on each use instead of storing it.",
)
@click.option("-s", "--scheme", type=click.Choice(SCHEMES), default="http", show_default=True)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Verify the API's TLS certificate (https).",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Verify it against the CA certificate(s) in this PEM file, not the system's.",
)
@click.option("-d", "--description", default="", help="Free text shown by `connection list`.")
@click.option("--default", "make_default", is_flag=True, help="Make this the default connection.")
@click.option("--replace", is_flag=True, help="Overwrite an existing connection of this name.")
def add(
    name: str,
    addresses: tuple[str, ...],
    port: int,
    api_key: str | None,
    api_key_file: str | None,
    scheme: str,
    verify: bool,
    ca_file: str | None,
    description: str,
    make_default: bool,
    replace: bool,
) -> None:
    """Save a connection NAME to a cluster.

    \b
    Examples:
      pvc connection add lab --address 10.0.0.1,10.0.0.2,10.0.0.3 --api-key SECRET
      pvc connection add prod -a pvc1.example.com -a pvc2.example.com -s https \\
          --api-key-file /etc/pvc/key
      pvc connection add local --address 127.0.0.1:7370 --default
      pvc connection add tls -a https://pvc.example.com:7371 --ca-file /etc/pvc/ca.pem
    """
    if api_key and api_key_file:
        raise click.UsageError("give --api-key or --api-key-file, not both")
    store = load_store()
    if name in store.connections and not replace:
        raise PvcError(
            f"a connection named {name!r} exists; remove it first or use --replace", EXIT_CONFIG
        )
    conn = Connection(
        name=name,
        addresses=split_addresses(addresses),
        port=port,
        scheme=scheme,
        api_key=api_key or None,
        api_key_file=os.path.abspath(os.path.expanduser(api_key_file)) if api_key_file else None,
        verify=verify,
        ca_file=os.path.abspath(os.path.expanduser(ca_file)) if ca_file else None,
        description=description,
    )
    conn.endpoints()  # validate the addresses before saving
    store.connections[name] = conn
    if make_default:
        store.default = name
    store.save()
    targets = ", ".join(ep.label for ep in conn.endpoints())
    click.echo(f"Saved connection {name!r} ({targets}) in {store.path}.")


@connection.command()
@click.argument("name", shell_complete=complete_saved)
def remove(name: str) -> None:
    """Forget the saved connection NAME.

    \b
    Example:
      pvc connection remove lab
    """
    store = load_store()
    if name not in store.connections:
        raise PvcError(f"no connection named {name!r} in {store.path}", EXIT_CONFIG)
    del store.connections[name]
    if store.default == name:
        store.default = None
    store.save()
    click.echo(f"Removed connection {name!r}.")


@connection.command("default")
@click.argument("name", required=False, shell_complete=complete_saved)
@click.option("--unset", is_flag=True, help="Clear the default.")
def set_default(name: str | None, unset: bool) -> None:
    """Make NAME the default connection (or show the current one).

    \b
    Examples:
      pvc connection default prod
      pvc connection default
      pvc connection default --unset
    """
    store = load_store()
    if unset:
        store.default = None
        store.save()
        click.echo("No default connection.")
        return
    if name is None:
        click.echo(store.default or "No default connection.")
        return
    if name not in store.connections:
        raise PvcError(f"no connection named {name!r} in {store.path}", EXIT_CONFIG)
    store.default = name
    store.save()
    click.echo(f"Default connection is now {name!r}.")


def _all_connections() -> tuple[list[Connection], str | None]:
    store = load_store()
    conns = [store.connections[n] for n in sorted(store.connections)]
    adhoc = env_connection()
    if adhoc is not None:
        conns.append(adhoc)
    return conns, store.default


def _labels(conn: Connection) -> list[str]:
    try:
        return [ep.label for ep in conn.endpoints()]
    except PvcError:
        return list(conn.addresses)  # shown as stored; using it reports the problem


def _key_kind(conn: Connection) -> str:
    if conn.api_key:
        return "set"
    if conn.api_key_file:
        return f"file {conn.api_key_file}"
    return "none"


@connection.command("list")
@format_option
def list_connections(fmt: str) -> None:
    """List saved connections.

    The ad-hoc connection from $PVC_API_HOSTS is shown as "env". Keys are never printed.

    \b
    Examples:
      pvc connection list
      pvc connection list -f json
    """
    conns, default = _all_connections()
    public = [_public(c, default) for c in conns]
    show_list(get_settings().painter, public, fmt, NO_CONNECTIONS, _connection_table)


def _connection_table(painter: Painter, conns: list[dict[str, Any]]) -> str:
    """The table of `pvc connection list`, from the connections' public (JSON) form."""
    rows = []
    for c in conns:
        rows.append(
            [
                (c["name"], {"bold": True}),
                "*" if c["default"] else "",
                ", ".join(c["addresses"]),
                c["scheme"],
                (f"ca {c['ca_file']}" if c["ca_file"] else "yes") if c["verify"] else "no",
                c["api_key"],
                c["description"],
            ]
        )
    headers = ["NAME", "DEFAULT", "ADDRESSES", "SCHEME", "VERIFY", "KEY", "DESCRIPTION"]
    return render_table(painter, headers, rows)


def _public(c: Connection, default: str | None) -> dict[str, Any]:
    return {
        "name": c.name,
        "default": c.name == default and c.source == "config",
        "source": c.source,
        "addresses": _labels(c),
        "scheme": c.scheme,
        "verify": c.verify,
        "ca_file": c.ca_file,
        "api_key": _key_kind(c),
        "description": c.description,
    }


def probe(conn: Connection) -> dict[str, Any]:
    """One cheap call (GET /status/primary_node, no auth) with fail-over and a short timeout."""
    from pvc_cli.client import ApiClient

    result: dict[str, Any] = {
        "name": conn.name,
        "reachable": False,
        "address": None,
        "primary_node": None,
        "latency_ms": None,
        "error": None,
    }
    started = time.monotonic()
    try:
        resp = ApiClient(conn, timeout=DETAIL_TIMEOUT).get(
            "/status/primary_node", accept=(204, 500)
        )
    except PvcError as exc:
        result["error"] = exc.format_message()
        return result
    result["reachable"] = True
    result["address"] = resp.endpoint.label
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    if resp.status == 200 and isinstance(resp.data, dict):
        result["primary_node"] = resp.data.get("primary_node")
    return result


@connection.command()
@click.argument("names", nargs=-1, shell_complete=complete_saved)
@format_option
def detail(names: tuple[str, ...], fmt: str) -> None:
    """Check which connections answer and who is primary.

    Probes every (or each named) connection in parallel with GET /status/primary_node
    and a short timeout.

    \b
    Examples:
      pvc connection detail
      pvc connection detail prod lab -f json
    """
    conns, _ = _all_connections()
    if names:
        unknown = set(names) - {c.name for c in conns}
        if unknown:
            raise PvcError(f"no connection named {', '.join(sorted(unknown))}", EXIT_CONFIG)
        conns = [c for c in conns if c.name in names]
    if not conns:
        click.echo(NO_CONNECTIONS)
        return
    with ThreadPoolExecutor(max_workers=min(8, len(conns))) as pool:
        results = list(pool.map(probe, conns))
    if fmt != "pretty":
        emit_json(results, fmt)
        return
    painter = get_settings().painter
    rows = []
    for r in results:
        rows.append(
            [
                (r["name"], {"bold": True}),
                ("up", GREEN) if r["reachable"] else ("down", RED),
                r["address"] or "-",
                str(r["primary_node"] or "-"),
                f"{r['latency_ms']:.0f}ms" if r["latency_ms"] is not None else "-",
                r["error"] or "",
            ]
        )
    painter.echo(
        render_table(
            painter, ["NAME", "STATE", "ANSWERED", "PRIMARY", "TIME", "ERROR"], rows, right=[4]
        )
    )
