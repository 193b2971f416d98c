"""`pvc vm` against a fake API: requests sent, output, --wait and XML edits."""

from __future__ import annotations

import pytest

try:
    import test_cli_support as support
except ImportError:  # collected as part of a package
    from tests.unit import test_cli_support as support

from pvc_plugins.vm_kvm.cli import new_lines

run = support.run
XML = ("<domain type='qemu'><name>web1</name><uuid>8a7e0ad9-6cf4-4b55-b1c4-2f1d0d1b8d0e</uuid>"
       "<memory unit='MiB'>128</memory><vcpu>1</vcpu><devices/></domain>")


def vm(**over):
    base = {"name": "web1", "uuid": "8a7e0ad9-6cf4-4b55-b1c4-2f1d0d1b8d0e", "state": "stop",
            "node": "hv1", "last_node": "", "migrated": "no", "vcpu": 1, "memory": 128,
            "tags": [{"name": "web", "type": "user", "protected": False}], "xml": XML,
            "running_on": None, "failed_reason": "", "disks": [], "networks": []}
    base.update(over)
    return base


@pytest.fixture
def api(monkeypatch, tmp_path):
    with support.fake_api_env(monkeypatch, tmp_path) as fake:
        yield fake


def test_list_table_and_filters(api):
    api.route("GET", "/vm", body=[vm(), vm(name="db1", state="start", node="hv2")])
    result = run("vm", "list", "-t", "hv2", "-s", "start", "-n")
    assert result.exit_code == 0, result.output
    assert api.calls("GET", "/vm")[0].query == {"node": ["hv2"], "state": ["start"],
                                                "negate": ["True"]}
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "NODE", "MIGRATED", "VCPUS", "MEMORY", "TAGS"]
    assert lines[1].split() == ["web1", "stop", "hv1", "no", "1", "128M", "web"]


def test_define_sends_xml_and_metadata(api, tmp_path):
    api.route("POST", "/vm", body={"message": "Added new VM with Name 'web1'"})
    f = tmp_path / "web1.xml"
    f.write_text(XML)
    result = run("vm", "define", str(f), "-t", "hv1", "-g", "a", "-g", "b", "-G", "p")
    assert result.exit_code == 0 and "Added new VM" in result.stdout
    q = api.calls("POST", "/vm")[0].query
    assert q["xml"] == [XML] and q["node"] == ["hv1"] and q["user_tags"] == ["a", "b"]
    assert q["protected_tags"] == ["p"] and q["migration_max_downtime"] == ["300"]


def test_start_wait_polls_until_running(api):
    api.route("POST", "/vm/web1/state", body={"message": "Starting VM 'web1'."})
    api.sequence("GET", "/vm/web1", [(200, [vm(state="start")]),
                                     (200, [vm(state="start", running_on="hv1")])])
    result = run("vm", "start", "web1", "--wait")
    assert result.exit_code == 0, result.output
    assert api.calls("POST", "/vm/web1/state")[0].query == {"state": ["start"]}
    assert result.stdout.strip() == "Starting VM 'web1'."


def test_start_wait_reports_failure(api):
    api.route("POST", "/vm/web1/state", body={"message": "Starting VM 'web1'."})
    api.route("GET", "/vm/web1", body=[vm(state="fail", failed_reason="disk vda missing")])
    result = run("vm", "start", "web1", "--wait")
    assert result.exit_code != 0 and "disk vda missing" in result.output


def test_migrate_sends_force_live_lowercase(api):
    api.route("POST", "/vm/web1/node", body={"message": "Migrating VM 'web1' to node 'hv2'."})
    result = run("vm", "migrate", "web1", "-t", "hv2", "--force-live")
    assert result.exit_code == 0
    q = api.calls("POST", "/vm/web1/node")[0].query
    assert q == {"action": ["migrate"], "node": ["hv2"], "force_live": ["true"]}


def test_memory_set_edits_the_xml(api):
    api.route("GET", "/vm/web1", body=[vm()])
    api.route("PUT", "/vm/web1", body={"message": "Modified VM 'web1'."})
    result = run("vm", "memory", "set", "web1", "256", "-r")
    assert result.exit_code == 0, result.output
    sent = api.calls("PUT", "/vm/web1")[0].query
    assert "<memory unit=\"MiB\">256</memory>" in sent["xml"][0] and sent["restart"] == ["True"]


def test_log_and_new_lines(api):
    api.route("GET", "/vm/web1/console", body={"name": "web1", "data": "GUEST-BOOTED\ntick 1"})
    result = run("vm", "log", "web1", "-l", "5")
    assert result.stdout.splitlines() == ["GUEST-BOOTED", "tick 1"]
    assert new_lines("a\nb\nc", "b\nc\nd\ne") == ["d", "e"]
    assert new_lines("", "x") == ["x"]


def test_flush_locks_waits_for_the_task(api):
    api.route("POST", "/vm/web1/locks", status=202,
              body={"task_id": "ab12cd34", "task_name": "vm.flush_locks", "run_on": "hv1"})
    api.sequence("GET", "/tasks/ab12cd34", [
        (200, {"state": "RUNNING", "current": 0, "total": 2,
               "status": "Flushing locks of disk vda"}),
        (200, {"state": "SUCCESS", "current": 2, "total": 2,
               "status": "Flushed locks on VM web1: 2 lock(s) removed."})])
    result = run("vm", "flush-locks", "web1", "--wait")
    assert result.exit_code == 0, result.output
    assert "SUCCESS: Flushed locks on VM web1: 2 lock(s) removed." in result.stdout
    assert api.calls("POST", "/vm/web1/locks")[0].query == {}


def test_flush_locks_force_and_refusal(api):
    api.route("POST", "/vm/web1/locks", status=202,
              body={"task_id": "t1", "task_name": "vm.flush_locks", "run_on": "hv2"})
    result = run("vm", "flush-locks", "web1", "--force")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "Task ID: t1 assigned to node hv2"
    assert api.calls("POST", "/vm/web1/locks")[0].query == {"force": ["True"]}
    api.route("POST", "/vm/db1/locks", status=400,
              body={"message": "ERROR: VM 'db1' is in state 'start'; ..."})
    result = run("vm", "flush-locks", "db1")
    assert result.exit_code != 0 and "in state 'start'" in result.output
