"""Task ``provisioner.create``: a VM from a profile, on the primary, stage by stage.

Stages: collect the profile; check the cluster (name free, a node with room, networks,
pools with room); make the volumes; run the script's ``setup`` and ``create``; define the
VM from the XML ``create`` returned; run ``prepare``, ``install`` and ``cleanup``; start
the VM if asked. What was made is written to ``provisioner.job`` before it is made, so a
failure (here, or the death of this primary: ``recover_jobs`` on the next one) removes
the VM and the volumes again, and the task says at which stage and why it failed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid as uuidlib
from typing import Any

from pvc_kernel.sdk import tasks
from pvc_plugins.provisioner import model

log = logging.getLogger("pvc_plugins.provisioner")

TASK = "provisioner.create"
STAGES = ("Collecting the profile", "Checking the cluster", "Creating the volumes",
          "Script setup()", "Script create()", "Defining the VM", "Script prepare()",
          "Script install()", "Script cleanup()", "Starting the VM")
GB = 1024 ** 3
START_WAIT = 300.0            # s for the new VM to run (TCG guests, busy nodes)


class StartFailed(Exception):
    """The VM was made (and is kept) but did not start."""


def ask(daemon: Any, hook: str, **kw: Any) -> Any:
    """The first answer of a VM or volume hook; a plugin's refusal raises (its reason)."""
    return daemon.plugins.call_first(hook, raising=True, daemon=daemon, **kw)


class CreateFailed(Exception):
    """A create that stopped: ``stage`` where, ``message`` why (the script's own text)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage, self.message = stage, message


def _object(store: Any, kind: str, name: str | None) -> dict[str, Any] | None:
    if not name:
        return None
    text = store.get("provisioner.object", kind=kind, obj=name)
    return json.loads(text) if text else None


def collect(store: Any, profile_name: str) -> dict[str, Any]:
    """The profile and everything it names; CreateFailed if something is gone."""
    profile = _object(store, model.PROFILE, profile_name)
    if profile is None:
        raise CreateFailed(STAGES[0], f"profile '{profile_name}' does not exist")
    parts: dict[str, Any] = {"profile": profile}
    for kind in (model.SYSTEM, model.NETWORK, model.STORAGE, model.USERDATA, model.SCRIPT,
                 model.OVA):
        parts[kind] = _object(store, kind, profile.get(kind))
        if profile.get(kind) and parts[kind] is None:
            raise CreateFailed(STAGES[0], f"{kind.replace('_', ' ')} '{profile[kind]}' of "
                               f"profile '{profile_name}' does not exist")
    return parts


def script_arguments(profile_args: list[str], extra: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for arg in [*profile_args, *extra]:
        key, sep, value = arg.partition("=")
        if sep and key:
            out[key] = value
    return out


def disks(parts: dict[str, Any]) -> list[dict[str, Any]]:
    """The VM's disks: the storage template's, or for an ``ova`` profile a copy of each of
    the OVA's volumes."""
    if parts[model.OVA]:
        return [{"id": i + 1, "storage_template": None, "pool": v["pool"],
                 "disk_id": v["disk_id"], "source_volume": v["volume_name"],
                 "disk_size_gb": v["disk_size_gb"], "mountpoint": None, "filesystem": None,
                 "filesystem_args": ""}
                for i, v in enumerate(parts[model.OVA].get("volumes") or [])]
    storage = parts[model.STORAGE] or {"disks": [], "name": None}
    return [{**d, "storage_template": storage.get("name")} for d in storage["disks"]]


def vm_data(parts: dict[str, Any], facts: dict[str, Any], args: dict[str, str]) -> dict:
    """The ``vm_data`` a provisioner script gets (the original's keys)."""
    system = parts[model.SYSTEM]
    network = parts[model.NETWORK] or {"mac_template": None, "networks": [], "name": None}
    script = parts[model.SCRIPT]
    details = {k: system.get(k) for k in ("id", "name", "vcpu_count", "vram_mb", "serial",
                                          "vnc", "vnc_bind", "node_limit", "node_selector",
                                          "node_autostart", "migration_method", "ova")}
    data = {
        "ceph_monitor_list": list(facts.get("hosts") or []),
        "ceph_monitor_port": str(facts.get("port") or "6789"),
        "ceph_monitor_secret": facts.get("secret"),
        "mac_template": network.get("mac_template"),
        "networks": [{"eth_bridge": f"vmbr{n['vni']}", "id": n["id"],
                      "network_template": n["network_template"], "vni": str(n["vni"])}
                     for n in network["networks"]],
        "script": script["script"] if script else "",
        "script_arguments": args,
        "system_architecture": os.uname().machine,
        "system_details": details,
        "volumes": disks(parts),
    }
    if parts.get(model.OVA):
        data["ova_details"] = parts[model.OVA]
    return data


