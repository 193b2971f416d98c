"""VM snapshot export and import as files on the primary.

Layout of one export (the original's, plus a manifest)::

    <path>/<vm>/<snapshot>/snapshot.json            the VM's XML, metadata and volumes
    <path>/<vm>/<snapshot>/images/<pool>.<vol>.rbdimg   whole volume   (rbd export-diff
    <path>/<vm>/<snapshot>/images/<pool>.<vol>.rbddiff  since a parent  file format)
    <path>/<vm>/<snapshot>/manifest.json            size and SHA-256 of every file above

An export is written into a hidden sibling directory and renamed into place only when the
manifest is written: a directory without a manifest is never an export. An import checks
every file of the snapshot and of its parents against their manifests before it touches
the cluster; a failure after that removes the volumes it made, and the VM is defined only
at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from pvc_plugins.vm_protect import keys, snapshots
from pvc_plugins.vm_protect.snapshots import SnapshotError, ask

EXPORT_TASK = "vm.export_snapshot"
IMPORT_TASK = "vm.import_snapshot"
FORMAT = "pvc-vm-export-1"
MANIFEST = "manifest.json"
DESCRIPTION = "snapshot.json"

Progress = Callable[[int, int, str], None]


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * 2**20):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: str) -> dict[str, Any]:
    """Record the size and SHA-256 of every file under ``directory`` in its manifest
    (written through a temporary name)."""
    files = {}
    for root, _dirs, names in os.walk(directory):
        for name in sorted(names):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, directory)
            if rel != MANIFEST:
                files[rel] = {"size": os.path.getsize(full), "sha256": sha256(full)}
    manifest = {"format": FORMAT, "files": files}
    tmp = os.path.join(directory, MANIFEST + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, os.path.join(directory, MANIFEST))
    return manifest


def verify(directory: str) -> list[str]:
    """What is wrong with the export in ``directory`` (an empty list when nothing is): a
    missing manifest, a missing file, a size or checksum that does not match."""
    try:
        with open(os.path.join(directory, MANIFEST)) as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        return [f"{directory}: no {MANIFEST} (not an export, or an unfinished one)"]
    except (OSError, ValueError) as exc:
        return [f"{directory}/{MANIFEST}: unreadable ({exc})"]
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return [f"{directory}/{MANIFEST}: not a {FORMAT} manifest"]
    problems = []
    for rel, want in sorted(manifest.get("files", {}).items()):
        full = os.path.join(directory, rel)
        if not os.path.isfile(full):
            problems.append(f"{full}: missing")
        elif os.path.getsize(full) != want["size"]:
            problems.append(f"{full}: {os.path.getsize(full)} bytes, the manifest says "
                            f"{want['size']}")
        elif sha256(full) != want["sha256"]:
            problems.append(f"{full}: checksum does not match the manifest")
    if DESCRIPTION not in manifest.get("files", {}):
        problems.append(f"{directory}: the manifest names no {DESCRIPTION}")
    return problems


def image_file(volume: str, incremental: bool) -> str:
    pool, _, name = volume.partition("/")
    return f"images/{pool}.{name}.{'rbddiff' if incremental else 'rbdimg'}"


def _check_path(path: str) -> None:
    if not os.path.isabs(path):
        raise SnapshotError(f"the path {path!r} must be absolute")
    if not os.path.isdir(path):
        raise SnapshotError(f"the path {path} is not a directory on the primary node")


def export(daemon: Any, vm: str, name: str, path: str, parent: str | None = None,
           progress: Progress | None = None) -> str:
    """Write snapshot ``name`` of ``vm`` under ``path`` (only the changes since snapshot
    ``parent`` when given, which must have been exported to the same ``path``)."""
    _check_path(path)
    info = snapshots.find_vm(daemon, vm)
    store, uuid = daemon.store, info["uuid"]
    rec = snapshots.snapshot_record(store, info, name)
    base = os.path.join(path, info["name"])
    if parent:
        parent_rec = snapshots.snapshot_record(store, info, parent)
        if float(parent_rec["timestamp"]) >= float(rec["timestamp"]):
            raise SnapshotError(f"the parent '{parent}' is not older than '{name}'")
        problems = verify(os.path.join(base, parent))
        if problems:
            raise SnapshotError(f"the parent export is not usable: {problems[0]}")
    final = os.path.join(base, name)
    if os.path.lexists(final):
        raise SnapshotError(f"{final} already exists")
    work = os.path.join(base, f".{name}.partial")
    with store.locked(keys.lock_name(uuid), daemon.node, snapshots.LOCK_WAIT,
                      what=f"VM '{info['name']}' snapshots"):
        shutil.rmtree(work, ignore_errors=True)          # a crashed earlier attempt's
        os.makedirs(os.path.join(work, "images"))
        try:
            volumes = []
            total_bytes = 0
            count = len(rec["volumes"])
            for index, spec in enumerate(rec["volumes"]):
                volume = spec.rpartition("@")[0]
                pool, _, vol = volume.partition("/")
                rel = image_file(volume, bool(parent))
                if progress:
                    progress(index, count + 1, f"export of {volume}@{name}")
                size = ask(daemon, "pvc_volume_export", pool=pool, name=vol, snapshot=name,
                           since=parent, path=os.path.join(work, rel))
                total_bytes += int(size or 0)
                volumes.append({"volume": volume, "file": rel,
                                "kind": "diff" if parent else "full"})
            description = {"format": FORMAT, "vm": info["name"], "uuid": uuid,
                           "name": name, "timestamp": rec["timestamp"], "xml": rec["xml"],
                           "meta": rec.get("meta") or {},
                           "consistency": rec.get("consistency", "crash"),
                           "incremental_parent": parent, "volumes": volumes,
                           "exported_at": time.time()}
            with open(os.path.join(work, DESCRIPTION), "w") as fh:
                json.dump(description, fh, indent=1)
            if progress:
                progress(count, count + 1, "checksums")
            write_manifest(work)
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    kind = f"incremental from '{parent}'" if parent else "full"
    return (f"Exported snapshot '{name}' of VM '{info['name']}' to {final} ({kind}, "
            f"{len(volumes)} volume(s), {total_bytes} bytes).")


def _chain(base: str, name: str) -> list[dict[str, Any]]:
    """The descriptions from the full export up to ``name``, each checked first."""
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = name
    while current:
        if current in seen:
            raise SnapshotError(f"the exports under {base} name each other as parents")
        seen.add(current)
        directory = os.path.join(base, current)
        if not os.path.isdir(directory):
            what = "the snapshot" if current == name else f"its parent '{current}'"
            raise SnapshotError(f"{directory} does not exist ({what} was not exported here)")
        problems = verify(directory)
        if problems:
            raise SnapshotError("the export is damaged, nothing was imported: "
                                + "; ".join(problems))
        with open(os.path.join(directory, DESCRIPTION)) as fh:
            description = json.load(fh)
        description["directory"] = directory
        chain.insert(0, description)
        current = description.get("incremental_parent")
    return chain


def import_(daemon: Any, vm: str, name: str, path: str, retain: bool = True,
            progress: Progress | None = None) -> str:
    """Make VM ``vm`` again from its export ``name`` under ``path`` (and the exports it is
    incremental from). The VM and its volumes must not exist; the VM is defined stopped."""
    _check_path(path)
    chain = _chain(os.path.join(path, vm), name)
    last = chain[-1]
    for ident in {last["vm"], last["uuid"]}:
        if ask(daemon, "pvc_vm_volumes", vm=ident):
            raise SnapshotError(f"VM '{ident}' exists: remove it before importing it "
                                "(or roll it back instead)")
    steps = [(d, v) for d in chain for v in d["volumes"]]
    made: list[str] = []
    try:
        for index, (description, entry) in enumerate(steps):
            if progress:
                progress(index, len(steps) + 1, f"import of {entry['volume']}@"
                                                f"{description['name']}")
            pool, _, vol = entry["volume"].partition("/")
            since = description.get("incremental_parent")
            ask(daemon, "pvc_volume_import", pool=pool, name=vol,
                path=os.path.join(description["directory"], entry["file"]), since=since,
                snapshot=description["name"])
            if since is None:
                made.append(entry["volume"])
        meta = last.get("meta") or {}
        if progress:
            progress(len(steps), len(steps) + 1, "definition")
        ask(daemon, "pvc_vm_define", definition={
            "xml": last["xml"], "node": None, "node_limit": meta.get("node_limit"),
            "node_selector": meta.get("node_selector"),
            "node_autostart": bool(meta.get("node_autostart")),
            "migration_method": meta.get("migration_method"),
            "migration_max_downtime": meta.get("migration_max_downtime"),
            "profile": meta.get("profile"), "state": "stop"})
    except Exception as exc:
        left = _remove_volumes(daemon, made, [d["name"] for d in chain])
        tail = f"; could not remove {', '.join(left)}" if left else \
            ("; the volumes it made are removed" if made else "")
        raise SnapshotError(f"the import of '{name}' failed: {exc}{tail}") from None
    names = [d["name"] for d in chain]
    if retain:
        for description in chain:
            record = {"name": description["name"], "timestamp": description["timestamp"],
                      "xml": description["xml"], "meta": description.get("meta") or {},
                      "consistency": description.get("consistency", "crash"),
                      "volumes": [f"{v['volume']}@{description['name']}"
                                  for v in last["volumes"]]}
            daemon.store.create("vm_protect.snapshot", json.dumps(record),
                                uuid=last["uuid"], snapshot=description["name"])
    else:
        for volume in made:
            for snap in names:
                pool, _, vol = volume.partition("/")
                ask(daemon, "pvc_volume_snapshot_remove", pool=pool, name=vol, snapshot=snap)
    kept = f"snapshots {', '.join(names)} kept" if retain else "no snapshot kept"
    return (f"Imported VM '{last['vm']}' from snapshot '{name}' ({len(made)} volume(s), "
            f"{kept}); it is stopped.")


def _remove_volumes(daemon: Any, volumes: list[str], snaps: list[str]) -> list[str]:
    left = []
    for volume in volumes:
        pool, _, vol = volume.partition("/")
        try:
            for snap in snaps:
                ask(daemon, "pvc_volume_snapshot_remove", pool=pool, name=vol, snapshot=snap)
            ask(daemon, "pvc_volume_remove", pool=pool, name=vol)
        except Exception as exc:
            snapshots.log.error("could not remove volume %s: %s", volume, exc)
            left.append(volume)
    return left


def run_task(ctx: Any, action: str) -> str:
    """A task handler's body for ``vm.export_snapshot`` and ``vm.import_snapshot``."""
    args = ctx.args
    if action == EXPORT_TASK:
        return export(ctx.daemon, args["vm"], args["snapshot"], args["path"],
                      args.get("parent"), progress=ctx.progress)
    return import_(ctx.daemon, args["vm"], args["snapshot"], args["path"],
                   bool(args.get("retain", True)), progress=ctx.progress)
