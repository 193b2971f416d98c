"""The plugin's ZooKeeper keys (registered through ``pvc_schema_keys``) and their values.

Layout::

    /vms/<uuid>                 the VM's name (the record exists = the VM is defined)
        xml                     libvirt domain XML                        desired (API)
        state                   start|stop|shutdown|restart|disable|migrate|unmigrate
        node                    the node that should hold/run it          desired (API)
        last_node               where a temporary migration came from ("" = none)
        meta                    JSON {node_limit, node_selector, node_autostart,
                                      migration_method, migration_max_downtime, profile}
        tags                    JSON [{name, type, protected}]
        request                 JSON {action, force, force_live, at}: the last request's options
        observed                JSON, written only by the node running (or last running) it:
                                {node, state: running|stopped|migrating|fail, libvirt_state,
                                 failed_reason, fail_version, since}
        stats                   JSON, the running node's libvirt counters
        console                 the last lines of the serial console log
        crashes                 JSON {count, recent, last, node, reason, failed}: its
                                crashes (written by the node running it; see crashes.py)
    /vm_names/<name>            the VM's uuid (makes names unique, atomically)
    /vm_kvm/placement           the uuid of the last VM a define placed (its version
                                orders concurrent defines)
    /vm_kvm/nodes/<node>        JSON the node publishes: {virt_type, migration_uri, ...}
    /locks/vm-<uuid>            the per-VM lock (starts, migrations, observed transitions)
"""

from __future__ import annotations

import json
from typing import Any

from pvc_kernel.sdk import Key

OWNER = "vm_kvm"

KEYS = [
    Key("vms", "/vms", OWNER),
    Key("vm", "/vms/{uuid}", OWNER),
    Key("vm.xml", "/vms/{uuid}/xml", OWNER),
    Key("vm.state", "/vms/{uuid}/state", OWNER),
    Key("vm.node", "/vms/{uuid}/node", OWNER),
    Key("vm.last_node", "/vms/{uuid}/last_node", OWNER),
    Key("vm.meta", "/vms/{uuid}/meta", OWNER),
    Key("vm.tags", "/vms/{uuid}/tags", OWNER),
    Key("vm.request", "/vms/{uuid}/request", OWNER),
    Key("vm.observed", "/vms/{uuid}/observed", OWNER),
    Key("vm.stats", "/vms/{uuid}/stats", OWNER, volatile=True),
    Key("vm.console", "/vms/{uuid}/console", OWNER, volatile=True),
    Key("vm.crashes", "/vms/{uuid}/crashes", OWNER),
    Key("vm_names", "/vm_names", OWNER),
    Key("vm_name", "/vm_names/{vm_name}", OWNER),
    Key("vm_kvm.placement", "/vm_kvm/placement", OWNER),
    Key("vm_kvm.nodes", "/vm_kvm/nodes", OWNER),
    Key("vm_kvm.node", "/vm_kvm/nodes/{node}", OWNER),
]

DESIRED_KEYS = ("vm.xml", "vm.state", "vm.node", "vm.last_node", "vm.meta", "vm.tags",
                "vm.request")

# desired states
START, STOP, SHUTDOWN, RESTART, DISABLE = "start", "stop", "shutdown", "restart", "disable"
MIGRATE, UNMIGRATE = "migrate", "unmigrate"
FAIL = "fail"
STATES = (START, STOP, SHUTDOWN, RESTART, DISABLE, MIGRATE, UNMIGRATE)
RUN_STATES = (START, RESTART, MIGRATE, UNMIGRATE)
"""Desired states in which the VM should be running (somewhere)."""
LIST_STATES = ("start", "restart", "shutdown", "stop", "disable", "fail", "migrate",
               "unmigrate", "provision", "mirror")
"""States ``GET /vm?state=`` accepts (the reference's list)."""

# observed states
RUNNING, STOPPED, MIGRATING, FAILED = "running", "stopped", "migrating", "fail"
LIVE = (RUNNING, MIGRATING)
"""Observed states in which the VM may be running on ``observed.node``."""

SELECTORS = ("mem", "memprov", "vcpus", "load", "vms")
MIGRATION_METHODS = ("live", "shutdown", "none")
DEFAULT_MAX_DOWNTIME = 300

DEFAULT_META: dict[str, Any] = {"node_limit": None, "node_selector": None,
                                "node_autostart": False, "migration_method": None,
                                "migration_max_downtime": DEFAULT_MAX_DOWNTIME,
                                "profile": None}


def lock_name(uuid: str) -> str:
    return f"vm-{uuid}"


def loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def meta(text: str | None) -> dict[str, Any]:
    """A stored meta value with every field present."""
    found = loads(text, {})
    return {**DEFAULT_META, **(found if isinstance(found, dict) else {})}
