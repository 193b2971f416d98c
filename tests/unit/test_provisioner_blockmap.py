"""``blockmap`` with the real qemu-storage-daemon, FUSE and loop devices, on image files
(the lab maps RBD volumes the same way: tests/lab/test_provisioner_lab.py): a mapped image
takes a partition table, a file system and a file that are found again after unmapping; a
mounted partition keeps its mapping; a stale mapping of a killed daemon is cleaned up; a
missing image leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import pytest

from pvc_plugins.provisioner import blockmap

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("losetup")
    or not os.path.exists(blockmap.QSD) or not shutil.which("mkfs.ext4"),
    reason="needs root, /dev/fuse, losetup, mkfs.ext4 and qemu-storage-daemon")
MIB = 1024 * 1024


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="pvc-blockmap-")
    yield path
    assert blockmap.cleanup_stale(path) == []
    shutil.rmtree(path, ignore_errors=True)


def ours(workdir: str) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if workdir in line]


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def partition(device: str) -> str:
    """One Linux partition from 1 MiB to the end (an MBR written by hand: no sfdisk here)."""
    sectors = int(open(f"/sys/block/{os.path.basename(device)}/size").read())
    entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", 2048, sectors - 2048)
    with open(device, "r+b") as fh:
        fh.seek(446)
        fh.write(entry + bytes(48) + b"\x55\xaa")
    subprocess.run(["partx", "-a", device], capture_output=True)
    part = device + "p1"
    wait_for(lambda: os.path.exists(part))
    return part


def image(workdir: str, fmt: str = "raw") -> dict:
    path = os.path.join(workdir, f"disk.{fmt}")
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, "64M"], check=True)
    return {"driver": fmt, "file": {"driver": "file", "filename": path}}


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_a_mapped_image_takes_a_file_system_that_survives_unmapping(workdir, fmt):
    spec = image(workdir, fmt)
    t0 = time.monotonic()
    m = blockmap.map_blockdev(spec, workdir)
    mapped = time.monotonic() - t0
    assert m.device.startswith("/dev/loop") and ours(workdir)
    part = partition(m.device)
    subprocess.run(["mkfs.ext4", "-q", part], check=True)
    mnt = os.path.join(workdir, "mnt")
    os.mkdir(mnt)
    subprocess.run(["mount", part, mnt], check=True)
    try:
        with open(os.path.join(mnt, "hello"), "w") as fh:
            fh.write("from the provisioner\n")
        with pytest.raises(blockmap.MapError, match="still in use"):
            blockmap.unmap(m)
    finally:
        subprocess.run(["umount", mnt], check=True)
    t0 = time.monotonic()
    blockmap.unmap(m)
    print(f"\nmap {mapped * 1000:.0f} ms, unmap {(time.monotonic() - t0) * 1000:.0f} ms")
    blockmap.unmap(m)                                   # twice is fine
    assert ours(workdir) == [] and not os.path.exists(m.export)
    assert blockmap.find_stale(workdir) == []

    again = blockmap.map_blockdev(spec, workdir)
    try:
        part = again.device + "p1"
        wait_for(lambda: os.path.exists(part))
        subprocess.run(["mount", "-o", "ro", part, mnt], check=True)
        with open(os.path.join(mnt, "hello")) as fh:
            assert fh.read() == "from the provisioner\n"
        subprocess.run(["umount", mnt], check=True)
    finally:
        blockmap.unmap(again)


def test_a_stale_mapping_of_a_killed_daemon_is_cleaned_up(workdir):
    m = blockmap.map_blockdev(image(workdir), workdir)
    os.kill(m.pid, signal.SIGKILL)
    wait_for(lambda: not blockmap._ours(m.pid, m.export))
    assert [s.id for s in blockmap.find_stale(workdir)] == [m.id]
    assert blockmap._attached(m)          # its backing path is gone, the attachment is not
    assert blockmap.cleanup_stale(workdir) == []
    assert not blockmap._attached(m)
    assert blockmap._sys(m.device, "loop/backing_file") is None      # detached
    assert ours(workdir) == [] and os.listdir(workdir) == ["disk.raw"]


def test_a_missing_image_leaves_nothing_behind(workdir):
    spec = {"driver": "raw", "file": {"driver": "file",
                                      "filename": os.path.join(workdir, "nope.raw")}}
    with pytest.raises(blockmap.MapError, match="cannot open the volume"):
        blockmap.map_blockdev(spec, workdir)
    assert ours(workdir) == [] and os.listdir(workdir) == []
    assert not blockmap.krbd_available() or os.path.isdir("/sys/bus/rbd")
