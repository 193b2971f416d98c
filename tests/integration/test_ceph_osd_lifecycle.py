"""OSD replace, refresh and the external DB volume group against a real Ceph: the tasks run
by a real TaskRunner (the test plays the node daemon), and the API routes that start them.

Devices are sparse files (bluestore on a file); the DB volume group needs a block device, so
that test makes a loop device and an lvm.conf (``LVM_SYSTEM_DIR``) that sees only it, and
removes both, by name, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest

from pvc_kernel import tasks
from pvc_plugins.storage_ceph import bluestore, launcher, osd_db, pools
from tests.support.ceph import run_task as support_run_task
from tests.support.ceph import task_node

pytestmark = pytest.mark.integration
NODE = "ceph1"
KEY = "osd-test-key"
S = "/api/v1/storage/ceph"
WEIGHT = 0.004
OBJECTS = {f"obj{i}": os.urandom(64 * 1024) for i in range(16)}


@pytest.fixture
def node(ceph):
    """A stand-in node daemon ``ceph1`` (primary) with the plugin's task handlers and API."""
    with task_node(ceph, NODE, api_key=KEY) as daemon:
        yield daemon


def run_task(daemon, kind, args, timeout=400.0):
    return support_run_task(daemon, kind, args, timeout)


def sparse(path, size=4 * 2**30):
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def osd_entry(client, osd_id):
    return next(o for o in client.mon("osd dump")["osds"] if o["osd"] == osd_id)


def check_objects(client):
    with client.ioctx("lifepool") as io:
        for name, data in OBJECTS.items():
            assert io.read(name, len(data) + 1) == data, name


@pytest.fixture
def extra_osd(ceph, node):
    """A third OSD (on a file) added by the plugin, a pool holding known objects; the OSD, the
    pool and the device files are removed at the end."""
    client = node.plugin.runtime(node).client
    files = [os.path.join(ceph.cluster.site.dir, f"life{i}.img") for i in range(3)]
    pools.add_pool(client, "lifepool", 8, "copies=2,mincopies=1", None, "osd")
    state = SimpleNamespace(id=None, files=files, client=client)
    try:
        with client.ioctx("lifepool") as io:
            for name, data in OBJECTS.items():
                io.write_full(name, data)
        added = run_task(node, "osd.add", {"device": sparse(files[0]), "weight": WEIGHT})
        assert added["state"] == "SUCCESS", added["status"]
        state.id = int(added["status"].split()[4])
        ceph.cluster.wait_healthy(180)
        yield state
    finally:
        if state.id is not None:
            if any(o["osd"] == state.id for o in client.mon("osd dump")["osds"]):
                gone = run_task(node, "osd.remove", {"osd": str(state.id), "force": True})
                assert gone["state"] == "SUCCESS", gone["status"]
        pools.remove_pool(client, "lifepool")
        for f in files:
            if os.path.exists(f):
                os.unlink(f)
        ceph.cluster.wait_healthy(180)


def test_replace_keeps_the_id_and_a_failed_replace_is_recoverable(ceph, node, extra_osd):
    client, osd_id = extra_osd.client, extra_osd.id
    old_uuid = osd_entry(client, osd_id)["uuid"]
    first, second = extra_osd.files[0], sparse(extra_osd.files[1])

    bad = run_task(node, "osd.replace", {"osd": str(osd_id), "new_device": "/nonexistent"})
    assert bad["state"] == "FAILURE" and "No such file" in bad["status"]
    assert osd_entry(client, osd_id)["up"] == 1            # refused before touching anything

    tiny = sparse(extra_osd.files[2], 2**20)                # too small for bluestore
    failed = run_task(node, "osd.replace", {"osd": str(osd_id), "new_device": tiny})
    assert failed["state"] == "FAILURE", failed["status"]
    assert "stays destroyed" in failed["status"] and "ceph-osd --mkfs" in failed["status"]
    assert "destroyed" in osd_entry(client, osd_id)["state"]
    with open(first, "rb") as fh:
        assert fh.read(4096) == bytes(4096)                 # the old device was zapped

    done = run_task(node, "osd.replace", {"osd": str(osd_id), "new_device": second,
                                          "old_device": tiny, "weight": WEIGHT * 2})
    assert done["state"] == "SUCCESS", done["status"]
    entry = osd_entry(client, osd_id)
    assert entry["up"] == 1 and entry["in"] == 1 and entry["uuid"] != old_uuid
    assert "destroyed" not in entry["state"]
    rec = node.store.get_json("ceph.osd", osd=str(osd_id))
    assert rec["device"] == os.path.realpath(second) and rec["fsid"] == entry["uuid"]
    tree = client.mon("osd tree")
    (item,) = [n for n in tree["nodes"] if n.get("id") == osd_id]
    assert abs(item["crush_weight"] - WEIGHT * 2) < 1e-4
    ceph.cluster.wait_healthy(180)
    check_objects(client)


