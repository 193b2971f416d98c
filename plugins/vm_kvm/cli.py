"""`pvc vm`: define, inspect, start/stop and move VMs (entry point ``vm`` in ``pvc.cli``).

Only click and pvc_cli helpers are imported at the top, so `pvc --help` stays fast.
XML edits (vcpu, memory, network, volume) live in ``cli_edit``.
"""

from __future__ import annotations

import inspect
import sys
import time
from typing import Any

import click

from pvc_cli.sdk import (
    Painter,
    PvcError,
    dig,
    emit_json,
    format_option,
    get_settings,
    human_mib,
    poll,
    render_pairs,
    render_table,
    show_list,
)
from pvc_cli.sdk import state_cell as _state_cell

WAIT_TIMEOUT = 900.0
STATES = ("start", "restart", "shutdown", "stop", "disable", "fail", "migrate", "unmigrate",
          "provision", "mirror")


@click.group()
def vm() -> None:
    """Manage virtual machines.

    \b
    Examples:
      pvc vm define web1.xml --target hv1 --tag web
      pvc vm start web1 --wait
      pvc vm list
      pvc vm migrate web1 --target hv2 --wait
      pvc vm log web1 --follow
    """


def client() -> Any:
    return get_settings().client()


def get_vm(name: str) -> dict[str, Any]:
    data = client().get(f"/vm/{name}").data
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        return data[0]
    raise PvcError(f"VM {name!r} not found.")


def _echo_message(data: Any) -> None:
    msg = data.get("message") if isinstance(data, dict) else None
    click.echo(msg if msg else data)


def _wait_vm(name: str, done: Any, what: str) -> dict[str, Any]:
    def show(v: dict[str, Any]) -> None:
        line = f"{name}: {v.get('state')} on {v.get('running_on') or '-'}"
        if line != getattr(show, "last", None):
            show.last = line  # type: ignore[attr-defined]
            click.echo(line, err=True)

    final = poll(lambda: get_vm(name), done, interval=0.5, timeout=WAIT_TIMEOUT,
                 on_update=show, what=what)
    if final.get("state") == "fail":
        raise PvcError(f"VM {name} failed: {final.get('failed_reason')}")
    return final


# --- list / info / dump -------------------------------------------------------------------

@vm.command("list")
@click.argument("limit", required=False)
@click.option("-t", "--target", "node", help="Only VMs assigned to this node.")
@click.option("-s", "--state", type=click.Choice(STATES), help="Only VMs in this state.")
@click.option("-g", "--tag", help="Only VMs with this tag.")
@click.option("-n", "--negate", is_flag=True, help="Invert the node/state/tag filters.")
@format_option
def list_vms(limit: str | None, node: str | None, state: str | None, tag: str | None,
             negate: bool, fmt: str) -> None:
    """List VMs (all, or those whose name matches the regex LIMIT). Reads GET /vm."""
    resp = client().get("/vm", {"limit": limit, "node": node, "state": state, "tag": tag,
                                "negate": negate or None}, accept=(404,))
    vms = resp.data if resp.status == 200 and isinstance(resp.data, list) else []
    show_list(get_settings().painter, vms, fmt, "No VMs found.", _vm_table)


def _vm_table(painter: Painter, vms: list[dict[str, Any]]) -> str:
    rows = [[v.get("name", ""), _state_cell(v.get("state")), v.get("node", ""),
             v.get("migrated", ""), str(v.get("vcpu", "")), human_mib(v.get("memory")),
             ",".join(t.get("name", "") for t in v.get("tags") or [])] for v in vms]
    return render_table(painter, ["NAME", "STATE", "NODE", "MIGRATED", "VCPUS", "MEMORY",
                                  "TAGS"], rows, right=(4, 5))


