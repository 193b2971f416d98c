"""The vm_kvm plugin (entry point ``vm_kvm`` in ``pvc.plugins`` names ``VmKvmPlugin``).

libvirt is imported only on nodes (``pvc_node_start``), so pvcapid loads this module
(for its keys and routes) on hosts without libvirt-python.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pvc_kernel.sdk import Settings, hookimpl
from pvc_plugins.vm_kvm import config as vmconfig
from pvc_plugins.vm_kvm import keys

log = logging.getLogger("pvc_plugins.vm_kvm")


class VmKvmPlugin:
    """One per daemon: ``agent`` is this node's running Agent (None before start, in
    pvcapid, or without libvirt-python)."""

    def __init__(self) -> None:
        self.agent: Any = None

    @hookimpl
    def pvc_config_settings(self) -> Settings:
        """``plugins.vm_kvm`` (``pvc_plugins.vm_kvm.config.SETTINGS``)."""
        return vmconfig.SETTINGS

    @hookimpl
    def pvc_schema_keys(self) -> list[Any]:
        """The VM keys (``pvc_plugins.vm_kvm.keys``)."""
        return list(keys.KEYS)

    @hookimpl
    def pvc_health_checks(self, daemon: Any) -> list[Any]:
        """``libvirt``: libvirtd answering (``health.LibvirtCheck``)."""
        from pvc_plugins.vm_kvm.health import LibvirtCheck

        return [LibvirtCheck(lambda: self.agent)]

    @hookimpl
    def pvc_cluster_faults(self, daemon: Any) -> dict[str, Any]:
        """Failed VMs and memory overprovisioning (``clusterfaults.judge``)."""
        from pvc_plugins.vm_kvm import clusterfaults

        return clusterfaults.judge(daemon.store)

    @hookimpl
    def pvc_node_start(self, daemon: Any) -> None:
        """Connect to this node's libvirtd, probe KVM, publish the node's facts, watch the
        VMs."""
        try:
            from pvc_plugins.vm_kvm.agent import Agent
        except ImportError as exc:
            log.warning("vm_kvm: libvirt-python is not importable (%s); no VMs on this node",
                        exc)
            return
        self.agent = Agent(daemon, vmconfig.load(daemon.config))
        self.agent.start()

    @hookimpl
    def pvc_node_stop(self, daemon: Any) -> None:
        """Stop watching; VMs keep running (libvirtd owns them)."""
        agent, self.agent = self.agent, None
        if agent:
            agent.stop()

    @hookimpl
    def pvc_event(self, daemon: Any, event: Any) -> None:
        """VM events (``vm:<uuid>``), the VM list and the libvirt poll timer."""
        if self.agent is not None and (event.obj.startswith("vm:")
                                       or event.obj.startswith("vm_kvm:")):
            self.agent.on_event(event)

    @hookimpl
    def pvc_keepalive_stats(self, daemon: Any) -> dict[str, dict[str, Any]]:
        """Namespace ``vm``: virt_type, domains_count, running_domains, memory_allocated,
        memory_provisioned, vcpu_allocated (from the last libvirt poll)."""
        return {"vm": self.agent.node_stats()} if self.agent is not None else {}

    @hookimpl
    def pvc_node_flush(self, daemon: Any, ctx: Any) -> None:
        """Migrate this node's running VMs away (bounded parallel), or shut them down with
        autostart when no node can take them."""
        from pvc_plugins.vm_kvm.flush import Mover

        Mover(daemon, vmconfig.load(daemon.config), ctx).flush()

    @hookimpl
    def pvc_node_unflush(self, daemon: Any, ctx: Any) -> None:
        """Start this node's autostart VMs and bring back the VMs a flush moved away."""
        from pvc_plugins.vm_kvm.flush import Mover

        Mover(daemon, vmconfig.load(daemon.config), ctx).unflush()

    @hookimpl
    def pvc_node_recover(self, daemon: Any, node: str,
                         progress: Callable[[int, int, str], bool],
                         fence: dict[str, Any]) -> dict[str, Any] | None:
        """Start the fenced node's VMs on other nodes (``recovery``)."""
        from pvc_plugins.vm_kvm import recovery

        return recovery.recover(daemon, node, progress, fence)

    @hookimpl
    def pvc_node_self_fence(self, daemon: Any, reason: str, deadline: float | None = None
                            ) -> dict[str, Any]:
        """End every guest of this node before ``deadline``, whatever libvirt does
        (``recovery.self_fence``)."""
        from pvc_plugins.vm_kvm import recovery

        return recovery.self_fence(daemon, self.agent, reason, deadline)

    @hookimpl
    def pvc_vm_disk_prepare(self, daemon: Any, vm: dict[str, Any], disk: dict[str, Any],
                            purpose: str) -> dict[str, Any] | None:
        """File and block disks (``disks.prepare_local``)."""
        from pvc_plugins.vm_kvm import disks

        return disks.prepare_local(daemon, vm, disk, purpose)

    @hookimpl
    def pvc_network_users(self, store: Any, devices: list[str]) -> dict[str, list[str]]:
        """The VMs with a NIC on any of ``devices``."""
        from pvc_plugins.vm_kvm import nics, records

        return nics.users(records.all_records(store), devices)

    @hookimpl
    def pvc_api_view_keys(self) -> list[str]:
        """VM records and names, and the nodes' hypervisor facts: every VM list, status
        and placement scans them."""
        return ["vms", "vm_names", "vm_kvm.nodes", "vm_kvm.placement"]

    @hookimpl
    def pvc_api_routes(self, api: Any) -> None:
        """``/vm``, ``/vm/{vm}`` and its ``state``, ``node``, ``meta``, ``tags``,
        ``console``, ``rename`` and ``device`` routes."""
        from pvc_plugins.vm_kvm import routes

        routes.add_to(api)

    @hookimpl
    def pvc_api_metrics(self, api: Any, group: str) -> list[Any]:
        """``resource``: ``pvc_vm_*`` (``metrics.families``)."""
        if group != "resource":
            return []
        from pvc_plugins.vm_kvm import metrics

        return metrics.families(api)

    @hookimpl
    def pvc_api_status(self, api: Any) -> dict[str, Any]:
        """VM counts by state and the VM detail list of ``GET /status``."""
        from pvc_plugins.vm_kvm import api as vm_api

        return vm_api.status(api)

    @hookimpl
    def pvc_task_handlers(self) -> dict[str, Any]:
        """``vm.device_attach`` / ``vm.device_detach`` on the node running the VM, and the
        flush-locks task."""
        from pvc_plugins.vm_kvm import devices, flush_locks

        return {"vm.device_attach": lambda ctx: devices.attach(ctx, self.agent),
                "vm.device_detach": lambda ctx: devices.detach(ctx, self.agent),
                flush_locks.TASK: flush_locks.flush}

    @hookimpl
    def pvc_api_node(self, stats: dict[str, Any]) -> dict[str, Any]:
        """Node fields from this node's ``vm`` keepalive stats: VM counts and
        allocations."""
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

    # -- VMs for other plugins (the provisioner), on the primary ------------------------------
    @hookimpl
    def pvc_vm_fit(self, daemon: Any, name: str, memory_mb: int, vcpus: int,
                   node_limit: list[str] | None) -> dict[str, Any]:
        """Name free and a node with room (``provide.fit``)."""
        from pvc_plugins.vm_kvm import provide

        return provide.fit(daemon.store, name, memory_mb, vcpus, node_limit)

    @hookimpl
    def pvc_vm_define(self, daemon: Any, definition: dict[str, Any]) -> dict[str, str]:
        """Define a VM as ``POST /vm`` does (``provide.define``)."""
        from pvc_plugins.vm_kvm import provide

        return provide.define(daemon.store, daemon.plugins, definition)

    @hookimpl
    def pvc_vm_set_state(self, daemon: Any, vm: str, state: str, wait: float) -> bool:
        from pvc_plugins.vm_kvm import provide

        return provide.set_state(daemon.store, daemon.plugins, vm, state, wait)

    @hookimpl
    def pvc_vm_undefine(self, daemon: Any, vm: str) -> bool:
        from pvc_plugins.vm_kvm import provide

        return provide.undefine(daemon.store, vm)

    @hookimpl
    def pvc_vm_modify(self, daemon: Any, vm: str, xml: str) -> bool:
        from pvc_plugins.vm_kvm import provide

        return provide.modify(daemon.store, daemon.plugins, vm, xml)

    @hookimpl
    def pvc_vm_volumes(self, daemon: Any, vm: str) -> dict[str, Any] | None:
        """The VM and its RBD disks (``provide.volumes``)."""
        from pvc_plugins.vm_kvm import provide

        return provide.volumes(daemon.store, vm)

    @hookimpl
    def pvc_vm_names(self, daemon: Any, tag: str | None) -> list[str]:
        """VM names, those with ``tag`` only when given (``provide.names``)."""
        from pvc_plugins.vm_kvm import provide

        return provide.names(daemon.store, tag)

    @hookimpl
    def pvc_vm_by_mac(self, daemon: Any, mac: str) -> dict[str, Any] | None:
        """The VM with that NIC (``provide.by_mac``)."""
        from pvc_plugins.vm_kvm import provide

        return provide.by_mac(daemon.store, mac)
