"""``plugins.provisioner`` in pvcnoded.yaml."""

from __future__ import annotations

from typing import Any

from pvc_kernel.sdk import Setting, Settings

NAME = "provisioner"

SETTINGS = Settings(
    about="The VM provisioner: where its scripts work and how long they may take.",
    keys=(
        Setting("work_dir", str, "/run/pvc/provisioner",
                "directory for the provisioner's volume mappings (a subdirectory per node)"),
        Setting("metadata", bool, True,
                "serve the metadata service (user data, instance id) to VMs on managed "
                "networks at 169.254.169.254:80 from the primary"),
        Setting("script_timeout", int, 3600,
                "seconds a provisioner script may run before it is ended and the create "
                "fails", minimum=10),
    ))


def load(config: Any) -> dict[str, Any]:
    return SETTINGS.values(config, NAME)
