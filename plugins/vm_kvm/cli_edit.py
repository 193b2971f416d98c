"""`pvc vm vcpu|memory|network|volume`: client-side XML edits sent back with PUT /vm/NAME.

A changed XML applies when the VM next starts: a start after a stop, a restart (``--restart``
asks for one now) or a shutdown migration; a live migration carries the running
configuration. ``--live`` network/volume changes also hot-plug the device
(POST/DELETE /vm/NAME/device). vCPU and memory changes are never made live.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import click

from pvc_cli.sdk import PvcError, emit_json, format_option, human_mib


def _vm(name: str) -> tuple[dict[str, Any], ET.Element]:
    from pvc_plugins.vm_kvm.cli import get_vm

    v = get_vm(name)
    return v, ET.fromstring(v.get("xml", "").replace("'", '"'))


def _put(name: str, root: ET.Element, restart: bool) -> None:
    from pvc_plugins.vm_kvm.cli import _echo_message, client

    _echo_message(client().request("PUT", f"/vm/{name}", {
        "xml": ET.tostring(root, encoding="unicode"), "restart": restart}).data)


def _device(name: str, xml: str, detach: bool) -> None:
    from pvc_cli.sdk import report_task, wait_task
    from pvc_plugins.vm_kvm.cli import client

    resp = client().request("DELETE" if detach else "POST", f"/vm/{name}/device",
                            {"xml": xml}).data
    task_id = resp.get("task_id")
    if task_id:
        report_task(task_id, wait_task(client(), task_id))


def _add_device(name: str, device: ET.Element, restart: bool, live: bool) -> None:
    """Append device to the VM's <devices>, send the XML back and, with live, hot-plug it."""
    _, root = _vm(name)
    devices = root.find("devices")
    if devices is None:
        raise PvcError("the VM's XML has no <devices>")
    devices.append(device)
    _put(name, root, restart)
    if live:
        _device(name, ET.tostring(device, encoding="unicode"), detach=False)


def _remove_device(name: str, tag: str, matches: Callable[[ET.Element], bool], restart: bool,
                   live: bool) -> bool:
    """Remove the VM's first <tag> device that matches (and unplug it with live).

    False when there is none.
    """
    _, root = _vm(name)
    devices = root.find("devices")
    for device in devices.findall(tag) if devices is not None else []:
        if matches(device):
            devices.remove(device)
            _put(name, root, restart)
            if live:
                _device(name, ET.tostring(device, encoding="unicode"), detach=True)
            return True
    return False


APPLIES = ("The change is stored now and applies at the VM's next start (after a stop, a "
           "restart or a shutdown migration; not at a live migration), or now with --restart.")
restart_option = click.option("-r", "--restart", is_flag=True,
                              help="Restart a running VM (ACPI shutdown + start) so the change "
                                   "applies now.")
live_option = click.option("--live", is_flag=True,
                           help="Also hot-plug it on the running VM now (no restart).")


def random_mac() -> str:
    """A locally administered MAC in QEMU's 52:54:00 range."""
    return "52:54:00:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


@click.group()
def vcpu() -> None:
    """Show or set a VM's vCPU count."""


@vcpu.command("get")
@click.argument("name")
def vcpu_get(name: str) -> None:
    click.echo(_vm(name)[0].get("vcpu"))


@vcpu.command("set")
@click.argument("name")
@click.argument("count", type=click.IntRange(min=1))
@restart_option
def vcpu_set(name: str, count: int, restart: bool) -> None:
    """Set the vCPU count in the VM's XML (never on the running VM)."""
    _, root = _vm(name)
    el = root.find("vcpu")
    if el is None:
        el = ET.SubElement(root, "vcpu")
    el.text = str(count)
    _put(name, root, restart)


@click.group()
def memory() -> None:
    """Show or set a VM's memory."""


@memory.command("get")
@click.argument("name")
def memory_get(name: str) -> None:
    click.echo(human_mib(_vm(name)[0].get("memory")))


@memory.command("set")
@click.argument("name")
@click.argument("mib", type=click.IntRange(min=16))
@restart_option
def memory_set(name: str, mib: int, restart: bool) -> None:
    """Set the memory in MiB in the VM's XML (never on the running VM)."""
    _, root = _vm(name)
    for tag in ("memory", "currentMemory"):
        el = root.find(tag)
        if el is not None:
            el.set("unit", "MiB")
            el.text = str(mib)
    _put(name, root, restart)


@click.group()
def network() -> None:
    """Show, add or remove a VM's network interfaces."""