@vm.command()
@click.argument("name")
@format_option
def info(name: str, fmt: str) -> None:
    """Show a VM: state, placement, metadata, resources, devices. Reads GET /vm/NAME."""
    v = get_vm(name)
    if fmt != "pretty":
        emit_json(v, fmt)
        return
    p = get_settings().painter
    pairs = [("Name", v.get("name", "")), ("UUID", v.get("uuid", "")),
             ("State", p.state(v.get("state"))),
             ("Node", f"{v.get('node')}" + (f" (migrated from {v.get('last_node')})"
                                            if v.get("last_node") else "")),
             ("Running on", str(v.get("running_on") or "-")),
             ("Failed reason", v.get("failed_reason") or "-"),
             ("Crashes", _crashes(v.get("crashes") or {})),
             ("vCPUs", str(v.get("vcpu"))), ("Memory", human_mib(v.get("memory"))),
             ("Type", f"{v.get('type')} {v.get('arch')} {v.get('machine')}"),
             ("Node limit", ",".join(v.get("node_limit") or []) or "any"),
             ("Node selector", str(v.get("node_selector") or "default")),
             ("Autostart", str(v.get("node_autostart"))),
             ("Migration", f"{v.get('migration_method') or 'default'}, max downtime "
                           f"{v.get('migration_max_downtime')} ms"),
             ("Tags", ", ".join(t.get("name", "") + (" (protected)" if t.get("protected")
                                                     else "") for t in v.get("tags") or [])
              or "-"),
             ("CPU time", f"{dig(v, 'vcpu_stats.cpu_time', 0) / 1e9:.1f} s")]
    for i, d in enumerate(v.get("disks") or []):
        if d:
            pairs.append((f"Disk {i}", f"{d.get('dev')} ({d.get('bus')}) {d.get('type')} "
                                       f"{d.get('name')}"))
    for i, n in enumerate(v.get("networks") or []):
        on = f" (network {n['network']})" if n.get("network") else ""
        lease = f", address {n['address']}" if n.get("address") else ""
        pairs.append((f"NIC {i}", f"{n.get('type')} {n.get('source')}{on} {n.get('mac')} "
                                  f"{n.get('model') or ''}".rstrip() + lease))
    p.echo(render_pairs(p, pairs))


def _crashes(c: dict) -> str:
    if not c.get("count"):
        return "none"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c["last"])) if c.get("last") \
        else "?"
    return (f"{c['count']} in all, {c.get('recent', 0)} recently; last {when} on "
            f"{c.get('node') or '?'}: {c.get('reason') or '?'}")


@vm.command()
@click.argument("name")
def dump(name: str) -> None:
    """Print the VM's libvirt XML."""
    click.echo(get_vm(name).get("xml", "").replace("'", '"'))


# --- define / modify / remove / rename ------------------------------------------------------

@vm.command()
@click.argument("xml_file", type=click.File("r"))
@click.option("-t", "--target", "node", help="Node to define it on (default: by selector).")
@click.option("-l", "--limit", help="Comma-separated nodes it may run on.")
@click.option("-s", "--selector", type=click.Choice(["mem", "memprov", "vcpus", "load", "vms",
                                                     "none"]), default="none",
              show_default=True, help="How target nodes are chosen.")
@click.option("-a/-A", "--autostart/--no-autostart", default=False,
              help="Start it when its node becomes ready after a flush.")
@click.option("-m", "--method", type=click.Choice(["live", "shutdown", "none"]), default="none",
              show_default=True, help="Migration method.")
@click.option("-d", "--max-downtime", type=int, default=300, show_default=True,
              help="Max pause of a live migration (ms).")
@click.option("-g", "--tag", "tags", multiple=True, help="User tag (repeatable).")
@click.option("-G", "--protected-tag", "ptags", multiple=True, help="Protected user tag.")
def define(xml_file: Any, node: str | None, limit: str | None, selector: str, autostart: bool,
           method: str, max_downtime: int, tags: tuple[str, ...], ptags: tuple[str, ...]) -> None:
    """Define a VM from a libvirt XML file (it stays stopped). POST /vm."""
    data = client().post("/vm", {"xml": xml_file.read(), "node": node, "limit": limit,
                                 "selector": selector, "autostart": autostart,
                                 "migration_method": method,
                                 "migration_max_downtime": max_downtime,
                                 "user_tags": list(tags) or None,
                                 "protected_tags": list(ptags) or None}).data
    _echo_message(data)


@vm.command()
@click.argument("name")
@click.argument("xml_file", type=click.File("r"))
@click.option("-r", "--restart", is_flag=True,
              help="Restart a running VM (ACPI shutdown + start) so the change applies now.")
def modify(name: str, xml_file: Any, restart: bool) -> None:
    """Replace a VM's XML with XML_FILE (same name and UUID). PUT /vm/NAME.

    The new XML applies at the VM's next start (after a stop, a restart or a shutdown
    migration; a live migration carries the running configuration), or now with --restart.
    """
    _echo_message(client().request("PUT", f"/vm/{name}", {"xml": xml_file.read(),
                                                          "restart": restart}).data)


