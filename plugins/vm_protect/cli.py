"""``pvc vm snapshot``: added to vm_kvm's ``pvc vm`` group through the dotted ``pvc.cli``
entry point ``vm.snapshot``."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from pvc_cli.sdk import (
    Painter,
    format_option,
    get_settings,
    render_table,
    report_task,
    show_list,
    wait_task,
)


def _start(method: str, vm: str, path: str, name: str | None, wait: bool,
           **extra: Any) -> None:
    client = get_settings().client()
    answer = client.request(method, f"/vm/{quote(vm, safe='')}/snapshot{path}",
                            {"snapshot_name": name, **extra})
    data = answer.data if isinstance(answer.data, dict) else {}
    task_id = data.get("task_id")
    if not wait or not task_id:
        click.echo(f"{data.get('message', 'Started.')} Task {task_id} on "
                   f"{data.get('run_on', 'the primary')}; follow it with: pvc task show "
                   f"{task_id}")
        return
    report_task(task_id, wait_task(client, task_id))


WAIT = click.option("--wait", is_flag=True, help="Follow the task to its end")


@click.group()
def snapshot() -> None:
    """Snapshots of a VM: all of its volumes at one moment, with its configuration. A
    running VM's snapshot is crash-consistent (as after a power cut); rollback needs the VM
    stopped.

    \b
    Examples:
      pvc vm snapshot create web1 before-upgrade --wait
      pvc vm snapshot list web1
      pvc vm snapshot rollback web1 before-upgrade --wait
      pvc vm snapshot export web1 before-upgrade /srv/backups --wait
    """


@snapshot.command("create")
@click.argument("vm")
@click.argument("name", required=False)
@WAIT
def create(vm: str, name: str | None, wait: bool) -> None:
    """Snapshot VM (name or UUID) as NAME (default: the UTC time, YYYYMMDDHHMMSS).

    \b
    Examples:
      pvc vm snapshot create web1
      pvc vm snapshot create web1 before-upgrade --wait
    """
    _start("POST", vm, "", name, wait)


@snapshot.command("remove")
@click.argument("vm")
@click.argument("name")
@WAIT
def remove(vm: str, name: str, wait: bool) -> None:
    """Remove snapshot NAME of VM (its volume snapshots, then its record).

    \b
    Examples:
      pvc vm snapshot remove web1 before-upgrade --wait
    """
    _start("DELETE", vm, "", name, wait)


@snapshot.command("rollback")
@click.argument("vm")
@click.argument("name")
@WAIT
def rollback(vm: str, name: str, wait: bool) -> None:
    """Put the volumes and XML of the stopped VM back as they were at snapshot NAME.
    Whatever the VM wrote since is lost.

    \b
    Examples:
      pvc vm stop web1 && pvc vm snapshot rollback web1 before-upgrade --wait
    """
    _start("POST", vm, "/rollback", name, wait)


@snapshot.command("export")
@click.argument("vm")
@click.argument("name")
@click.argument("path")
@click.option("-i", "--incremental", "parent", metavar="PARENT",
              help="Write only the changes since snapshot PARENT, exported to PATH before")
@WAIT
def export(vm: str, name: str, path: str, parent: str | None, wait: bool) -> None:
    """Write snapshot NAME of VM to files under PATH/VM/NAME on the primary node: each
    volume (whole, or its changes since PARENT), the VM's configuration and a manifest of
    checksums. PATH is an absolute directory on the primary (a mounted backup disk or
    share); an export that fails leaves nothing under PATH/VM/NAME.

    \b
    Examples:
      pvc vm snapshot export web1 monday /srv/backups --wait
      pvc vm snapshot export web1 tuesday /srv/backups -i monday --wait
    """
    _start("POST", vm, "/export", name, wait, export_path=path, incremental_parent=parent)


@snapshot.command("import")
@click.argument("vm")
@click.argument("name")
@click.argument("path")
@click.option("-r/-R", "--retain-snapshot/--remove-snapshot", "retain", default=True,
              help="Keep the imported snapshots as snapshots of the new VM (default), or "
                   "remove them")
@WAIT
def import_(vm: str, name: str, path: str, retain: bool, wait: bool) -> None:
    """Define VM again from its export NAME under PATH/VM on the primary node, with its
    volumes (and those of the exports NAME is incremental from). The VM and its volumes
    must not exist; every file is checked against the manifest before anything is made,
    and the VM is defined stopped.

    \b
    Examples:
      pvc vm snapshot import web1 tuesday /srv/backups --wait
    """
    _start("POST", vm, "/import", name, wait, import_path=path,
           retain_snapshot="true" if retain else "false")


@snapshot.command("list")
@click.argument("vm")
@format_option
def list_(vm: str, fmt: str) -> None:
    """The snapshots of VM, newest first.

    \b
    Examples:
      pvc vm snapshot list web1
      pvc vm snapshot list web1 -f json
    """
    found = get_settings().client().get(f"/vm/{quote(vm, safe='')}/snapshot").data or []

    def table(p: Painter, items: list[dict[str, Any]]) -> str:
        return render_table(p, ["NAME", "AGE", "CONSISTENCY", "VOLUMES"], [
            [s["name"], f"{s['age']}s", s["consistency"], ", ".join(s["rbd_snapshots"])]
            for s in items])

    show_list(get_settings().painter, found, fmt, f"VM {vm} has no snapshot.", table)


@click.command()
@click.option("--force-full", is_flag=True, help="A full backup of every VM this time")
@WAIT
def autobackup(force_full: bool, wait: bool) -> None:
    """Back up every VM with an autobackup tag to the primary's autobackup_path (a
    snapshot and an export each): a full export every autobackup_full_interval runs,
    incrementals from it between, and only the newest autobackup_full_retention fulls kept
    with their incrementals. The settings are in plugins.vm_protect of pvcnoded.yaml.

    \b
    Examples:
      pvc vm tag add web1 autobackup
      pvc vm autobackup --wait
    """
    client = get_settings().client()
    data = client.request("POST", "/vm/autobackup",
                          {"force_full": "true" if force_full else "false"}).data
    data = data if isinstance(data, dict) else {}
    task_id = data.get("task_id")
    if not wait or not task_id:
        click.echo(f"{data.get('message', 'Started.')} Task {task_id}; follow it with: "
                   f"pvc task show {task_id}")
        return
    report_task(task_id, wait_task(client, task_id))
