"""What libvirt needs to open RBD disks: monitors, Ceph user and the cephx secret.

Every node's libvirtd gets the plugin's Ceph key as a private libvirt secret (hook
``pvc_hypervisor_secrets``, applied by the VM plugin), so any node can start or receive any
RBD-backed VM. The secret's UUID is ``libvirt_secret`` from the config, or one derived from
the cluster's fsid and the Ceph user, the same on every node. A cluster without cephx
(``auth_client_required = none``) has no secret and its disks get no ``<auth>``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.config import CephConfig
from pvc_plugins.storage_ceph.errors import StorageError

log = logging.getLogger(__name__)
SECRET_NAMESPACE = uuid.UUID("5b0d3f4e-6c1a-4f57-9d0e-8a4c2b7e91d3")


def cephx_enabled(client: CephClient) -> bool:
    """True if clients must authenticate (the cluster handle's own view of ceph.conf)."""
    return "cephx" in str(client.cluster().conf_get("auth_client_required") or "")


def secret_uuid(settings: CephConfig, fsid: str) -> str:
    """The libvirt secret's UUID: configured, or derived from fsid and user."""
    if settings.libvirt_secret:
        return settings.libvirt_secret
    return str(uuid.uuid5(SECRET_NAMESPACE, f"{fsid}/{settings.client_name}"))


def disk_access(client: CephClient, settings: CephConfig,
                hosts: list[dict[str, str]]) -> dict[str, Any]:
    """The ``libvirt`` part of a disk answer: monitor hosts, user and secret UUID."""
    secret = None
    try:
        if cephx_enabled(client):
            secret = secret_uuid(settings, client.cluster().get_fsid())
    except Exception as exc:    # Unavailable, StorageError and rados errors alike
        log.debug("Ceph auth mode unknown: %s", exc)
    return {"hosts": hosts, "username": settings.rados_id if secret else None,
            "secret": secret}


def hypervisor_secret(client: CephClient, settings: CephConfig) -> dict[str, str] | None:
    """The plugin user's cephx key as a libvirt secret (None without cephx)."""
    if not cephx_enabled(client):
        return None
    key = client.mon("auth get-key", entity=settings.client_name)
    value = key.get("key") if isinstance(key, dict) else None
    if not value:
        raise StorageError(f"Ceph returned no key for {settings.client_name}")
    return {"uuid": secret_uuid(settings, client.cluster().get_fsid()), "usage_type": "ceph",
            "usage_name": f"pvc {settings.client_name} secret", "value": value}
