"""A VM whose disk is an RBD volume, on the lab with Ceph: define it with `pvc vm define`, boot
it, see it write to its RBD disk, live-migrate it, and find the disk's data intact and still
growing on the other node (the guest writes ``tick N`` to sector 0 of /dev/vda every second).
"""

from __future__ import annotations

import os
import re
import time
import uuid

import pytest

from tests.support import storage_lab
from tests.support.storage_lab import as_json, ok, pvc, rbd, site

pytestmark = pytest.mark.lab
BOOT_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def lab():
    why = storage_lab.problem()
    if why:
        pytest.skip(why)
    from pvc_lab.libvirt import available

    if available():
        pytest.skip(available())
    the_lab = storage_lab.acquire(lambda lab: "HEALTH_OK" in pvc(lab, "storage", "status").stdout)
    yield the_lab
    storage_lab.release()


@pytest.fixture(scope="module")
def pool(lab):
    ok(lab, "storage", "pool", "add", "vmpool", "32", "--replcfg", "copies=3,mincopies=2")
    yield "vmpool"
    pvc(lab, "storage", "pool", "remove", "vmpool", "--yes")


def rbd_xml(lab, pool: str, volume: str) -> str:
    """No <host> and no <auth>: the Ceph plugin supplies the monitors, the cephx user and the
    libvirt secret that every node's libvirtd holds (cephx is on in the lab)."""
    return (f"<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>"
            f"<source protocol='rbd' name='{pool}/{volume}'/>"
            "<target dev='vda' bus='virtio'/></disk>")


def guest_xml(lab, name: str, pool: str, volume: str) -> tuple[str, str]:
    from pvc_lab.guest import build, domain_xml
    from pvc_lab.libvirt import console_dir

    console = os.path.join(console_dir(lab.spec), f"{name}.log")
    xml = domain_xml(name, build(), console, memory_mib=128, uuid=str(uuid.uuid4()))
    return xml.replace("<serial ", rbd_xml(lab, pool, volume) + "\n    <serial ", 1), console


def disk_tick(lab, node: str, spec: str) -> int:
    """The tick number the guest last wrote to sector 0 of its RBD disk (0 if none)."""
    out = rbd(lab, node, "export", spec, "-")
    m = re.match(rb"tick (\d+)", out.stdout[:512])
    return int(m.group(1)) if m else 0


def console_text(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def vm(lab, name: str) -> dict:
    return as_json(lab, "vm", "info", name)


def test_vm_boots_from_rbd_writes_and_live_migrates(lab, pool, tmp_path):
    ok(lab, "storage", "volume", "add", pool, "vmdisk", "16M")
    xml, console = guest_xml(lab, "rbdvm", pool, "vmdisk")
    xml_file = tmp_path / "rbdvm.xml"
    xml_file.write_text(xml)
    ok(lab, "vm", "define", str(xml_file), "--target", "hv1", "--method", "live")
    t0 = time.monotonic()
    ok(lab, "vm", "start", "rbdvm", "--wait", timeout=BOOT_TIMEOUT)
    lab.wait_for(lambda: "GUEST-BOOTED" in console_text(console), BOOT_TIMEOUT, "the guest boot")
    print(f"\nVM start on RBD to guest boot: {time.monotonic() - t0:.1f} s")
    lab.wait_for(lambda: disk_tick(lab, "hv3", f"{pool}/vmdisk") > 0, 60,
                 "the guest's first write to its RBD disk")
    before = disk_tick(lab, "hv2", f"{pool}/vmdisk")

    ok(lab, "vm", "migrate", "rbdvm", "--target", "hv2", "--force-live", "--wait", timeout=240)
    info = vm(lab, "rbdvm")
    assert info["node"] == "hv2" and info["state"] == "start", info
    lab.wait_for(lambda: disk_tick(lab, "hv1", f"{pool}/vmdisk") > before + 2, 60,
                 "the guest to keep writing after the migration")
    assert console_text(console).count("GUEST-BOOTED") == 1     # no reboot: a live migration
    disks = info.get("disks") or []
    assert any(d.get("name") == f"{pool}/vmdisk" for d in disks), disks

    ok(lab, "vm", "stop", "rbdvm", "--wait", timeout=120)
    snap_tick = disk_tick(lab, "hv1", f"{pool}/vmdisk")
    assert snap_tick > before
    ok(lab, "vm", "undefine", "rbdvm", "--yes")
    ok(lab, "storage", "volume", "remove", pool, "vmdisk", "--yes")


def test_start_refused_while_another_node_holds_the_disk(lab, pool, tmp_path):
    """A live writer elsewhere holds the RBD lock: the VM start fails with a readable reason."""
    import subprocess
    import sys

    ok(lab, "storage", "volume", "add", pool, "held", "16M")
    holder = subprocess.Popen(
        ["ip", "netns", "exec", lab.spec.node("hv3").netns, sys.executable, "-c",
         "import sys, time, rados, rbd\n"
         "c = rados.Rados(conffile=sys.argv[1]); c.connect()\n"
         "img = rbd.Image(c.open_ioctx('vmpool'), 'held'); img.write(b'x' * 512, 0)\n"
         "print('locked', flush=True); time.sleep(300)\n", site(lab, "hv3").conf],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        xml, _console = guest_xml(lab, "heldvm", pool, "held")
        xml_file = tmp_path / "heldvm.xml"
        xml_file.write_text(xml)
        ok(lab, "vm", "define", str(xml_file), "--target", "hv1")
        pvc(lab, "vm", "start", "heldvm", "--wait", timeout=BOOT_TIMEOUT)
        lab.wait_for(lambda: vm(lab, "heldvm")["state"] == "fail", 60, "the start to fail")
        assert "locked by a live client" in vm(lab, "heldvm")["failed_reason"]
    finally:
        holder.kill()
        holder.wait()
    pvc(lab, "vm", "undefine", "heldvm", "--yes")
    # the killed holder's watch lingers until Ceph times it out (osd_client_watch_timeout)
    lab.wait_for(lambda: pvc(lab, "storage", "volume", "remove", pool, "held",
                             "--yes").returncode == 0, 90, "the dead holder's watch to expire")
