"""``rbd info --format json`` of an image or snapshot, built from the librbd bindings."""

from __future__ import annotations

from typing import Any

FEATURES = [(1, "layering"), (2, "striping"), (4, "exclusive-lock"), (8, "object-map"),
            (16, "fast-diff"), (32, "deep-flatten"), (64, "journaling"), (128, "data-pool"),
            (256, "operations"), (512, "migrating"), (1024, "non-primary")]
OP_FEATURES = [(1, "clone-parent"), (2, "clone-child"), (4, "group"), (8, "snap-trash")]
FLAGS = [(1, "object map invalid"), (2, "fast diff invalid")]
INFO_KEYS = ("name", "id", "size", "objects", "order", "object_size", "snapshot_count",
             "block_name_prefix", "format", "features", "op_features", "flags",
             "create_timestamp", "access_timestamp", "modify_timestamp")


def bit_names(value: int, table: list[tuple[int, str]]) -> list[str]:
    return [name for bit, name in table if value & bit]


def _ts(fn: Any) -> str:
    try:
        return fn().ctime()
    except Exception:
        return ""


def image_info(image: Any, name: str, snapshot: str | None = None) -> dict[str, Any]:
    """The info of an open ``rbd.Image`` (``snapshot``: the snapshot it is set to)."""
    st = image.stat()
    info: dict[str, Any] = {
        "name": name,
        "id": image.id(),
        "size": int(st["size"]),
        "objects": int(st["num_objs"]),
        "order": int(st["order"]),
        "object_size": int(st["obj_size"]),
        "snapshot_count": len(list(image.list_snaps())),
        "block_name_prefix": st["block_name_prefix"],
        "format": 1 if image.old_format() else 2,
        "features": bit_names(image.features(), FEATURES),
        "op_features": bit_names(image.op_features(), OP_FEATURES),
        "flags": bit_names(image.flags(), FLAGS),
        "create_timestamp": _ts(image.create_timestamp),
        "access_timestamp": _ts(image.access_timestamp),
        "modify_timestamp": _ts(image.modify_timestamp),
    }
    try:
        parent = image.get_parent_image_spec()
        info["parent"] = {"pool": parent["pool_name"], "pool_namespace":
                          parent.get("pool_namespace", ""), "image": parent["image_name"],
                          "snapshot": parent["snap_name"], "overlap": image.overlap()}
    except Exception:   # ImageNotFound: not a clone
        pass
    if snapshot is not None:
        info["protected"] = "true" if image.is_protected_snap(snapshot) else "false"
    return info


def empty_info(name: str) -> dict[str, Any]:
    """The same keys with zero/empty values, for an image whose info cannot be read."""
    out: dict[str, Any] = {k: 0 for k in INFO_KEYS}
    out.update({"name": name, "id": "", "block_name_prefix": "", "features": [],
                "op_features": [], "flags": [], "create_timestamp": "",
                "access_timestamp": "", "modify_timestamp": ""})
    return out
