"""The ``provisioner`` plugin (entry point ``provisioner`` in ``pvc.plugins`` names
``ProvisionerPlugin``): system, network and storage templates, cloud-init user data,
provisioner scripts and profiles, kept in ZooKeeper and served at ``/provisioner/...``
(docs/provisioner.md)."""

from __future__ import annotations

from typing import Any

from pvc_kernel.sdk import Key, hookimpl
from pvc_plugins.provisioner import keys


class ProvisionerPlugin:
    """One per daemon; the objects are desired state the API writes."""

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
