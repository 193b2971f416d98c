"""The lab guest builder's pure parts: bzImage unpacking, cpio archive, console tail."""

from __future__ import annotations

import gzip
import lzma
import subprocess

import pytest

from pvc_lab import guest
from pvc_plugins.vm_kvm import console


def test_extract_vmlinux_finds_the_xz_payload():
    elf = b"\x7fELF" + bytes(range(256)) * 64
    blob = b"MZ" + b"\0" * 1000 + b"\xfd7zXZ\x00junk" + b"\0" * 10 + lzma.compress(
        elf, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) + b"trailer"
    assert guest.extract_vmlinux(blob) == elf
    gz = b"MZ" + gzip.compress(elf)
    assert guest.extract_vmlinux(gz) == elf
    with pytest.raises(guest.GuestError):
        guest.extract_vmlinux(b"MZ nothing here")


def test_cpio_archive_is_readable_by_cpio(tmp_path):
    c = guest.Cpio()
    c.dir("bin")
    c.file("bin/hello", b"#!/bin/sh\necho hi\n", 0o755)
    c.symlink("bin/sh", "busybox")
    c.chardev("dev-console", 5, 1)
    data = c.finish()
    assert len(data) % 4 == 0
    listing = subprocess.run(["cpio", "-itv"], input=data, capture_output=True, check=True)
    out = listing.stdout.decode()
    assert "bin/hello" in out and "bin/sh -> busybox" in out and "5,   1" in out
    files = subprocess.run(["cpio", "-i", "--to-stdout", "bin/hello"], input=data,
                           capture_output=True, check=True)
    assert files.stdout == b"#!/bin/sh\necho hi\n"


def test_domain_xml_is_a_valid_pvc_domain():
    from pvc_plugins.vm_kvm import domxml

    img = guest.GuestImage("/c/vmlinux", "/c/initrd.gz", "6.1")
    d = domxml.parse(guest.domain_xml("g1", img, "/s/console/g1.log", disk="/s/d.raw"))
    assert d.memory_mib == 128 and d.vcpus == 1 and d.virt_type == "qemu"
    assert d.console_log == "/s/console/g1.log" and d.disks[0]["source"] == "/s/d.raw"


def test_boot_disk_layout(tmp_path):
    """A BIOS-bootable FAT image with SYSLINUX, the kernel, the initramfs and a known pattern."""
    import hashlib
    import os

    why = guest.boot_tools_problem()
    if why:
        pytest.skip(why)
    (tmp_path / "vmlinuz").write_bytes(b"KERNEL" * 1000)
    (tmp_path / "initrd.gz").write_bytes(b"INITRD" * 1000)
    img = guest.GuestImage(str(tmp_path / "vmlinux"), str(tmp_path / "initrd.gz"), "6.1",
                           bzimage=str(tmp_path / "vmlinuz"))
    disk = guest.boot_disk(str(tmp_path / "boot.img"), img, seed="t")
    data = (tmp_path / "boot.img").read_bytes()
    assert len(data) == disk.size == guest.BOOT_DISK_MIB * guest.MIB
    assert data[510:512] == b"\x55\xaa" and b"SYSLINUX" in data[:512]
    region = data[disk.pattern_offset:disk.pattern_offset + guest.PATTERN_BYTES]
    assert region == guest.pattern("t") and hashlib.sha256(region).hexdigest() == \
        disk.pattern_sha256
    assert guest.pattern("t") != guest.pattern("u")
    assert disk.tick_offset >= disk.pattern_offset + guest.PATTERN_BYTES
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    listing = subprocess.run(["mdir", "-a", "-b", "-i", disk.path, "::"], capture_output=True,
                             text=True, env=env, check=True).stdout.lower()
    for name in ("ldlinux.sys", "vmlinuz", "initrd.gz", "syslinux.cfg"):
        assert name in listing, listing
    cfg = subprocess.run(["mtype", "-i", disk.path, "::syslinux.cfg"], capture_output=True,
                         text=True, env=env, check=True).stdout
    assert f"ticksector={disk.tick_offset // 512}" in cfg and "initrd=initrd.gz" in cfg
    xml = guest.domain_xml("g", img, "/c.log", boot_from_disk=True)
    assert "<boot dev='hd'/>" in xml and "<kernel>" not in xml


def test_console_tail(tmp_path):
    log = tmp_path / "c.log"
    log.write_bytes(b"".join(b"line %d\r\n" % i for i in range(5000)))
    assert console.tail(str(log), 3) == "line 4997\nline 4998\nline 4999"
    assert console.tail(str(tmp_path / "none"), 3) is None
    assert console.tail(str(log), 0) == ""


def test_double_run_detection_ignores_a_migration_switchover():
    from pvc_lab.libvirt import double_runs

    # hv1 read (running), switchover, hv2 read (running); second pass: hv1 gone
    assert double_runs({"hv1": {"v"}, "hv2": {"v"}}, {"hv1": set(), "hv2": {"v"}}) == []
    # the other direction: hv1 not yet running, hv2 running; then hv1 running, hv2 gone
    assert double_runs({"hv1": set(), "hv2": {"v"}}, {"hv1": {"v"}, "hv2": set()}) == []
    # really on both
    assert double_runs({"hv1": {"v"}, "hv2": {"v"}}, {"hv1": {"v"}, "hv2": {"v"}}) == \
        [("v", "hv1", "hv2")]
    assert double_runs({"a": set(), "b": {"v"}, "c": {"v"}},
                       {"a": set(), "b": set(), "c": {"v"}}) == []
