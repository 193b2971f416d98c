"""``plugins.vm_protect`` in pvcnoded.yaml: the autobackup settings (read by the primary,
which runs ``cluster.autobackup``; keep them the same on every coordinator)."""

from __future__ import annotations

from typing import Any

from pvc_kernel.sdk import Setting, Settings

NAME = "vm_protect"


def _absolute(value: str) -> str | None:
    return None if not value or value.startswith("/") else "must be an absolute path"


SETTINGS = Settings(
    about="VM snapshots, exports and autobackup.",
    keys=(
        Setting("autobackup_path", str, "",
                "directory autobackup exports to, as <path>/<vm>/<snapshot>; empty: "
                "autobackup is off", check=_absolute),
        Setting("autobackup_tags", list, ["autobackup"],
                "VMs with any of these tags are backed up"),
        Setting("autobackup_full_interval", int, 7,
                "a full export every N backups of a VM, incrementals from that full "
                "between them", minimum=1),
        Setting("autobackup_full_retention", int, 2,
                "fulls kept per VM, each with its incrementals; older ones are removed",
                minimum=1),
        Setting("autobackup_mount_commands", list, [],
                "commands run (in order, without a shell) before a run, e.g. to mount the "
                "backup target; one failing stops the run"),
        Setting("autobackup_unmount_commands", list, [],
                "commands run after a run, even a failed one"),
    ))


def load(config: Any) -> dict[str, Any]:
    return SETTINGS.values(config, NAME)
