"""VMs on the whole lab, driven with the `pvc` CLI like an administrator would.

Each node runs libvirtd (own network + mount namespace) and pvcnoded with vm_kvm; guests
are the lab's 128 MiB TCG kernels that print GUEST-BOOTED and a tick per second on their
serial console (a file in the lab's shared directory). An invariant sampler reads every
node's libvirtd during migrations and flushes and fails if a VM ever runs on two nodes.
"""

from __future__ import annotations

import json
import os
import sys
import uuid

import pytest

from pvc_lab.guest import build, domain_xml
from pvc_lab.libvirt import InvariantSampler, Libvirtd, console_dir, domains

pytestmark = pytest.mark.lab

PVC = [sys.executable, "-m", "pvc_cli"]
BOOT = 120


def pvc(lab, *args: str, timeout: float = 300.0):
    env = dict(os.environ, NO_COLOR="1", PVC_CLI_CONFIG="/nonexistent/pvc.json")
    return lab.admin_exec([*PVC, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(lab, *args: str) -> str:
    out = pvc(lab, *args)
    assert out.returncode == 0, f"pvc {' '.join(args)}: {out.stdout}{out.stderr}"
    return out.stdout


def info(lab, name: str) -> dict:
    return json.loads(ok(lab, "vm", "info", name, "-f", "json"))


@pytest.fixture
def vmlab(healthy, tmp_path):
    """The healthy lab with its API answering; VMs named here are removed afterwards."""
    lab = healthy
    lab.wait_for(lambda: pvc(lab, "node", "list").returncode == 0, 60, "the API")
    lab.wait_for(lambda: all(st.get("daemon_state") == "run" for st in
                             lab.node_states().values()), 60, "every node running")
    lab.vm_names = []
    lab.vm_dir = tmp_path
    yield lab
    for name in lab.vm_names:
        pvc(lab, "vm", "remove", name, "--yes")


def console(lab, name: str) -> str:
    try:
        with open(os.path.join(console_dir(lab.spec), f"{name}.log"), errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def ticks(lab, name: str) -> list[tuple[int, float]]:
    out = []
    for line in console(lab, name).splitlines():
        p = line.split()
        if len(p) >= 3 and p[0] == "tick":
            out.append((int(p[1]), float(p[2])))
    return out


def define(lab, name: str, node: str, memory: int = 128, disk: str | None = None) -> str:
    log = os.path.join(console_dir(lab.spec), f"{name}.log")
    if os.path.exists(log):
        os.unlink(log)
    path = lab.vm_dir / f"{name}.xml"
    path.write_text(domain_xml(name, build(), log, memory_mib=memory, uuid=str(uuid.uuid4()),
                               disk=disk))
    lab.vm_names.append(name)
    out = pvc(lab, "vm", "define", str(path), "--target", node)
    return out


def start_booted(lab, name: str, node: str) -> None:
    assert define(lab, name, node).returncode == 0
    ok(lab, "vm", "start", name, "--wait")
    lab.wait_for(lambda: "GUEST-BOOTED" in console(lab, name) and len(ticks(lab, name)) >= 2,
                 BOOT, f"{name} to boot and tick")


def uris(lab) -> dict[str, str]:
    svc = Libvirtd()
    return {n.name: svc.uri(lab.spec, n) for n in lab.spec.nodes}


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