def test_refresh_rebuilds_a_lost_data_directory(ceph, node, extra_osd):
    client, osd_id = extra_osd.client, extra_osd.id
    device = extra_osd.files[0]
    conf = ceph.conf
    data = bluestore.osd_data_dir(bluestore.local_run, conf, osd_id)
    uuid_before = osd_entry(client, osd_id)["uuid"]
    launcher.stop("spawn", conf, osd_id)
    client.mon("osd down", ids=[str(osd_id)])
    shutil.rmtree(data)                                     # "the node was reinstalled"

    r = node.http.simulate_put(f"{S}/osd/{osd_id}", params={"device": "/x"})
    assert r.status_code == 202 and r.json["task_name"] == "osd.refresh", r.json
    assert r.json["run_on"] == NODE
    tasks_done = run_task_id(node, r.json["task_id"])
    assert tasks_done["state"] == "FAILURE" and "/x" in tasks_done["status"]

    wrong = run_task(node, "osd.refresh", {"osd": str(osd_id),
                                           "device": os.path.join(ceph.cluster.site.dir,
                                                                  "osd0.img")})
    assert wrong["state"] == "FAILURE" and "holds OSD 0, not OSD" in wrong["status"]
    blank = run_task(node, "osd.refresh", {"osd": str(osd_id),
                                           "device": sparse(extra_osd.files[1], 2**26)})
    assert blank["state"] == "FAILURE" and "no bluestore label" in blank["status"]

    done = run_task(node, "osd.refresh", {"osd": str(osd_id), "device": device})
    assert done["state"] == "SUCCESS", done["status"]
    entry = osd_entry(client, osd_id)
    assert entry["up"] == 1 and entry["uuid"] == uuid_before
    assert bluestore.read_whoami(data) == osd_id
    assert os.path.realpath(os.path.join(data, "block")) == os.path.realpath(device)
    rec = node.store.get_json("ceph.osd", osd=str(osd_id))
    assert rec["device"] == os.path.realpath(device) and rec["managed"]
    ceph.cluster.wait_healthy(180)
    check_objects(client)


def run_task_id(daemon, task_id, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.tasks.scan()
        final = tasks.get_task(daemon.store, task_id)
        if final["state"] in tasks.FINISHED:
            return final
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} still running after {timeout} s")


def test_api_routes_of_replace_refresh_and_osddb(ceph, node):
    http = node.http
    node.store.set("ceph.osd", {"id": "0", "node": NODE, "device": "/x"}, osd="0")
    r = http.simulate_post(f"{S}/osd/99", params={"new_device": "/dev/x",
                                                   "yes-i-really-mean-it": "yes"})
    assert r.status_code == 404 and r.json == {"message": "OSD not found."}
    assert http.simulate_put(f"{S}/osd/99", params={"device": "/dev/x"}).json == {
        "message": "OSD not found."}
    r = http.simulate_post(f"{S}/osd/0", params={"new_device": "/dev/x"})
    assert r.status_code == 400 and "yes-i-really-mean-it" in r.json["message"]
    r = http.simulate_post(f"{S}/osd/0", params={"new_device": "/dev/x", "ext_db_size": "x",
                                                  "yes-i-really-mean-it": "yes"})
    assert r.status_code == 400 and "Invalid size" in r.json["message"]
    r = http.simulate_post(f"{S}/osd/0", params={"new_device": "/dev/x", "weight": 2,
                                                  "yes-i-really-mean-it": "yes"})
    assert r.status_code == 202 and r.json["task_name"] == "osd.replace"
    assert r.json["run_on"] == NODE and r.headers["location"].endswith(r.json["task_id"])
    assert tasks.get_task(node.store, r.json["task_id"])["args"] == {
        "osd": "0", "new_device": "/dev/x", "old_device": None, "weight": 2.0, "force": False,
        "ext_db_ratio": None, "ext_db_size": None}
    r = http.simulate_post(f"{S}/osddb", params={"node": "nowhere", "device": "/dev/x"})
    assert r.status_code == 400 and r.json["message"] == 'Node "nowhere" not found.'
    r = http.simulate_post(f"{S}/osddb", params={"node": NODE, "device": "/dev/x"})
    assert r.status_code == 202 and r.json["task_name"] == "osd.add_db_vg"
    r = http.simulate_post(f"{S}/osd", params={"node": NODE, "device": "/dev/x", "weight": 1,
                                                "ext_db_ratio": 0.05})
    assert r.status_code == 202
    assert tasks.get_task(node.store, r.json["task_id"])["args"]["ext_db_ratio"] == 0.05
    for t in node.store.children("tasks"):          # nobody runs these: withdraw them
        node.store.delete("task", task_id=t)


