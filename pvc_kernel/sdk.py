"""The plugin SDK, node side: everything a PVC plugin may use of the kernel, and nothing
else. A plugin imports the kernel only through this module (``tests/unit/
test_kernel_boundaries.py`` enforces it); what is not here is internal and may change.

API routes are declared with ``pvc_api.sdk`` and CLI commands written with ``pvc_cli.sdk``,
so that pvcnoded, which imports plugins, never loads the API or CLI.

* hooks: ``hookimpl`` marks an implementation of a hook of ``pvc_kernel.hookspecs``; the
  types of what hooks receive and answer are in ``contracts``.
* ZooKeeper: ``Key`` declares a key (``pvc_schema_keys``), ``schema.path`` builds its path,
  ``Store`` reads and writes (version-checked writes, transactions, ``locked``),
  ``ConflictError``/``LockBusy`` are what they raise when a race is lost or a lock stays busy.
* work: ``tasks`` (long work with progress, ``pvc_task_handlers``), ``faults`` (cluster
  faults a plugin reports and clears), bus ``events`` (``Event``, ``TimerFired``,
  ``DataChanged``, ``ChildrenChanged``), coordinator states ``PRIMARY``/``TAKEOVER``.
"""

from __future__ import annotations

from pvc_kernel import contracts, faults, tasks
from pvc_kernel.election import PRIMARY, TAKEOVER
from pvc_kernel.events import ChildrenChanged, DataChanged, Event, TimerFired
from pvc_kernel.hookspecs import hookimpl
from pvc_kernel.state import ConflictError, LockBusy, schema
from pvc_kernel.state.schema import Key
from pvc_kernel.state.store import HeldLock, Store

__all__ = ["ChildrenChanged", "ConflictError", "DataChanged", "Event", "HeldLock", "Key",
           "LockBusy", "PRIMARY", "Store", "TAKEOVER", "TimerFired", "contracts", "faults",
           "hookimpl", "schema", "tasks"]
