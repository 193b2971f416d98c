"""Node health on the lab's real components: a hung libvirtd, a stopped ZooKeeper server, a
stopped OSD and a full data path each take their check's delta off that node's health (and
raise a fault), `pvc node info` names the check, and all of it comes back once the component
does. The sample plugin's check (a third-party package, loaded by entry point) runs on every
node. (The OSD case runs on the storage lab: tests/lab/test_storage_ceph.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from pvc_lab import procs
from pvc_lab.bmc import enabled as bmc_enabled
from pvc_lab.chaos import as_json, ok
from pvc_lab.pvcnoded import health_data_path

WAIT = 60


def node(lab, name: str) -> dict:
    found = as_json(lab, "node", "info", name)
    return found[0] if isinstance(found, list) else found


def checks(lab, name: str) -> tuple[int, dict[str, dict]]:
    n = node(lab, name)
    return n["health"], {d["name"]: d for d in n["health_details"]}


def faults(lab) -> dict[str, dict]:
    return {f["id"]: f for f in as_json(lab, "cluster", "fault", "list")}


def baseline(lab, name: str, check: str) -> int:
    """The node's health once ``check`` reports nothing wrong."""
    def settled():
        health, found = checks(lab, name)
        return health if check in found and found[check]["health_delta"] == 0 else None
    return lab.wait_for(settled, WAIT, f"{name}'s {check} check to be healthy")


def broken(lab, name: str, check: str, delta: int, base: int, text: str) -> dict:
    """Wait until ``check`` takes ``delta`` and the node's health fell by exactly that."""
    def seen():
        health, found = checks(lab, name)
        entry = found.get(check, {})
        if entry.get("health_delta") == delta and text in entry.get("message", ""):
            assert health == max(base - delta, 0), (health, found)
            return entry
        return None
    return lab.wait_for(seen, WAIT, f"{name}'s {check} check to take {delta}")


def test_every_node_runs_every_plugins_checks(healthy):
    lab = healthy
    for n in lab.spec.nodes:
        def reported(n=n):
            health, found = checks(lab, n.name)
            settled = "sample" in found and "not checked yet" not in found["ipmi"]["message"]
            return (health, found) if settled else None
        health, found = lab.wait_for(reported, WAIT, f"{n.name}'s checks")
        assert {"load", "disk", "zookeeper", "libvirt", "ceph", "ipmi", "sample"} <= set(found)
        assert found["sample"]["message"] == "sample says 0"
        zk = found["zookeeper"]
        if n.coordinator:
            assert zk["health_delta"] == 0 and "serving as" in zk["message"], zk
        else:
            assert zk["message"] == "not applicable: not a coordinator"
        if bmc_enabled(lab.spec):
            assert found["ipmi"]["health_delta"] == 0, found["ipmi"]
        else:                 # this lab has no BMCs: the cluster cannot fence its nodes
            assert found["ipmi"]["health_delta"] == 10
            assert "no BMC configured" in found["ipmi"]["message"]
        assert health == 100 - sum(d["health_delta"] for d in found.values())
    status = as_json(lab, "cluster", "status")
    assert set(status["node_health"]) == {n.name for n in lab.spec.nodes}


def test_a_hung_libvirtd_takes_50_until_pvcnoded_restarts_it(healthy):
    lab, name = healthy, "hv2"
    base = baseline(lab, name, "libvirt")
    rec = lab.service("libvirtd").record(lab.spec, lab.node(name))
    at = time.monotonic()
    procs.send(rec.pid, signal.SIGSTOP)       # pvcnoded restarts it after 5 s (lab config)
    try:
        entry = broken(lab, name, "libvirt", 50, base, "libvirtd does not answer")
        seen = time.monotonic() - at
        assert f"libvirt-{name}" in faults(lab)          # the plugin's own fault ...
        assert f"NODE_PLUGIN_LIBVIRT_{name}" not in faults(lab)   # ... and no second one
        text = ok(lab, "node", "info", name)
        assert "libvirt" in text and "libvirtd does not answer" in text, text
        assert entry["last_run"]
    finally:
        procs.send(rec.pid, signal.SIGCONT)
    lab.wait_for(lambda: checks(lab, name)[0] == base, WAIT, "health back")
    lab.wait_for(lambda: f"libvirt-{name}" not in faults(lab), WAIT, "the fault to clear")
    print(f"\nlibvirtd hung: health {base} -> {base - 50} after {seen:.1f} s, back at {base}")


