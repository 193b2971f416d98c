"""Every ZooKeeper key path PVC uses, in one place.

Nothing else builds a path by hand: code asks this module, e.g.
``schema.path("node.keepalive", node="hv1")``. Plugins add their own keys
through the ``pvc_schema_keys`` hook; they land in the same registry, so a
path is still resolved here and a clash between two plugins fails at start.

Layout (schema version ``SCHEMA_VERSION``; migrations in ``migrations.py``)::

    /schema/version                 int, the schema this cluster runs
    /schema/plugins/<plugin>        int, the schema version of that plugin's keys
    /config/cluster_name            the cluster's name
    /config/maintenance             "true" | "false"
    /config/primary_node            current primary (written by it) or "none"
    /config/desired_primary         requested primary for a planned handover, or ""
    /election                       contenders for the primary lock (ephemeral)
    /alive/<node>                   ephemeral: the node's daemon holds a session
    /nodes/<node>                   the node's registration
        static                      JSON: cpu_count, memory_total, kernel, os, arch, pvc_version
        daemon_state                init | run | shutdown | stop | dead | fenced
        coordinator_state           primary | secondary | takeover | relinquish | client
        domain_state                observed: ready | flush | flushed | unflush | fence-flush
        desired_domain_state        requested by the API: ready | flushed
        keepalive                   float epoch of the last keepalive
        stats                       JSON: {plugin name: {stat: value}} from the last keepalive
    /logs/<node>                    the node's last log lines (newline separated)
    /tasks/<id>                     JSON task record (see pvc_kernel.tasks)
    /faults/<id>                    JSON fault record
    /locks/<name>                   named cluster locks (schema-migration, ...)

A key marked ``secret`` (e.g. a plugin's password) is written by ``Store`` with a ZooKeeper
digest ACL: only pvcnoded's identity (``zookeeper.secret``) may read or change it, and
its parent too, so a secret key's parent holds secret keys only (``register`` checks).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

SCHEMA_VERSION = 2
"""The newest schema this code knows; ``migrations.MIGRATIONS`` reaches it."""


@dataclass(frozen=True)
class Key:
    """A named key whose path may hold ``{placeholders}``; ``secret``: readable by pvcnoded
    only (see the module docstring); ``volatile``: rewritten every few seconds (stats), so a
    ``View`` reads it again only when a read needs it, not at every write."""

    name: str
    template: str
    owner: str = "kernel"
    secret: bool = False
    volatile: bool = False

    def fields(self) -> list[str]:
        return [f for _, f, _, _ in string.Formatter().parse(self.template) if f]


_KERNEL_KEYS = [
    Key("schema.version", "/schema/version"),
    Key("schema.plugins", "/schema/plugins"),
    Key("schema.plugin_version", "/schema/plugins/{plugin}"),
    Key("config", "/config"),
    Key("config.cluster_name", "/config/cluster_name"),
    Key("config.maintenance", "/config/maintenance"),
    Key("config.primary_node", "/config/primary_node"),
    Key("config.desired_primary", "/config/desired_primary"),
    Key("election", "/election"),
    Key("alive", "/alive"),
    Key("alive.node", "/alive/{node}"),
    Key("nodes", "/nodes"),
    Key("node", "/nodes/{node}"),
    Key("node.static", "/nodes/{node}/static"),
    Key("node.daemon_state", "/nodes/{node}/daemon_state"),
    Key("node.coordinator_state", "/nodes/{node}/coordinator_state"),
    Key("node.domain_state", "/nodes/{node}/domain_state"),
    Key("node.desired_domain_state", "/nodes/{node}/desired_domain_state"),
    Key("node.keepalive", "/nodes/{node}/keepalive", volatile=True),
    Key("node.stats", "/nodes/{node}/stats", volatile=True),
    Key("logs", "/logs"),
    Key("node.log", "/logs/{node}"),
    Key("tasks", "/tasks"),
    Key("task", "/tasks/{task_id}"),
    Key("faults", "/faults"),
    Key("fault", "/faults/{fault_id}"),
    Key("locks", "/locks"),
    Key("lock", "/locks/{lock}"),
]

_keys: dict[str, Key] = {}
_SEGMENT = re.compile(r"^[A-Za-z0-9_.:@+=-]+$")


class SchemaError(Exception):
    """A key is unknown, registered twice, or given a bad placeholder value."""


def register(key: Key) -> None:
    """Add a key (plugins call this through the pvc_schema_keys hook)."""
    known = _keys.get(key.name)
    if known is not None and known != key:
        raise SchemaError(f"key {key.name!r} of {key.owner} is already defined by {known.owner}")
    if key.secret and secret_parent(key.template) == "/":
        raise SchemaError(f"secret key {key.name!r} of {key.owner} needs a parent of its own")
    for other in _keys.values():
        secret, plain = (key, other) if key.secret else (other, key)
        if secret.secret and not plain.secret and _under(plain.template,
                                                         secret_parent(secret.template)):
            raise SchemaError(f"key {plain.name!r} of {plain.owner} lies under "
                              f"{secret_parent(secret.template)}, which holds the secret key "
                              f"{secret.name!r} of {secret.owner}: only secret keys may")
    _keys[key.name] = key


def secret_parent(path: str) -> str:
    """The parent of a secret key's path (or template): protected like the key itself."""
    return path.rsplit("/", 1)[0] or "/"


def _under(template: str, parent: str) -> bool:
    return template == parent or template.startswith(parent + "/")


for _k in _KERNEL_KEYS:
    register(_k)


def path(name: str, /, **values: str | int) -> str:
    """Resolve a key name to its path; every placeholder must be given."""
    try:
        key = _keys[name]
    except KeyError:
        raise SchemaError(f"unknown ZooKeeper key {name!r}") from None
    missing = set(key.fields()) - set(values)
    if missing:
        raise SchemaError(f"key {name!r} needs {', '.join(sorted(missing))}")
    clean = {}
    for field, value in values.items():
        text = str(value)
        if not _SEGMENT.match(text) or text in (".", ".."):
            raise SchemaError(f"invalid value {text!r} for {field} in key {name!r}")
        clean[field] = text
    return key.template.format(**clean)


def is_secret(name: str) -> bool:
    """True if the key ``name`` is marked secret (False for an unknown key)."""
    key = _keys.get(name)
    return key is not None and key.secret


def keys() -> dict[str, Key]:
    """A copy of every registered key, by name."""
    return dict(_keys)


def valid_segment(text: str) -> bool:
    """True if ``text`` may be used as one path segment (a node or object name)."""
    return bool(_SEGMENT.match(text)) and text not in (".", "..")
