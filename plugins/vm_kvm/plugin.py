"""The vm_kvm plugin's hook implementations (entry point ``vm_kvm`` in ``pvc.plugins``).

libvirt is imported only on nodes (``pvc_node_start``), so pvcapid loads this module
(for its keys and routes) on hosts without libvirt-python.
"""

from __future__ import annotations

import logging
from typing import Any

from pvc_kernel.sdk import hookimpl
from pvc_plugins.vm_kvm import config as vmconfig
from pvc_plugins.vm_kvm import keys
from pvc_plugins.vm_kvm.disks import pvc_vm_disk_prepare  # noqa: F401  (a hook of this plugin)
from pvc_plugins.vm_kvm.recovery import (  # noqa: F401  (hooks of this plugin)
    pvc_node_recover,
    pvc_node_self_fence,
)

log = logging.getLogger("pvc_plugins.vm_kvm")

_agents: dict[int, Any] = {}
"""The running Agent of each daemon in this process (tests may run several)."""


def agent_of(daemon: Any) -> Any:
    return _agents.get(id(daemon))


@hookimpl
def pvc_config_validate(config: Any) -> list[str]:
    """Check ``plugins.vm_kvm`` (see ``pvc_plugins.vm_kvm.config``)."""
    return vmconfig.parse(config.plugin_section(vmconfig.NAME))[1]


@hookimpl
def pvc_schema_keys() -> list[Any]:
    """The VM keys (``pvc_plugins.vm_kvm.keys``)."""
    return list(keys.KEYS)


@hookimpl
def pvc_node_start(daemon: Any) -> None:
    """Connect to this node's libvirtd, probe KVM, publish the node's facts, watch the VMs."""
    try:
        from pvc_plugins.vm_kvm.agent import Agent
    except ImportError as exc:
        log.warning("vm_kvm: libvirt-python is not importable (%s); no VMs on this node", exc)
        return
    agent = Agent(daemon, vmconfig.load(daemon.config))
    _agents[id(daemon)] = agent
    agent.start()


@hookimpl
def pvc_node_stop(daemon: Any) -> None:
    """Stop watching; VMs keep running (libvirtd owns them)."""
    agent = _agents.pop(id(daemon), None)
    if agent:
        agent.stop()


@hookimpl
def pvc_event(daemon: Any, event: Any) -> None:
    """VM events (``vm:<uuid>``), the VM list and the libvirt poll timer."""
    agent = agent_of(daemon)
    if agent is not None and (event.obj.startswith("vm:") or event.obj.startswith("vm_kvm:")):
        agent.on_event(event)


@hookimpl
def pvc_keepalive_stats(daemon: Any) -> dict[str, dict[str, Any]]:
    """Namespace ``vm``: virt_type, domains_count, running_domains, memory_allocated,
    memory_provisioned, vcpu_allocated (from the last libvirt poll)."""
    agent = agent_of(daemon)
    return {"vm": agent.node_stats()} if agent is not None else {}


@hookimpl
def pvc_node_flush(daemon: Any, ctx: Any) -> None:
    """Migrate this node's running VMs away (bounded parallel), or shut them down with
    autostart when no node can take them."""
    from pvc_plugins.vm_kvm.flush import Mover

    Mover(daemon, vmconfig.load(daemon.config), ctx).flush()


@hookimpl
def pvc_node_unflush(daemon: Any, ctx: Any) -> None:
    """Start this node's autostart VMs and bring back the VMs a flush moved away."""
    from pvc_plugins.vm_kvm.flush import Mover

    Mover(daemon, vmconfig.load(daemon.config), ctx).unflush()


@hookimpl
def pvc_api_routes(api: Any) -> None:
    """``/vm``, ``/vm/{vm}`` and its ``state``, ``node``, ``meta``, ``tags``, ``console``,
    ``rename`` and ``device`` routes."""
    from pvc_plugins.vm_kvm import routes

    routes.add_to(api)


@hookimpl
def pvc_api_status(api: Any) -> dict[str, Any]:
    """VM counts by state and the VM detail list of ``GET /status``."""
    from pvc_plugins.vm_kvm import api as vm_api

    return vm_api.status(api)


@hookimpl
def pvc_task_handlers() -> dict[str, Any]:
    """``vm.device_attach`` / ``vm.device_detach`` on the node running the VM."""
    from pvc_plugins.vm_kvm import devices, locks

    return {"vm.device_attach": devices.attach, "vm.device_detach": devices.detach,
            locks.TASK: locks.flush}


@hookimpl
def pvc_api_node(stats: dict[str, Any]) -> dict[str, Any]:
    """Node fields from this node's ``vm`` keepalive stats: VM counts and allocations."""
    vm = stats.get("vm")
    if not isinstance(vm, dict):
        return {}
    running = vm.get("running_domains")
    return {
        "domains_count": int(vm.get("domains_count") or 0),
        "running_domains": list(running) if isinstance(running, list) else [],
        "vcpu": {"allocated": int(vm.get("vcpu_allocated") or 0)},
        "memory": {"allocated": int(vm.get("memory_allocated") or 0),
                   "provisioned": int(vm.get("memory_provisioned") or 0)},
    }
