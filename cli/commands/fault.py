"""`pvc cluster fault`: list, acknowledge and delete cluster faults."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from pvc_cli.client import api_message
from pvc_cli.context import get_settings
from pvc_cli.errors import PvcError
from pvc_cli.output import (
    GREEN,
    RED,
    Painter,
    fmt_delta,
    fmt_time,
    format_option,
    render_table,
    show_list,
)

SORT_KEYS = (
    "first_reported",
    "last_reported",
    "acknowledged_at",
    "status",
    "health_delta",
    "message",
)
STATUS_STYLES = {"new": RED, "ack": GREEN}
YES = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")


@click.group()
def fault() -> None:
    """List, acknowledge and delete cluster faults.

    A fault lowers the cluster health by its health delta until it is acknowledged.

    \b
    Examples:
      pvc cluster fault list
      pvc cluster fault ack bmc-hv2
      pvc cluster fault delete-all --yes
    """


def _path(fault_id: str) -> str:
    return "/faults/" + quote(fault_id, safe="")


def _unique(ids: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(ids))


@fault.command("list")
@click.argument("fault_id", metavar="[ID]", required=False)
@click.option(
    "-s",
    "--sort-key",
    type=click.Choice(SORT_KEYS),
    default="last_reported",
    show_default=True,
    help="Sort by this field: times newest first, the others ascending.",
)
@format_option
def list_faults(fault_id: str | None, sort_key: str, fmt: str) -> None:
    """List faults (all, or only the fault ID).

    Reads GET /faults?sort_key=KEY, or GET /faults/ID.

    \b
    Examples:
      pvc cluster fault list
      pvc cluster fault list --sort-key health_delta
      pvc cluster fault list bmc-hv2 -f json-pretty
    """
    settings = get_settings()
    client = settings.client()
    if fault_id is None:
        data = client.get("/faults", {"sort_key": sort_key}).data
    else:
        data = client.get(_path(fault_id)).data
        if not data and fmt == "pretty":
            raise PvcError(f"No fault with ID {fault_id} found")
    if not isinstance(data, list):
        raise PvcError(f"unexpected answer to GET /faults: {type(data).__name__}, not a list")
    show_list(settings.painter, data, fmt, "No faults found.", render_fault_table)


def render_fault_table(painter: Painter, faults: list[dict[str, Any]]) -> str:
    headers = ["ID", "STATUS", "HEALTH DELTA", "FIRST REPORTED", "LAST REPORTED", "MESSAGE"]
    rows = []
    for f in faults:
        status = str(f.get("status") or "-")
        rows.append(
            [
                (str(f.get("id", "")), {"bold": True}),
                (status, STATUS_STYLES.get(status)),
                fmt_delta(f.get("health_delta")),
                fmt_time(f.get("first_reported")),
                fmt_time(f.get("last_reported")),
                " ".join(str(f.get("message") or "").split()),
            ]
        )
    return render_table(painter, headers, rows, right=(2,))


def _each(method: str, ids: list[str]) -> None:
    """One request per ID; successes are printed, failures reported together at the end."""
    client = get_settings().client()
    failed = []
    for fault_id in ids:
        resp = client.request(method, _path(fault_id), accept=(404,))
        if resp.status == 404:
            failed.append(api_message(resp.data) or f"No fault with ID {fault_id} found")
        else:
            click.echo(api_message(resp.data) or f"Done: {fault_id}")
    if failed:
        raise PvcError("; ".join(failed))


@fault.command()
@click.argument("fault_ids", metavar="ID...", nargs=-1, required=True)
def ack(fault_ids: tuple[str, ...]) -> None:
    """Acknowledge faults by ID.

    Sends PUT /faults/ID for each. Acknowledged faults no longer lower the cluster health.
    One reported again with the same message stays acknowledged; a new message makes it new
    again.

    \b
    Examples:
      pvc cluster fault ack bmc-hv2
      pvc cluster fault ack bmc-hv2 bmc-hv3
    """
    _each("PUT", _unique(fault_ids))


@fault.command("ack-all")
@YES
def ack_all(yes: bool) -> None:
    """Acknowledge every fault.

    Sends PUT /faults.

    \b
    Examples:
      pvc cluster fault ack-all
      pvc cluster fault ack-all --yes
    """
    if not yes:
        click.confirm("Acknowledge every fault?", abort=True)
    click.echo(api_message(get_settings().client().request("PUT", "/faults").data))


@fault.command()
@click.argument("fault_ids", metavar="ID...", nargs=-1, required=True)
@YES
def delete(fault_ids: tuple[str, ...], yes: bool) -> None:
    """Delete faults by ID.

    Sends DELETE /faults/ID for each. A fault whose cause persists is raised again.

    \b
    Examples:
      pvc cluster fault delete bmc-hv2
      pvc cluster fault delete bmc-hv2 bmc-hv3 --yes
    """
    ids = _unique(fault_ids)
    if not yes:
        click.confirm(f"Delete fault(s) {', '.join(ids)}?", abort=True)
    _each("DELETE", ids)


@fault.command("delete-all")
@YES
def delete_all(yes: bool) -> None:
    """Delete every fault.

    Sends DELETE /faults. Faults whose cause persists are raised again.

    \b
    Examples:
      pvc cluster fault delete-all
      pvc cluster fault delete-all --yes
    """
    if not yes:
        click.confirm("Delete every fault?", abort=True)
    click.echo(api_message(get_settings().client().request("DELETE", "/faults").data))
