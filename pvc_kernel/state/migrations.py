"""Ordered schema migrations: ``MIGRATIONS[n]`` takes a cluster from version n to n+1.

A cluster that has never been initialised is version 0. Migrations run under
the schema lock, each followed by a version bump, so a crash part-way leaves a
version from which the remaining migrations still apply (each is idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pvc_kernel.state import schema
from pvc_kernel.state.store import Store

log = logging.getLogger(__name__)


class SchemaTooNewError(Exception):
    """The cluster runs a schema newer than this code knows."""


def _v0_to_v1(store: Store) -> None:
    """Base tree: config, nodes, logs, locks and the election."""
    for name in ("config", "nodes", "logs", "locks", "election", "alive"):
        store.ensure(name)
    store.ensure("config.maintenance", "false")
    store.ensure("config.primary_node", "none")
    store.ensure("config.desired_primary", "")
    store.ensure("config.cluster_name", "")


def _v1_to_v2(store: Store) -> None:
    """Tasks and faults."""
    store.ensure("tasks")
    store.ensure("faults")


MIGRATIONS: list[Callable[[Store], None]] = [_v0_to_v1, _v1_to_v2]
assert len(MIGRATIONS) == schema.SCHEMA_VERSION, "every schema version needs a migration"


def current_version(store: Store) -> int:
    text = store.get("schema.version")
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def migrate(store: Store, identifier: str = "", target: int = schema.SCHEMA_VERSION) -> int:
    """Bring the cluster to ``target`` (default: newest); returns the version found before.

    Raises SchemaTooNewError if the cluster is already past what this code knows.
    """
    found = current_version(store)
    if found > schema.SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"the cluster's schema is version {found}, newer than version "
            f"{schema.SCHEMA_VERSION} that this PVC knows; upgrade this node's PVC")
    if found >= target:
        return found
    with store.lock("schema-migration", identifier):
        version = current_version(store)
        while version < target:
            log.info("migrating ZooKeeper schema from version %d to %d", version, version + 1)
            MIGRATIONS[version](store)
            version += 1
            store.set("schema.version", str(version))
    return found
