"""The VMs' Prometheus metrics (group ``resource``), from the same cached VM objects that
``GET /vm`` answers with: no ZooKeeper read beyond the view's catch-up."""

from __future__ import annotations

from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pvc_api.sdk import Call

MiB = 1024 * 1024


def families(api: Any) -> list[Metric]:
    from pvc_plugins.vm_kvm.api import _listing

    objs = [obj for _rec, obj, _text in _listing(Call(api, None, {})) if obj is not None]
    state = GaugeMetricFamily("pvc_vm_state", "1 for the VM's current state", labels=[
        "vm", "uuid", "node", "state"])
    memory = GaugeMetricFamily("pvc_vm_memory_bytes", "Memory given to the VM", labels=["vm"])
    vcpus = GaugeMetricFamily("pvc_vm_vcpus", "vCPUs of the VM", labels=["vm"])
    rss = GaugeMetricFamily("pvc_vm_memory_rss_bytes", "Resident memory of the running VM's "
                            "QEMU", labels=["vm"])
    cpu = CounterMetricFamily("pvc_vm_cpu_seconds", "CPU time of the running VM",
                              labels=["vm"])
    crashes = CounterMetricFamily("pvc_vm_crashes", "Crashes of the VM PVC has seen",
                                  labels=["vm"])
    net = {d: CounterMetricFamily(f"pvc_vm_network_{d}_bytes", f"Bytes the VM's NIC "
                                  f"{'received' if d == 'rx' else 'sent'}",
                                  labels=["vm", "mac", "network"]) for d in ("rx", "tx")}
    disk = {d: CounterMetricFamily(f"pvc_vm_disk_{d}_bytes", f"Bytes the VM "
                                   f"{'read from' if d == 'read' else 'wrote to'} the disk",
                                   labels=["vm", "dev"]) for d in ("read", "write")}
    for vm in objs:
        name = vm["name"]
        state.add_metric([name, vm["uuid"], vm["node"] or "", vm["state"]], 1)
        memory.add_metric([name], int(vm["memory"] or 0) * MiB)
        vcpus.add_metric([name], int(vm["vcpu"] or 0))
        crashes.add_metric([name], int(vm["crashes"]["count"]))
        if vm["running_on"]:
            mem_stats, cpu_stats = vm["memory_stats"], vm["vcpu_stats"]
            if "rss" in mem_stats:
                rss.add_metric([name], int(mem_stats["rss"]) * 1024)
            if "cpu_time" in cpu_stats:
                cpu.add_metric([name], int(cpu_stats["cpu_time"]) / 1e9)
            for nic in vm["networks"]:
                labels = [name, nic["mac"], str(nic.get("network") or nic.get("source") or "")]
                net["rx"].add_metric(labels, nic["rd_bytes"])
                net["tx"].add_metric(labels, nic["wr_bytes"])
            for d in vm["disks"]:
                disk["read"].add_metric([name, d["dev"]], d["rd_bytes"])
                disk["write"].add_metric([name, d["dev"]], d["wr_bytes"])
    return [state, memory, vcpus, rss, cpu, crashes, *net.values(), *disk.values()]
