"""The provisioner on the lab with Ceph, driven with `pvc` as an administrator would: a
profile whose script (``examples/lab_boot.py``) puts the lab guest's kernel and initramfs on
the VM's RBD volume through a mapped block device (no ``rbd`` kernel module here), then the
VM is defined, started and boots from that volume. A script that fails in ``install()``
leaves no VM and no volume and the task names the stage and the script's message; two
creates of one name at once make one VM."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from tests.support import storage_lab
from tests.support.storage_lab import as_json, ok, pvc, refused

pytestmark = pytest.mark.lab
BOOT_TIMEOUT = 180.0
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "provisioner",
                        "examples")
POOL = "provpool"
FAILING = """from daemon_lib.vmbuilder import VMBuilder
import daemon_lib.libvirt_schema as libvirt_schema


class VMBuilderScript(VMBuilder):
    def create(self):
        return (libvirt_schema.libvirt_header.format(
                    vm_name=self.vm_name, vm_uuid=self.vm_uuid, vm_description="",
                    vm_memory=128, vm_vcpus=1, vm_architecture="x86_64")
                + libvirt_schema.devices_default + libvirt_schema.libvirt_footer)

    def install(self):
        raise RuntimeError("the disk is on fire")

    def cleanup(self):
        self.log_info("cleanup ran")
