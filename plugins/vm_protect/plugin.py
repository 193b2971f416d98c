"""The ``vm_protect`` plugin (entry point ``vm_protect`` in ``pvc.plugins`` names
``VmProtectPlugin``): VM snapshots as tasks on the primary, served at
``/vm/<vm>/snapshot`` and driven by ``pvc vm snapshot``."""

from __future__ import annotations

from typing import Any

from pvc_kernel.sdk import Key, Settings, hookimpl
from pvc_plugins.vm_protect import config, keys


class VmProtectPlugin:
    """Stateless: snapshot records live in ZooKeeper, the work runs in tasks."""

    @hookimpl
    def pvc_schema_keys(self) -> list[Key]:
        """``/vm_protect`` (``pvc_plugins.vm_protect.keys``)."""
        return list(keys.KEYS)

    @hookimpl
    def pvc_config_settings(self) -> Settings:
        """``plugins.vm_protect`` (``pvc_plugins.vm_protect.config.SETTINGS``)."""
        return config.SETTINGS

    @hookimpl
    def pvc_task_handlers(self) -> dict[str, Any]:
        """``vm.{create,remove,rollback,export,import}_snapshot``, ``cluster.autobackup``."""
        from pvc_plugins.vm_protect import autobackup, exports, snapshots

        handlers = {kind: (lambda ctx, kind=kind: snapshots.run_task(ctx, kind))
                    for kind in (snapshots.CREATE_TASK, snapshots.REMOVE_TASK,
                                 snapshots.ROLLBACK_TASK)}
        handlers.update({kind: (lambda ctx, kind=kind: exports.run_task(ctx, kind))
                         for kind in (exports.EXPORT_TASK, exports.IMPORT_TASK)})
        handlers[autobackup.TASK] = autobackup.run_task
        return handlers

    @hookimpl
    def pvc_api_routes(self, api: Any) -> None:
        """``/vm/{vm}/snapshot`` (with ``rollback``, ``export``, ``import``) and
        ``/vm/autobackup``."""
        from pvc_plugins.vm_protect import routes

        routes.add_to(api)
