"""The provisioner's ZooKeeper keys (registered through ``pvc_schema_keys``)::

    /provisioner                            (root of the plugin's keys)
        ids                                 JSON {kind: last id given out}: the v1 objects
                                            carry integer ids
        objects/<kind>                      one child per object of the kind, by name:
        objects/<kind>/<obj>                JSON: the object as the API shows it (v1 shape)

        jobs/<task id>                      JSON: what a running ``provisioner.create``
                                            made (VM, volumes) and its stage, written by the
                                            primary running it; removed once it succeeded or
                                            was cleaned up (a new primary cleans up after a
                                            dead one)

        claims/<vm name>                    the task id of the create making that VM (held
                                            from its checks to its end: one create per name)

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
    Key("provisioner.jobs", "/provisioner/jobs", OWNER),
    Key("provisioner.claims", "/provisioner/claims", OWNER),
    Key("provisioner.claim", "/provisioner/claims/{vm}", OWNER),
    Key("provisioner.job", "/provisioner/jobs/{task_id}", OWNER),
]
