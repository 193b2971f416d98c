"""The plugin's section of ``pvcnoded.yaml`` (``plugins.vm_kvm``), declared in ``SETTINGS``:
every key with its default, type and help is listed by ``pvcnoded --help-config`` and in
docs/config.md.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pvc_kernel.sdk import Setting, Settings

NAME = "vm_kvm"


def _uri(value: str) -> str | None:
    return None if "://" in value else "must be a libvirt URI"


def _not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _probe_pair(values: dict[str, Any]) -> list[tuple[str, str]]:
    if bool(values["probe_kernel"]) != bool(values["probe_initrd"]):
        return [("probe_kernel", "probe_kernel and probe_initrd go together")]
    return []


SETTINGS = Settings(about="KVM virtual machines through this node's libvirtd.", check=_probe_pair,
                    keys=(
    Setting("libvirt_uri", str, "qemu:///system", "this node's libvirtd", check=_uri),
    Setting("migration_address", str, None,
            "where other libvirtds reach ours for live migration (default: the node name)"),
    Setting("virt_type", str, "auto", "auto probes KVM and falls back to TCG (qemu)",
            choices=("auto", "kvm", "qemu")),
    Setting("flush_concurrency", int, 2, "VMs moved at once by a flush or ready",
            minimum=1, maximum=64),
    Setting("recover_concurrency", int, 8, "VMs of a fenced node started at once elsewhere",
            minimum=1, maximum=64),
    Setting("shutdown_timeout", float, 180.0, "seconds of ACPI shutdown before a hard stop",
            minimum=1),
    Setting("migrate_timeout", float, 300.0,
            "seconds a live migration may take before it is aborted", minimum=5),
    Setting("poll_interval", float, 2.0,
            "seconds between looks at libvirt (states, stats, console)",
            minimum=0.2, maximum=60),
    Setting("stats_interval", float, 10.0,
            "seconds between writes of a running VM's stats and console tail to ZooKeeper",
            minimum=0.2, maximum=600),
    Setting("resync_interval", float, 300.0,
            "seconds between full checks of every VM of this node against ZooKeeper (in "
            "between, a poll reads a VM only when libvirt or its watched keys disagree with "
            "its desired state)", minimum=1, maximum=86400),
    Setting("console_lines", int, 1000, "serial console lines kept in ZooKeeper",
            minimum=10, maximum=10000),
    Setting("memory_total", int, None, "MiB offered to VMs (default: the host's memory)",
            minimum=64),
    Setting("unsafe_migration", bool, False,
            "live-migrate even if libvirt calls the storage unshared"),
    Setting("probe_cache", str, "/var/cache/pvc/vm_kvm-probe.json",
            "where the result of the KVM probe is kept"),
    Setting("probe_kernel", str, None, "kernel for a real KVM boot test (with probe_initrd)"),
    Setting("probe_initrd", str, None, "initrd for a real KVM boot test (with probe_kernel)"),
    Setting("probe_timeout", float, 20.0, "seconds the KVM boot test may take",
            minimum=1, maximum=300),
    Setting("crash_limit", int, 5, "crashes within crash_window that put a VM in fail",
            minimum=1, maximum=1000),
    Setting("crash_window", float, 600.0, "seconds", minimum=10),
    Setting("crash_backoff", float, 1.0,
            "seconds before the restart after a first crash, doubled per crash within the "
            "window", minimum=0, maximum=3600),
    Setting("crash_backoff_max", float, 60.0, "the longest backoff, seconds",
            minimum=0, maximum=86400),
    Setting("libvirt_timeout", float, 5.0, "seconds libvirtd gets to answer the health check",
            minimum=1, maximum=120),
    Setting("libvirt_keepalive", int, 2,
            "seconds between libvirt client keepalives (3 missed: broken)",
            minimum=1, maximum=60),
    Setting("libvirtd_restart", bool, True, "restart a dead or hung libvirtd"),
    Setting("libvirtd_restart_after", float, 10.0,
            "seconds libvirtd has not answered before it is restarted", minimum=1),
    Setting("libvirtd_restart_command", str, "systemctl restart libvirtd.service",
            "how libvirtd is restarted", check=_not_empty),
))


@dataclass
class VmConfig:
    libvirt_uri: str = "qemu:///system"
    migration_address: str | None = None
    virt_type: str = "auto"
    flush_concurrency: int = 2
    recover_concurrency: int = 8
    shutdown_timeout: float = 180.0
    migrate_timeout: float = 300.0
    poll_interval: float = 2.0
    stats_interval: float = 10.0
    resync_interval: float = 300.0
    console_lines: int = 1000
    memory_total: int | None = None
    unsafe_migration: bool = False
    probe_cache: str = "/var/cache/pvc/vm_kvm-probe.json"
    probe_kernel: str | None = None
    probe_initrd: str | None = None
    probe_timeout: float = 20.0
    crash_limit: int = 5
    crash_window: float = 600.0
    crash_backoff: float = 1.0
    crash_backoff_max: float = 60.0
    libvirt_timeout: float = 5.0
    libvirt_keepalive: int = 2
    libvirtd_restart: bool = True
    libvirtd_restart_after: float = 10.0
    libvirtd_restart_command: str = "systemctl restart libvirtd.service"


def parse(section: dict[str, Any]) -> tuple[VmConfig, list[str]]:
    """The section as a VmConfig (defaults for bad values) and the problems found."""
    values, problems = SETTINGS.validate(section, f"plugins.{NAME}")
    return VmConfig(**{f.name: values[f.name] for f in fields(VmConfig)}), problems


def crash_policy(cfg: VmConfig) -> Any:
    """The crash handling settings as a ``crashes.CrashPolicy``."""
    from pvc_plugins.vm_kvm.crashes import CrashPolicy

    return CrashPolicy(cfg.crash_limit, cfg.crash_window, cfg.crash_backoff,
                       cfg.crash_backoff_max)


def load(config: Any) -> VmConfig:
    """The parsed section of a ``pvc_kernel.config.NodeConfig`` (already validated)."""
    return parse(config.plugin_section(NAME))[0]
