"""`pvc cluster`: cluster-wide status, maintenance mode and faults."""

from __future__ import annotations

from typing import Any

import click

from pvc_cli.client import api_message
from pvc_cli.commands.fault import fault
from pvc_cli.context import get_settings
from pvc_cli.errors import PvcError
from pvc_cli.output import (
    STATE_STYLES,
    YELLOW,
    Painter,
    dig,
    emit_json,
    fmt_delta,
    fmt_health,
    format_option,
    human_kib,
    human_mib,
    render_pairs,
)


@click.group()
def cluster() -> None:
    """Cluster-wide status, settings and faults.

    \b
    Examples:
      pvc cluster status
      pvc cluster maintenance on
      pvc cluster fault list
    """


cluster.add_command(fault)


@cluster.command()
@format_option
def status(fmt: str) -> None:
    """Show cluster health, state counts and resources.

    Reads GET /status.

    \b
    Examples:
      pvc cluster status
      pvc cluster status -f json-pretty
    """
    settings = get_settings()
    data = settings.client().get("/status").data
    if fmt != "pretty":
        emit_json(data, fmt)
        return
    if not isinstance(data, dict):
        raise PvcError(f"unexpected answer to GET /status: {type(data).__name__}, not an object")
    settings.painter.echo(render_status(settings.painter, data))


def is_true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def _counts(painter: Painter, counts: Any) -> str:
    """{"total": 3, "run,ready": 2, ...} -> "3 total: 2 run,ready, ..." with coloured states."""
    if not isinstance(counts, dict):
        return "-" if counts is None else str(counts)
    parts = []
    for key, number in counts.items():
        if key == "total":
            continue
        states = ",".join(painter.state(s) for s in str(key).split(","))
        parts.append(f"{number} {states}")
    total = counts.get("total", sum(v for v in counts.values() if isinstance(v, int)))
    return f"{total} total" + (": " + ", ".join(parts) if parts else "")


def _pct(value: Any) -> str:
    return f"{value:.1f}%" if isinstance(value, int | float) else "-"


def render_status(painter: Painter, data: dict[str, Any]) -> str:
    maint = is_true(data.get("maintenance"))
    health = dig(data, "cluster_health.health")
    cpu = dig(data, "resources.cpu", {})
    mem = dig(data, "resources.memory", {})
    disk = dig(data, "resources.disk", {})
    pairs = [
        ("Cluster", painter.bold(str(data.get("cluster_name") or "-"))),
        ("Health", painter.health(health)),
        ("Maintenance", painter.style("on", YELLOW) if maint else "off"),
        (
            "Primary node",
            painter.style(str(data.get("primary_node") or "-"), STATE_STYLES["primary"]),
        ),
        ("PVC version", str(data.get("pvc_version") or "-")),
        ("Upstream IP", str(data.get("upstream_ip") or "-")),
        ("Nodes", _counts(painter, data.get("nodes"))),
        ("VMs", _counts(painter, data.get("vms"))),
        ("OSDs", _counts(painter, data.get("osds"))),
        ("Networks", str(data.get("networks", "-"))),
        ("Pools", str(data.get("pools", "-"))),
        ("Volumes", str(data.get("volumes", "-"))),
        ("Snapshots", str(data.get("snapshots", "-"))),
        (
            "CPU",
            f"{cpu.get('total', '-')} cores, load {cpu.get('load', '-')}, "
            f"{cpu.get('allocated', '-')} vCPUs allocated, {_pct(cpu.get('utilization'))} used",
        ),
        (
            "Memory",
            f"{human_mib(mem.get('used'))} used of {human_mib(mem.get('total'))} "
            f"({_pct(mem.get('utilization'))}), {human_mib(mem.get('allocated'))} allocated, "
            f"{human_mib(mem.get('provisioned'))} provisioned",
        ),
        (
            "Disk",
            f"{human_kib(disk.get('used'))} used of {human_kib(disk.get('total'))} "
            f"({_pct(disk.get('utilization'))})",
        ),
    ]
    lines = [render_pairs(painter, pairs)]
    messages = dig(data, "cluster_health.messages", [])
    if messages:
        lines.append("")
        lines.append(painter.bold("Health messages:"))
        for msg in messages:
            if isinstance(msg, dict):
                delta = fmt_delta(msg.get("health_delta"))
                text = f"{delta:>4}  {msg.get('id', '')}: {msg.get('text', '')}"
            else:
                text = str(msg)
            lines.append("  " + text)
    node_health = data.get("node_health") or {}
    if isinstance(node_health, dict) and node_health:
        lines.append("")
        lines.append(painter.bold("Node health:"))
        width = max(len(n) for n in node_health)
        for name, info in sorted(node_health.items()):
            info = info if isinstance(info, dict) else {}
            value = info.get("health")
            cell = painter.health(value) + " " * (5 - len(fmt_health(value)))
            msgs = "; ".join(str(m) for m in info.get("messages") or [])
            lines.append(f"  {name.ljust(width)}  {cell}  {msgs}".rstrip())
    return "\n".join(lines)


@cluster.command()
@click.argument("state", type=click.Choice(["on", "off"]))
def maintenance(state: str) -> None:
    """Turn maintenance mode on or off.

    Sends POST /status state=true|false. In maintenance mode the cluster raises no faults
    and does not fence nodes.

    \b
    Examples:
      pvc cluster maintenance on
      pvc cluster maintenance off
    """
    settings = get_settings()
    resp = settings.client().post("/status", {"state": "true" if state == "on" else "false"})
    click.echo(api_message(resp.data) or f"Maintenance mode {state}.")
