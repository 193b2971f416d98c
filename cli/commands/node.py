"""`pvc node`: list and inspect nodes, change coordinator and domain state, read logs."""

from __future__ import annotations

import importlib
import time
from typing import Any

import click

from pvc_cli.client import api_message
from pvc_cli.context import Settings, get_settings
from pvc_cli.errors import PvcError
from pvc_cli.output import (
    FORMATS,
    Painter,
    dig,
    emit_json,
    fmt_delta,
    fmt_health,
    format_option,
    health_style,
    human_mib,
    render_pairs,
    render_table,
    show_list,
    state_cell,
)
from pvc_cli.waiting import poll, report_task, wait_task

DAEMON_STATES = ("init", "run", "shutdown", "stop", "dead", "fenced")
COORDINATOR_STATES = ("primary", "secondary", "takeover", "relinquish", "client")
DOMAIN_STATES = ("ready", "flush", "flushed", "unflush", "fence-flush")
PRIMARY_WAIT = 120.0


def complete_node(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of node names (one quick GET /node; silent on any error)."""
    try:
        from pvc_cli.client import ApiClient
        from pvc_cli.connections import resolve

        conn = resolve(ctx.find_root().params.get("connection"))
        data = ApiClient(conn, timeout=2.0).get("/node", accept=(404,)).data
        names = [n.get("name", "") for n in data] if isinstance(data, list) else []
        return [n for n in names if n.startswith(incomplete)]
    except Exception:
        return []


node_argument = click.argument("node", shell_complete=complete_node)

PLUGIN_COMMANDS = {"fence": "pvc_plugins.fencing_ipmi.cli:fence"}
"""Subcommands of `pvc node` that plugins provide, imported only when used."""


class _NodeGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(PLUGIN_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in PLUGIN_COMMANDS:
            module, _, attr = PLUGIN_COMMANDS[cmd_name].partition(":")
            try:
                self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
            except (ImportError, AttributeError):
                return None
        return super().get_command(ctx, cmd_name)


@click.group(cls=_NodeGroup)
def node() -> None:
    """Inspect nodes and change their state.

    \b
    Examples:
      pvc node list
      pvc node info hv1
      pvc node flush hv1 --wait
      pvc node primary hv2 --wait
    """


def get_node(settings: Settings, name: str) -> dict[str, Any]:
    """GET /node/<name> answers a one-element array."""
    data = settings.client().get(f"/node/{name}").data
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        return data[0]
    if isinstance(data, dict) and "name" in data:
        return data
    raise PvcError(f"Node {name!r} not found.")


# --- list / info ------------------------------------------------------------------------------


@node.command("list")
@click.argument("limit", required=False)
@click.option(
    "--daemon-state", type=click.Choice(DAEMON_STATES), help="Only nodes in this daemon state."
)
@click.option(
    "--coordinator-state",
    type=click.Choice(COORDINATOR_STATES),
    help="Only nodes in this coordinator state.",
)
@click.option(
    "--domain-state", type=click.Choice(DOMAIN_STATES), help="Only nodes in this domain state."
)
@format_option
def list_nodes(
    limit: str | None,
    daemon_state: str | None,
    coordinator_state: str | None,
    domain_state: str | None,
    fmt: str,
) -> None:
    """List nodes (all, or those whose name matches the regex LIMIT).

    Reads GET /node. Several state filters are OR-ed by the API. Memory is shown in
    binary units (G = GiB).

    \b
    Examples:
      pvc node list
      pvc node list hv1
      pvc node list --daemon-state dead
      pvc node list --coordinator-state primary -f json
    """
    settings = get_settings()
    params = {
        "limit": limit,
        "daemon_state": daemon_state,
        "coordinator_state": coordinator_state,
        "domain_state": domain_state,
    }
    resp = settings.client().get("/node", params, accept=(404,))
    nodes = resp.data if resp.status == 200 and isinstance(resp.data, list) else []
    show_list(settings.painter, nodes, fmt, "No nodes found.", render_node_table)


def render_node_table(painter: Painter, nodes: list[dict[str, Any]]) -> str:
    headers = [
        "NAME",
        "VERSION",
        "HEALTH",
        "DAEMON",
        "COORDINATOR",
        "DOMAIN",
        "VMS",
        "VCPUS",
        "LOAD",
        "MEM",
        "USED",
        "FREE",
        "ALLOC",
        "PROV",
    ]
    rows = []
    for n in nodes:
        health = n.get("health")
        rows.append(
            [
                (str(n.get("name", "")), {"bold": True}),
                str(n.get("pvc_version") or "-"),
                (fmt_health(health), health_style(health)),
                state_cell(n.get("daemon_state")),
                state_cell(n.get("coordinator_state")),
                state_cell(n.get("domain_state")),
                str(n.get("domains_count", "-")),
                f"{dig(n, 'vcpu.allocated', '-')}/{dig(n, 'vcpu.total', n.get('cpu_count', '-'))}",
                str(n.get("load", "-")),
                human_mib(dig(n, "memory.total")),
                human_mib(dig(n, "memory.used")),
                human_mib(dig(n, "memory.free")),
                human_mib(dig(n, "memory.allocated")),
                human_mib(dig(n, "memory.provisioned")),
            ]
        )
    return render_table(painter, headers, rows, right=range(6, 14))


@node.command()
@node_argument
@click.option("-c", "--check", "check", metavar="NAME",
              help="Show only this health check: its delta, message and data (the details "
                   "the check gathered, e.g. each disk path's usage).")
@format_option
def info(node: str, check: str | None, fmt: str) -> None:
    """Show the details of NODE, with its health checks.

    Reads GET /node/NODE. Health is 100 minus the deltas of the node's checks (docs/health.md).

    \b
    Examples:
      pvc node info hv1
      pvc node info hv1 -f json-pretty
      pvc node info hv1 --check disk
    """
    settings = get_settings()
    data = get_node(settings, node)
    if check is not None:
        data = pick_check(data, check)
        if fmt == "pretty":
            settings.painter.echo(render_check(settings.painter, data))
            return
    if fmt != "pretty":
        emit_json(data, fmt)
        return
    settings.painter.echo(render_node_info(settings.painter, data))


def pick_check(n: dict[str, Any], name: str) -> dict[str, Any]:
    """One health check's entry of the node; PvcError naming the checks there are."""
    details = [d for d in n.get("health_details") or [] if isinstance(d, dict)]
    for d in details:
        if d.get("name") == name:
            return d
    known = ", ".join(str(d.get("name")) for d in details) or "none reported"
    raise PvcError(f"Node {n.get('name')} has no health check '{name}' (checks: {known})")


def render_check(painter: Painter, d: dict[str, Any]) -> str:
    import json

    when = d.get("last_run")
    pairs = [("Check", painter.bold(str(d.get("name", "")))),
             ("Delta", fmt_delta(d.get("health_delta"))),
             ("Message", str(d.get("message", ""))),
             ("Last run", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
              if isinstance(when, (int, float)) else "never")]
    data = d.get("data") or {}
    text = render_pairs(painter, pairs)
    if data:
        text += "\n\n" + painter.bold("Data:") + "\n" + json.dumps(data, indent=2,
                                                                    sort_keys=True)
    return text


def render_node_info(painter: Painter, n: dict[str, Any]) -> str:
    mem = n.get("memory") or {}
    running = n.get("running_domains") or []
    pairs = [
        ("Name", painter.bold(str(n.get("name", "")))),
        ("PVC version", str(n.get("pvc_version") or "-")),
        ("Health", painter.health(n.get("health"))),
        ("Daemon state", painter.state(n.get("daemon_state"))),
        ("Coordinator state", painter.state(n.get("coordinator_state"))),
        ("Domain state", painter.state(n.get("domain_state"))),
        ("Kernel", f"{n.get('kernel', '-')} ({n.get('arch', '-')}, {n.get('os', '-')})"),
        ("CPUs", str(n.get("cpu_count", "-"))),
        ("Load", str(n.get("load", "-"))),
        (
            "VMs",
            f"{n.get('domains_count', len(running))}"
            + (f": {', '.join(running)}" if running else ""),
        ),
        ("vCPUs", f"{dig(n, 'vcpu.allocated', '-')} allocated of {dig(n, 'vcpu.total', '-')}"),
        (
            "Memory",
            f"{human_mib(mem.get('total'))} total, {human_mib(mem.get('used'))} used, "
            f"{human_mib(mem.get('free'))} free",
        ),
        (
            "Memory alloc/prov",
            f"{human_mib(mem.get('allocated'))} allocated, "
            f"{human_mib(mem.get('provisioned'))} provisioned",
        ),
    ]
    if isinstance(n.get("bmc"), dict):
        pairs.append(("BMC", bmc_text(n["bmc"])))
    text = render_pairs(painter, pairs)
    details = [d for d in n.get("health_details") or [] if isinstance(d, dict)]
    if details:
        lines = [text, "", painter.bold("Health plugins:")]
        width = max(len(str(d.get("name", ""))) for d in details)
        for d in details:
            delta = fmt_delta(d.get("health_delta"))
            lines.append(
                f"  {str(d.get('name', '')).ljust(width)}  {delta:>4}  {d.get('message', '')}"
            )
        text = "\n".join(lines)
    return text


def bmc_text(bmc: dict[str, Any]) -> str:
    """The node's BMC as its last self-check saw it (the fencing plugin's ``bmc`` field)."""
    if not bmc.get("host"):
        return f"none ({bmc.get('error') or 'not configured'})"
    where = f"{bmc.get('host')}:{bmc.get('port')} as {bmc.get('user')}"
    if bmc.get("reachable"):
        return f"{where}: reachable, power {bmc.get('power')}"
    return f"{where}: UNREACHABLE ({bmc.get('error') or 'no answer'})"


# --- coordinator state --------------------------------------------------------------------------


def _current_primary(settings: Settings) -> str | None:
    """GET /status/primary_node; None while there is no primary (204, or 500 in the original)."""
    resp = settings.client().get("/status/primary_node", accept=(204, 500))
    if resp.status != 200 or not isinstance(resp.data, dict):
        return None
    name = resp.data.get("primary_node")
    return None if name in (None, "", "none") else str(name)


def _set_coordinator(node: str, state: str, wait: bool) -> None:
    settings = get_settings()
    resp = settings.client().post(f"/node/{node}/coordinator-state", {"state": state})
    message = api_message(resp.data)
    click.echo(message or f"Requested {state} coordinator state for {node}.")
    if not wait or "already" in message:
        return
    if state == "primary":

        def done(p: str | None) -> bool:
            return p == node
    else:

        def done(p: str | None) -> bool:
            return p is not None and p != node

    primary = poll(
        lambda: _current_primary(settings),
        done,
        timeout=PRIMARY_WAIT,
        what=f"the primary coordinator to change ({node} -> {state})",
    )
    click.echo(f"Primary coordinator is now {primary}.")


@node.command()
@node_argument
@click.option(
    "-w", "--wait", is_flag=True, help="Wait until the node is the primary, then print it."
)
def primary(node: str, wait: bool) -> None:
    """Make coordinator NODE the primary.

    Sends POST /node/NODE/coordinator-state state=primary; --wait polls
    GET /status/primary_node until NODE is primary.

    \b
    Examples:
      pvc node primary hv2
      pvc node primary hv2 --wait
    """
    _set_coordinator(node, "primary", wait)


@node.command()
@node_argument
@click.option(
    "-w", "--wait", is_flag=True, help="Wait until another node is primary, then print it."
)
def secondary(node: str, wait: bool) -> None:
    """Make coordinator NODE step down as primary.

    Sends POST /node/NODE/coordinator-state state=secondary; --wait polls
    GET /status/primary_node until another coordinator is primary.

    \b
    Examples:
      pvc node secondary hv1
      pvc node secondary hv1 --wait
    """
    _set_coordinator(node, "secondary", wait)


# --- domain state (flush / ready) ---------------------------------------------------------------


def _set_domain(node: str, state: str, wait: bool) -> None:
    settings = get_settings()
    client = settings.client()
    resp = client.post(f"/node/{node}/domain-state", {"state": state}, accept=(202,))
    data = resp.data if isinstance(resp.data, dict) else {}
    message = api_message(data)
    task_id = data.get("task_id")
    if message:
        click.echo(message)
    if not wait:
        if task_id:
            click.echo(f"Task ID: {task_id} (follow it with `pvc task show {task_id} --wait`)")
        return
    if task_id:
        report_task(str(task_id), wait_task(client, str(task_id)))
        return
    if "already" in message:
        return
    # An API without tasks (the original): watch the node until the transition ends.
    final = poll(
        lambda: get_node(settings, node),
        lambda n: n.get("domain_state") not in ("flush", "unflush"),
        what=f"node {node} to finish its {state}",
    )
    click.echo(f"Node {node} is now {final.get('domain_state')}.")


@node.command()
@node_argument
@click.option("-w", "--wait", is_flag=True, help="Show progress until all VMs have moved away.")
def flush(node: str, wait: bool) -> None:
    """Take NODE out of service, moving its VMs away.

    Sends POST /node/NODE/domain-state state=flush; --wait follows the flush task
    (GET /tasks/ID) with a progress bar.

    \b
    Examples:
      pvc node flush hv1
      pvc node flush hv1 --wait
    """
    _set_domain(node, "flush", wait)


@node.command()
@node_argument
@click.option("-w", "--wait", is_flag=True, help="Show progress until the VMs are back.")
def ready(node: str, wait: bool) -> None:
    """Return NODE to service, bringing its VMs back.

    Sends POST /node/NODE/domain-state state=ready; --wait follows the task.

    \b
    Examples:
      pvc node ready hv1
      pvc node ready hv1 --wait
    """
    _set_domain(node, "ready", wait)


# --- log ----------------------------------------------------------------------------------------

FOLLOW_WINDOW = 200


def new_lines(previous: list[str], current: list[str]) -> list[str]:
    """The lines of `current` after its overlap with the end of `previous`."""
    if not previous:
        return current
    last = previous[-1]
    for k in range(min(len(previous), len(current)), 0, -1):
        if current[k - 1] == last and previous[-k:] == current[:k]:
            return current[k:]
    return current  # no overlap: more than a window of new lines arrived


@node.command()
@node_argument
@click.option(
    "-l",
    "--lines",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="How many of the last lines to show.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=0.5,
    show_default=True,
    help="Seconds between polls with --follow.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="pretty",
    show_default=True,
    help="pretty: the lines; json/json-pretty: the API's {name, data} (with --follow, one "
    "object per batch of new lines). No short -f: that is --follow, as in the original CLI.",
)
def log(node: str, lines: int, follow: bool, interval: float, fmt: str) -> None:
    """Show (or follow) the daemon log of NODE.

    Reads GET /node/NODE/log?lines=N; --follow polls and prints only new lines.

    \b
    Examples:
      pvc node log hv1
      pvc node log hv1 --lines 50
      pvc node log hv1 --follow
      pvc node log hv1 --format json | jq -r .data
    """
    client = get_settings().client()
    name = node

    def fetch(n: int) -> list[str]:
        nonlocal name
        data = client.get(f"/node/{node}/log", {"lines": n}).data
        if isinstance(data, dict):
            name = str(data.get("name") or node)
        text = data.get("data", "") if isinstance(data, dict) else ""
        return str(text or "").splitlines()

    def show(batch: list[str]) -> None:
        if fmt != "pretty":
            emit_json({"name": name, "data": "\n".join(batch)}, fmt)
            return
        for line in batch:
            click.echo(line)

    shown = fetch(lines)
    show(shown)
    if not follow:
        return
    window = shown[-FOLLOW_WINDOW:]
    try:
        while True:
            time.sleep(interval)
            try:
                current = fetch(FOLLOW_WINDOW)
            except PvcError as exc:
                if exc.transient:
                    continue
                raise
            fresh = new_lines(window, current)
            if fresh:
                show(fresh)
            window = current
    except KeyboardInterrupt:
        return
