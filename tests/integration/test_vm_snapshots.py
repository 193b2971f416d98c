"""VM snapshots (plugin vm_protect) against a real Ceph and ZooKeeper, through the real
vm_kvm and storage_ceph hooks: create over two volumes, rollback of data and XML, refusal
while running, a half-failed create that leaves nothing, remove; the routes answer 404/400
at once and run the rest as tasks on the primary."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from pvc_kernel import tasks
from pvc_kernel.plugins import PluginHost
from pvc_plugins.storage_ceph import pools
from pvc_plugins.storage_ceph.plugin import StorageCephPlugin
from pvc_plugins.vm_kvm import keys as vm_keys
from pvc_plugins.vm_kvm import records
from pvc_plugins.vm_kvm.plugin import VmKvmPlugin
from pvc_plugins.vm_protect import exports, snapshots
from pvc_plugins.vm_protect.plugin import VmProtectPlugin
from tests.integration.test_fencing_recovery import RBD_DISK, add_node, add_vm
from tests.support.ceph import task_node

pytestmark = pytest.mark.integration
MiB = 2**20
KEY = "snapshot-test-key"
V1 = "/api/v1"


def _disk(pool: str, volume: str, dev: str) -> str:
    return RBD_DISK.format(name=volume, dev=dev).replace("name='vms/", f"name='{pool}/")


def _io(rt, pool: str, volume: str, data: bytes | None = None, offset: int = 0) -> bytes:
    import rbd

    with rt.client.ioctx(pool) as ioctx, rbd.Image(ioctx, volume) as img:
        if data is not None:
            img.write(data, offset)
            return data
        return img.read(offset, 4096)


def _digest(rt, pool: str, volume: str, snapshot: str | None = None) -> str:
    """SHA-256 of the whole volume (at ``snapshot`` if given)."""
    import hashlib

    import rbd

    with rt.client.ioctx(pool) as ioctx, rbd.Image(ioctx, volume, snapshot=snapshot,
                                                   read_only=True) as img:
        digest, size = hashlib.sha256(), img.size()
        for at in range(0, size, 4 * MiB):
            digest.update(img.read(at, min(4 * MiB, size - at)))
        return digest.hexdigest()


def _run(daemon, record: dict, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.tasks.scan()
        final = tasks.get_task(daemon.store, record["task_id"])
        if final["state"] in tasks.FINISHED:
            return final
        time.sleep(0.1)
    raise AssertionError(f"task {record} did not finish")


@pytest.fixture
def node(ceph):
    import falcon.testing

    from pvc_api.app import create_app
    from pvc_kernel.state.migrations import migrate

    with task_node(ceph) as base:
        host = PluginHost()
        for cls, name in ((VmKvmPlugin, "vm_kvm"), (StorageCephPlugin, "storage_ceph"),
                          (VmProtectPlugin, "vm_protect")):
            host.register(cls, name)
        daemon = SimpleNamespace(store=base.store, config=base.config, node="ceph1",
                                 plugins=host)
        migrate(daemon.store)
        daemon.store.set("config.primary_node", "ceph1")
        daemon.store.set("node.daemon_state", "run", node="ceph1")
        daemon.config.api.keys = [KEY]
        daemon.api = create_app(daemon.store, daemon.config, host)
        daemon.http = falcon.testing.TestClient(daemon.api.app, headers={"X-Api-Key": KEY})
        daemon.tasks = tasks.TaskRunner(daemon.store, "ceph1",
                                        host.plugin("vm_protect").pvc_task_handlers(),
                                        daemon=daemon)
        rt = host.plugin("storage_ceph").runtime(daemon)
        daemon.rt = rt
        daemon.pool = f"s{os.urandom(3).hex()}"
        pools.add_pool(rt.client, daemon.pool, 8, "copies=2,mincopies=1", None, "osd")
        add_node(daemon.store, "hv1", 4096)
        try:
            yield daemon
        finally:
            daemon.tasks.stop()
            pools.remove_pool(rt.client, daemon.pool)
            rt.client.close()


def test_snapshot_rollback_remove_of_a_two_disk_vm(node):
    store, rt, pool = node.store, node.rt, node.pool
    for vol in ("snapvm", "snapvm_data"):
        node.plugins.call_first("pvc_volume_create", raising=True, daemon=node, pool=pool,
                                name=vol, size_bytes=8 * MiB, source=None)
        _io(rt, pool, vol, vol.encode() + b"-A" * 100)
    uuid = add_vm(store, "snapvm", "hv1", state=vm_keys.STOP,
                  extra=_disk(pool, "snapvm", "a") + _disk(pool, "snapvm_data", "b"))
    original_xml = records.read(store, uuid).xml

    http = node.http
    assert http.simulate_post(f"{V1}/vm/nothere/snapshot").status_code == 404
    assert http.simulate_post(f"{V1}/vm/snapvm/snapshot",
                              params={"snapshot_name": "Bad Name"}).status_code == 400
    started = http.simulate_post(f"{V1}/vm/snapvm/snapshot", params={"snapshot_name": "s1"})
    assert started.status_code == 202, started.text
    assert started.json["task_name"] == "vm.create_snapshot"
    final = _run(node, started.json)
    assert final["state"] == tasks.SUCCESS, final
    listed = http.simulate_get(f"{V1}/vm/snapvm/snapshot").json
    assert [s["name"] for s in listed] == ["s1"]
    assert listed[0]["rbd_snapshots"] == [f"{pool}/snapvm@s1", f"{pool}/snapvm_data@s1"]
    assert listed[0]["consistency"] == "crash"
    assert http.simulate_post(f"{V1}/vm/snapvm/snapshot",
                              params={"snapshot_name": "s1"}).status_code == 400

    # written and reconfigured after the snapshot ...
    for vol in ("snapvm", "snapvm_data"):
        _io(rt, pool, vol, b"B" * 4096)
    changed = original_xml.replace("</domain>", "<description>later</description></domain>")
    node.plugins.call_first("pvc_vm_modify", raising=True, daemon=node, vm="snapvm",
                            xml=changed)

    # ... refused while the VM runs ...
    records.write_observed(store, uuid, "hv1", vm_keys.RUNNING, libvirt_state="running")
    store.set("vm.state", vm_keys.START, uuid=uuid)
    assert http.simulate_post(f"{V1}/vm/snapvm/snapshot/rollback",
                              params={"snapshot_name": "s1"}).status_code == 400
    with pytest.raises(snapshots.SnapshotError, match="must be stopped"):
        snapshots.rollback(node, "snapvm", "s1")
    records.write_observed(store, uuid, None, vm_keys.STOPPED)
    store.set("vm.state", vm_keys.STOP, uuid=uuid)

    # ... and back as they were once it is stopped
    assert http.simulate_post(f"{V1}/vm/snapvm/snapshot/rollback",
                              params={"snapshot_name": "nope"}).status_code == 404
    started = http.simulate_post(f"{V1}/vm/snapvm/snapshot/rollback",
                                 params={"snapshot_name": "s1"})
    assert started.status_code == 202, started.text
    assert _run(node, started.json)["state"] == tasks.SUCCESS
    for vol in ("snapvm", "snapvm_data"):
        assert _io(rt, pool, vol).startswith(vol.encode() + b"-A-A")
    assert "<description>later" not in records.read(store, uuid).xml

    started = http.simulate_delete(f"{V1}/vm/snapvm/snapshot", params={"snapshot_name": "s1"})
    assert started.status_code == 202 and _run(node, started.json)["state"] == tasks.SUCCESS
    assert http.simulate_get(f"{V1}/vm/snapvm/snapshot").json == []
    assert store.children("vm_protect.vm", uuid=uuid) == []
    assert node.plugins.call_first("pvc_volume_snapshot_remove", raising=True, daemon=node,
                                   pool=pool, name="snapvm", snapshot="s1") is False


def test_a_create_refused_half_way_leaves_nothing(node):
    store, pool = node.store, node.pool
    node.plugins.call_first("pvc_volume_create", raising=True, daemon=node, pool=pool,
                            name="halfvm", size_bytes=8 * MiB, source=None)
    # the second disk's volume does not exist: its snapshot is refused
    add_vm(store, "halfvm", "hv1", state=vm_keys.STOP,
           extra=_disk(pool, "halfvm", "a") + _disk(pool, "halfvm_gone", "b"))
    with pytest.raises(snapshots.SnapshotError) as failed:
        snapshots.create(node, "halfvm", "s1")
    assert f"{pool}/halfvm_gone" in str(failed.value)
    assert "removed the 1 made before it" in str(failed.value)
    assert snapshots.listing(store, records.find(store, "halfvm")) == []
    assert node.plugins.call_first("pvc_volume_snapshot_remove", raising=True, daemon=node,
                                   pool=pool, name="halfvm", snapshot="s1") is False


def test_the_cli_over_http(node, monkeypatch, tmp_path):
    """`pvc vm snapshot` (joined to `pvc vm` by its dotted entry point) against a real API
    server, the tasks run by the node's runner."""
    import socket
    import threading

    from click.testing import CliRunner

    from pvc_api.server import create_server
    from pvc_cli.main import cli
    from tests.support import apiserver
    from tests.unit.test_cli_support import ENV_VARS

    store, pool = node.store, node.pool
    node.plugins.call_first("pvc_volume_create", raising=True, daemon=node, pool=pool,
                            name="clivm", size_bytes=8 * MiB, source=None)
    add_vm(store, "clivm", "hv1", state=vm_keys.STOP, extra=_disk(pool, "clivm", "a"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        node.config.api.port = s.getsockname()[1]
    server = create_server(node.api, node.config)
    thread = threading.Thread(target=server.run, name="pvcapid", daemon=True)
    thread.start()
    stop = threading.Event()

    def runner() -> None:
        while not stop.wait(0.2):
            node.tasks.scan()
    scanning = threading.Thread(target=runner, daemon=True)
    scanning.start()
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PVC_CLI_CONFIG", str(tmp_path / "pvc.json"))
    monkeypatch.setenv("PVC_API_HOSTS", f"127.0.0.1:{node.config.api.port}")
    monkeypatch.setenv("PVC_API_KEY", KEY)

    def pvc(*args: str):
        return CliRunner().invoke(cli, ["vm", "snapshot", *args])

    try:
        assert "Snapshots of a VM" in CliRunner().invoke(cli, ["vm", "--help"]).output
        r = pvc("create", "clivm", "c1", "--wait")
        assert r.exit_code == 0 and "Created snapshot 'c1'" in r.output, r.output
        listed = pvc("list", "clivm")
        assert listed.exit_code == 0 and "c1" in listed.output and "crash" in listed.output
        bad = pvc("create", "clivm", "c1")
        assert bad.exit_code != 0 and "already has a snapshot" in bad.output
        assert "Traceback" not in bad.output
        missing = pvc("rollback", "novm", "c1")
        assert missing.exit_code != 0 and "not found" in missing.output
        r = pvc("rollback", "clivm", "c1", "--wait")
        assert r.exit_code == 0 and "Rolled back" in r.output, r.output
        (tmp_path / "exports").mkdir()
        r = pvc("export", "clivm", "c1", "relative/path")
        assert r.exit_code != 0 and "must be an absolute path" in r.output, r.output
        r = pvc("export", "clivm", "c1", str(tmp_path / "exports"), "--wait")
        assert r.exit_code == 0 and "Exported snapshot 'c1'" in r.output, r.output
        assert (tmp_path / "exports" / "clivm" / "c1" / "manifest.json").is_file()
        r = pvc("import", "clivm", "c1", str(tmp_path / "exports"))
        assert r.exit_code != 0 and "exists: remove it" in r.output, r.output
        r = pvc("remove", "clivm", "c1", "--wait")
        assert r.exit_code == 0, r.output
        assert "has no snapshot" in pvc("list", "clivm").output
        # `pvc vm autobackup` joins `pvc vm` the same way; with no path set it is off
        r = CliRunner().invoke(cli, ["vm", "autobackup", "--wait"])
        assert r.exit_code != 0 and "autobackup is off" in r.output, r.output
    finally:
        stop.set()
        scanning.join(5)
        apiserver.stop(server, thread)


def _define_two_disk_vm(node, name: str, fill: bytes) -> str:
    for vol in (name, f"{name}_data"):
        node.plugins.call_first("pvc_volume_create", raising=True, daemon=node,
                                pool=node.pool, name=vol, size_bytes=8 * MiB, source=None)
        _io(node.rt, node.pool, vol, vol.encode() + fill * 100)
    return add_vm(node.store, name, "hv1", state=vm_keys.STOP,
                  extra=_disk(node.pool, name, "a") + _disk(node.pool, f"{name}_data", "b"))


def _task(node, response) -> dict:
    assert response.status_code == 202, response.text
    return _run(node, response.json)


def _lose_vm(node, name: str, uuid: str) -> None:
    """The disaster: the VM, its snapshots and its volumes are gone."""
    for snap in node.store.children("vm_protect.vm", uuid=uuid):
        node.store.delete("vm_protect.snapshot", uuid=uuid, snapshot=snap)
        for vol in (name, f"{name}_data"):
            node.plugins.call_first("pvc_volume_snapshot_remove", raising=True, daemon=node,
                                    pool=node.pool, name=vol, snapshot=snap)
    node.plugins.call_first("pvc_vm_undefine", raising=True, daemon=node, vm=name)
    for vol in (name, f"{name}_data"):
        node.plugins.call_first("pvc_volume_remove", raising=True, daemon=node,
                                pool=node.pool, name=vol)


def test_export_full_and_two_incrementals_then_import_after_the_vm_is_lost(node, tmp_path):
    import json
    import shutil

    rt, pool, http = node.rt, node.pool, node.http
    uuid = _define_two_disk_vm(node, "expvm", b"-A")
    out = tmp_path / "backups"
    out.mkdir()
    assert _task(node, http.simulate_post(f"{V1}/vm/expvm/snapshot",
                                          params={"snapshot_name": "mon"}))["state"] == \
        tasks.SUCCESS
    for vol in ("expvm", "expvm_data"):
        _io(rt, pool, vol, vol.encode() + b"-B" * 100)
    assert _task(node, http.simulate_post(f"{V1}/vm/expvm/snapshot",
                                          params={"snapshot_name": "tue"}))["state"] == \
        tasks.SUCCESS
    for vol in ("expvm", "expvm_data"):
        _io(rt, pool, vol, vol.encode() + b"-C" * 100)
        _io(rt, pool, vol, b"-C" * 2000, offset=5 * MiB)
    assert _task(node, http.simulate_post(f"{V1}/vm/expvm/snapshot",
                                          params={"snapshot_name": "wed"}))["state"] == \
        tasks.SUCCESS
    at_wed = {vol: _digest(rt, pool, vol, "wed") for vol in ("expvm", "expvm_data")}
    for vol in ("expvm", "expvm_data"):
        _io(rt, pool, vol, b"after wed, in no export")

    # refusals answered at once
    def export(**params):
        return http.simulate_post(f"{V1}/vm/expvm/snapshot/export", params=params)
    assert export(snapshot_name="mon", export_path="rel").status_code == 400
    assert export(snapshot_name="nope", export_path=str(out)).status_code == 404
    assert export(snapshot_name="mon", export_path=str(out),
                  incremental_parent="tue").status_code == 400       # parent not older

    # an incremental export needs its parent exported there first: the task fails
    failed = _task(node, export(snapshot_name="tue", export_path=str(out),
                                incremental_parent="mon"))
    assert failed["state"] == tasks.FAILURE and "no manifest.json" in failed["status"], failed
    assert list(out.iterdir()) == []                               # nothing half-written

    full = _task(node, export(snapshot_name="mon", export_path=str(out)))
    assert full["state"] == tasks.SUCCESS, full
    incr = _task(node, export(snapshot_name="tue", export_path=str(out),
                              incremental_parent="mon"))
    assert incr["state"] == tasks.SUCCESS and "incremental from 'mon'" in incr["status"]
    assert _task(node, export(snapshot_name="wed", export_path=str(out),
                              incremental_parent="tue"))["state"] == tasks.SUCCESS
    again = _task(node, export(snapshot_name="mon", export_path=str(out)))
    assert again["state"] == tasks.FAILURE and "already exists" in again["status"]
    mon, tue = out / "expvm" / "mon", out / "expvm" / "tue"
    assert sorted(p.name for p in (mon / "images").iterdir()) == \
        [f"{pool}.expvm.rbdimg", f"{pool}.expvm_data.rbdimg"]
    assert sorted(p.name for p in (tue / "images").iterdir()) == \
        [f"{pool}.expvm.rbddiff", f"{pool}.expvm_data.rbddiff"]
    manifest = json.loads((tue / "manifest.json").read_text())
    assert set(manifest["files"]) == {"snapshot.json", f"images/{pool}.expvm.rbddiff",
                                      f"images/{pool}.expvm_data.rbddiff"}
    assert json.loads((tue / "snapshot.json").read_text())["incremental_parent"] == "mon"

    def import_(path, **params):
        return http.simulate_post(f"{V1}/vm/expvm/snapshot/import",
                                  params={"snapshot_name": "wed", "import_path": str(path),
                                          **params})
    assert import_(out).status_code == 400                         # the VM still exists
    _lose_vm(node, "expvm", uuid)
    assert node.plugins.call_first("pvc_vm_volumes", daemon=node, vm="expvm") is None

    # a damaged copy is refused before anything is made, naming the file
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    bad = damaged / "expvm" / "mon" / "images" / f"{pool}.expvm_data.rbdimg"
    data = bytearray(bad.read_bytes())
    data[-20] ^= 0xFF
    bad.write_bytes(bytes(data))
    refused = _task(node, import_(damaged))
    assert refused["state"] == tasks.FAILURE, refused
    assert f"{pool}.expvm_data.rbdimg: checksum does not match" in refused["status"]
    assert node.plugins.call_first("pvc_vm_volumes", daemon=node, vm="expvm") is None
    assert node.plugins.call_first("pvc_volume_remove", daemon=node, pool=pool,
                                   name="expvm") is False

    # a volume in the way half-way: the one already made is removed again
    node.plugins.call_first("pvc_volume_create", raising=True, daemon=node, pool=pool,
                            name="expvm_data", size_bytes=MiB, source=None)
    clash = _task(node, import_(out))
    assert clash["state"] == tasks.FAILURE and "already exists" in clash["status"], clash
    assert "the volumes it made are removed" in clash["status"]
    assert node.plugins.call_first("pvc_volume_remove", daemon=node, pool=pool,
                                   name="expvm") is False
    assert node.plugins.call_first("pvc_volume_remove", daemon=node, pool=pool,
                                   name="expvm_data") is True

    done = _task(node, import_(out))
    assert done["state"] == tasks.SUCCESS, done
    info = node.plugins.call_first("pvc_vm_volumes", daemon=node, vm="expvm")
    assert info["uuid"] == uuid and info["state"] == vm_keys.STOP
    # the whole of each disk is the source's at the last snapshot of the chain
    assert {vol: _digest(rt, pool, vol) for vol in ("expvm", "expvm_data")} == at_wed
    listed = http.simulate_get(f"{V1}/vm/expvm/snapshot").json
    assert [s["name"] for s in listed] == ["wed", "tue", "mon"]
    # the retained parent is a real point in time: rolling back to it gives Monday's data
    rolled = _task(node, http.simulate_post(f"{V1}/vm/expvm/snapshot/rollback",
                                            params={"snapshot_name": "mon"}))
    assert rolled["state"] == tasks.SUCCESS, rolled
    for vol in ("expvm", "expvm_data"):
        assert _io(rt, pool, vol).startswith(vol.encode() + b"-A-A")
    _lose_vm(node, "expvm", uuid)


def test_autobackup_runs_keep_the_right_chains(node, tmp_path, monkeypatch):
    import json
    import shutil

    from pvc_plugins.vm_protect import autobackup

    store, pool, http = node.store, node.pool, node.http
    root = tmp_path / "autobackup"
    root.mkdir()
    marks = tmp_path / "marks"
    monkeypatch.setitem(node.config.plugin_sections, "vm_protect", {
        "autobackup_path": str(root), "autobackup_full_interval": 3,
        "autobackup_full_retention": 2,
        "autobackup_mount_commands": [f"mkdir -p {marks}", f"touch {marks}/mounted"],
        "autobackup_unmount_commands": [f"touch {marks}/unmounted"]})
    tagged = [{"name": "autobackup", "type": "user", "protected": False}]
    uuid = _define_two_disk_vm(node, "abvm", b"-A")
    store.set("vm.tags", json.dumps(tagged), uuid=uuid)
    _define_two_disk_vm(node, "plainvm", b"-P")             # no tag: never backed up

    started = http.simulate_post(f"{V1}/vm/autobackup")
    assert started.status_code == 202 and started.json["task_name"] == "cluster.autobackup"
    first = _run(node, started.json)
    assert first["state"] == tasks.SUCCESS, first
    assert "abvm: full ab" in first["status"] and "plainvm" not in first["status"]
    assert (marks / "mounted").exists() and (marks / "unmounted").exists()

    kinds = []
    for n in range(6):
        _io(node.rt, pool, "abvm", f"run {n}".encode())
        report = autobackup.run(node)
        assert report["failed"] == 0, report
        kinds.append(report["vms"][0]["kind"])
    assert kinds == ["incremental", "incremental", "full", "incremental", "incremental",
                     "full"]
    history = json.loads((root / "abvm" / ".autobackup.json").read_text())
    # 7 runs, a full every 3, 2 fulls kept: the first chain (3 backups) is pruned
    assert [b["parent"] is None for b in history] == [True, False, False, True]
    assert sorted(p.name for p in (root / "abvm").iterdir() if p.is_dir()) == \
        sorted(b["name"] for b in history)
    assert history[1]["parent"] == history[2]["parent"] == history[0]["name"]
    assert not (root / "plainvm").exists()
    # only the newest full's snapshot stays: the base of the next incremental
    assert store.children("vm_protect.vm", uuid=uuid) == [history[-1]["name"]]
    for name in (b["name"] for b in history):
        assert exports.verify(str(root / "abvm" / name)) == []

    # the newest full's export lost: the next run starts a new chain instead of failing
    shutil.rmtree(root / "abvm" / history[-1]["name"])
    report = autobackup.run(node)
    assert report["failed"] == 0 and report["vms"][0]["kind"] == "full", report

    # one VM failing does not stop the others; the task fails with the report
    broken = add_vm(store, "brokenvm", "hv1", state=vm_keys.STOP,
                    extra=_disk(pool, "brokenvm_gone", "a"))
    store.set("vm.tags", json.dumps(tagged), uuid=broken)
    started = http.simulate_post(f"{V1}/vm/autobackup", params={"force_full": "true"})
    final = _run(node, started.json)
    assert final["state"] == tasks.FAILURE and "1 failed" in final["status"], final
    assert "brokenvm: FAILED" in final["status"] and "abvm: full" in final["status"]
    node.plugins.call_first("pvc_vm_undefine", raising=True, daemon=node, vm="brokenvm")
