"""`pvc node fence`: the fencing plugin's node subcommands (loaded lazily by `pvc node`).

Only click and pvc_cli helpers are imported at the top, so `pvc --help` stays fast.
"""

from __future__ import annotations

import getpass
import socket

import click

from pvc_cli.sdk import EXIT_USAGE, PvcError, api_message, complete_node, get_settings


def operator_name() -> str:
    """``user@host`` of whoever runs the CLI, for the audit record."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:64]


@click.group()
def fence() -> None:
    """Act on the fencing of dead nodes.

    \b
    Examples:
      pvc node fence confirm hv3 --yes
    """


@fence.command()
@click.argument("node", shell_complete=complete_node)
@click.option("--yes", is_flag=True,
              help="Required: you confirm that NODE is powered off and stays off until it "
                   "is repaired.")
def confirm(node: str, yes: bool) -> None:
    """Confirm that dead NODE is powered off, so that its VMs are recovered elsewhere.

    Use this only when the cluster could not fence NODE (its BMC did not answer or did not
    report the power off: `pvc node info` shows daemon state `dead`, and the fence fault says
    the power off failed) and you have made sure yourself that it is off: pulled its power,
    switched it off at the PDU, or powered it off in person. Like Pacemaker's
    `stonith_admin --confirm`.

    DANGER: the primary then restarts NODE's VMs on other nodes. If NODE is in fact still
    running (hung, partitioned, or its guests still writing), each such VM then runs twice
    and writes its disks from two hosts at once, which can corrupt them beyond repair. The
    cluster refuses while NODE's keepalive is younger than its fence delay, but a node that
    is merely frozen or cut off looks exactly like a dead one: only you can tell.

    The confirmation is audited: the API records who (user@host of this CLI) and from which
    address; the primary logs it and raises an informational fault naming who and when.

    \b
    Examples:
      pvc node fence confirm hv3 --yes
    """
    if not yes:
        raise PvcError(f"refusing to confirm that node {node} is powered off without --yes "
                       "(see `pvc node fence confirm --help`: a wrong confirmation can run "
                       "VMs twice)", exit_code=EXIT_USAGE)
    client = get_settings().client()
    resp = client.post(f"/node/{node}/fence/confirm", {"operator": operator_name()})
    click.echo(api_message(resp.data) or f"Power off of node {node} confirmed.")
    click.echo(f"Follow the recovery with `pvc node info {node}` (domain state fence-flush, "
               "then flushed).")
