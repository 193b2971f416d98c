"""Node objects: core fields from the daemon's keys, plugin fields through pvc_api_node."""

from __future__ import annotations

import json
import types

from pvc_api import nodes
from pvc_kernel.hookspecs import hookimpl
from pvc_kernel.plugins import PluginHost
from pvc_plugins.vm_kvm.plugin import VmKvmPlugin as vm_plugin

RAW = {"static": json.dumps({"cpu_count": 4, "memory_total": 8192}), "daemon_state": "run",
       "coordinator_state": "primary", "domain_state": "ready", "keepalive": "1700000000.5",
       "stats": json.dumps({"host": {"memory_total": 8000, "memory_used": 1000, "load": 0.5},
                            "vm": {"domains_count": 2, "running_domains": ["a", "b"],
                                   "vcpu_allocated": 3, "memory_allocated": 384,
                                   "memory_provisioned": 512}})}


def api_with(*plugins):
    host = PluginHost()
    for i, p in enumerate(plugins):
        host.register(p, f"p{i}")
    return types.SimpleNamespace(plugins=host)


def test_core_fields_without_plugins():
    node = nodes.build(types.SimpleNamespace(plugins=None), "hv1", RAW)
    assert node["memory"] == {"total": 8000, "allocated": 0, "provisioned": 0, "used": 1000,
                              "free": 7000}
    assert node["vcpu"] == {"total": 4, "allocated": 0}
    assert node["domains_count"] == 0


def test_vm_plugin_fills_counts_and_allocations():
    node = nodes.build(api_with(vm_plugin), "hv1", RAW)
    assert node["domains_count"] == 2 and node["running_domains"] == ["a", "b"]
    assert node["vcpu"] == {"total": 4, "allocated": 3}
    assert node["memory"]["allocated"] == 384 and node["memory"]["provisioned"] == 512
    assert node["memory"]["total"] == 8000  # core fields are kept


def test_a_broken_plugin_is_left_out():
    broken = types.ModuleType("broken")

    @hookimpl
    def pvc_api_node(stats):
        raise KeyError("oops")

    broken.pvc_api_node = pvc_api_node
    node = nodes.build(api_with(broken, vm_plugin), "hv1", RAW)
    assert node["domains_count"] == 2
