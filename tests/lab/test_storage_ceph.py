"""Ceph storage on the lab, driven like an administrator: `pvc storage ...` in the admin
namespace, effects checked with Ceph's own tools inside the nodes' namespaces.

A lab of its own (``tests.support.storage_lab``: 3 coordinators, Ceph with a monitor and
manager on hv1 and one OSD per node, pools copies=3/mincopies=2), so the kernel's lab stays
without Ceph and fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pvc_lab import ceph as labceph
from tests.support import storage_lab
from tests.support.storage_lab import as_json, export, ok, pvc, refused, site

pytestmark = pytest.mark.lab

MiB = 2**20


@pytest.fixture(scope="session")
def lab():
    why = storage_lab.problem()
    if why:
        pytest.skip(why)
    the_lab = storage_lab.acquire(lambda lab: "HEALTH_OK" in pvc(lab, "storage", "status").stdout)
    print(f"\nlab with Ceph up in {the_lab.bringup_seconds} s")
    yield the_lab
    storage_lab.release()


def api_raw(lab, method: str, path: str, params: dict) -> tuple[int, dict]:
    """One request without the CLI (to send what the CLI never sends)."""
    script = ("import json, os, sys, requests\n"
              "host = os.environ['PVC_API_HOSTS'].split(',')[0]\n"
              "r = requests.request(sys.argv[1], f'http://{host}/api/v1' + sys.argv[2], "
              "params=json.loads(sys.argv[3]), headers={'X-Api-Key': os.environ['PVC_API_KEY']})\n"
              "print(r.status_code); print(r.text)\n")
    out = lab.admin_exec([sys.executable, "-c", script, method, path, json.dumps(params)],
                         capture_output=True, text=True, timeout=60)
    status, body = out.stdout.split("\n", 1)
    return int(status), json.loads(body)


def test_ceph_runs_one_osd_per_node_and_reports(lab):
    assert "HEALTH_OK" in ok(lab, "storage", "status")

    def reported():   # every node reports its OSD with its keepalive (stats every 5 s)
        osds = as_json(lab, "storage", "osd", "list")
        return (sorted(o["node"] for o in osds) == ["hv1", "hv2", "hv3"]
                and all(o["stats"]["up"] == 1 and o["stats"]["in"] == 1
                        and o["stats"]["kb"] > 0 for o in osds))
    lab.wait_for(reported, 30, "every node to report its OSD")
    status = as_json(lab, "cluster", "status")
    assert status["osds"]["total"] == 3 and status["resources"]["disk"]["total"] > 0
    tree = site(lab, "hv1").ceph("osd", "tree")
    assert sorted(n["name"] for n in tree["nodes"] if n["type"] == "host") == ["hv1", "hv2",
                                                                              "hv3"]
    print("\nCeph daemon RSS (KiB):", {f"{n}/{s.name}": labceph.rss_kb(r.pid)
                                       for s in lab.services if s.name.startswith("ceph-")
                                       for n in lab.nodes
                                       if (r := s.record(lab.spec, lab.spec.node(n)))})


def test_pool_and_volume_with_bad_input_are_refused(lab):
    assert "Created RBD pool \"vms\" with 32 PGs" in ok(
        lab, "storage", "pool", "add", "vms", "32", "--replcfg", "copies=3,mincopies=2")
    (pool,) = as_json(lab, "storage", "pool", "list", "vms")
    assert (pool["copies"], pool["mincopies"]) == (3, 2)
    assert "copies (1) must be at least mincopies (2)" in refused(
        lab, "storage", "pool", "add", "bad", "32", "--replcfg", "copies=1,mincopies=2")
    assert "copies" in refused(lab, "storage", "pool", "add", "bad", "32", "--replcfg",
                               "copies=4,mincopies=2")
    assert "larger than the free space" in refused(lab, "storage", "volume", "add", "vms",
                                                   "huge", "100G")
    status, body = api_raw(lab, "DELETE", "/storage/ceph/pool/vms", {})
    assert status == 400 and "yes-i-really-mean-it" in body["message"]
    assert as_json(lab, "storage", "pool", "list", "vms")[0]["name"] == "vms"


def test_upload_snapshot_and_rollback_restore_content(lab, tmp_path):
    first = os.urandom(MiB) + bytes(MiB)
    second = os.urandom(2 * MiB)
    img = tmp_path / "disk.raw"
    img.write_bytes(first)
    ok(lab, "storage", "volume", "add", "vms", "disk0", "64M")
    ok(lab, "storage", "volume", "upload", "vms", "disk0", str(img))
    assert export(lab, "hv3", "vms/disk0", len(first)) == first       # read on another node
    ok(lab, "storage", "volume", "snapshot", "add", "vms", "disk0", "good")
    img.write_bytes(second)
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(img), str(qcow)], check=True)
    assert "Converted" in ok(lab, "storage", "volume", "upload", "vms", "disk0", str(qcow),
                             "-i", "qcow2")
    assert export(lab, "hv2", "vms/disk0", len(second)) == second
    ok(lab, "storage", "volume", "snapshot", "rollback", "vms", "disk0", "good", "--yes")
    assert export(lab, "hv1", "vms/disk0", len(first)) == first
    snaps = as_json(lab, "storage", "volume", "snapshot", "list", "-o", "disk0")
    assert [s["snapshot"] for s in snaps] == ["good"]
    t0 = time.monotonic()
    ok(lab, "storage", "volume", "clone", "vms", "disk0", "disk0-clone", "--snapshot", "good")
    print(f"\nclone from snapshot (CLI round trip): {time.monotonic() - t0:.2f} s")
    assert export(lab, "hv2", "vms/disk0-clone", len(first)) == first


WRITER = """
import os, random, sys, time, rados, rbd
c = rados.Rados(conffile=sys.argv[1]); c.connect(timeout=10)
written, end = {}, time.monotonic() + float(sys.argv[3])
with c.open_ioctx("vms") as io, rbd.Image(io, sys.argv[2]) as img:
    while time.monotonic() < end:
        off = random.randrange(0, 255) * 65536
        data = os.urandom(65536)
        img.write(data, off)
        written[off] = data
    img.flush()
    bad = [o for o, d in written.items() if img.read(o, len(d)) != d]