def test_a_stopped_zookeeper_server_takes_its_delta_and_raises_a_fault(healthy):
    lab, name = healthy, "hv3"
    base = baseline(lab, name, "zookeeper")
    lab.stop_service(name, "zookeeper", signal.SIGTERM)
    try:
        broken(lab, name, "zookeeper", 50, base, "does not answer")
        fault = lab.wait_for(lambda: faults(lab).get(f"NODE_PLUGIN_ZOOKEEPER_{name}"), WAIT,
                             "the node plugin fault")
        assert fault["health_delta"] == 25 and "zookeeper" in fault["message"]
        assert "'zookeeper'" in " ".join(
            as_json(lab, "cluster", "status")["node_health"][name]["messages"])
    finally:
        lab.start(name, only="zookeeper")
    lab.wait_for(lambda: checks(lab, name)[0] == base, WAIT, "health back")
    lab.wait_for(lambda: f"NODE_PLUGIN_ZOOKEEPER_{name}" not in faults(lab), WAIT,
                 "the fault to clear")


def test_a_full_data_path_fires_the_disk_check(healthy):
    """A 1 MiB tmpfs on hv4's data path, mounted in pvcnoded's own mount namespace (``ip
    netns exec`` gives each node one), filled to 95 %."""
    lab, name = healthy, "hv4"
    base = baseline(lab, name, "disk")
    path = health_data_path(lab.spec, lab.node(name))
    os.makedirs(path, exist_ok=True)
    pid = lab.service("pvcnoded").record(lab.spec, lab.node(name)).pid

    def in_node(*argv: str) -> None:
        subprocess.run(["nsenter", "-t", str(pid), "-m", "--", *argv], check=True, timeout=30)

    in_node("mount", "-t", "tmpfs", "-o", "size=1m", "pvc-health-test", path)
    try:
        in_node("sh", "-c", f"head -c {1024 * 1024 * 95 // 100} /dev/zero > {path}/fill")
        entry = broken(lab, name, "disk", 10, base, path)
        assert entry["data"][path]["used_percent"] >= 90
        in_node("rm", f"{path}/fill")
        lab.wait_for(lambda: checks(lab, name)[0] == base, WAIT, "health back")
    finally:
        subprocess.run(["nsenter", "-t", str(pid), "-m", "--", "umount", path], check=False)


def test_the_primary_raises_dead_node_for_a_node_that_lost_power(healthy):
    lab, name = healthy, "hv4"
    lab.kill(name)
    try:
        fault = lab.wait_for(lambda: faults(lab).get(f"DEAD_NODE_{name}"), WAIT,
                             "the primary's DEAD_NODE fault")
        assert fault["health_delta"] == 50 and name in fault["message"]
        status = as_json(lab, "cluster", "status")
        assert f"DEAD_NODE_{name}" in {m["id"] for m in status["cluster_health"]["messages"]}
    finally:
        lab.start(name)
    lab.wait_for(lambda: lab.node_state(name)["daemon_state"] == "run", WAIT, f"{name} back")
    lab.wait_for(lambda: f"DEAD_NODE_{name}" not in faults(lab), WAIT, "the fault to clear")


def test_a_failed_vm_is_a_cluster_fault_until_it_is_gone(vmlab):
    from tests.lab.vmtools import define, pvc

    lab = vmlab
    assert define(lab, "hfail", "hv2", disk="/nonexistent/hfail.raw").returncode == 0
    out = pvc(lab, "vm", "start", "hfail", "--wait")
    assert out.returncode != 0                                # its disk does not exist
    fault = lab.wait_for(lambda: faults(lab).get("VM_FAILED_hfail"), WAIT,
                         "the primary's VM_FAILED fault")
    assert fault["health_delta"] == 10 and "hv2" in fault["message"]
    assert "does not exist" in fault["message"]
    ok(lab, "vm", "remove", "hfail", "--yes")
    lab.vm_names.remove("hfail")
    lab.wait_for(lambda: "VM_FAILED_hfail" not in faults(lab), WAIT, "the fault to clear")