"""


@pytest.fixture(scope="module")
def lab():
    why = storage_lab.problem()
    if why:
        pytest.skip(why)
    from pvc_lab.guest import boot_tools_problem
    from pvc_lab.libvirt import available

    if available() or boot_tools_problem():
        pytest.skip(available() or boot_tools_problem())
    the_lab = storage_lab.acquire(lambda lab: "HEALTH_OK" in pvc(lab, "storage", "status").stdout)
    ok(the_lab, "storage", "pool", "add", POOL, "32", "--replcfg", "copies=3,mincopies=2")
    yield the_lab
    for vm in ("prov1", "twin", "ova1"):
        pvc(the_lab, "vm", "undefine", vm, "--yes")
    for volume in ("prov1_sda", "twin_sda"):
        pvc(the_lab, "storage", "volume", "remove", POOL, volume, "--yes")
    pvc(the_lab, "storage", "pool", "remove", POOL, "--yes")
    storage_lab.release()


@pytest.fixture(scope="module")
def profiles(lab, tmp_path_factory):
    from pvc_lab.guest import build

    image = build()
    tmp = tmp_path_factory.mktemp("prov")
    failing = tmp / "failing.py"
    failing.write_text(FAILING)
    ok(lab, "provisioner", "template", "system", "add", "tiny", "-u", "1", "-m", "128",
       "--serial")
    ok(lab, "provisioner", "template", "network", "add", "nonet")
    ok(lab, "provisioner", "template", "storage", "add", "boot1g")
    ok(lab, "provisioner", "template", "storage", "disk", "add", "boot1g", "sda", "-p", POOL,
       "-s", "1")
    ok(lab, "provisioner", "script", "add", "labboot", os.path.join(EXAMPLES, "lab_boot.py"))
    ok(lab, "provisioner", "script", "add", "noop", os.path.join(EXAMPLES, "noop.py"))
    ok(lab, "provisioner", "script", "add", "failing", str(failing))
    common = ["-s", "tiny", "-n", "nonet", "-t", "boot1g"]
    ok(lab, "provisioner", "profile", "add", "labboot", *common, "-x", "labboot",
       "-a", f"kernel={image.bzimage}", "-a", f"initrd={image.initrd}",
       "-a", "cmdline=quiet")
    ok(lab, "provisioner", "profile", "add", "noop", *common, "-x", "noop")
    ok(lab, "provisioner", "profile", "add", "failing", *common, "-x", "failing")
    return image


def volumes(lab) -> set[str]:
    out = pvc(lab, "storage", "volume", "list", "-p", POOL, "-f", "json")
    return {v["name"] for v in (as_json(lab, "storage", "volume", "list", "-p", POOL)
                                if out.returncode == 0 else [])}


def test_a_profile_makes_a_vm_that_boots_from_its_rbd_volume(lab, profiles):
    t0 = time.monotonic()
    out = ok(lab, "provisioner", "create", "prov1", "labboot", "--wait", timeout=600)
    made = time.monotonic() - t0
    assert "SUCCESS" in out and "prov1" in out, out
    info = as_json(lab, "vm", "info", "prov1")
    assert info["state"] == "start" and info["profile"] == "labboot", info
    assert any(d.get("name") == f"{POOL}/prov1_sda" for d in info.get("disks") or []), info
    # the schema's serial log is /var/log/libvirt/<vm>.log: in the lab, each node's libvirtd
    # has its own /var/log/libvirt (a bind mount of the node's directory)
    log = os.path.join(lab.spec.state_dir, info["node"], "libvirt", "log", "prov1.log")

    def console() -> str:
        try:
            with open(log, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""
    lab.wait_for(lambda: "GUEST-BOOTED" in console(), BOOT_TIMEOUT,
                 "the provisioned VM to boot from its RBD volume")
    print(f"\nprovisioner create (labboot) to SUCCESS: {made:.1f} s; booted "
          f"{time.monotonic() - t0:.1f} s after the request")
    ok(lab, "vm", "stop", "prov1", "--wait", timeout=120)
    ok(lab, "vm", "undefine", "prov1", "--yes")
    ok(lab, "storage", "volume", "remove", POOL, "prov1_sda", "--yes")


def test_a_script_failing_in_install_leaves_nothing_behind(lab, profiles):
    text = refused(lab, "provisioner", "create", "bad1", "failing", "--wait")
    assert "install" in text and "the disk is on fire" in text, text
    assert "bad1_sda" not in volumes(lab)
    assert pvc(lab, "vm", "info", "bad1").returncode != 0
    tasks = as_json(lab, "task", "list")
    failed = [t for t in tasks if (t.get("type") or t.get("task_name")) == "provisioner.create"
              and "bad1" in str(t)]
    assert failed, tasks


def test_two_creates_of_one_name_at_once_make_one_vm(lab, profiles):
    results: list[int] = []

    def create() -> None:
        results.append(pvc(lab, "provisioner", "create", "twin", "noop", "--no-start",
                           "--wait", timeout=600).returncode)
    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert sorted(results) == [0, 1], results
    assert as_json(lab, "vm", "info", "twin")["state"] == "stop"
    assert "twin_sda" in volumes(lab)
    ok(lab, "vm", "undefine", "twin", "--yes")
    ok(lab, "storage", "volume", "remove", POOL, "twin_sda", "--yes")


def test_an_uploaded_ova_makes_a_vm_that_boots(lab, profiles, tmp_path):
    """An OVA built here (the lab's boot disk as a streamOptimized VMDK and an OVF) is
    uploaded, its disk converted into a volume; an ova profile's VM boots from a copy."""
    import subprocess

    from pvc_lab.guest import boot_disk
    from tests.unit.test_provisioner_ova import DiskDecl, build_ova, ovf_text

    disk = boot_disk(str(tmp_path / "boot.raw"), profiles, seed="ova")
    vmdk = tmp_path / "disk1.vmdk"
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    disk.path, str(vmdk)], check=True)
    ovf = ovf_text([DiskDecl("d1", "disk1.vmdk", disk.size)], name="labova", vcpus=1,
                   memory=128).encode()
    path = build_ova(tmp_path / "labova.ova", [("labova.ovf", ovf), ("disk1.vmdk", vmdk)])
    bad = build_ova(tmp_path / "bad.ova", [("bad.ovf", ovf_text(
        [DiskDecl("d1", "disk1.vmdk", 1024 * 1024)]).encode()), ("disk1.vmdk", vmdk)])

    huge = build_ova(tmp_path / "huge.ova", [("huge.ovf", ovf_text(
        [DiskDecl("d1", "disk1.vmdk", 2 ** 50)], vcpus=1, memory=128).encode()),
        ("disk1.vmdk", vmdk)])
    text = refused(lab, "provisioner", "ova", "upload", "badova", str(bad), "-p", POOL)
    assert "Invalid OVA" in text and "declares" in text, text
    text = refused(lab, "provisioner", "ova", "upload", "hugeova", str(huge), "-p", POOL)
    assert "Invalid OVA" in text and f"pool {POOL} has" in text, text
    text = refused(lab, "provisioner", "ova", "upload", "nopool", str(path), "-p", "nopool")
    assert "'pool'" in text, text
    assert not any(v.startswith(("ova_badova", "ova_hugeova")) for v in volumes(lab))

    out = ok(lab, "provisioner", "ova", "upload", "labova", str(path), "-p", POOL,
             timeout=600)
    assert "SUCCESS" in out, out
    (listed,) = as_json(lab, "provisioner", "ova", "list")
    assert listed["volumes"] == [{"pool": POOL, "volume_name": "ova_labova_sda",
                                  "volume_format": "raw", "disk_id": "sda",
                                  "disk_size_gb": 1}]
    ok(lab, "provisioner", "script", "add", "ova", os.path.join(EXAMPLES, "ova.py"))
    ok(lab, "provisioner", "profile", "add", "labova", "-p", "ova", "-o", "labova",
       "-s", "ova_labova", "-x", "ova")
    out = ok(lab, "provisioner", "create", "ova1", "labova", "--wait", timeout=600)
    assert "SUCCESS" in out, out
    info = as_json(lab, "vm", "info", "ova1")
    log = os.path.join(lab.spec.state_dir, info["node"], "libvirt", "log", "ova1.log")

    def console() -> str:
        try:
            with open(log, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""
    lab.wait_for(lambda: "GUEST-BOOTED" in console(), BOOT_TIMEOUT,
                 "the VM made from the OVA to boot")
    text = refused(lab, "provisioner", "ova", "remove", "labova")
    assert "profile(s) labova" in text, text
    ok(lab, "vm", "stop", "ova1", "--wait", timeout=120)
    ok(lab, "vm", "undefine", "ova1", "--yes")
    ok(lab, "storage", "volume", "remove", POOL, "ova1_sda", "--yes")
    ok(lab, "provisioner", "profile", "remove", "labova")
    assert "SUCCESS" in ok(lab, "provisioner", "ova", "remove", "labova", timeout=300)
    assert "ova_labova_sda" not in volumes(lab)


def test_a_vm_fetches_and_runs_its_user_data_from_the_metadata_service(lab, profiles,
                                                                       tmp_path):
    """On a managed network, the provisioned guest gets an address by DHCP, fetches its
    profile's user data from 169.254.169.254 and runs it; the address moves with the
    primary's gateway, and a source that is no VM's gets 404."""
    ok(lab, "network", "add", "150", "-d", "provnet", "-p", "managed", "-i", "10.150.0.0/24",
       "-g", "10.150.0.1", "--dhcp", "--dhcp-start", "10.150.0.100", "--dhcp-end",
       "10.150.0.199")
    try:
        lab.wait_for(lambda: (lambda n: n and all(r.get("state") == "up" for r in n.values()))(
            as_json(lab, "network", "info", "provnet").get("nodes")), 60,
            "every node to build the network")
        script = tmp_path / "hello.sh"
        script.write_text("#!/bin/sh\necho \"USERDATA-RAN $((6 * 7))\"\n")
        ok(lab, "provisioner", "userdata", "add", "hello", str(script))
        ok(lab, "provisioner", "template", "network", "add", "net150")
        ok(lab, "provisioner", "template", "network", "vni", "add", "net150", "150")
        ok(lab, "provisioner", "profile", "add", "meta", "-s", "tiny", "-n", "net150", "-t",
           "boot1g", "-u", "hello", "-x", "labboot", "-a", f"kernel={profiles.bzimage}",
           "-a", f"initrd={profiles.initrd}", "-a", "cmdline=dhcp=1 userdata=1")
        out = ok(lab, "provisioner", "create", "meta1", "meta", "--wait", timeout=600)
        assert "SUCCESS" in out, out
        node = as_json(lab, "vm", "info", "meta1")["node"]
        log = os.path.join(lab.spec.state_dir, node, "libvirt", "log", "meta1.log")

        def console() -> str:
            try:
                with open(log, errors="replace") as fh:
                    return fh.read()
            except OSError:
                return ""
        t0 = time.monotonic()
        lab.wait_for(lambda: "userdata: USERDATA-RAN 42" in console(), BOOT_TIMEOUT,
                     "the guest to fetch and run its user data")
        print(f"\nguest ran its user data {time.monotonic() - t0:.1f} s after the create")
        assert "USERDATA-FETCHED" in console()

        status = as_json(lab, "node", "list")
        primary = next(n["name"] for n in status if n.get("coordinator_state") == "primary")
        probe = ("import urllib.request, urllib.error\n"
                 "try:\n"
                 "    urllib.request.urlopen('http://169.254.169.254/latest/user-data',"
                 " timeout=5)\n"
                 "    print('200')\n"
                 "except urllib.error.HTTPError as e:\n"
                 "    print(e.code)\n")
        out = lab.exec(primary, [sys.executable, "-c", probe], capture_output=True, text=True,
                       timeout=30)
        assert out.stdout.strip() == "404", (out.stdout, out.stderr)
        ok(lab, "vm", "stop", "meta1", "--wait", timeout=120)
        ok(lab, "vm", "undefine", "meta1", "--yes")
        ok(lab, "storage", "volume", "remove", POOL, "meta1_sda", "--yes")
    finally:
        pvc(lab, "vm", "undefine", "meta1", "--yes")
        pvc(lab, "provisioner", "profile", "remove", "meta")
        pvc(lab, "network", "remove", "provnet", "--yes")
