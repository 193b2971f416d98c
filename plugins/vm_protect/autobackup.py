"""Autobackup: a snapshot and an export of every VM with an autobackup tag, full every
``full_interval`` backups and incremental from the newest full in between, keeping
``full_retention`` fulls with their incrementals (the original's model).

Per VM, ``<path>/<vm>/.autobackup.json`` lists its backups, oldest first. It is written
(through a temporary name) after the new export exists and before anything is pruned, so
a crash leaves at worst an unlisted directory, never a listed backup that is gone. Only
the newest full's snapshot stays in the cluster: it is the base of the next incremental.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from typing import Any

from pvc_plugins.vm_protect import config, exports, snapshots
from pvc_plugins.vm_protect.snapshots import SnapshotError, ask

TASK = "cluster.autobackup"
HISTORY = ".autobackup.json"
PREFIX = "ab"


def plan(history: list[dict[str, Any]], full_interval: int, force_full: bool) -> str | None:
    """The parent of the next backup: None for a full one, else the newest full's name."""
    fulls = [i for i, b in enumerate(history) if not b.get("parent")]
    if force_full or not fulls:
        return None
    since = len(history) - fulls[-1]          # the full and the incrementals after it
    return None if since >= full_interval else history[fulls[-1]]["name"]


def prune(history: list[dict[str, Any]],
          full_retention: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped): the newest ``full_retention`` fulls and everything after the oldest
    of them are kept."""
    fulls = [i for i, b in enumerate(history) if not b.get("parent")]
    if len(fulls) <= full_retention:
        return list(history), []
    cut = fulls[-full_retention]
    return history[cut:], history[:cut]


def load_history(base: str) -> list[dict[str, Any]]:
    try:
        with open(os.path.join(base, HISTORY)) as fh:
            found = json.load(fh)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{base}/{HISTORY} is unreadable ({exc}); fix or remove it") \
            from None
    if not isinstance(found, list):
        raise SnapshotError(f"{base}/{HISTORY} is not a list of backups; fix or remove it")
    return found


def save_history(base: str, history: list[dict[str, Any]]) -> None:
    tmp = os.path.join(base, HISTORY + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(history, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, os.path.join(base, HISTORY))


def _drop_snapshots(daemon: Any, uuid: str, keep: str) -> None:
    """Remove this VM's autobackup snapshots except ``keep`` (the next incremental's base)."""
    for name in daemon.store.children("vm_protect.vm", uuid=uuid):
        if name.startswith(PREFIX) and name != keep:
            snapshots.remove(daemon, uuid, name)


def backup_vm(daemon: Any, vm: str, root: str, full_interval: int, full_retention: int,
              force_full: bool, now: float | None = None) -> dict[str, Any]:
    """One VM's backup: snapshot, export, history, pruning. What was done."""
    info = snapshots.find_vm(daemon, vm)
    base = os.path.join(root, info["name"])
    history = load_history(base)
    parent = plan(history, full_interval, force_full)
    if parent and (not daemon.store.exists("vm_protect.snapshot", uuid=info["uuid"],
                                           snapshot=parent)
                   or exports.verify(os.path.join(base, parent))):
        parent = None           # the base snapshot or its export is gone: a new chain
    at = time.time() if now is None else now
    name = PREFIX + snapshots.default_name(at)
    while daemon.store.exists("vm_protect.snapshot", uuid=info["uuid"], snapshot=name) \
            or os.path.lexists(os.path.join(base, name)):
        at += 1                               # two runs within a second: the next name
        name = PREFIX + snapshots.default_name(at)
    snapshots.create(daemon, info["uuid"], name)
    try:
        exports.export(daemon, info["uuid"], name, root, parent)
    except Exception:
        snapshots.remove(daemon, info["uuid"], name)
        raise
    history.append({"name": name, "parent": parent, "timestamp": time.time()})
    kept, dropped = prune(history, full_retention)
    save_history(base, kept)
    for old in dropped:
        shutil.rmtree(os.path.join(base, old["name"]), ignore_errors=True)
    newest_full = [b["name"] for b in kept if not b.get("parent")][-1]
    _drop_snapshots(daemon, info["uuid"], newest_full)
    return {"vm": info["name"], "snapshot": name, "kind": "incremental" if parent else "full",
            "parent": parent, "pruned": [b["name"] for b in dropped]}


def _commands(commands: list[str], what: str) -> None:
    for command in commands:
        proc = subprocess.run(shlex.split(command), capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise SnapshotError(f"{what} command {command!r} failed "
                                f"({proc.returncode}): {tail[0]}")


def run(daemon: Any, force_full: bool = False, progress: Any = None) -> dict[str, Any]:
    """Back up every tagged VM; the report ``{path, vms: [...], failed}``."""
    settings = config.load(daemon.config)
    root = settings["autobackup_path"]
    if not root:
        raise SnapshotError("autobackup is off: set plugins.vm_protect.autobackup_path")
    _commands(settings["autobackup_mount_commands"], "mount")
    report: dict[str, Any] = {"path": root, "vms": [], "failed": 0}
    try:
        if not os.path.isdir(root):
            raise SnapshotError(f"{root} is not a directory on node {daemon.node}")
        names = sorted({n for tag in settings["autobackup_tags"]
                        for n in ask(daemon, "pvc_vm_names", tag=tag) or []})
        for index, vm in enumerate(names):
            if progress:
                progress(index, len(names), f"backup of VM {vm}")
            try:
                report["vms"].append(backup_vm(
                    daemon, vm, root, settings["autobackup_full_interval"],
                    settings["autobackup_full_retention"], force_full))
            except Exception as exc:
                report["failed"] += 1
                report["vms"].append({"vm": vm, "error": str(exc)})
    finally:
        _commands(settings["autobackup_unmount_commands"], "unmount")
    return report


def summary(report: dict[str, Any]) -> str:
    lines = [f"Autobackup to {report['path']}: {len(report['vms'])} VM(s), "
             f"{report['failed']} failed."]
    for entry in report["vms"]:
        if "error" in entry:
            lines.append(f"  {entry['vm']}: FAILED: {entry['error']}")
        else:
            pruned = f", pruned {', '.join(entry['pruned'])}" if entry["pruned"] else ""
            lines.append(f"  {entry['vm']}: {entry['kind']} {entry['snapshot']}"
                         + (f" (from {entry['parent']})" if entry["parent"] else "") + pruned)
    return "\n".join(lines)


def run_task(ctx: Any) -> str:
    """``cluster.autobackup``: fails (with the report) when any VM's backup failed."""
    report = run(ctx.daemon, bool(ctx.args.get("force_full")), progress=ctx.progress)
    text = summary(report)
    if report["failed"]:
        raise SnapshotError(text)
    return text
