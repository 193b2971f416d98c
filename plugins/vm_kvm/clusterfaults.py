"""The VM plugin's cluster-level faults, judged by the primary each health round from the
nodes' keepalive stats (one pipelined read, whatever the number of VMs):

* ``VM_FAILED_<name>`` (10): a VM in state ``fail`` on a running node, unless its crash fault
  (``vm-crash-<uuid>``, raised when a crash loop failed it) already stands for it;
* ``MEMORY_OVERPROVISIONED`` (50): the running VMs' memory is at least what the running nodes
  have without the largest one, so the VMs of a failed node would not all fit.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pvc_plugins.vm_kvm import crashes

VM_FAILED = "VM_FAILED_"
MEMORY = "MEMORY_OVERPROVISIONED"
VM_FAILED_DELTA = 10
MEMORY_DELTA = 50


def _json(text: str | None) -> dict[str, Any]:
    try:
        found = json.loads(text or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def judge(store: Any) -> dict[str, Any]:
    """``ClusterFaults`` of the VM plugin now."""
    nodes = store.children("nodes")
    values = store.fetch([("get", key, {"node": n}) for n in nodes
                          for key in ("node.daemon_state", "node.stats")])
    running = [(n, _json(values[2 * i + 1])) for i, n in enumerate(nodes)
               if values[2 * i] == "run"]
    found: dict[str, tuple[str, int]] = {}
    totals = [int((st.get("host") or {}).get("memory_total") or 0) for _n, st in running]
    allocated = sum(int((st.get("vm") or {}).get("memory_allocated") or 0) for _n, st in running)
    if len(totals) > 1 and allocated > 0:
        budget = sum(totals) - max(totals)
        if allocated >= budget:
            found[MEMORY] = (f"Running VMs use {allocated} MiB; without its largest node the "
                             f"cluster has {budget} MiB, so the VMs of a failed node would "
                             "not all fit", MEMORY_DELTA)
    failed = [(n, uuid, entry) for n, st in running
              for uuid, entry in ((st.get("vm") or {}).get("failed_domains") or {}).items()
              if isinstance(entry, list) and len(entry) == 2]
    if failed:
        crash_faults = store.fetch([("get", "fault", {"fault_id": crashes.fault_id(uuid)})
                                    for _n, uuid, _e in failed])
        for (node, _uuid, (name, reason)), crash in zip(failed, crash_faults, strict=True):
            if crash is None:
                fid = re.sub(r"[^A-Za-z0-9_.:@+=-]", "_", f"{VM_FAILED}{name}")
                found[fid] = (f"VM {name} is in state fail on {node}: {reason or 'no reason'}",
                              VM_FAILED_DELTA)
    return {"prefixes": [VM_FAILED, MEMORY], "faults": found}