def vm_id(name: str) -> int:
    """The trailing digits of the VM's name (0 if none)."""
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else 0


class Job:
    """The ``provisioner.job`` record of one create: what exists and must be removed if the
    create fails."""

    def __init__(self, store: Any, task_id: str, name: str, node: str) -> None:
        self.store, self.task_id = store, task_id
        self.data: dict[str, Any] = {"task_id": task_id, "vm": name, "vm_uuid": None,
                                     "volumes": [], "node": node, "stage": STAGES[0],
                                     "started": time.time()}
        store.set("provisioner.job", json.dumps(self.data), task_id=task_id)

    def note(self, **changes: Any) -> None:
        self.data.update(changes)
        self.store.set("provisioner.job", json.dumps(self.data), task_id=self.task_id)

    def add_volume(self, pool: str, name: str) -> None:
        self.note(volumes=[*self.data["volumes"], [pool, name]])

    def claim(self) -> None:
        """Hold the VM's name for this create: a second create of it fails here."""
        try:
            self.store.create("provisioner.claim", self.task_id, vm=self.data["vm"])
        except Exception as exc:
            holder = self.store.get("provisioner.claim", vm=self.data["vm"])
            if holder is None:
                raise CreateFailed(STAGES[1], f"cannot hold the name: {exc}") from None
            raise CreateFailed(STAGES[1], f"another create of VM '{self.data['vm']}' is "
                               f"running (task {holder})") from None
        self.note(claimed=True)

    def done(self) -> None:
        if self.data.get("claimed"):
            self.store.delete("provisioner.claim", vm=self.data["vm"])
        self.store.delete("provisioner.job", task_id=self.task_id)


def undo(daemon: Any, data: dict[str, Any]) -> list[str]:
    """Remove the VM and volumes a job record names; the problems left (none: all gone)."""
    problems: list[str] = []
    if data.get("vm_uuid"):
        try:
            ask(daemon, "pvc_vm_undefine", vm=data["vm_uuid"])
        except Exception as exc:
            problems.append(f"VM {data['vm']}: {exc}")
    for pool, name in reversed(data.get("volumes") or []):
        for attempt in range(30):           # a dead mapper's watch times out within ~30 s
            try:
                ask(daemon, "pvc_volume_remove", pool=pool, name=name)
                break
            except Exception as exc:
                if attempt == 29 or "in use" not in str(exc):
                    problems.append(f"volume {pool}/{name}: {exc}")
                    break
                daemon.stopping.wait(2)
    return problems


def recover_jobs(daemon: Any) -> None:
    """On a new primary: fail and undo every create whose primary died or that ended
    without cleaning up (its record is left)."""
    for task_id in daemon.store.children("provisioner.jobs"):
        try:
            _recover_job(daemon, task_id)
        except Exception:
            log.exception("provisioner: cannot recover create %s", task_id)


def _recover_job(daemon: Any, task_id: str) -> None:
    store = daemon.store
    text = store.get("provisioner.job", task_id=task_id)
    data = json.loads(text) if text else {}
    record = tasks.get_task(store, task_id)
    owner = (record or {}).get("owner") or data.get("node")
    alive = owner == daemon.node or store.get("node.daemon_state", node=owner) == "run"
    if record and record.get("state") == tasks.RUNNING and alive:
        return                            # its primary still runs it
    if record and record.get("state") in (tasks.RUNNING, tasks.PENDING):
        tasks.update_task(store, task_id, state=tasks.FAILURE, finished=time.time(),
                          status=f"Interrupted at '{data.get('stage')}': node {owner} "
                                 "stopped running it; what it made was removed")
    problems = undo(daemon, data)
    if problems:
        log.error("provisioner: could not undo create %s: %s", task_id, "; ".join(problems))
    else:
        if data.get("claimed") and store.get("provisioner.claim", vm=data["vm"]) == task_id:
            store.delete("provisioner.claim", vm=data["vm"])
        store.delete("provisioner.job", task_id=task_id)
        log.info("provisioner: removed what the interrupted create %s of %s made",
                 task_id, data.get("vm"))


