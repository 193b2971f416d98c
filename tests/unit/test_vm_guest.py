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
