"""`pvc storage ...` against a fake API: parameters sent, output, errors, --wait."""

from __future__ import annotations

import pytest

try:
    import test_cli_support as support
except ImportError:  # collected as part of a package
    from tests.unit import test_cli_support as support

run = support.run
S = "/storage/ceph"


@pytest.fixture
def api(monkeypatch, tmp_path):
    with support.fake_api_env(monkeypatch, tmp_path) as fake:
        yield fake


def test_storage_group_is_a_plugin_command():
    result = run("storage", "--help")
    assert result.exit_code == 0
    for cmd in ("status", "util", "benchmark", "osd", "pool", "volume"):
        assert cmd in result.output


def test_pool_add_sends_the_reference_parameters(api):
    api.route("POST", f"{S}/pool", body={"message": 'Created RBD pool "vms" with 64 PGs'})
    result = run("storage", "pool", "add", "vms", "64", "--replcfg", "copies=3,mincopies=2")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == 'Created RBD pool "vms" with 64 PGs'
    (call,) = api.calls("POST", f"{S}/pool")
    assert call.query == {"pool": ["vms"], "pgs": ["64"], "replcfg": ["copies=3,mincopies=2"],
                          "tier": ["default"]}


def test_refusal_is_an_error_line(api):
    api.route("POST", f"{S}/volume", status=400,
              body={"message": "A volume of 100T is larger than the free space of pool vms"})
    result = run("storage", "volume", "add", "vms", "big", "100T")
    assert result.exit_code != 0
    assert "larger than the free space" in result.output


def test_pool_remove_sends_the_confirmation(api):
    api.route("DELETE", f"{S}/pool/vms", body={"message": "Removed RBD pool 'vms' and all "
                                                          "volumes."})
    result = run("storage", "pool", "remove", "vms", "--yes")
    assert result.exit_code == 0, result.output
    (call,) = api.calls("DELETE", f"{S}/pool/vms")
    assert call.query["yes-i-really-mean-it"] == ["yes"]


def test_osd_remove_waits_for_the_task(api):
    api.route("DELETE", f"{S}/osd/3", status=202,
              body={"task_id": "abcd1234", "task_name": "osd.remove", "run_on": "hv2"})
    api.sequence("GET", "/tasks/abcd1234", [
        (200, {"state": "RUNNING", "current": 2, "total": 5, "status": "Waiting until safe"}),
        (200, {"state": "SUCCESS", "current": 5, "total": 5,
               "status": "Removed OSD 3 from node hv2."})])
    result = run("storage", "osd", "remove", "3", "--yes", "--wait")
    assert result.exit_code == 0, result.output
    assert "SUCCESS: Removed OSD 3 from node hv2." in result.stdout
    assert api.calls("DELETE", f"{S}/osd/3")[0].query["force"] == ["False"]


def test_osd_add_without_wait_prints_the_task(api):
    api.route("POST", f"{S}/osd", status=202,
              body={"task_id": "t1", "task_name": "osd.add", "run_on": "hv1"})
    result = run("storage", "osd", "add", "hv1", "/dev/sdb")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Task ID: t1 assigned to node hv1"


def test_lists_render_tables(api):
    api.route("GET", f"{S}/osd", body=[{"id": "0", "node": "hv1", "device": "/dev/sdb",
                                        "stats": {"up": 1, "in": 0, "weight": 1.0, "pgs": 9,
                                                  "kb": 4194304, "used": "290M",
                                                  "utilization": 7.1}}])
    api.route("GET", f"{S}/volume", body=[{"name": "disk0", "pool": "vms",
                                           "stats": {"size": "10G", "objects": 2560,
                                                     "snapshot_count": 1,
                                                     "features": ["layering"]}}])
    api.route("GET", f"{S}/snapshot", status=404, body={"message": "Volume snapshot not found."})
    out = run("storage", "osd", "list").stdout
    assert "hv1" in out and "/dev/sdb" in out and " out " in f" {out} "
    out = run("storage", "volume", "list").stdout
    assert "disk0" in out and "10G" in out
    assert run("storage", "volume", "snapshot", "list").stdout.strip() == "No snapshots found."


def test_status_prints_the_ceph_text(api):
    api.route("GET", f"{S}/status", body={"type": "status", "primary_node": "hv1",
                                          "ceph_data": "  cluster:\n    health: HEALTH_OK\n"})
    result = run("storage", "status")
    assert "Primary node: hv1" in result.stdout and "HEALTH_OK" in result.stdout


def test_osd_replace_asks_and_sends_the_reference_parameters(api):
    api.route("POST", f"{S}/osd/3", status=202,
              body={"task_id": "t2", "task_name": "osd.replace", "run_on": "hv2"})
    result = run("storage", "osd", "replace", "3", "/dev/sdd", input="n\n")
    assert result.exit_code != 0 and not api.calls("POST", f"{S}/osd/3")
    result = run("storage", "osd", "replace", "3", "/dev/sdd", "-o", "/dev/sdb", "-w", "1.5",
                 "-s", "20G", "--yes")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Task ID: t2 assigned to node hv2"
    (call,) = api.calls("POST", f"{S}/osd/3")
    assert call.query == {"new_device": ["/dev/sdd"], "old_device": ["/dev/sdb"],
                          "weight": ["1.5"], "ext_db_size": ["20G"],
                          "yes-i-really-mean-it": ["yes"]}


def test_osd_refresh_and_create_db_vg(api):
    api.route("PUT", f"{S}/osd/3", status=202,
              body={"task_id": "t3", "task_name": "osd.refresh", "run_on": "hv2"})
    api.sequence("GET", "/tasks/t3", [
        (200, {"state": "SUCCESS", "current": 4, "total": 4,
               "status": "Refreshed OSD 3 on hv2 from device /dev/sdb."})])
    result = run("storage", "osd", "refresh", "3", "/dev/sdb", "--wait")
    assert result.exit_code == 0, result.output
    assert "SUCCESS: Refreshed OSD 3" in result.stdout
    assert api.calls("PUT", f"{S}/osd/3")[0].query == {"device": ["/dev/sdb"]}
    api.route("POST", f"{S}/osddb", status=202,
              body={"task_id": "t4", "task_name": "osd.add_db_vg", "run_on": "hv1"})
    result = run("storage", "osd", "create-db-vg", "hv1", "/dev/nvme0n1")
    assert result.exit_code == 0, result.output
    assert api.calls("POST", f"{S}/osddb")[0].query == {"node": ["hv1"],
                                                        "device": ["/dev/nvme0n1"]}
    result = run("storage", "osd", "add", "hv1", "/dev/sdc", "-r", "0.05")
    assert api.calls("POST", f"{S}/osd")[0].query["ext_db_ratio"] == ["0.05"]
