"""The plugin's section of ``pvcnoded.yaml``::

    plugins:
      vm_kvm:
        libvirt_uri: qemu:///system      # this node's libvirtd
        migration_address: 10.0.0.1      # other libvirtds reach ours here (default: node name)
        virt_type: auto                  # auto (probe KVM, else TCG) | kvm | qemu
        flush_concurrency: 2             # VMs moved at once by a flush or ready
        recover_concurrency: 8           # VMs of a fenced node started at once elsewhere
        shutdown_timeout: 180            # s of ACPI shutdown before a hard stop
        migrate_timeout: 300             # s a live migration may take before it is aborted
        poll_interval: 2                 # s between looks at libvirt (states, stats, console)
        console_lines: 1000              # serial console lines kept in ZooKeeper
        memory_total: null               # MiB offered to VMs (default: the host's memory)
        unsafe_migration: false          # live-migrate even if libvirt calls storage unshared
        probe_cache: /var/cache/pvc/vm_kvm-probe.json
        probe_kernel: null               # optional kernel+initrd for a real KVM boot test
        probe_initrd: null
        probe_timeout: 20
        crash_limit: 5                   # crashes within crash_window that put a VM in fail
        crash_window: 600                # s
        crash_backoff: 1                 # s before the restart after a first crash, doubled
        crash_backoff_max: 60            # per crash within the window, up to this
        libvirt_timeout: 5               # s libvirtd gets to answer the health check
        libvirt_keepalive: 2             # s between client keepalives (3 missed: broken)
        libvirtd_restart: true           # restart a dead or hung libvirtd ...
        libvirtd_restart_after: 10       # ... once it has not answered for this many s
        libvirtd_restart_command: systemctl restart libvirtd.service
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

NAME = "vm_kvm"


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


_RULES: dict[str, tuple[type | tuple, Any]] = {
    # key: (accepted types, extra check returning a problem or None)
    "libvirt_uri": (str, lambda v: None if "://" in v else "must be a libvirt URI"),
    "migration_address": (str, None),
    "virt_type": (str, lambda v: None if v in ("auto", "kvm", "qemu")
                  else "must be one of auto, kvm, qemu"),
    "flush_concurrency": (int, lambda v: None if 1 <= v <= 64 else "must be between 1 and 64"),
    "recover_concurrency": (int, lambda v: None if 1 <= v <= 64 else "must be between 1 and 64"),
    "shutdown_timeout": ((int, float), lambda v: None if v >= 1 else "must be at least 1"),
    "migrate_timeout": ((int, float), lambda v: None if v >= 5 else "must be at least 5"),
    "poll_interval": ((int, float), lambda v: None if 0.2 <= v <= 60
                      else "must be between 0.2 and 60"),
    "console_lines": (int, lambda v: None if 10 <= v <= 10000 else "must be between 10 and 10000"),
    "memory_total": (int, lambda v: None if v >= 64 else "must be at least 64 (MiB)"),
    "unsafe_migration": (bool, None),
    "probe_cache": (str, None),
    "probe_kernel": (str, None),
    "probe_initrd": (str, None),
    "probe_timeout": ((int, float), lambda v: None if 1 <= v <= 300
                      else "must be between 1 and 300"),
    "crash_limit": (int, lambda v: None if 1 <= v <= 1000 else "must be between 1 and 1000"),
    "crash_window": ((int, float), lambda v: None if v >= 10 else "must be at least 10"),
    "crash_backoff": ((int, float), lambda v: None if 0 <= v <= 3600
                      else "must be between 0 and 3600"),
    "crash_backoff_max": ((int, float), lambda v: None if 0 <= v <= 86400
                          else "must be between 0 and 86400"),
    "libvirt_timeout": ((int, float), lambda v: None if 1 <= v <= 120
                        else "must be between 1 and 120"),
    "libvirt_keepalive": (int, lambda v: None if 1 <= v <= 60 else "must be between 1 and 60"),
    "libvirtd_restart": (bool, None),
    "libvirtd_restart_after": ((int, float), lambda v: None if v >= 1 else "must be at least 1"),
    "libvirtd_restart_command": (str, lambda v: None if v.strip() else "must not be empty"),
}


def parse(section: dict[str, Any]) -> tuple[VmConfig, list[str]]:
    """The section as a VmConfig (defaults for bad values) and the problems found."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    known = {f.name for f in fields(VmConfig)}
    for key, value in (section or {}).items():
        where = f"key 'plugins.{NAME}.{key}'"
        if key not in known:
            problems.append(f"{where}: is not a known setting")
            continue
        if value is None:
            continue
        kinds, check = _RULES[key]
        bad_bool = isinstance(value, bool) and kinds is not bool
        if bad_bool or not isinstance(value, kinds):
            names = kinds.__name__ if isinstance(kinds, type) else "/".join(k.__name__
                                                                           for k in kinds)
            problems.append(f"{where}: must be of type {names}, not {type(value).__name__} "
                            f"({value!r})")
            continue
        problem = check(value) if check else None
        if problem:
            problems.append(f"{where}: {problem}, not {value!r}")
            continue
        values[key] = float(value) if kinds == (int, float) else value
    if bool(values.get("probe_kernel")) != bool(values.get("probe_initrd")):
        problems.append(f"key 'plugins.{NAME}.probe_kernel': probe_kernel and probe_initrd "
                        "go together")
    return VmConfig(**values), problems


def crash_policy(cfg: VmConfig) -> Any:
    """The crash handling settings as a ``crashes.CrashPolicy``."""
    from pvc_plugins.vm_kvm.crashes import CrashPolicy

    return CrashPolicy(cfg.crash_limit, cfg.crash_window, cfg.crash_backoff,
                       cfg.crash_backoff_max)


def load(config: Any) -> VmConfig:
    """The parsed section of a ``pvc_kernel.config.NodeConfig`` (already validated)."""
    return parse(config.plugin_section(NAME))[0]
