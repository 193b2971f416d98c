"""The provisioner's objects as plain data, and every check made before one is stored.

The stored form of each object is the v1 wire shape (``pvc-api-v1.md`` §2): templates,
userdata, scripts, OVAs and profiles, with integer ``id``s. Functions here never touch
ZooKeeper; ``api.py`` reads, calls them and writes. A problem is a ``ModelError`` whose text
names the parameter, which the API answers as a 400.
"""

from __future__ import annotations

import email
import re
from typing import Any

import yaml

SYSTEM, NETWORK, STORAGE = "system_template", "network_template", "storage_template"
USERDATA, SCRIPT, OVA, PROFILE = "userdata", "script", "ova", "profile"
KINDS = (SYSTEM, NETWORK, STORAGE, USERDATA, SCRIPT, OVA, PROFILE)
PROFILE_TYPES = ("provisioner", "ova")
MIGRATION_METHODS = ("live", "shutdown", "none")
FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "swap")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DISK_ID = re.compile(r"^(sd|vd)[a-z]{1,2}$")
MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


class ModelError(ValueError):
    """Bad input; the message names the parameter."""


def check_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ModelError(f"Invalid parameter '{field}': {name!r} must be 1-63 letters, digits "
                         "or -_. starting with a letter or digit")
    return name