def _remove(name: str, yes: bool, delete_disks: bool) -> None:
    if not yes:
        click.confirm(f"Remove VM {name} (a running VM is stopped first)?", abort=True)
    _echo_message(client().request("DELETE", f"/vm/{name}",
                                   {"delete_disks": delete_disks}).data)


@vm.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def remove(name: str, yes: bool) -> None:
    """Remove a VM (stops it if running). DELETE /vm/NAME?delete_disks=true."""
    _remove(name, yes, True)


@vm.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def undefine(name: str, yes: bool) -> None:
    """Undefine a VM, keeping its disks. DELETE /vm/NAME?delete_disks=false."""
    _remove(name, yes, False)


@vm.command()
@click.argument("name")
@click.argument("new_name")
def rename(name: str, new_name: str) -> None:
    """Rename a stopped VM."""
    _echo_message(client().post(f"/vm/{name}/rename", {"new_name": new_name}).data)


# --- state ----------------------------------------------------------------------------------

_DONE = {
    "start": lambda v: v.get("state") == "fail" or (v.get("state") == "start"
                                                    and v.get("running_on") == v.get("node")),
    "stop": lambda v: not v.get("running_on"),
    "shutdown": lambda v: v.get("state") in ("stop", "fail") and not v.get("running_on"),
    "restart": lambda v: v.get("state") in ("start", "fail") and v.get("running_on"),
    "disable": lambda v: not v.get("running_on"),
}


def _state_command(state: str, help_text: str, force_help: str | None = None) -> None:
    @vm.command(state, help=help_text)
    @click.argument("name")
    @click.option("-w", "--wait", is_flag=True, help="Wait until the VM got there.")
    @click.option("--force", is_flag=True, help=force_help or "Force it.", hidden=not force_help)
    def command(name: str, wait: bool, force: bool) -> None:
        data = client().post(f"/vm/{name}/state", {"state": state, "force": force or None}).data
        _echo_message(data)
        if wait:
            _wait_vm(name, _DONE[state], f"VM {name} to {state}")


_state_command("start", "Start a VM on its node (POST /vm/NAME/state state=start).")
_state_command("stop", "Stop a VM hard, like pulling its plug.")
_state_command("shutdown", "Shut a VM down through ACPI (hard stop after the node's timeout).")
_state_command("restart", "Restart a VM (ACPI shutdown, then start).")
_state_command("disable", "Shut a VM down and mark it disabled.", "Stop it hard instead.")


# --- placement ------------------------------------------------------------------------------

def _move(name: str, action: str, node: str | None, force: bool, wait: bool,
          force_live: bool) -> None:
    data = client().post(f"/vm/{name}/node", {"action": action, "node": node,
                                              "force": force or None,
                                              "force_live": "true" if force_live else "false"}
                         ).data
    _echo_message(data)
    if wait:
        target = get_vm(name).get("node")
        _wait_vm(name, lambda v: v.get("state") == "fail" or v.get("node") != target
                 or v.get("state") not in ("start", "migrate", "unmigrate", "restart")
                 or (v.get("running_on") == target and v.get("state") == "start"),
                 f"VM {name} to reach {target}")


@vm.command()
@click.argument("name")
@click.option("-t", "--target", "node", help="Target node (default: by selector).")
@click.option("-f", "--force", is_flag=True, help="Migrate even if already migrated.")
@click.option("-w", "--wait", is_flag=True, help="Wait until it runs on the target.")
@click.option("--force-live", is_flag=True, help="Never fall back to a shutdown migration.")
def migrate(name: str, node: str | None, force: bool, wait: bool, force_live: bool) -> None:
    """Migrate a VM to another node, temporarily (unmigrate brings it back)."""
    _move(name, "migrate", node, force, wait, force_live)


@vm.command()
@click.argument("name")
@click.option("-w", "--wait", is_flag=True, help="Wait until it runs on its home node.")
@click.option("--force-live", is_flag=True, help="Never fall back to a shutdown migration.")
def unmigrate(name: str, wait: bool, force_live: bool) -> None:
    """Bring a migrated VM back to the node it came from."""
    _move(name, "unmigrate", None, False, wait, force_live)


@vm.command()
@click.argument("name")
@click.option("-t", "--target", "node", help="Target node (default: by selector).")
@click.option("-w", "--wait", is_flag=True, help="Wait until it runs on the target.")
@click.option("--force-live", is_flag=True, help="Never fall back to a shutdown migration.")
def move(name: str, node: str | None, wait: bool, force_live: bool) -> None:
    """Move a VM to another node permanently."""
    _move(name, "move", node, False, wait, force_live)


