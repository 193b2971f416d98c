"""Hot attach/detach tasks, run on the node where the VM runs (live only; the stored XML is
changed separately with ``PUT /vm/{vm}``, as the CLI does)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from pvc_plugins.vm_kvm import disks, domxml
from pvc_plugins.vm_kvm.hypervisor import message


def _run(ctx: Any, agent: Any, detach: bool) -> str:
    if agent is None:
        raise RuntimeError("vm_kvm is not running on this node")
    uuid, xml = ctx.args["uuid"], ctx.args["xml"]
    ctx.progress(0, 1, "Detaching device" if detach else "Attaching device")
    if not detach:
        xml = with_access(ctx.daemon, agent, uuid, xml)
    try:
        agent.hv.attach(uuid, xml, detach=detach)
    except Exception as exc:
        raise RuntimeError(f"libvirt refused: {message(exc)}") from None
    return "Device detached" if detach else "Device attached"


def with_access(daemon: Any, agent: Any, uuid: str, xml: str) -> str:
    """A network disk to attach gets its ``<host>``/``<auth>`` from the storage plugin, as
    at a VM start (purpose ``attach``: nothing is locked or broken)."""
    try:
        el = domxml.device(xml)
    except domxml.XmlError:
        return xml          # libvirt says what is wrong with it
    if el.tag != "disk" or el.get("type") != "network":
        return xml
    wrapped = f"<domain><name>attach</name><devices>{xml}</devices></domain>"
    rec = SimpleNamespace(uuid=uuid, name=uuid, xml=wrapped)
    problem, access = disks.prepare(daemon, rec, "attach")
    if problem:
        raise RuntimeError(problem)
    agent.sync_secrets(60.0)
    done = domxml.parse_root(domxml.with_disk_access(wrapped, access))
    return domxml.to_text(done.find("devices/disk"))


def attach(ctx: Any, agent: Any) -> str:
    """Task ``vm.device_attach``, with this node's running Agent (None: not running)."""
    return _run(ctx, agent, detach=False)


def detach(ctx: Any, agent: Any) -> str:
    """Task ``vm.device_detach``."""
    return _run(ctx, agent, detach=True)