def _positive(value: Any, field: str, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise ModelError(f"Invalid parameter '{field}': must be an integer from 1 to {maximum}")
    return value


# -- system templates --------------------------------------------------------------------

SYSTEM_FIELDS = ("vcpu_count", "vram_mb", "serial", "vnc", "vnc_bind", "node_limit",
                 "node_selector", "node_autostart", "migration_method",
                 "migration_max_downtime")


def system_template(old: dict[str, Any] | None, given: dict[str, Any]) -> dict[str, Any]:
    """A system template from ``old`` (None for a new one) changed by the ``given`` fields
    (None: unchanged); ``vcpus``/``vram`` are the v1 parameter names."""
    t = dict(old or {"vcpu_count": None, "vram_mb": None, "serial": False, "vnc": False,
                     "vnc_bind": None, "node_limit": None, "node_selector": None,
                     "node_autostart": False, "migration_method": None,
                     "migration_max_downtime": 300, "ova": None})
    for param, field in (("vcpus", "vcpu_count"), ("vram", "vram_mb")):
        if given.get(param) is not None:
            t[field] = given[param]
    for field in ("serial", "vnc", "node_autostart"):
        if given.get(field) is not None:
            t[field] = bool(given[field])
    for field in ("vnc_bind", "node_limit", "node_selector", "migration_method"):
        if given.get(field) is not None:
            t[field] = given[field] or None
    if given.get("migration_max_downtime") is not None:
        t["migration_max_downtime"] = given["migration_max_downtime"]
    _positive(t["vcpu_count"], "vcpus", 1024)
    _positive(t["vram_mb"], "vram", 16 * 1024 * 1024)
    if t["node_selector"] == "none":
        t["node_selector"] = None
    if t["migration_method"] not in (None, *MIGRATION_METHODS):
        raise ModelError("Invalid parameter 'migration_method': must be one of "
                         + ", ".join(MIGRATION_METHODS))
    _positive(t["migration_max_downtime"], "migration_max_downtime", 3_600_000)
    if not t["vnc"]:
        t["vnc_bind"] = None
    if t["node_limit"]:
        nodes = [n.strip() for n in str(t["node_limit"]).split(",") if n.strip()]
        for node in nodes:
            check_name(node, "node_limit")
        t["node_limit"] = ",".join(nodes) or None
    return t


# -- network templates -------------------------------------------------------------------

def mac_template(text: str | None) -> str | None:
    """Check a MAC template (``{prefix}``, ``{vmid}``, ``{netid}`` fields, each two hex
    digits when filled) by filling it with sample values."""
    if not text:
        return None
    try:
        sample = text.format(prefix="52:54:00", vmid="0a", netid="01")
    except (KeyError, IndexError, ValueError) as exc:
        raise ModelError(f"Invalid parameter 'mac_template': {exc}; the fields are "
                         "{prefix}, {vmid} and {netid}") from None
    if not MAC.match(sample.lower()):
        raise ModelError(f"Invalid parameter 'mac_template': it gives {sample!r}, not a MAC "
                         "address (e.g. '{prefix}:ff:{vmid}:{netid}')")
    return text


def network_template(old: dict[str, Any] | None, mac: str | None) -> dict[str, Any]:
    t = dict(old or {"mac_template": None, "ova": None, "networks": []})
    if mac is not None:
        t["mac_template"] = mac_template(mac)
    return t


def add_net(t: dict[str, Any], vni: Any, permit_duplicate: bool) -> dict[str, Any]:
    text = str(vni)
    if not text.isdigit() or not 0 < int(text) < 2 ** 24:
        raise ModelError(f"Invalid parameter 'vni': {vni!r} is not a VNI (1-16777215)")
    if not permit_duplicate and any(n["vni"] == text for n in t["networks"]):
        raise ModelError(f"Invalid parameter 'vni': network {text} is already in template "
                         f"{t['name']!r} (give permit_duplicate for a second NIC on it)")
    ids = [n["id"] for n in t["networks"]]
    net = {"id": max(ids, default=0) + 1, "network_template": t["id"], "vni": text}
    return {**t, "networks": [*t["networks"], net]}


def remove_net(t: dict[str, Any], vni: str) -> dict[str, Any]:
    kept = [n for n in t["networks"] if n["vni"] != str(vni)]
    if len(kept) == len(t["networks"]):
        raise ModelError(f"Network {vni} is not in template {t['name']!r}.")
    return {**t, "networks": kept}


# -- storage templates -------------------------------------------------------------------

def storage_template(old: dict[str, Any] | None) -> dict[str, Any]:
    return dict(old or {"ova": None, "disks": []})


def add_disk(t: dict[str, Any], disk_id: str, given: dict[str, Any],
             replace: bool = False) -> dict[str, Any]:
    """Add (or with ``replace`` change) disk ``disk_id``: a new volume of ``disk_size`` GB,
    or a clone of ``source_volume``; optionally a filesystem (and its mountpoint) that the
    provisioner script makes."""
    if not DISK_ID.match(disk_id or ""):
        raise ModelError(f"Invalid parameter 'disk_id': {disk_id!r} must be sdX or vdX")
    others = [d for d in t["disks"] if d["disk_id"] != disk_id]
    if not replace and len(others) != len(t["disks"]):
        raise ModelError(f"Invalid parameter 'disk_id': {disk_id} is already in template "
                         f"{t['name']!r}")
    pool = given.get("pool")
    if not pool or not NAME.match(str(pool)):
        raise ModelError("Invalid parameter 'pool': a pool name is required")
    source, size = given.get("source_volume") or None, given.get("disk_size")
    fs, mount = given.get("filesystem") or None, given.get("mountpoint") or None
    fsargs = [a for a in given.get("filesystem_arg") or [] if a]
    if source is not None:
        if size is not None or fs or mount or fsargs:
            raise ModelError("Invalid parameter 'source_volume': a cloned disk takes no "
                             "disk_size, filesystem, filesystem_arg or mountpoint")
        check_name(source, "source_volume")
    else:
        _positive(size, "disk_size", 1024 * 1024)
    if fs is not None and fs not in FILESYSTEMS:
        raise ModelError(f"Invalid parameter 'filesystem': must be one of "
                         f"{', '.join(FILESYSTEMS)}")
    if fs is None and fsargs:
        raise ModelError("Invalid parameter 'filesystem_arg': give a filesystem too")
    if fs is not None and fs != "swap" and mount is None:
        raise ModelError(f"Invalid parameter 'mountpoint': a {fs} filesystem needs a "
                         "mountpoint (where the script mounts it)")
    if mount is not None:
        if fs is None:
            raise ModelError("Invalid parameter 'mountpoint': a mountpoint needs a filesystem")
        if fs == "swap" or not str(mount).startswith("/"):
            raise ModelError("Invalid parameter 'mountpoint': must be an absolute path (and "
                             "not on swap)")
        if any(d.get("mountpoint") == mount for d in others):
            raise ModelError(f"Invalid parameter 'mountpoint': {mount} is already used by "
                             "another disk of the template")
    old = next((d for d in t["disks"] if d["disk_id"] == disk_id), None)
    disk = {"id": old["id"] if old else max((d["id"] for d in t["disks"]), default=0) + 1,
            "storage_template": t["id"], "pool": pool, "disk_id": disk_id,
            "source_volume": source, "disk_size_gb": size, "mountpoint": mount,
            "filesystem": fs, "filesystem_args": " ".join(fsargs)}
    return {**t, "disks": sorted([*others, disk], key=lambda d: d["disk_id"])}


def remove_disk(t: dict[str, Any], disk_id: str) -> dict[str, Any]:
    kept = [d for d in t["disks"] if d["disk_id"] != disk_id]
    if len(kept) == len(t["disks"]):
        raise ModelError(f"Disk {disk_id} is not in template {t['name']!r}.")
    return {**t, "disks": kept}


# -- userdata and scripts ----------------------------------------------------------------

def userdata(text: Any) -> str:
    """Cloud-init user data; checked where it says what it is: ``#cloud-config`` must be a
    YAML mapping, a MIME multipart document must parse as one. Anything else (a ``#!``
    script, ``#include``...) is taken as it is."""
    if not isinstance(text, str):
        raise ModelError("Invalid parameter 'data': the user data is required")
    head = text.lstrip()[:200].lower()
    if head.startswith("#cloud-config"):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ModelError(f"Invalid parameter 'data': #cloud-config is not valid "
                             f"YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
        if doc is not None and not isinstance(doc, dict):
            raise ModelError("Invalid parameter 'data': #cloud-config must be a YAML mapping")
    elif head.startswith(("content-type: multipart", "mime-version")):
        msg = email.message_from_string(text)
        if not msg.is_multipart() or not msg.get_payload():
            raise ModelError("Invalid parameter 'data': it says it is MIME multipart but "
                             "has no parts (is the boundary right?)")
    return text


def script(text: Any) -> str:
    """A provisioner script: Python that defines ``VMBuilderScript`` (checked by parsing,
    never by running it: ``scripting.runner.check_script``)."""
    from pvc_plugins.provisioner.scripting.runner import check_script

    if not isinstance(text, str) or not text.strip():
        raise ModelError("Invalid parameter 'data': the script is required")
    problem = check_script(text)
    if problem:
        raise ModelError(f"Invalid parameter 'data': {problem}")
    return text


# -- profiles ----------------------------------------------------------------------------

def arguments(given: list[str] | None) -> list[str]:
    args = [a for a in given or [] if a]
    for arg in args:
        key, sep, _ = arg.partition("=")
        if not sep or not key:
            raise ModelError(f"Invalid parameter 'arg': {arg!r} is not key=value")
    return args


def profile(old: dict[str, Any] | None, given: dict[str, Any],
            existing: dict[str, set[str]]) -> dict[str, Any]:
    """A profile from ``old`` changed by ``given``; every name it refers to must be in
    ``existing`` (kind → names). Its type and OVA cannot change."""
    p = dict(old or {"type": None, "system_template": None, "network_template": None,
                     "storage_template": None, "userdata": None, "script": None,
                     "ova": None, "arguments": []})
    if old is None:
        p["type"] = given.get("profile_type")
        if p["type"] not in PROFILE_TYPES:
            raise ModelError("Invalid parameter 'profile_type': must be provisioner or ova")
        p["ova"] = given.get("ova") or None
    for kind in (SYSTEM, NETWORK, STORAGE, USERDATA, SCRIPT):
        if given.get(kind) is not None:
            p[kind] = given[kind] or None
    if given.get("arg") is not None:
        p["arguments"] = arguments(given["arg"])
    need = [SYSTEM, SCRIPT] + ([NETWORK, STORAGE] if p["type"] == "provisioner" else [OVA])
    for kind in need:
        if not p[kind]:
            raise ModelError(f"Invalid parameter '{kind}': a {p['type']} profile needs one")
    for kind in (SYSTEM, NETWORK, STORAGE, USERDATA, SCRIPT, OVA):
        if p[kind] and p[kind] not in existing.get(kind, set()):
            raise ModelError(f"Invalid parameter '{kind}': there is no {kind.replace('_', ' ')}"
                             f" {p[kind]!r}")
    return p


def users(profiles: list[dict[str, Any]], kind: str, name: str) -> list[str]:
    """The profiles that refer to object ``name`` of ``kind``."""
    return sorted(p["name"] for p in profiles if p.get(kind) == name)


def wire_profile(p: dict[str, Any]) -> dict[str, Any]:
    """The v1 shape: unset names are "N/A", ``arguments`` a list ([""] when empty)."""
    out = {k: (p.get(k) or "N/A") for k in (SYSTEM, NETWORK, STORAGE, USERDATA, SCRIPT, OVA)}
    return {"id": p["id"], "name": p["name"], "type": p["type"], **out,
            "arguments": list(p.get("arguments") or []) or [""]}