# -- the osd-db volume group on a loop device ---------------------------------------------------

def dm_available() -> bool:
    try:
        with open("/proc/misc") as fh:
            return any(line.split()[-1] == "device-mapper" for line in fh)
    except OSError:
        return False


@pytest.fixture
def loop_device(tmp_path, monkeypatch):
    """A 1 GiB loop device seen by LVM alone (LVM_SYSTEM_DIR); VG, PV and loop removed after."""
    image = sparse(str(tmp_path / "db.img"), 2**30)
    loop = subprocess.run(["losetup", "--find", "--show", image], capture_output=True,
                          text=True, check=True).stdout.strip()
    lvmdir = tmp_path / "lvm"
    lvmdir.mkdir()
    (lvmdir / "lvm.conf").write_text(
        f'devices {{ filter = [ "a|^{loop}$|", "r|.*|" ] obtain_device_list_from_udev = 0 }}\n'
        "activation { udev_sync = 0 udev_rules = 0 }\n"
        f'backup {{ backup_dir = "{lvmdir}/backup" archive_dir = "{lvmdir}/archive" }}\n')
    monkeypatch.setenv("LVM_SYSTEM_DIR", str(lvmdir))
    mapper_existed = os.path.exists("/dev/mapper")
    try:
        yield loop
    finally:
        env = {**os.environ, "LVM_SYSTEM_DIR": str(lvmdir)}
        for argv in (["vgremove", "-f", osd_db.VG], ["pvremove", "-y", loop],
                     ["losetup", "-d", loop]):
            subprocess.run(argv, capture_output=True, env=env, stdin=subprocess.DEVNULL)
        if not mapper_existed and os.listdir("/dev/mapper") == ["control"]:
            shutil.rmtree("/dev/mapper")        # made by LVM where no device-mapper exists


def test_db_volume_group_and_an_osd_with_an_external_db(ceph, node, loop_device):
    client = node.plugin.runtime(node).client
    made = run_task(node, "osd.add_db_vg", {"device": loop_device})
    assert made["state"] == "SUCCESS", made["status"]
    assert osd_db.vg_exists(bluestore.local_run)
    again = run_task(node, "osd.add_db_vg", {"device": loop_device})
    assert again["state"] == "FAILURE" and "already exists" in again["status"]

    device = sparse(os.path.join(ceph.cluster.site.dir, "dbosd.img"))
    before = sorted(o["osd"] for o in client.mon("osd dump")["osds"])
    try:
        added = run_task(node, "osd.add", {"device": device, "weight": WEIGHT,
                                           "ext_db_size": "128M"})
        if not dm_available():
            # LVM metadata works here, but an LV cannot be activated without device-mapper:
            # the task fails with lvcreate's own reason and leaves no OSD or LV behind
            assert added["state"] == "FAILURE", added["status"]
            assert "lvcreate" in added["status"] and "device-mapper" in added["status"]
            assert sorted(o["osd"] for o in client.mon("osd dump")["osds"]) == before
            lvs = subprocess.run(["lvs", "--noheadings", osd_db.VG], capture_output=True,
                                 text=True)
            assert lvs.returncode == 0 and lvs.stdout.strip() == ""
            # a replace asking for a DB fails the same way before touching the OSD
            first = ceph.cluster.osd_ids[0]
            rep = run_task(node, "osd.replace", {"osd": str(first), "new_device": device,
                                                 "ext_db_ratio": 0.05})
            assert rep["state"] == "FAILURE" and "device-mapper" in rep["status"]
            entry = osd_entry(client, first)
            assert entry["up"] == 1 and entry["in"] == 1 and "destroyed" not in entry["state"]
            return
        assert added["state"] == "SUCCESS", added["status"]
        osd_id = int(added["status"].split()[4])
        rec = node.store.get_json("ceph.osd", osd=str(osd_id))
        assert rec["db_device"] == osd_db.lv_path(osd_id)
        data = bluestore.osd_data_dir(bluestore.local_run, ceph.conf, osd_id)
        assert os.readlink(os.path.join(data, "block.db")) == osd_db.lv_path(osd_id)
        label = bluestore.show_label(bluestore.local_run, osd_db.lv_path(osd_id))
        assert label["whoami"] == str(osd_id) and label["description"] == "bluefs db"
        gone = run_task(node, "osd.remove", {"osd": str(osd_id), "force": True})
        assert gone["state"] == "SUCCESS", gone["status"]
        assert not osd_db.lv_exists(bluestore.local_run, osd_id)
    finally:
        after = {o["osd"] for o in client.mon("osd dump")["osds"]} - set(before)
        for osd_id in after:
            run_task(node, "osd.remove", {"osd": str(osd_id), "force": True})
        os.unlink(device)