print(len(written), len(bad), flush=True)
"""


def test_osd_out_keeps_io_going_and_in_returns_to_health_ok(lab):
    """A VM-like writer keeps writing (and reads everything back) while an OSD goes out."""
    ok(lab, "storage", "volume", "add", "vms", "busy", "16M")
    writer = subprocess.Popen(["ip", "netns", "exec", lab.spec.node("hv1").netns,
                               sys.executable, "-c", WRITER, site(lab, "hv1").conf, "busy",
                               "12"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    hv3_osd = next(o["id"] for o in as_json(lab, "storage", "osd", "list") if o["node"] == "hv3")
    assert ok(lab, "storage", "osd", "out", hv3_osd).strip() == f"Set OSD {hv3_osd} offline."
    lab.wait_for(lambda: as_json(lab, "storage", "osd", "list", f"^{hv3_osd}$")[0]["stats"][
        "in"] == 0, 30, "the OSD list to show the OSD out")
    fault_id = f"ceph-osd-out-{hv3_osd}"

    def fault_ids() -> list[str]:
        return [f["id"] for f in as_json(lab, "cluster", "fault", "list")]
    lab.wait_for(lambda: fault_id in fault_ids(), 60, "the primary to raise the OSD-out fault")
    health = as_json(lab, "cluster", "status")["cluster_health"]["health"]
    assert health <= 50
    assert "Successfully acknowledged" in ok(lab, "cluster", "fault", "ack", fault_id)
    (acked,) = as_json(lab, "cluster", "fault", "list", fault_id)
    assert acked["status"] == "ack"          # and it stays so while Ceph refreshes it
    assert as_json(lab, "cluster", "status")["cluster_health"]["health"] > health   # not counted
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    count, bad = map(int, out.split())
    assert count > 0 and bad == 0, out
    ok(lab, "storage", "osd", "in", hv3_osd)
    t0 = time.monotonic()
    labceph.wait_healthy(site(lab, "hv1"), 180)
    lab.wait_for(lambda: not [f for f in fault_ids() if f.startswith("ceph-")], 60,
                 "the Ceph faults to clear once Ceph is healthy")
    print(f"\nwrites during out: {count}; OSD in → HEALTH_OK: {time.monotonic() - t0:.1f} s")


def test_a_stopped_osd_takes_the_ceph_checks_delta_off_its_nodes_health(lab):
    """The node health check ``ceph`` (storage_ceph's) sees hv2's OSD down: hv2's health falls
    by 50 and its fault appears; once the OSD is back, so are the health and Ceph."""
    def hv2() -> tuple[int, dict]:
        node = as_json(lab, "node", "info", "hv2")
        node = node[0] if isinstance(node, list) else node
        return node["health"], {d["name"]: d for d in node["health_details"]}

    def ceph_check(delta: int) -> tuple[int, dict] | None:
        health, checks = hv2()
        return (health, checks["ceph"]) if checks.get("ceph", {}).get(
            "health_delta") == delta else None

    base, entry = lab.wait_for(lambda: ceph_check(0), 60, "hv2's ceph check healthy")
    assert "1 OSD(s) up and in" in entry["message"]
    lab.stop_service("hv2", "ceph-osd", "SIGTERM")
    try:
        health, entry = lab.wait_for(lambda: ceph_check(50), 60, "hv2's ceph check to fail")
        assert health == max(base - 50, 0) and "down" in entry["message"]
        faults = lab.wait_for(lambda: [f for f in as_json(lab, "cluster", "fault", "list")
                                       if f["id"] == "NODE_PLUGIN_CEPH_hv2"], 30, "its fault")
        assert faults[0]["health_delta"] == 25
    finally:
        lab.start("hv2", only="ceph-osd")
    lab.wait_for(lambda: ceph_check(0), 90, "hv2's ceph check healthy again")
    assert hv2()[0] == base
    labceph.wait_healthy(site(lab, "hv1"), 180)


def test_osd_add_and_remove_on_a_node_device(lab):
    device = os.path.join(site(lab, "hv2").dir, "extra-osd.img")
    with open(device, "wb") as fh:
        fh.truncate(4 * 2**30)
    out = ok(lab, "storage", "osd", "add", "hv2", device, "--weight", "0.004", "--wait")
    new_id = out.split("new OSD ")[1].split()[0]
    osds = {o["id"]: o for o in as_json(lab, "storage", "osd", "list")}
    assert osds[new_id]["node"] == "hv2" and osds[new_id]["device"] == device
    assert lab.exec("hv2", ["ss", "-ltnp"], capture_output=True, text=True).stdout.count(
        "ceph-osd") >= 2                      # the new daemon runs in hv2's namespace
    labceph.wait_healthy(site(lab, "hv1"), 180)
    ok(lab, "storage", "osd", "remove", new_id, "--yes", "--wait", timeout=600)
    assert new_id not in [o["id"] for o in as_json(lab, "storage", "osd", "list")]
    labceph.wait_healthy(site(lab, "hv1"), 180)
    os.unlink(device)


def test_benchmark_runs_as_a_task_and_is_listed(lab):
    ok(lab, "storage", "benchmark", "run", "vms", "--name", "labbench", "--wait", timeout=900)
    (bench,) = as_json(lab, "storage", "benchmark", "list", "labbench")
    result = bench["benchmark_result"]
    assert bench["test_format"] == 1 and len(result) == 8
    figures = {t: (round(d["jobs"][0]["write" if "write" in t else "read"]["bw_bytes"] / MiB, 1),
                   round(d["jobs"][0]["write" if "write" in t else "read"]["iops"]))
               for t, d in result.items()}
    print("\nlab benchmark (MiB/s, IOPS):", figures)
    assert all(bw > 0 for bw, _ in figures.values())
    assert "seq_read" in ok(lab, "storage", "benchmark", "info", "labbench")


def test_volumes_and_pool_removal(lab):
    assert "has 1 snapshot" in refused(lab, "storage", "volume", "remove", "vms", "disk0",
                                       "--yes")
    ok(lab, "storage", "volume", "remove", "vms", "disk0-clone", "--yes")
    ok(lab, "storage", "volume", "snapshot", "remove", "vms", "disk0", "good", "--yes")
    for vol in ("disk0", "busy"):
        ok(lab, "storage", "volume", "remove", "vms", vol, "--yes")
    assert "No volumes found." in ok(lab, "storage", "volume", "list")
    ok(lab, "storage", "pool", "remove", "vms", "--yes")
    assert "No pools found." in ok(lab, "storage", "pool", "list")
