"""Ordered schema migrations: ``MIGRATIONS[n]`` takes a cluster from version n to n+1.

A cluster that has never been initialised is version 0. Migrations run under
the schema lock, each followed by a version bump, so a crash part-way leaves a
version from which the remaining migrations still apply (each is idempotent).

Plugins have versions of their own (``/schema/plugins/<plugin>``, 0 when absent): the steps
a plugin answers to ``pvc_schema_migrations`` run in the same lock, after the kernel's, one
at a time, each followed by the bump of that plugin's version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from pvc_kernel.state import schema
from pvc_kernel.state.store import Store

log = logging.getLogger(__name__)


class SchemaTooNewError(Exception):
    """The cluster runs a schema newer than this code knows."""


Step = Callable[[Store], None]
"""One migration step: takes the keys from version n to n+1; must be idempotent."""


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
    return _version(store.get("schema.version"))


def plugin_version(store: Store, plugin: str) -> int:
    """The schema version of ``plugin``'s keys in this cluster (0: never migrated)."""
    return _version(store.get("schema.plugin_version", plugin=plugin))


def _version(text: str | None) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def migrate(store: Store, identifier: str = "", target: int = schema.SCHEMA_VERSION,
            plugins: Mapping[str, Sequence[Step]] | None = None) -> int:
    """Bring the cluster to ``target`` (default: newest), then each plugin's keys to the
    version its steps reach (``plugins``: {plugin name: ordered steps}); returns the kernel
    version found before.

    Raises SchemaTooNewError if the cluster (or a plugin's keys) is already past what this
    code knows.
    """
    plugins = dict(plugins or {})
    found = current_version(store)
    if found > schema.SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"the cluster's schema is version {found}, newer than version "
            f"{schema.SCHEMA_VERSION} that this PVC knows; upgrade this node's PVC")
    behind = [name for name, steps in plugins.items() if _plugin_behind(store, name, steps)]
    if found >= target and not behind:
        return found
    with store.lock("schema-migration", identifier):
        version = current_version(store)
        while version < target:
            log.info("migrating ZooKeeper schema from version %d to %d", version, version + 1)
            MIGRATIONS[version](store)
            version += 1
            store.set("schema.version", str(version))
        for name in sorted(plugins):
            _migrate_plugin(store, name, plugins[name])
    return found


def _plugin_behind(store: Store, name: str, steps: Sequence[Step]) -> bool:
    have = plugin_version(store, name)
    if have > len(steps):
        raise SchemaTooNewError(
            f"plugin {name!r}: its keys in ZooKeeper are at schema version {have}, newer than "
            f"version {len(steps)} that this node's {name} knows; upgrade the plugin")
    return have < len(steps)


def _migrate_plugin(store: Store, name: str, steps: Sequence[Step]) -> None:
    version = plugin_version(store, name)          # re-read under the lock
    while version < len(steps):
        log.info("migrating the keys of plugin %s from version %d to %d", name, version,
                 version + 1)
        steps[version](store)
        version += 1
        store.set("schema.plugin_version", str(version), plugin=name)