class Volumes:
    """The runner's volume backend: the storage plugin's hooks, and mappings to block
    devices through ``blockmap`` (every mapping is undone when the script ends)."""

    def __init__(self, daemon: Any, job: Job, workdir: str) -> None:
        self.daemon, self.job, self.workdir = daemon, job, workdir
        self.mapped: dict[tuple[str, str], Any] = {}

    def _hook(self, hook: str, **kw: Any) -> Any:
        answer = ask(self.daemon, hook, **kw)
        if answer is None:
            raise RuntimeError("no storage plugin keeps volumes on this node")
        return answer

    def add(self, pool: str, name: str, size_bytes: int) -> None:
        # recorded once made: a volume of that name made by someone else is never undone
        self._hook("pvc_volume_create", pool=pool, name=name, size_bytes=size_bytes,
                   source=None)
        self.job.add_volume(pool, name)

    def clone(self, pool: str, source: str, name: str) -> None:
        self._hook("pvc_volume_create", pool=pool, name=name, size_bytes=0, source=source)
        self.job.add_volume(pool, name)

    def map(self, pool: str, name: str) -> str:
        from pvc_plugins.provisioner import blockmap

        if (pool, name) in self.mapped:
            return self.mapped[(pool, name)].device
        spec = self._hook("pvc_volume_blockdev", pool=pool, name=name)
        mapping = blockmap.map_blockdev(spec, self.workdir)
        self.mapped[(pool, name)] = mapping
        return mapping.device

    def unmap(self, pool: str, name: str) -> None:
        from pvc_plugins.provisioner import blockmap

        mapping = self.mapped.get((pool, name))
        if mapping is not None:
            blockmap.unmap(mapping)     # kept while it fails: the end of the run tries again
            del self.mapped[(pool, name)]

    def unmap_all(self) -> list[str]:
        problems = []
        for pool, name in list(self.mapped):
            try:
                self.unmap(pool, name)
            except Exception as exc:
                problems.append(f"{pool}/{name}: {exc}")
        return problems


def run(ctx: Any, daemon: Any, settings: dict[str, Any]) -> str:
    """The task handler: see the module."""
    args = ctx.args
    name, profile_name = args["name"], args["profile"]
    define, start = bool(args.get("define_vm", True)), bool(args.get("start_vm", True))
    total = len(STAGES)
    job = Job(daemon.store, ctx.id, name, daemon.node)
    workdir = os.path.join(settings["work_dir"], daemon.node)
    volumes = Volumes(daemon, job, workdir)
    stage = STAGES[0]

    def step(index: int, detail: str = "") -> None:
        nonlocal stage
        ctx.check()
        stage = STAGES[index]
        job.note(stage=stage)
        ctx.progress(index, total, stage + (f": {detail}" if detail else ""))

    try:
        step(0)
        parts = collect(daemon.store, profile_name)
        step(1)
        job.claim()
        facts = check(daemon, name, parts)
        data = vm_data(parts, facts, script_arguments(
            parts["profile"].get("arguments") or [], list(args.get("arg") or [])))
        step(2)
        make_volumes(volumes, name, data["volumes"])
        script = parts[model.SCRIPT]
        vm_uuid = str(uuidlib.uuid4())
        xml_holder: dict[str, str] = {}

        def on_stage(which: str) -> None:
            index = {"setup": 3, "create": 4, "prepare": 6, "install": 7, "cleanup": 8}
            if which in index:
                step(index[which])

        def on_xml(xml: str) -> None:
            xml_holder["xml"] = xml
            if not define:
                return
            step(5)
            system = parts[model.SYSTEM]
            ref = ask(daemon, "pvc_vm_define", definition={
                "xml": xml, "node": None,
                "node_limit": (system.get("node_limit") or "").split(",")
                if system.get("node_limit") else None,
                "node_selector": system.get("node_selector"),
                "node_autostart": bool(system.get("node_autostart")),
                "migration_method": system.get("migration_method"),
                "migration_max_downtime": system.get("migration_max_downtime"),
                "profile": profile_name, "state": "stop"})
            if ref is None:
                raise RuntimeError("no VM plugin runs VMs on this cluster")
            job.note(vm_uuid=ref["uuid"])

        from pvc_plugins.provisioner.scripting import runner

        try:
            runner.run_script(
                script["script"], name, profile_name, data, volumes=volumes,
                on_stage=on_stage, on_xml=on_xml, vm_uuid=vm_uuid,
                on_log=lambda level, text: log.info("provisioner %s [%s] %s", name, level,
                                                    text),
                config={"cluster": getattr(daemon.config, "cluster", ""),
                        "node": daemon.node}, timeout=settings["script_timeout"])
        except runner.ScriptFailed as exc:
            raise CreateFailed(f"Script {exc.stage}()", exc.message) from None
        finally:
            left = volumes.unmap_all()
            if left:
                log.error("provisioner %s: mappings left: %s", name, "; ".join(left))
        if "xml" not in xml_holder:
            raise CreateFailed("Script create()", "create() returned no XML")
        if define and start:
            step(9)
            job.done()                  # made: a VM that fails to start is kept, with its disks
            try:
                ask(daemon, "pvc_vm_set_state", vm=name, state="start", wait=START_WAIT)
            except Exception as exc:
                raise StartFailed(f"VM '{name}' was made but did not start: {exc}") from None
    except StartFailed:
        raise
    except tasks.TaskCancelled:
        _fail(daemon, job, stage, "cancelled")
        raise
    except CreateFailed as exc:
        _fail(daemon, job, exc.stage, exc.message)
        raise
    except Exception as exc:
        _fail(daemon, job, stage, str(exc))
        raise CreateFailed(stage, str(exc)) from None
    job.done()
    what = "defined and started" if define and start else "defined" if define else "made"
    return f"VM '{name}' {what} from profile '{profile_name}'."


