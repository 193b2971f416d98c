"""A VM whose only disk is an RBD volume, on the lab with Ceph, driven with `pvc`: upload a
bootable guest image into a volume, define a VM on it, boot it from RBD (BIOS → SYSLINUX →
kernel, nothing from the host), see it write to its disk, take an OSD out under it, live-migrate
it, find the data intact, and roll the stopped VM's volume back to a snapshot.

The image (``pvc_lab.guest.boot_disk``) carries 1 MiB of known data that nobody writes; the
guest writes ``tick N`` every second to a sector of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import uuid

import pytest

from tests.support import storage_lab
from tests.support.storage_lab import as_json, ok, pvc, site

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


def guest_xml(lab, name: str, pool: str, volume: str,
              boot_from_disk: bool = False) -> tuple[str, str]:
    from pvc_lab.guest import build, domain_xml
    from pvc_lab.libvirt import console_dir

    console = os.path.join(console_dir(lab.spec), f"{name}.log")
    xml = domain_xml(name, build(), console, memory_mib=128, uuid=str(uuid.uuid4()),
                     boot_from_disk=boot_from_disk)
    return xml.replace("<serial ", rbd_xml(lab, pool, volume) + "\n    <serial ", 1), console


READ_AT = ("import sys, rados, rbd\n"
           "c = rados.Rados(conffile=sys.argv[1]); c.connect()\n"
           "pool, name = sys.argv[2].split('/')\n"
           "with rbd.Image(c.open_ioctx(pool), name, read_only=True) as img:\n"
           "    sys.stdout.buffer.write(img.read(int(sys.argv[3]), int(sys.argv[4])))\n")


def read_at(lab, node: str, spec: str, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of an RBD image, read by a Ceph client on ``node``."""
    out = lab.exec(node, [sys.executable, "-c", READ_AT, site(lab, node).conf, spec,
                          str(offset), str(length)], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def disk_tick(lab, node: str, spec: str, offset: int = 0) -> int:
    """The tick number the guest last wrote to its RBD disk at ``offset`` (0 if none)."""
    m = re.match(rb"tick (\d+)", read_at(lab, node, spec, offset, 512))
    return int(m.group(1)) if m else 0


def console_ticks(path: str) -> list[int]:
    return [int(n) for n in re.findall(r"^tick (\d+) ", console_text(path), re.M)]


def console_text(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def vm(lab, name: str) -> dict:
    return as_json(lab, "vm", "info", name)


def test_vm_boots_from_rbd_survives_osd_out_and_live_migration(lab, pool, tmp_path):
    from pvc_lab import ceph as labceph
    from pvc_lab.guest import boot_disk, build

    spec = f"{pool}/vmdisk"
    disk = boot_disk(str(tmp_path / "boot.img"), build(), seed="rbdvm")

    def pattern_intact(node: str) -> bool:
        data = read_at(lab, node, spec, disk.pattern_offset, 2**20)
        return hashlib.sha256(data).hexdigest() == disk.pattern_sha256

    def tick(node: str = "hv3") -> int:
        return disk_tick(lab, node, spec, disk.tick_offset)

    ok(lab, "storage", "volume", "add", pool, "vmdisk", f"{disk.size // 2**20}M")
    ok(lab, "storage", "volume", "upload", pool, "vmdisk", disk.path, timeout=300)
    assert pattern_intact("hv2"), "the uploaded image is not what was sent"
    xml, console = guest_xml(lab, "rbdvm", pool, "vmdisk", boot_from_disk=True)
    assert "<kernel>" not in xml and "<boot dev='hd'/>" in xml
    xml_file = tmp_path / "rbdvm.xml"
    xml_file.write_text(xml)
    ok(lab, "vm", "define", str(xml_file), "--target", "hv1", "--method", "live")
    t0 = time.monotonic()
    ok(lab, "vm", "start", "rbdvm", "--wait", timeout=BOOT_TIMEOUT)
    lab.wait_for(lambda: "GUEST-BOOTED" in console_text(console), BOOT_TIMEOUT,
                 "the guest to boot from its RBD disk")
    print(f"\nVM start to guest booted from RBD: {time.monotonic() - t0:.1f} s")
    lab.wait_for(lambda: tick() > 0, 60, "the guest's first write to its RBD disk")

    # An OSD goes out under the running VM: copies=3, mincopies=2 keeps I/O going.
    hv3_osd = next(o["id"] for o in as_json(lab, "storage", "osd", "list") if o["node"] == "hv3")
    ok(lab, "storage", "osd", "out", hv3_osd)
    lab.wait_for(lambda: as_json(lab, "storage", "osd", "list", f"^{hv3_osd}$")[0]["stats"][
        "in"] == 0, 30, "the OSD list to show the OSD out")
    during = tick("hv2")
    lab.wait_for(lambda: tick("hv2") >= during + 3, 60, "the guest to write with the OSD out")
    assert vm(lab, "rbdvm")["state"] == "start"
    ok(lab, "storage", "osd", "in", hv3_osd)

    before = tick("hv2")
    ok(lab, "vm", "migrate", "rbdvm", "--target", "hv2", "--force-live", "--wait", timeout=240)
    info = vm(lab, "rbdvm")
    assert info["node"] == "hv2" and info["state"] == "start", info
    lab.wait_for(lambda: tick("hv1") > before + 2, 60,
                 "the guest to keep writing after the migration")
    assert console_text(console).count("GUEST-BOOTED") == 1     # no reboot: a live migration
    disks = info.get("disks") or []
    assert any(d.get("name") == spec for d in disks), disks
    t0 = time.monotonic()
    labceph.wait_healthy(site(lab, "hv1"), 180)
    print(f"OSD in → HEALTH_OK (VM running): {time.monotonic() - t0:.1f} s")

    ok(lab, "vm", "stop", "rbdvm", "--wait", timeout=120)
    last = console_ticks(console)[-1]
    on_disk = tick("hv1")
    assert last - 1 <= on_disk <= last, (on_disk, last)   # every write reached the disk
    assert pattern_intact("hv1"), "data the guest never wrote has changed"

    # Snapshot the stopped VM's volume, let the guest write on, roll back.
    ok(lab, "storage", "volume", "snapshot", "add", pool, "vmdisk", "stopped")
    ok(lab, "vm", "start", "rbdvm", "--wait", timeout=BOOT_TIMEOUT)
    lab.wait_for(lambda: console_text(console).count("GUEST-BOOTED") == 2, BOOT_TIMEOUT,
                 "the second boot")
    lab.wait_for(lambda: 0 < tick() < on_disk, 60, "the rebooted guest to write new ticks")
    ok(lab, "vm", "stop", "rbdvm", "--wait", timeout=120)
    changed = tick()
    assert changed != on_disk
    ok(lab, "storage", "volume", "snapshot", "rollback", pool, "vmdisk", "stopped", "--yes")
    assert tick() == on_disk and pattern_intact("hv2")
    ok(lab, "vm", "start", "rbdvm", "--wait", timeout=BOOT_TIMEOUT)   # still boots
    lab.wait_for(lambda: console_text(console).count("GUEST-BOOTED") == 3, BOOT_TIMEOUT,
                 "a boot from the rolled-back disk")
    ok(lab, "vm", "stop", "rbdvm", "--wait", timeout=120)
    ok(lab, "vm", "undefine", "rbdvm", "--yes")
    ok(lab, "storage", "volume", "snapshot", "remove", pool, "vmdisk", "stopped", "--yes")
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


def test_vm_snapshot_of_a_running_guest_and_rollback(lab, pool, tmp_path):
    """`pvc vm snapshot` of a running VM whose guest writes a tick to its disk every second:
    the guest writes on, the stopped VM is rolled back, and the disk holds the tick of the
    snapshot's moment; the VM boots from it."""
    from pvc_lab.guest import boot_disk, build

    spec = f"{pool}/snapdisk"
    disk = boot_disk(str(tmp_path / "boot.img"), build(), seed="snapvm")

    def tick(node: str = "hv3") -> int:
        return disk_tick(lab, node, spec, disk.tick_offset)

    ok(lab, "storage", "volume", "add", pool, "snapdisk", f"{disk.size // 2**20}M")
    ok(lab, "storage", "volume", "upload", pool, "snapdisk", disk.path, timeout=300)
    xml, console = guest_xml(lab, "snapvm", pool, "snapdisk", boot_from_disk=True)
    xml_file = tmp_path / "snapvm.xml"
    xml_file.write_text(xml)
    ok(lab, "vm", "define", str(xml_file), "--target", "hv1")
    ok(lab, "vm", "start", "snapvm", "--wait", timeout=BOOT_TIMEOUT)
    lab.wait_for(lambda: tick() > 2, BOOT_TIMEOUT, "the guest's first writes to its disk")

    before = tick()
    out = ok(lab, "vm", "snapshot", "create", "snapvm", "running1", "--wait", timeout=120)
    after = tick()
    assert "crash-consistent" in out, out
    listed = as_json(lab, "vm", "snapshot", "list", "snapvm")
    assert [s["name"] for s in listed] == ["running1"]
    assert listed[0]["rbd_snapshots"] == [f"{spec}@running1"]
    lab.wait_for(lambda: tick() > after + 3, 60, "the guest to write on after the snapshot")
    refused = pvc(lab, "vm", "snapshot", "rollback", "snapvm", "running1")
    assert refused.returncode != 0 and "must be stopped" in refused.stdout + refused.stderr

    ok(lab, "vm", "stop", "snapvm", "--wait", timeout=120)
    written = tick()
    ok(lab, "vm", "snapshot", "rollback", "snapvm", "running1", "--wait", timeout=120)
    restored = tick()
    assert before <= restored <= after < written, (before, restored, after, written)
    ok(lab, "vm", "start", "snapvm", "--wait", timeout=BOOT_TIMEOUT)
    lab.wait_for(lambda: console_text(console).count("GUEST-BOOTED") == 2, BOOT_TIMEOUT,
                 "a boot from the rolled-back disk")
    ok(lab, "vm", "stop", "snapvm", "--wait", timeout=120)
    ok(lab, "vm", "snapshot", "remove", "snapvm", "running1", "--wait", timeout=120)
    assert as_json(lab, "vm", "snapshot", "list", "snapvm") == []
    ok(lab, "vm", "undefine", "snapvm", "--yes")
    ok(lab, "storage", "volume", "remove", pool, "snapdisk", "--yes")
