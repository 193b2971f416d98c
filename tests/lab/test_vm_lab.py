"""VMs on the whole lab, driven with the `pvc` CLI like an administrator would.

Each node runs libvirtd (own network + mount namespace) and pvcnoded with vm_kvm; guests
are the lab's 128 MiB TCG kernels that print GUEST-BOOTED and a tick per second on their
serial console (a file in the lab's shared directory). An invariant sampler reads every
node's libvirtd during migrations and flushes and fails if a VM ever runs on two nodes.
"""

from __future__ import annotations

import json

import pytest

from pvc_lab.libvirt import InvariantSampler, domains
from tests.lab.vmtools import BOOT, console, define, info, ok, pvc, start_booted, ticks, uris

pytestmark = pytest.mark.lab


def test_define_start_shows_booted_console(vmlab):
    lab = vmlab
    start_booted(lab, "labvm1", "hv1")
    v = info(lab, "labvm1")
    assert (v["state"], v["node"], v["running_on"]) == ("start", "hv1", "hv1")
    lab.wait_for(lambda: "GUEST-BOOTED" in ok(lab, "vm", "log", "labvm1", "-l", "200"), 30,
                 "the console through the API")
    assert "labvm1" in domains(uris(lab)["hv1"])
    listing = ok(lab, "vm", "list")
    assert "labvm1" in listing and "start" in listing


def test_live_migration_keeps_the_guest_ticking(vmlab):
    lab = vmlab
    start_booted(lab, "labvm2", "hv1")
    before = ticks(lab, "labvm2")[-1]
    with InvariantSampler(uris(lab)):
        out = ok(lab, "vm", "migrate", "labvm2", "--target", "hv2", "--wait")
        assert "Migrating VM 'labvm2' to node 'hv2'." in out
        lab.wait_for(lambda: ticks(lab, "labvm2")[-1][0] >= before[0] + 3, 30, "ticks on hv2")
    v = info(lab, "labvm2")
    assert (v["node"], v["running_on"], v["last_node"]) == ("hv2", "hv2", "hv1")
    assert "labvm2" not in domains(uris(lab)["hv1"])
    t = ticks(lab, "labvm2")
    assert console(lab, "labvm2").count("GUEST-BOOTED") == 1
    assert all(b[1] > a[1] for a, b in zip(t, t[1:], strict=False)), "guest uptime went back"


def test_flush_and_ready_with_four_vms(vmlab):
    lab = vmlab
    names = [f"flvm{i}" for i in range(1, 5)]
    for n in names:
        assert define(lab, n, "hv1").returncode == 0
    for n in names:
        ok(lab, "vm", "start", n)
    for n in names:
        lab.wait_for(lambda n=n: len(ticks(lab, n)) >= 2, BOOT * 2, f"{n} to boot")
        lab.wait_for(lambda n=n: info(lab, n)["running_on"] == "hv1", 30, f"{n} on hv1")
    with InvariantSampler(uris(lab)):
        out = ok(lab, "node", "flush", "hv1", "--wait")
        assert "SUCCESS" in out
        assert json.loads(ok(lab, "node", "info", "hv1", "-f", "json"))["domain_state"] \
            == "flushed"
        where = {n: info(lab, n) for n in names}
        assert all(v["running_on"] not in (None, "hv1") for v in where.values()), where
        assert all(v["last_node"] == "hv1" for v in where.values())
        assert not domains(uris(lab)["hv1"])
        marks = {n: ticks(lab, n)[-1][0] for n in names}
        for n in names:
            lab.wait_for(lambda n=n: ticks(lab, n)[-1][0] > marks[n], 30, f"{n} ticking")
        assert "SUCCESS" in ok(lab, "node", "ready", "hv1", "--wait")
        back = {n: info(lab, n) for n in names}
        assert all(v["running_on"] == "hv1" and v["last_node"] == "" for v in back.values())
    assert all(console(lab, n).count("GUEST-BOOTED") == 1 for n in names), "a guest rebooted"


def test_shutdown_reaches_acpi_stop_destroys_remove_deletes(vmlab):
    lab = vmlab
    start_booted(lab, "labvm3", "hv3")
    assert "Shutting down VM 'labvm3'" in ok(lab, "vm", "shutdown", "labvm3", "--wait")
    assert "GUEST-POWERBUTTON" in console(lab, "labvm3")
    assert info(lab, "labvm3")["state"] == "stop"
    assert "labvm3" not in domains(uris(lab)["hv3"])
    ok(lab, "vm", "start", "labvm3", "--wait")
    lab.wait_for(lambda: console(lab, "labvm3").count("GUEST-BOOTED") == 2, BOOT, "a new boot")
    ok(lab, "vm", "stop", "labvm3", "--wait")
    assert console(lab, "labvm3").count("GUEST-POWERBUTTON") == 1
    assert "labvm3" not in domains(uris(lab)["hv3"])
    ok(lab, "vm", "remove", "labvm3", "--yes")
    out = pvc(lab, "vm", "info", "labvm3")
    assert out.returncode != 0 and "not found" in (out.stdout + out.stderr)


def test_refusals_and_start_failure(vmlab):
    lab = vmlab
    out = define(lab, "toobig", "hv1", memory=64 * 1024 * 1024)
    assert out.returncode != 0 and "does not fit" in out.stderr, out.stderr
    bad = lab.vm_dir / "bad.xml"
    bad.write_text("<domain type='qemu'><name>bad</name>")
    out = pvc(lab, "vm", "define", str(bad))
    assert out.returncode != 0 and "not valid" in out.stderr
    assert define(lab, "nodisk", "hv2", disk="/nonexistent/nodisk.raw").returncode == 0
    out = pvc(lab, "vm", "start", "nodisk", "--wait")
    assert out.returncode != 0 and "/nonexistent/nodisk.raw does not exist" in out.stderr
    v = info(lab, "nodisk")
    assert v["state"] == "fail" and "does not exist" in v["failed_reason"]
