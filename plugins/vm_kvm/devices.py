"""Hot attach/detach tasks, run on the node where the VM runs (live only; the stored XML is
changed separately with ``PUT /vm/{vm}``, as the CLI does)."""

from __future__ import annotations

from typing import Any

from pvc_plugins.vm_kvm.hypervisor import message


def _run(ctx: Any, detach: bool) -> str:
    from pvc_plugins.vm_kvm.plugin import agent_of

    agent = agent_of(ctx.daemon)
    if agent is None:
        raise RuntimeError("vm_kvm is not running on this node")
    uuid, xml = ctx.args["uuid"], ctx.args["xml"]
    ctx.progress(0, 1, "Detaching device" if detach else "Attaching device")
    try:
        agent.hv.attach(uuid, xml, detach=detach)
    except Exception as exc:
        raise RuntimeError(f"libvirt refused: {message(exc)}") from None
    return "Device detached" if detach else "Device attached"


def attach(ctx: Any) -> str:
    return _run(ctx, detach=False)


def detach(ctx: Any) -> str:
    return _run(ctx, detach=True)
