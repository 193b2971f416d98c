"""``pvc provisioner``: templates, user data, scripts and profiles (entry point
``provisioner`` in ``pvc.cli``). Talks only to the API (``/provisioner/...``)."""

from __future__ import annotations

from typing import Any

import click

from pvc_cli.sdk import (
    EXIT_USAGE,
    Painter,
    PvcError,
    api_message,
    format_option,
    get_settings,
    render_table,
    report_task,
    show_list,
    wait_task,
)


def _client() -> Any:
    return get_settings().client()


def _say(answer: Any, default: str) -> None:
    click.echo(api_message(answer.data) or default)


def _list(path: str, limit: str | None) -> list[dict[str, Any]]:
    resp = _client().get(path, {"limit": limit}, accept=(404,))
    return resp.data if resp.status == 200 and isinstance(resp.data, list) else []


def _bool(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _read(file: Any) -> str:
    text = file.read()
    if not text.strip():
        raise PvcError(f"{file.name} is empty", exit_code=EXIT_USAGE)
    return text


@click.group()
def provisioner() -> None:
    """Make VMs from templates: a profile names a system template (CPUs, memory, consoles,
    placement), a network template (NICs), a storage template (disks), cloud-init user data
    and a provisioner script (how the OS gets on the disks).

    \b
    Examples:
      pvc provisioner template system add small -u 2 -m 2048 --serial
      pvc provisioner template network add web && pvc provisioner template network vni add web 100
      pvc provisioner template storage add root10
      pvc provisioner template storage disk add root10 sda -p vms -s 10 -f ext4 -m /
      pvc provisioner script add debootstrap debootstrap.py
      pvc provisioner profile add web -s small -n web -t root10 -x debootstrap
    """


@provisioner.group()
def template() -> None:
    """System, network and storage templates that profiles combine."""


# -- system templates -----------------------------------------------------------------------

@template.group()
def system() -> None:
    """System templates: vCPUs, memory, consoles and placement of the VMs made from them."""


def _system_options(func: Any) -> Any:
    options = [
        click.option("-u", "--vcpus", type=click.IntRange(1, 1024), help="Virtual CPUs"),
        click.option("-m", "--vram", type=click.IntRange(1), help="Memory, MB"),
        click.option("-s/-S", "--serial/--no-serial", default=None,
                     help="Give the VM a serial console (default no)"),
        click.option("-n/-N", "--vnc/--no-vnc", default=None,
                     help="Give the VM a VNC console (default no)"),
        click.option("-b", "--vnc-bind", help="Address VNC listens on (with --vnc)"),
        click.option("--node-limit", help="Nodes the VM may run on, comma-separated"),
        click.option("--node-selector", help="How its node is chosen (none: the default)"),
        click.option("--node-autostart/--no-node-autostart", default=None,
                     help="Start the VM when its node starts"),
        click.option("--migration-method", type=click.Choice(["live", "shutdown", "none"]),
                     help="How the VM moves between nodes"),
        click.option("--max-downtime", "migration_max_downtime", type=click.IntRange(1),
                     help="Longest pause of a live migration, ms (default 300)"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _system_params(**given: Any) -> dict[str, Any]:
    out = {k: v for k, v in given.items() if v is not None}
    for key in ("serial", "vnc", "node_autostart"):
        if key in out:
            out[key] = _bool(out[key])
    return out


@system.command("add")
@click.argument("name")
@_system_options
def system_add(name: str, **given: Any) -> None:
    """Add system template NAME (--vcpus and --vram are required).

    \b
    Example:
      pvc provisioner template system add small -u 2 -m 2048 --serial --vnc -b 127.0.0.1
    """
    if given["vcpus"] is None or given["vram"] is None:
        raise PvcError("give --vcpus and --vram", exit_code=EXIT_USAGE)
    _say(_client().post("/provisioner/template/system",
                        {"name": name, **_system_params(**given)}),
         f"Added system template {name}.")


@system.command("modify")
@click.argument("name")
@_system_options
def system_modify(name: str, **given: Any) -> None:
    """Change the given settings of system template NAME."""
    params = _system_params(**given)
    if not params:
        raise PvcError("nothing to change: give at least one option (see --help)",
                       exit_code=EXIT_USAGE)
    _say(_client().request("PUT", f"/provisioner/template/system/{name}", params),
         f"Modified system template {name}.")


SYSTEM_COLUMNS = ("name", "vcpu_count", "vram_mb", "serial", "vnc", "vnc_bind", "node_limit",
                  "node_selector", "node_autostart", "migration_method",
                  "migration_max_downtime")


@system.command("list")
@click.argument("limit", required=False)
@format_option
def system_list(limit: str | None, fmt: str) -> None:
    """List system templates (LIMIT: a regex on the name)."""
    found = _list("/provisioner/template/system", limit)
    show_list(get_settings().painter, found, fmt, "No system template found.",
              lambda p, items: render_table(
                  p, ["Name", "vCPUs", "MB", "Serial", "VNC", "VNC bind", "Nodes", "Selector",
                      "Autostart", "Migration", "Downtime"],
                  [[_cell(t.get(c)) for c in SYSTEM_COLUMNS] for t in items]))


# -- network templates ----------------------------------------------------------------------

@template.group()
def network() -> None:
    """Network templates: the networks a VM gets a NIC on, in order."""


@network.command("add")
@click.argument("name")
@click.option("-m", "--mac-template", help="MACs from {prefix}, {vmid}, {netid}, e.g. "
              "'{prefix}:ff:{vmid}:{netid}' (default: random MACs)")
def network_add(name: str, mac_template: str | None) -> None:
    """Add network template NAME; then add its networks with `vni add`."""
    _say(_client().post("/provisioner/template/network",
                        {"name": name, "mac_template": mac_template}),
         f"Added network template {name}.")


@network.command("list")
@click.argument("limit", required=False)
@format_option
def network_list(limit: str | None, fmt: str) -> None:
    """List network templates and their networks."""
    found = _list("/provisioner/template/network", limit)
    show_list(get_settings().painter, found, fmt, "No network template found.",
              lambda p, items: render_table(
                  p, ["Name", "MAC template", "Networks"],
                  [[t["name"], _cell(t.get("mac_template")),
                    ",".join(n["vni"] for n in t.get("networks", []))] for t in items]))


@network.group("vni")
def network_vni() -> None:
    """The networks of a network template."""


@network_vni.command("add")
@click.argument("name")
@click.argument("vni")
@click.option("-d", "--permit-duplicate", is_flag=True,
              help="Allow a second NIC on a network already in the template")
def vni_add(name: str, vni: str, permit_duplicate: bool) -> None:
    """Add network VNI to network template NAME (a NIC, after the others)."""
    _say(_client().post(f"/provisioner/template/network/{name}/net/{vni}",
                        {"permit_duplicate": _bool(permit_duplicate)}),
         f"Added network {vni} to {name}.")


@network_vni.command("remove")
@click.argument("name")
@click.argument("vni")
def vni_remove(name: str, vni: str) -> None:
    """Remove network VNI from network template NAME."""
    _say(_client().request("DELETE", f"/provisioner/template/network/{name}/net/{vni}"),
         f"Removed network {vni} from {name}.")


# -- storage templates ----------------------------------------------------------------------

@template.group()
def storage() -> None:
    """Storage templates: the disks of a VM (new volumes or clones) and their filesystems."""


@storage.command("add")
@click.argument("name")
def storage_add(name: str) -> None:
    """Add storage template NAME; then add its disks with `disk add`."""
    _say(_client().post("/provisioner/template/storage", {"name": name}),
         f"Added storage template {name}.")


@storage.command("list")
@click.argument("limit", required=False)
@format_option
def storage_list(limit: str | None, fmt: str) -> None:
    """List storage templates and their disks."""
    found = _list("/provisioner/template/storage", limit)
    rows = [[t["name"], d["disk_id"], d["pool"], _cell(d.get("source_volume")),
             _cell(d.get("disk_size_gb")), _cell(d.get("filesystem")),
             _cell(d.get("filesystem_args")), _cell(d.get("mountpoint"))]
            for t in found for d in t.get("disks", [])]
    rows += [[t["name"], "", "", "", "", "", "", ""] for t in found if not t.get("disks")]
    show_list(get_settings().painter, found, fmt, "No storage template found.",
              lambda p, _items: render_table(
                  p, ["Name", "Disk", "Pool", "Clone of", "GB", "Filesystem", "mkfs args",
                      "Mountpoint"], sorted(rows)))


@storage.group("disk")
def storage_disk() -> None:
    """The disks of a storage template."""


@storage_disk.command("add")
@click.argument("name")
@click.argument("disk")
@click.option("-p", "--pool", required=True, help="The Ceph pool of the volume")
@click.option("-i", "--source-volume", help="Clone this volume instead of making a new one")
@click.option("-s", "--size", "disk_size", type=click.IntRange(1), help="Size of a new "
              "volume, GB")
@click.option("-f", "--filesystem", help="Filesystem the script makes (ext4, xfs, ...)")
@click.option("--fsarg", "fsargs", multiple=True, help="An mkfs option, e.g. 'L=root' "
              "(- or -- is added; repeat)")
@click.option("-m", "--mountpoint", help="Where it is mounted in the guest (needs -f)")
def disk_add(name: str, disk: str, fsargs: tuple[str, ...], **given: Any) -> None:
    """Add disk DISK (sdX or vdX) to storage template NAME.

    \b
    Examples:
      pvc provisioner template storage disk add root10 sda -p vms -s 10 -f ext4 -m /
      pvc provisioner template storage disk add golden sda -p vms -i debian12-image
    """
    args = [a if a.startswith("-") else (f"-{a}" if len(a.split("=")[0]) == 1 else f"--{a}")
            for a in fsargs]
    params = {k: v for k, v in given.items() if v is not None}
    params["filesystem_arg"] = args or None
    _say(_client().post(f"/provisioner/template/storage/{name}/disk/{disk}", params),
         f"Added disk {disk} to {name}.")


@storage_disk.command("remove")
@click.argument("name")
@click.argument("disk")
def disk_remove(name: str, disk: str) -> None:
    """Remove disk DISK from storage template NAME."""
    _say(_client().request("DELETE", f"/provisioner/template/storage/{name}/disk/{disk}"),
         f"Removed disk {disk} from {name}.")


def _remover(group: click.Group, path: str, what: str) -> None:
    @group.command("remove")
    @click.argument("name")
    def remove(name: str) -> None:
        _say(_client().request("DELETE", f"{path}/{name}"), f"Removed {what} {name}.")
    remove.help = f"Remove {what} NAME" + ("." if what == "profile" else
                                           " (refused while a profile uses it).")


for _group, _path, _what in ((system, "/provisioner/template/system", "system template"),
                             (network, "/provisioner/template/network", "network template"),
                             (storage, "/provisioner/template/storage", "storage template")):
    _remover(_group, _path, _what)


# -- userdata and scripts -------------------------------------------------------------------

def _text_group(name: str, field: str, what: str, plural: str, example: str) -> click.Group:
    path = f"/provisioner/{name}"

    @provisioner.group(name)
    def group() -> None:
        pass
    group.help = f"{plural} that profiles name.\n\n\b\nExample:\n  {example}"

    @group.command("add")
    @click.argument("name")
    @click.argument("file", type=click.File("r"))
    def add(name: str, file: Any) -> None:
        _say(_client().post(path, {"name": name, "data": _read(file)}), f"Added {name}.")
    add.help = f"Add {what} NAME from FILE (- for standard input)."

    @group.command("modify")
    @click.argument("name")
    @click.argument("file", type=click.File("r"))
    def modify(name: str, file: Any) -> None:
        _say(_client().request("PUT", f"{path}/{name}", {"data": _read(file)}),
             f"Modified {name}.")
    modify.help = f"Replace the text of {what} NAME with FILE (- for standard input)."

    @group.command("show")
    @click.argument("name")
    def show(name: str) -> None:
        answer = _client().get(f"{path}/{name}")
        click.echo(answer.data[0][field], nl=False)
    show.help = f"Print the text of {what} NAME."

    @group.command("list")
    @click.argument("limit", required=False)
    @format_option
    def list_(limit: str | None, fmt: str) -> None:
        found = _list(path, limit)

        def table(p: Painter, items: list[dict[str, Any]]) -> str:
            return render_table(p, ["Name", "Lines", "First line"],
                                [[t["name"], str(len(t[field].splitlines())),
                                  (t[field].splitlines() or [""])[0][:60]] for t in items])
        show_list(get_settings().painter, found, fmt, f"No {what} found.", table)
    list_.help = f"List {what}s (LIMIT: a regex on the name)."

    _remover(group, path, what)
    return group


_text_group("userdata", "userdata", "cloud-init user data", "Cloud-init user data documents",
            "pvc provisioner userdata add web-init ./cloud-config.yaml")
_text_group("script", "script", "provisioner script", "Provisioner scripts",
            "pvc provisioner script add debootstrap ./debootstrap.py")


# -- profiles -------------------------------------------------------------------------------

@provisioner.group()
def profile() -> None:
    """Profiles: a system, network and storage template, user data and a script, which
    `pvc provisioner create` turns into a VM."""


def _profile_options(func: Any) -> Any:
    options = [
        click.option("-s", "--system-template", help="The system template"),
        click.option("-n", "--network-template", help="The network template"),
        click.option("-t", "--storage-template", help="The storage template"),
        click.option("-u", "--userdata", help="The cloud-init user data"),
        click.option("-x", "--script", help="The provisioner script"),
        click.option("-a", "--script-arg", "args", multiple=True,
                     help="A script argument key=value (repeat)"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@profile.command("add")
@click.argument("name")
@click.option("-p", "--type", "profile_type", type=click.Choice(["provisioner", "ova"]),
              default="provisioner", show_default=True, help="Profile type")
@click.option("-o", "--ova", help="The OVA (ova profiles)")
@_profile_options
def profile_add(name: str, args: tuple[str, ...], **given: Any) -> None:
    """Add profile NAME.

    \b
    Example:
      pvc provisioner profile add web -s small -n web -t root10 -u web-init -x debootstrap \\
          -a deb_release=bookworm
    """
    params = {k: v for k, v in given.items() if v is not None}
    _say(_client().post("/provisioner/profile", {"name": name, **params,
                                                 "arg": list(args) or None}),
         f"Added profile {name}.")


@profile.command("modify")
@click.argument("name")
@_profile_options
def profile_modify(name: str, args: tuple[str, ...], **given: Any) -> None:
    """Change profile NAME (its type and OVA stay); -a replaces every script argument."""
    params = {k: v for k, v in given.items() if v is not None}
    if args:
        params["arg"] = list(args)
    if not params:
        raise PvcError("nothing to change: give at least one option (see --help)",
                       exit_code=EXIT_USAGE)
    _say(_client().request("PUT", f"/provisioner/profile/{name}", params),
         f"Modified profile {name}.")


@profile.command("list")
@click.argument("limit", required=False)
@format_option
def profile_list(limit: str | None, fmt: str) -> None:
    """List profiles (LIMIT: a regex on the name)."""
    found = _list("/provisioner/profile", limit)
    cols = ("name", "type", "system_template", "network_template", "storage_template",
            "userdata", "script", "ova")
    show_list(get_settings().painter, found, fmt, "No profile found.",
              lambda p, items: render_table(
                  p, ["Name", "Type", "System", "Network", "Storage", "Userdata", "Script",
                      "OVA", "Arguments"],
                  [[_cell(t.get(c)) for c in cols] + [" ".join(a for a in t["arguments"] if a)]
                   for t in items]))


_remover(profile, "/provisioner/profile", "profile")


# -- OVA images -------------------------------------------------------------------------------

@provisioner.group()
def ova() -> None:
    """OVA appliances: upload one (its disks become volumes), then make VMs from it with an
    `ova` profile (`profile add NAME -p ova -o OVA -x SCRIPT ...`)."""


@ova.command("upload")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("-p", "--pool", required=True, help="The pool of the OVA's volumes")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the import (the disks' conversion) to its end")
def ova_upload(name: str, file: str, pool: str, wait: bool) -> None:
    """Upload OVA FILE as NAME: the API checks it (the OVF, the manifest, every disk), then
    converts each disk to raw into a volume of POOL and adds system template ova_NAME."""
    import os

    client = _client()
    answer = client.upload(f"/provisioner/ova/{name}", file,
                           {"pool": pool, "ova_size": os.path.getsize(file)})
    data = answer.data if isinstance(answer.data, dict) else {}
    task_id = data.get("task_id")
    if not wait or not task_id:
        click.echo(f"{data.get('message', 'Import started.')} Task {task_id}.")
        return
    report_task(task_id, wait_task(client, task_id))


@ova.command("list")
@click.argument("limit", required=False)
@format_option
def ova_list(limit: str | None, fmt: str) -> None:
    """List OVA images and their volumes."""
    found = _list("/provisioner/ova", limit)
    show_list(get_settings().painter, found, fmt, "No OVA found.",
              lambda p, items: render_table(
                  p, ["Name", "Disk", "Pool", "Volume", "GB"],
                  [[o["name"], v["disk_id"], v["pool"], v["volume_name"], str(v["disk_size_gb"])]
                   for o in items for v in o["volumes"]]))


@ova.command("remove")
@click.argument("name")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Follow the removal of its volumes")
def ova_remove(name: str, wait: bool) -> None:
    """Remove OVA NAME and its volumes (refused while a profile uses it)."""
    client = _client()
    answer = client.request("DELETE", f"/provisioner/ova/{name}")
    data = answer.data if isinstance(answer.data, dict) else {}
    if wait and data.get("task_id"):
        report_task(data["task_id"], wait_task(client, data["task_id"]))
    else:
        click.echo(data.get("message", f"Removing OVA {name}."))


# -- create -----------------------------------------------------------------------------------

@provisioner.command("create")
@click.argument("name")
@click.argument("profile")
@click.option("-a", "--script-arg", "args", multiple=True,
              help="A script argument key=value, added to the profile's (repeat)")
@click.option("-d/-D", "--define/--no-define", default=True, show_default=True,
              help="Define the VM (--no-define: only make the volumes and run the script)")
@click.option("-s/-S", "--start/--no-start", default=True, show_default=True,
              help="Start the VM once made")
@click.option("--wait", is_flag=True, help="Follow the create to its end, with progress")
def create(name: str, profile: str, args: tuple[str, ...], define: bool, start: bool,
           wait: bool) -> None:
    """Create VM NAME from PROFILE: a task on the primary makes its volumes, runs the
    profile's script, defines and starts the VM. A failed create removes what it made and
    says at which stage and why.

    \b
    Examples:
      pvc provisioner create web1 web --wait
      pvc provisioner create web2 web -a release=trixie --no-start
    """
    client = _client()
    answer = client.post("/provisioner/create", {
        "name": name, "profile": profile, "define_vm": _bool(define),
        "start_vm": _bool(start and define), "arg": list(args) or None})
    data = answer.data if isinstance(answer.data, dict) else {}
    task_id = data.get("task_id")
    if not wait or not task_id:
        click.echo(f"{data.get('message', 'Create started.')} Task {task_id} on "
                   f"{data.get('run_on', 'the primary')}; follow it with: pvc task show "
                   f"{task_id}")
        return
    report_task(task_id, wait_task(client, task_id))


# -- examples in every --help ---------------------------------------------------------------

P = "pvc provisioner"
EXAMPLES: dict[str, list[str]] = {
    "template": [f"{P} template system list", f"{P} template storage list -f json"],
    "template system": [f"{P} template system add small -u 2 -m 2048 --serial",
                        f"{P} template system list"],
    "template system modify": [f"{P} template system modify small -m 4096 --vnc -b 0.0.0.0"],
    "template system list": [f"{P} template system list", f"{P} template system list '^sm'"],
    "template system remove": [f"{P} template system remove small"],
    "template network": [f"{P} template network add web",
                         f"{P} template network vni add web 100"],
    "template network add": [f"{P} template network add web",
                             f"{P} template network add web -m '{{prefix}}:ff:{{vmid}}:{{netid}}'"],
    "template network list": [f"{P} template network list"],
    "template network remove": [f"{P} template network remove web"],
    "template network vni": [f"{P} template network vni add web 100",
                             f"{P} template network vni remove web 100"],
    "template network vni add": [f"{P} template network vni add web 100",
                                 f"{P} template network vni add web 100 --permit-duplicate"],
    "template network vni remove": [f"{P} template network vni remove web 100"],
    "template storage": [f"{P} template storage add root10",
                         f"{P} template storage disk add root10 sda -p vms -s 10 -f ext4 -m /"],
    "template storage add": [f"{P} template storage add root10"],
    "template storage list": [f"{P} template storage list", f"{P} template storage list root"],
    "template storage remove": [f"{P} template storage remove root10"],
    "template storage disk": [
        f"{P} template storage disk add root10 sda -p vms -s 10 -f ext4 -m /",
        f"{P} template storage disk remove root10 sda"],
    "template storage disk remove": [f"{P} template storage disk remove root10 sdb"],
    "profile": [f"{P} profile add web -s small -n web -t root10 -x debootstrap",
                f"{P} profile list"],
    "profile modify": [f"{P} profile modify web -s large",
                       f"{P} profile modify web -a release=trixie -a arch=amd64"],
    "profile list": [f"{P} profile list", f"{P} profile list -f json-pretty"],
    "profile remove": [f"{P} profile remove web"],
    "ova": [f"{P} ova upload appliance ./appliance.ova -p vms", f"{P} ova list"],
    "ova upload": [f"{P} ova upload appliance ./appliance.ova -p vms",
                   f"{P} profile add appliance -p ova -o appliance -s ova_appliance -x ova"],
    "ova list": [f"{P} ova list", f"{P} ova list -f json"],
    "ova remove": [f"{P} ova remove appliance"],
}
for _kind, _file in (("userdata", "cloud-config.yaml"), ("script", "install.py")):
    EXAMPLES.update({
        f"{_kind} add": [f"{P} {_kind} add web ./{_file}", f"cat {_file} | {P} {_kind} add web -"],
        f"{_kind} modify": [f"{P} {_kind} modify web ./{_file}"],
        f"{_kind} show": [f"{P} {_kind} show web > {_file}"],
        f"{_kind} list": [f"{P} {_kind} list", f"{P} {_kind} list -f json"],
        f"{_kind} remove": [f"{P} {_kind} remove web"],
    })


def _add_examples(group: click.Group, path: str = "") -> None:
    for name, command in group.commands.items():
        key = f"{path} {name}".strip()
        lines = EXAMPLES.get(key)
        if lines and "Example" not in (command.help or ""):
            command.help = ((command.help or "").rstrip() + "\n\n\b\nExamples:\n"
                            + "\n".join(f"  {line}" for line in lines))
        if isinstance(command, click.Group):
            _add_examples(command, key)


_add_examples(provisioner)