@vm.command()
@click.argument("name")
@click.option("-l", "--limit", help="Comma-separated nodes it may run on.")
@click.option("-s", "--selector", type=click.Choice(["mem", "memprov", "vcpus", "load", "vms",
                                                     "none"]))
@click.option("-a/-A", "--autostart/--no-autostart", default=None)
@click.option("-m", "--method", type=click.Choice(["live", "shutdown", "none"]))
@click.option("-d", "--max-downtime", type=int, help="Max pause of a live migration (ms).")
@click.option("-p", "--profile", help="Provisioner profile name.")
def meta(name: str, limit: str | None, selector: str | None, autostart: bool | None,
         method: str | None, max_downtime: int | None, profile: str | None) -> None:
    """Change a VM's PVC metadata (only the options given)."""
    _echo_message(client().post(f"/vm/{name}/meta", {
        "limit": limit, "selector": selector, "autostart": autostart,
        "migration_method": method, "migration_max_downtime": max_downtime,
        "profile": profile}).data)


@vm.command("flush-locks")
@click.argument("name")
@click.option("--force", is_flag=True,
              help="Also when the VM is not stopped, disabled, failed or a mirror "
                   "(cuts a running VM's storage).")
@click.option("-w", "--wait", is_flag=True, help="Wait for the task and show its progress.")
def flush_locks(name: str, force: bool, wait: bool) -> None:
    """Remove the storage (RBD) locks held on a VM's disks, e.g. left by a crashed node.

    Runs as a task on the VM's node; the VM must be in state stop, disable, fail or mirror
    unless --force. POST /vm/NAME/locks.

    \b
    Examples:
      pvc vm flush-locks web1 --wait
      pvc vm flush-locks web1 --force
    """
    from pvc_cli.sdk import report_task, wait_task

    data = client().post(f"/vm/{name}/locks", {"force": force or None}).data
    task_id = str(data.get("task_id", "")) if isinstance(data, dict) else ""
    if not task_id:
        _echo_message(data)
    elif wait:
        report_task(task_id, wait_task(client(), task_id))
    else:
        click.echo(f"Task ID: {task_id} assigned to node {data.get('run_on', '?')}")


# --- tags / console --------------------------------------------------------------------------

@vm.group()
def tag() -> None:
    """Show, add and remove VM tags."""


@tag.command("get")
@click.argument("name")
@format_option
def tag_get(name: str, fmt: str) -> None:
    """Show a VM's tags."""
    data = client().get(f"/vm/{name}/tags").data
    if fmt != "pretty":
        emit_json(data, fmt)
        return
    painter = get_settings().painter
    rows = [[t.get("name", ""), t.get("type", ""), str(t.get("protected"))]
            for t in data.get("tags") or []]
    painter.echo(render_table(painter, ["TAG", "TYPE", "PROTECTED"], rows) if rows
                 else "No tags.")


@tag.command("add")
@click.argument("name")
@click.argument("tag_name")
@click.option("-p", "--protected", is_flag=True, help="A tag that cannot be removed.")
def tag_add(name: str, tag_name: str, protected: bool) -> None:
    """Add a tag to a VM."""
    _echo_message(client().post(f"/vm/{name}/tags", {"action": "add", "tag": tag_name,
                                                     "protected": protected}).data)


@tag.command("remove")
@click.argument("name")
@click.argument("tag_name")
def tag_remove(name: str, tag_name: str) -> None:
    """Remove a tag from a VM."""
    _echo_message(client().post(f"/vm/{name}/tags", {"action": "remove", "tag": tag_name,
                                                     "protected": False}).data)


