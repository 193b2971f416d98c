"""The provisioner's ZooKeeper keys (registered through ``pvc_schema_keys``)::

    /provisioner                            (root of the plugin's keys)
        ids                                 JSON {kind: last id given out}: the v1 objects
                                            carry integer ids
        objects/<kind>                      one child per object of the kind, by name:
        objects/<kind>/<obj>                JSON: the object as the API shows it (v1 shape)

Kinds: ``system_template``, ``network_template``, ``storage_template``, ``userdata``,
``script``, ``ova``, ``profile``. Every object is desired state written by the API only,
under the ``provisioner`` lock, so that a check ("no profile uses this template") and the
write it allows cannot race.
"""

from __future__ import annotations

from pvc_kernel.sdk import Key

OWNER = "provisioner"
LOCK = "provisioner"

KEYS = [
    Key("provisioner", "/provisioner", OWNER),
    Key("provisioner.ids", "/provisioner/ids", OWNER),
    Key("provisioner.objects", "/provisioner/objects", OWNER),
    Key("provisioner.kind", "/provisioner/objects/{kind}", OWNER),
    Key("provisioner.object", "/provisioner/objects/{kind}/{obj}", OWNER),
]
