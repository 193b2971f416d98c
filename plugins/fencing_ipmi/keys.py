"""The plugin's ZooKeeper keys (registered through ``pvc_schema_keys``)::

    /fencing/bmcs/<node>      JSON the node publishes: {host, port, user, reachable, power,
                              error, checked}: what ``pvc node info`` shows (no password)
    /fencing/secrets/<node>   the BMC password, read only by the fencing coordinator; a
                              secret key: with ``zookeeper.secret`` set, only pvcnoded's
                              identity may read it (and list /fencing/secrets)
    /fencing/fences/<node>    JSON: the node's last fence record (see ``fence``)
    /fencing/rejoins/<node>   epoch when the fenced node, its workloads stopped, asked to
                              rejoin (the primary then gives its storage access back)
    /locks/fence              one coordinator fences at a time
"""

from __future__ import annotations

from pvc_kernel.sdk import Key

OWNER = "fencing_ipmi"
FENCE_LOCK = "fence"

KEYS = [
    Key("fencing", "/fencing", OWNER),
    Key("fencing.bmcs", "/fencing/bmcs", OWNER),
    Key("fencing.bmc", "/fencing/bmcs/{node}", OWNER),
    Key("fencing.secret", "/fencing/secrets/{node}", OWNER, secret=True),
    Key("fencing.fences", "/fencing/fences", OWNER),
    Key("fencing.fence", "/fencing/fences/{node}", OWNER),
    Key("fencing.rejoin", "/fencing/rejoins/{node}", OWNER),
]