@vm.command()
@click.argument("name")
@click.option("-l", "--lines", type=int, default=1000, show_default=True,
              help="How many of the last lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
def log(name: str, lines: int, follow: bool) -> None:
    """Show a VM's serial console log. GET /vm/NAME/console."""
    shown = client().get(f"/vm/{name}/console", {"lines": lines}).data.get("data", "")
    if shown:
        click.echo(shown)
    while follow:
        try:
            time.sleep(0.5)
            now = client().get(f"/vm/{name}/console", {"lines": lines}).data.get("data", "")
        except KeyboardInterrupt:
            sys.exit(0)
        for line in new_lines(shown, now):
            click.echo(line)
        shown = now


def new_lines(before: str, after: str) -> list[str]:
    """The lines of ``after`` that follow the last line they share with ``before``."""
    old, new = before.splitlines(), after.splitlines()
    if not old:
        return new
    for size in range(min(len(old), len(new)), 0, -1):
        if old[-size:] == new[:size]:
            return new[size:]
    return new


EXAMPLES = {
    "list": ["pvc vm list", "pvc vm list 'web.*' --state start", "pvc vm list -t hv1 -n -f json"],
    "info": ["pvc vm info web1", "pvc vm info web1 -f json-pretty"],
    "dump": ["pvc vm dump web1 > web1.xml"],
    "define": ["pvc vm define web1.xml", "pvc vm define web1.xml -t hv2 -l hv1,hv2 -s mem -g web",
               "pvc vm define db1.xml --autostart --method shutdown"],
    "modify": ["pvc vm modify web1 web1.xml", "pvc vm modify web1 web1.xml --restart"],
    "remove": ["pvc vm remove web1", "pvc vm remove web1 --yes"],
    "undefine": ["pvc vm undefine web1 --yes"],
    "rename": ["pvc vm rename web1 web2"],
    "start": ["pvc vm start web1", "pvc vm start web1 --wait"],
    "stop": ["pvc vm stop web1 --wait"],
    "shutdown": ["pvc vm shutdown web1", "pvc vm shutdown web1 --wait"],
    "restart": ["pvc vm restart web1 --wait"],
    "disable": ["pvc vm disable web1", "pvc vm disable web1 --force"],
    "migrate": ["pvc vm migrate web1", "pvc vm migrate web1 -t hv2 --wait",
                "pvc vm migrate web1 -t hv3 --force --force-live"],
    "unmigrate": ["pvc vm unmigrate web1 --wait"],
    "move": ["pvc vm move web1 -t hv3 --wait"],
    "meta": ["pvc vm meta web1 -l hv1,hv2 -s vms", "pvc vm meta web1 --autostart -d 500"],
    "tag": ["pvc vm tag get web1", "pvc vm tag add web1 prod -p"],
    "tag get": ["pvc vm tag get web1", "pvc vm tag get web1 -f json"],
    "tag add": ["pvc vm tag add web1 web", "pvc vm tag add web1 prod --protected"],
    "tag remove": ["pvc vm tag remove web1 web"],
    "log": ["pvc vm log web1", "pvc vm log web1 -l 50 --follow"],
    "vcpu": ["pvc vm vcpu get web1", "pvc vm vcpu set web1 2 --restart"],
    "vcpu get": ["pvc vm vcpu get web1"],
    "vcpu set": ["pvc vm vcpu set web1 2", "pvc vm vcpu set web1 4 --restart"],
    "memory": ["pvc vm memory get web1", "pvc vm memory set web1 2048 --restart"],
    "memory get": ["pvc vm memory get web1"],
    "memory set": ["pvc vm memory set web1 1024", "pvc vm memory set web1 2048 -r"],
    "network": ["pvc vm network get web1", "pvc vm network add web1 100 --live"],
    "network get": ["pvc vm network get web1", "pvc vm network get web1 -f json"],
    "network add": ["pvc vm network add web1 100", "pvc vm network add web1 office --live",
                    "pvc vm network add web1 br0"],
    "network remove": ["pvc vm network remove web1 52:54:00:12:34:56 --live"],
    "volume": ["pvc vm volume get web1", "pvc vm volume add web1 /shared/web1-data.qcow2"],
    "volume get": ["pvc vm volume get web1"],
    "volume add": ["pvc vm volume add web1 /shared/data.raw --dev vdb",
                   "pvc vm volume add web1 /shared/data.qcow2 --format qcow2 --live"],
    "volume remove": ["pvc vm volume remove web1 vdb", "pvc vm volume remove web1 vdb --live"],
}


def _add_examples(group: click.Group, prefix: tuple[str, ...] = ()) -> None:
    """Append an Examples block to every command's help (the CLI's convention)."""
    for name, cmd in group.commands.items():
        lines = EXAMPLES.get(" ".join((*prefix, name)))
        if lines and "Example" not in (cmd.help or ""):
            cmd.help = (inspect.cleandoc(cmd.help or "") + "\n\n\b\nExamples:\n"
                        + "\n".join(f"  {line}" for line in lines))
        if isinstance(cmd, click.Group):
            _add_examples(cmd, (*prefix, name))


def _register_edits() -> None:
    from pvc_plugins.vm_kvm import cli_edit

    for command in cli_edit.COMMANDS:
        vm.add_command(command)
    _add_examples(vm)


_register_edits()
