"""The ``provisioner`` plugin (entry point ``provisioner`` in ``pvc.plugins`` names
``ProvisionerPlugin``): system, network and storage templates, cloud-init user data,
provisioner scripts and profiles, kept in ZooKeeper and served at ``/provisioner/...``
(docs/provisioner.md)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from pvc_kernel.sdk import Key, Settings, hookimpl
from pvc_plugins.provisioner import config, keys

log = logging.getLogger("pvc_plugins.provisioner")
RECOVER_INTERVAL = 5.0


class ProvisionerPlugin:
    """One per daemon; the objects are desired state the API writes, creates run as tasks
    on the primary (``create``)."""

    def __init__(self) -> None:
        self.settings: dict[str, Any] | None = None
        self.metadata: Any = None            # metadata.MetadataService, on the primary
        self.primary = False

    @hookimpl
    def pvc_config_settings(self) -> Settings:
        """``plugins.provisioner`` (``pvc_plugins.provisioner.config.SETTINGS``)."""
        return config.SETTINGS

    @hookimpl
    def pvc_node_start(self, daemon: Any) -> None:
        """Read the settings; remove volume mappings a previous run of pvcnoded left."""
        self.settings = config.load(daemon.config)
        threading.Thread(target=self._clean_mappings, args=(daemon.node,), daemon=True,
                         name="provisioner-mappings").start()

    def _clean_mappings(self, node: str) -> None:
        from pvc_plugins.provisioner import blockmap

        assert self.settings is not None
        left = blockmap.cleanup_stale(os.path.join(self.settings["work_dir"], node))
        if left:
            log.error("provisioner: volume mappings left by an earlier run remain: %s",
                      "; ".join(left))

    @hookimpl
    def pvc_task_handlers(self) -> dict[str, Any]:
        """``provisioner.create`` (``create.run``)."""
        from pvc_plugins.provisioner import create, ova_import

        return {create.TASK: lambda ctx: create.run(ctx, ctx.daemon, self.settings
                                                    or config.load(ctx.daemon.config)),
                **{kind: (lambda ctx, run=run: run(ctx, ctx.daemon))
                   for kind, run in ova_import.HANDLERS.items()}}

    @hookimpl
    def pvc_become_primary(self, daemon: Any) -> None:
        """Undo the creates a dead primary left (``create.recover_jobs``)."""
        from pvc_plugins.provisioner import create

        self.primary = True
        threading.Thread(target=self._recover_loop, args=(daemon, create.recover_jobs),
                         daemon=True, name="provisioner-recover").start()

    def _recover_loop(self, daemon: Any, recover: Any) -> None:
        """While primary: undo the creates of nodes that died (checked every
        ``RECOVER_INTERVAL`` s: a dead primary is known as dead only some seconds after
        this node took over)."""
        while self.primary and not daemon.stopping.is_set():
            recover(daemon)
            daemon.stopping.wait(RECOVER_INTERVAL)

    @hookimpl
    def pvc_become_secondary(self, daemon: Any) -> None:
        self.primary = False
        self._stop_metadata()

    @hookimpl
    def pvc_node_stop(self, daemon: Any) -> None:
        self.primary = False
        self._stop_metadata()

    @hookimpl
    def pvc_network_gateway_addresses(self, daemon: Any, network: dict[str, Any]) -> list[str]:
        """The metadata service's address on every managed network (the service starts
        with the first network that asks, on the primary)."""
        from pvc_plugins.provisioner import metadata

        settings = self.settings or config.load(daemon.config)
        if not settings["metadata"] or not self.primary:
            return []
        if self.metadata is None:
            service = metadata.MetadataService(daemon)
            service.start()
            self.metadata = service
        return [f"{metadata.ADDRESS}/32"]

    def _stop_metadata(self) -> None:
        service, self.metadata = self.metadata, None
        if service is not None:
            service.stop()

    @hookimpl
    def pvc_schema_keys(self) -> list[Key]:
        """``/provisioner`` (``pvc_plugins.provisioner.keys``)."""
        return list(keys.KEYS)

    @hookimpl
    def pvc_api_view_keys(self) -> list[str]:
        """Every provisioner object: profile and template lists are read whole."""
        return ["provisioner"]

    @hookimpl
    def pvc_api_routes(self, api: Any) -> None:
        """``/provisioner/template/...``, ``/provisioner/userdata``, ``/provisioner/script``
        and ``/provisioner/profile``."""
        from pvc_plugins.provisioner import routes

        routes.add_to(api)