def _fail(daemon: Any, job: Job, stage: str, message: str) -> None:
    log.error("provisioner: create of %s failed at '%s': %s", job.data["vm"], stage, message)
    problems = undo(daemon, job.data)
    if problems:
        log.error("provisioner: left after the failed create of %s: %s", job.data["vm"],
                  "; ".join(problems))
    else:
        job.done()


def check(daemon: Any, name: str, parts: dict[str, Any]) -> dict[str, Any]:
    """Every check before anything is made; the storage facts and the chosen node."""
    system = parts[model.SYSTEM]
    store = daemon.store
    limit = [n for n in (system.get("node_limit") or "").split(",") if n] or None
    fit = ask(daemon, "pvc_vm_fit", name=name,
                             memory_mb=int(system["vram_mb"]), vcpus=int(system["vcpu_count"]),
                             node_limit=limit)
    if fit is None:
        raise CreateFailed(STAGES[1], "no VM plugin runs VMs on this cluster")
    if not fit["ok"]:
        raise CreateFailed(STAGES[1], fit["reason"])
    network = parts[model.NETWORK]
    for net in (network or {}).get("networks", []):
        if not store.exists("network", vni=str(net["vni"])):
            raise CreateFailed(STAGES[1], f"network {net['vni']} of network template "
                               f"'{network['name']}' does not exist")
    need: dict[str, int] = {}
    for disk in disks(parts):
        need[disk["pool"]] = need.get(disk["pool"], 0) + int(disk.get("disk_size_gb") or 0) * GB
    for pool, size in sorted(need.items()):
        try:
            free = ask(daemon, "pvc_volume_free", pool=pool)
        except Exception as exc:
            raise CreateFailed(STAGES[1], f"pool {pool}: {exc}") from None
        if free is None:
            raise CreateFailed(STAGES[1], "no storage plugin keeps volumes on this cluster")
        if size > free:
            raise CreateFailed(STAGES[1], f"pool {pool} has {free / GB:.1f} GiB free, the "
                               f"disks need {size / GB:.1f} GiB")
    facts = (ask(daemon, "pvc_volume_facts") or {}) if need else {}
    return {**facts, "node": fit.get("node")}


def make_volumes(volumes: Volumes, name: str, disks: list[dict[str, Any]]) -> None:
    for disk in disks:
        volume = f"{name}_{disk['disk_id']}"
        try:
            if disk.get("source_volume"):
                volumes.clone(disk["pool"], disk["source_volume"], volume)
            else:
                volumes.add(disk["pool"], volume, int(disk["disk_size_gb"]) * GB)
        except Exception as exc:
            raise CreateFailed(STAGES[2], f"volume {disk['pool']}/{volume}: {exc}") from None
