"""The plugin SDK, node side: everything a PVC plugin may use of the kernel, and nothing
else. A plugin imports the kernel only through this module (``tests/unit/
test_kernel_boundaries.py`` enforces it); what is not here is internal and may change.

API routes are declared with ``pvc_api.sdk`` and CLI commands written with ``pvc_cli.sdk``,
so that pvcnoded, which imports plugins, never loads the API or CLI.

* hooks: ``hookimpl`` marks an implementation of a hook of ``pvc_kernel.hookspecs``; the
  types of what hooks receive and answer are in ``contracts``.
* settings: ``Settings``/``Setting`` declare the keys of the plugin's section of
  pvcnoded.yaml (``pvc_config_settings``); ``Settings.values(config, name)`` reads them.
* ZooKeeper: ``Key`` declares a key (``pvc_schema_keys``), ``schema.path`` builds its path
  (for transactions), ``Store`` reads and writes by key name: ``get``/``set``/``create``/
  ``ensure``/``delete``, ``fetch`` (the pipelined read; ``get_many`` its versioned form),
  version-checked writes, transactions, watches (``data_watch``/``children_watch``) and cluster
  locks (``locked`` raises ``LockBusy`` when busy; ``try_lock`` answers a ``HeldLock`` or
  None, for work skipped when busy or that checks the lock while it runs). Its kazoo client is
  the kernel's own: a plugin never uses ``store.client`` or ``store.lock``.
  ``ConflictError``/``LockBusy`` are what it raises when a race is lost or a lock stays busy.
* health: ``HealthCheck`` (subclass it) and ``CheckResult``, for ``pvc_health_checks``.
* work: ``tasks`` (long work with progress, ``pvc_task_handlers``), ``faults`` (cluster
  faults a plugin reports and clears), bus ``events`` (``Event``, ``TimerFired``,
  ``DataChanged``, ``ChildrenChanged``), coordinator states ``PRIMARY``/``TAKEOVER``.
"""

from __future__ import annotations

from pvc_kernel import contracts, faults, tasks
from pvc_kernel.contracts import CheckResult, HealthCheck
from pvc_kernel.election import PRIMARY, TAKEOVER
from pvc_kernel.events import ChildrenChanged, DataChanged, Event, TimerFired
from pvc_kernel.hookspecs import hookimpl
from pvc_kernel.settings import Setting, Settings
from pvc_kernel.state import ConflictError, LockBusy, schema
from pvc_kernel.state.schema import Key
from pvc_kernel.state.store import HeldLock, Store

__all__ = ["CheckResult", "ChildrenChanged", "ConflictError", "DataChanged", "Event",
           "HealthCheck", "HeldLock", "Key",
           "LockBusy", "PRIMARY", "Setting", "Settings", "Store", "TAKEOVER", "TimerFired",
           "contracts", "faults", "hookimpl", "schema", "tasks"]
