"""The plugin's ZooKeeper keys (registered through ``pvc_schema_keys``)::

    /vm_protect                             (root of the plugin's keys)
        snapshots/<vm uuid>                 one child per snapshot of that VM:
        snapshots/<vm uuid>/<snapshot>      JSON {name, timestamp, xml, meta, volumes
                                            ["pool/vol@snap"], consistency}

A snapshot's record is written only after every volume's snapshot exists, and removed only
after they are gone: a record always names volume snapshots that exist. Every change for
one VM runs under the lock ``vm_protect-<uuid>``.
"""

from __future__ import annotations

from pvc_kernel.sdk import Key

OWNER = "vm_protect"

KEYS = [
    Key("vm_protect", "/vm_protect", OWNER),
    Key("vm_protect.snapshots", "/vm_protect/snapshots", OWNER),
    Key("vm_protect.vm", "/vm_protect/snapshots/{uuid}", OWNER),
    Key("vm_protect.snapshot", "/vm_protect/snapshots/{uuid}/{snapshot}", OWNER),
]


def lock_name(uuid: str) -> str:
    return f"vm_protect-{uuid}"