@network.command("get")
@click.argument("name")
@format_option
def network_get(name: str, fmt: str) -> None:
    nets = _vm(name)[0].get("networks") or []
    if fmt != "pretty":
        emit_json(nets, fmt)
        return
    for n in nets:
        click.echo(f"{n.get('type')}\t{n.get('source')}\t{n.get('mac')}\t{n.get('model')}")


def _bridge(net: str) -> str:
    """A network (VNI or description) is its bridge ``vmbr<vni>``; anything else is taken
    as the name of a bridge the administrator made."""
    if net.isdigit():
        return f"vmbr{net}"
    from pvc_plugins.vm_kvm.cli import client

    answer = client().request("GET", f"/network/{net}", accept=(404,))
    found = answer.data if answer.status == 200 and isinstance(answer.data, list) else []
    return f"vmbr{found[0]['vni']}" if found and found[0].get("vni") is not None else net


@network.command("add")
@click.argument("name")
@click.argument("net")
@click.option("--mac", help="MAC address (default: a random 52:54:00:xx:xx:xx).")
@click.option("--model", default="virtio", show_default=True)
@restart_option
@live_option
def network_add(name: str, net: str, mac: str | None, model: str, restart: bool,
                live: bool) -> None:
    """Add a NIC on network NET (a VNI or description: its bridge vmbr<vni>; or the name
    of a bridge of your own). The MAC is written into the XML, so it stays. A network
    that does not exist is refused."""
    nic = ET.Element("interface", type="bridge")
    ET.SubElement(nic, "source", bridge=_bridge(net))
    ET.SubElement(nic, "mac", address=mac or random_mac())
    ET.SubElement(nic, "model", type=model)
    _add_device(name, nic, restart, live)


@network.command("remove")
@click.argument("name")
@click.argument("mac_or_bridge")
@restart_option
@live_option
def network_remove(name: str, mac_or_bridge: str, restart: bool, live: bool) -> None:
    """Remove the NIC with this MAC address (or the first on this bridge)."""
    def matches(nic: ET.Element) -> bool:
        mac, src = nic.find("mac"), nic.find("source")
        return (mac is not None and mac.get("address") == mac_or_bridge) or \
            (src is not None and src.get("bridge") == mac_or_bridge)

    if not _remove_device(name, "interface", matches, restart, live):
        raise PvcError(f"VM {name} has no NIC {mac_or_bridge}")


@click.group()
def volume() -> None:
    """Show, add or remove a VM's disks."""


@volume.command("get")
@click.argument("name")
@format_option
def volume_get(name: str, fmt: str) -> None:
    disks = [d for d in _vm(name)[0].get("disks") or [] if d]
    if fmt != "pretty":
        emit_json(disks, fmt)
        return
    for d in disks:
        click.echo(f"{d.get('dev')}\t{d.get('bus')}\t{d.get('type')}\t{d.get('name')}")


@volume.command("add")
@click.argument("name")
@click.argument("path")
@click.option("--dev", default="vdb", show_default=True, help="Target device in the guest.")
@click.option("--bus", default="virtio", show_default=True)
@click.option("--format", "fmt", default="raw", show_default=True, help="raw or qcow2.")
@restart_option
@live_option
def volume_add(name: str, path: str, dev: str, bus: str, fmt: str, restart: bool,
               live: bool) -> None:
    """Add a file-backed disk (PATH on the shared filesystem)."""
    disk = ET.Element("disk", type="file", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type=fmt, cache="none")
    ET.SubElement(disk, "source", file=path)
    ET.SubElement(disk, "target", dev=dev, bus=bus)
    _add_device(name, disk, restart, live)


@volume.command("remove")
@click.argument("name")
@click.argument("path_or_dev")
@restart_option
@live_option
def volume_remove(name: str, path_or_dev: str, restart: bool, live: bool) -> None:
    """Remove the disk with this source path or target device."""
    def matches(disk: ET.Element) -> bool:
        src, target = disk.find("source"), disk.find("target")
        return (src is not None and path_or_dev in (src.get("file"), src.get("dev"),
                                                    src.get("name"))) or \
            (target is not None and target.get("dev") == path_or_dev)

    if not _remove_device(name, "disk", matches, restart, live):
        raise PvcError(f"VM {name} has no disk {path_or_dev}")


for _cmd in (vcpu_set, memory_set, network_add, network_remove, volume_add, volume_remove):
    _cmd.help = f"{(_cmd.help or '').rstrip()}\n\n{APPLIES}"
    if _cmd in (network_add, network_remove, volume_add, volume_remove):
        _cmd.help += " With --live it is also changed on the running VM at once."

COMMANDS = [vcpu, memory, network, volume]
