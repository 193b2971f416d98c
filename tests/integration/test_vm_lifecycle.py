"""VM lifecycle on real libvirtds driven by real pvcnoded daemons (vm_kvm plugin).

Each test defines its own VMs and removes them; the guests are 128 MiB TCG kernels that
print GUEST-BOOTED and a tick per second on their serial console.
"""

from __future__ import annotations

import json

import pytest

from pvc_plugins.vm_kvm import keys, vms
from tests.integration import test_vm_support as support
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration
vmcluster = support.vmcluster


def test_nodes_publish_hypervisor_facts(vmcluster):
    c = vmcluster
    for n in c.nodes.nodes:
        facts = json.loads(c.store.get("vm_kvm.node", node=n.name))
        assert facts["virt_type"] in ("kvm", "qemu")
        assert facts["migration_uri"] == f"qemu+tcp://{n.address}/system"
        print(n.name, facts["virt_type"], facts["virt_reason"])


def test_define_start_console_stats_stop(vmcluster):
    c = vmcluster
    rec = vms.define(c.store, c.xml("life1"), node="hv1")
    assert rec.state == keys.STOP and rec.node == "hv1" and rec.memory == 128
    vms.set_state(c.store, "life1", keys.START)
    c.wait_running("life1", "hv1")
    c.wait_booted("life1")
    assert "life1" in c.domains("hv1") and "life1" not in c.domains("hv2")
    wait_for(lambda: "GUEST-BOOTED" in (c.store.get("vm.console", uuid=rec.uuid) or ""), 20,
             0.2, "the console tail in ZooKeeper")
    wait_for(lambda: json.loads(c.store.get("vm.stats", uuid=rec.uuid) or "{}")
             .get("vcpu_stats"), 20, 0.2, "stats from hv1")
    wait_for(lambda: "life1" in json.loads(c.store.get("node.stats", node="hv1"))
             .get("vm", {}).get("running_domains", []), 20, 0.2, "hv1's keepalive stats")
    _, message = vms.set_state(c.store, "life1", keys.STOP)
    assert message == "Forcibly stopping VM 'life1'."
    wait_for(lambda: c.record("life1").running_on is None, 30, 0.2, "the hard stop")
    assert "life1" not in c.domains("hv1")
    assert "GUEST-POWERBUTTON" not in c.console_text("life1")
    vms.remove(c.store, "life1")
    assert c.record("life1") is None


def test_shutdown_reaches_acpi_and_restart_reboots(vmcluster):
    c = vmcluster
    vms.define(c.store, c.xml("life2"), node="hv2")
    vms.set_state(c.store, "life2", keys.START)
    c.wait_running("life2", "hv2")
    c.wait_booted("life2")
    vms.set_state(c.store, "life2", keys.RESTART)
    c.wait_booted("life2", count=2)
    wait_for(lambda: c.record("life2").state == keys.START, 30, 0.2, "restart to finish")
    assert "GUEST-POWERBUTTON" in c.console_text("life2")
    wait_for(lambda: c.ticks("life2") and c.ticks("life2")[-1][0] >= 2, 30, 0.2, "ticks")
    vms.set_state(c.store, "life2", keys.SHUTDOWN)
    wait_for(lambda: c.record("life2").state == keys.STOP, 60, 0.2, "shutdown to finish")
    assert c.console_text("life2").count("GUEST-POWERBUTTON") == 2
    assert c.record("life2").running_on is None and "life2" not in c.domains("hv2")
    vms.remove(c.store, "life2")


def test_start_failure_missing_disk(vmcluster):
    c = vmcluster
    vms.define(c.store, c.xml("life3", disk="/nonexistent/pvc-disk.raw"), node="hv1")
    vms.set_state(c.store, "life3", keys.START)
    rec = wait_for(lambda: (r := c.record("life3")).display_state == keys.FAIL and r, 30, 0.2,
                   "state fail")
    assert "/nonexistent/pvc-disk.raw does not exist" in rec.observed["failed_reason"]
    assert "life3" not in c.domains("hv1")
    vms.remove(c.store, "life3")


def test_define_validation(vmcluster):
    c = vmcluster
    with pytest.raises(vms.VmError) as err:
        vms.define(c.store, "<domain type='qemu'><name>x</name>")
    assert err.value.status == 400 and "not valid" in err.value.message
    with pytest.raises(vms.VmError) as err:
        vms.define(c.store, c.xml("huge", memory=64 * 1024 * 1024))
    assert err.value.status == 400 and "does not fit" in err.value.message
    vms.define(c.store, c.xml("dup1"))
    with pytest.raises(vms.VmError) as err:
        vms.define(c.store, c.xml("dup1"))
    assert err.value.status == 400 and "already exists" in err.value.message
    with pytest.raises(vms.VmError):
        vms.define(c.store, c.xml("dup1"), node="nosuchnode")
    assert vms.rename(c.store, "dup1", "dup2") == "Renamed VM 'dup1' to 'dup2'."
    assert c.record("dup2").name == "dup2" and c.record("dup1") is None
    vms.remove(c.store, "dup2")


def test_kvm_real_test_runs_and_cleans_up(vmcluster):
    """The probe's real KVM test (skipped by ``auto`` here: no vmx/svm) runs a kvm domain
    through libvirt, gives a verdict within its time limit and leaves no domain behind."""
    import time

    import libvirt

    from pvc_plugins.vm_kvm import probe

    c = vmcluster
    conn = libvirt.open(c.nodes.uri("hv1"))
    try:
        t0 = time.monotonic()
        problem = probe.real_test(conn, c.image.kernel, c.image.initrd, timeout=8)
        took = time.monotonic() - t0
        print(f"real KVM boot test: {problem or 'passed'} ({took:.1f} s)")
        assert took < 20
        assert not [d for d in conn.listAllDomains() if d.name().startswith("pvc-kvm-probe")]
        if "vmx" not in probe.cpu_flags() and "svm" not in probe.cpu_flags():
            verdict = probe.decide(conn, "auto", None)
            assert verdict.virt_type == "qemu" and "no vmx/svm" in verdict.reason
    finally:
        conn.close()
