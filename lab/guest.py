"""The lab's tiny guest: Debian's kernel (downloaded, never installed) + a busybox initramfs.

``build()`` fills a cache directory (default ``/var/tmp/pvc-lab-cache``, env
``PVC_LAB_CACHE``) once and returns the paths; later calls only check. The guest:

* boots from ``vmlinux`` (the ELF unpacked from the package's bzImage; QEMU enters it
  through its PVH note, skipping the decompressor) and ``initrd.gz``;
* loads the virtio modules in dependency order (from the package's ``modules.dep``);
* powers off when the ACPI power button is pressed (a reader on the button's evdev node;
  busybox ``acpid`` does not see it);
* prints ``GUEST-BOOTED`` and then ``tick N <uptime> <idle>`` every second on ttyS0
  (and writes ``tick N`` to sector 0 of ``/dev/vda`` if there is a disk, or to sector
  ``ticksector=S`` of the kernel command line), so a console log shows that a guest is
  alive and that a live migration did not reboot it;
* takes ``guestip=A.B.C.D/NN`` or ``dhcp=1`` (udhcpc keeps trying in the background and
  renews; ``DHCP-bound <address>`` on the console) from the kernel command line, and with
  ``pingtarget=A.B.C.D[,E.F.G.H...]`` pings each address every 0.2 s for good, busybox's reply lines
  (``64 bytes from A.B.C.D: seq=N ...``) on the console: a missing ``seq`` is a lost ping
  (``ping_replies()`` reads them back);
* with ``userdata=1`` (and an address by DHCP), fetches its user data from the metadata
  service (``http://169.254.169.254/latest/user-data``, retrying every second), prints
  ``USERDATA-FETCHED <bytes> bytes`` and runs it with ``sh``, each output line prefixed
  ``userdata: ``;
* answers ping on its addresses (the kernel does).

``boot_disk()`` turns the same kernel and initramfs into a raw disk image that boots on its
own (BIOS → SYSLINUX on a FAT file system → bzImage), for VMs whose only disk is a storage
volume: the image also carries a known data pattern the guest never touches.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import subprocess
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

CACHE_ENV = "PVC_LAB_CACHE"
DEFAULT_CACHE = "/var/tmp/pvc-lab-cache"
BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")
META_PACKAGE = "linux-image-amd64"
MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "virtio_console", "evdev", "button")
BOOT_MARKER = "GUEST-BOOTED"
POWER_MARKER = "GUEST-POWERBUTTON"

INIT = f"""#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /etc/modules.order); do insmod /lib/modules/$m.ko 2>/dev/null; done
for e in /sys/class/input/event*; do
  if grep -q "Power Button" $e/device/name 2>/dev/null; then
    ( head -c 1 /dev/input/${{e##*/}} >/dev/null; echo {POWER_MARKER}; poweroff -f ) &
  fi
done
echo "{BOOT_MARKER} kernel=$(uname -r) mem=$(awk '/MemTotal/{{print $2}}' /proc/meminfo)kB"
ip link set lo up
for n in /sys/class/net/eth*; do [ -e "$n" ] && ip link set ${{n##*/}} up; done
seek=0
for w in $(cat /proc/cmdline); do
  case $w in
    ticksector=*) seek=${{w#ticksector=}};;
    guestip=*) ip addr add ${{w#guestip=}} dev eth0;;
    dhcp=1) udhcpc -i eth0 -t 5 -T 1 -b;;
    pingtarget=*) target=${{w#pingtarget=}};;
    userdata=1) userdata=1;;
  esac
done
if [ -n "$userdata" ]; then
  ( until timeout 5 wget -q -O /tmp/user-data http://169.254.169.254/latest/user-data; do
      sleep 1; done      # (not wget -T: busybox-static's wget crashes with it)
    echo "USERDATA-FETCHED $(wc -c < /tmp/user-data) bytes"
    sh /tmp/user-data 2>&1 | sed 's/^/userdata: /' ) &
fi
for t in $(echo "$target" | tr , ' '); do ( while true; do ping -i 0.2 $t; sleep 1; done ) & done
i=0
while true; do
  i=$((i+1))
  echo "tick $i $(cat /proc/uptime)"
  [ -b /dev/vda ] && echo "tick $i" |
    dd of=/dev/vda bs=512 seek=$seek count=1 conv=fsync 2>/dev/null
  sleep 1
done
"""

UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev $interface;;
  bound|renew) ip addr add $ip/${mask:-24} dev $interface 2>/dev/null
    [ -n "$router" ] && ip route replace default via $router
    echo "DHCP-$1 $ip";;
esac
"""


class GuestError(Exception):
    """The guest image cannot be built (no network to Debian, no busybox, ...)."""


@dataclass(frozen=True)
class GuestImage:
    kernel: str
    initrd: str
    kernel_version: str
    bzimage: str = ""           # the package's compressed kernel, for boot_disk()


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or DEFAULT_CACHE


def _run(argv: list[str], cwd: str | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        raise GuestError(f"{' '.join(argv)}: {lines[-1] if lines else 'failed'}")
    return proc.stdout


def kernel_package() -> str:
    """The versioned kernel package the ``linux-image-amd64`` meta package depends on."""
    for line in _run(["apt-cache", "depends", META_PACKAGE]).splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-") \
                and name[len("linux-image-")].isdigit():
            return name
    raise GuestError(f"apt-cache knows no kernel behind {META_PACKAGE} (apt-get update?)")


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (xz- or gzip-compressed payload)."""
    for magic, fmt in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b\x08", "gzip")):
        start = bzimage.find(magic)
        while start >= 0:
            try:
                if fmt == "xz":
                    data = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(bzimage[start:])
                else:
                    data = gzip.GzipFile(fileobj=io.BytesIO(bzimage[start:])).read()
            except (lzma.LZMAError, OSError, EOFError):
                data = b""
            if data.startswith(b"\x7fELF"):
                return data
            start = bzimage.find(magic, start + 1)
    raise GuestError("no ELF kernel found inside the bzImage")


def _fetch_kernel(cache: str, progress: Callable[[str], None]) -> str:
    """Download and unpack the kernel package; returns the unpacked tree."""
    tree = os.path.join(cache, "kernel")
    if os.path.isdir(os.path.join(tree, "lib", "modules")):
        return tree
    pkg = kernel_package()
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    found = [f for f in os.listdir(debs) if f.startswith(pkg + "_") and f.endswith(".deb")]
    if not found:
        progress(f"downloading {pkg} (about 70 MB)")
        _run(["apt-get", "download", pkg], cwd=debs)
        found = [f for f in os.listdir(debs) if f.startswith(pkg + "_") and f.endswith(".deb")]
    tmp = tree + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _run(["dpkg-deb", "-x", os.path.join(debs, sorted(found)[-1]), tmp])
    os.replace(tmp, tree)
    return tree


def _module_order(moddir: str, wanted: tuple[str, ...]) -> list[str]:
    """Module paths (relative to ``moddir``) to load, dependencies first.

    The package carries no ``modules.dep`` (depmod runs at install time), so the
    dependencies come from each module's own ``.modinfo`` ``depends=`` field.
    """
    paths: dict[str, str] = {}
    for root, _dirs, files in os.walk(os.path.join(moddir, "kernel")):
        for f in files:
            if ".ko" in f:
                full = os.path.join(root, f)
                paths[_mod_name(f)] = os.path.relpath(full, moddir)
    order: list[str] = []

    def visit(name: str, depth: int = 0) -> None:
        path = paths.get(name)
        if path is None or path in order or depth > 20:   # absent = built into the kernel
            return
        found = re.search(rb"\0depends=([^\0]*)", _module_bytes(os.path.join(moddir, path)))
        for dep in (found.group(1).decode().split(",") if found else []):
            if dep:
                visit(dep.replace("-", "_"), depth + 1)
        order.append(path)

    for name in wanted:
        visit(name)
    return order


def _mod_name(path: str) -> str:
    base = os.path.basename(path)
    for ext in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(ext):
            base = base[: -len(ext)]
    return base.replace("-", "_")


def _module_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    return data


class Cpio:
    """A minimal newc ("070701") archive writer: files, directories, symlinks, char nodes."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.buf.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.buf.write(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755, nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def _initramfs(tree: str, kversion: str) -> bytes:
    busybox = next((b for b in BUSYBOX if os.path.exists(b)), None)
    if busybox is None:
        raise GuestError("busybox is missing (apt-get install busybox-static)")
    with open(busybox, "rb") as fh:
        bb = fh.read()
    if b"ld-linux" in bb[:4096]:
        raise GuestError(f"{busybox} is dynamically linked (apt-get install busybox-static)")
    applets = _run([busybox, "--list"]).split()
    moddir = os.path.join(tree, "lib", "modules", kversion)
    order = _module_order(moddir, MODULES)
    c = Cpio()
    for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "mnt", "root", "etc", "etc/udhcpc",
              "lib", "lib/modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.file("bin/busybox", bb, 0o755)
    for a in applets:
        if a != "busybox":
            c.symlink(f"bin/{a}", "busybox")
    for rel in order:
        c.file(f"lib/modules/{_mod_name(rel)}.ko", _module_bytes(os.path.join(moddir, rel)))
    c.file("etc/modules.order", ("\n".join(_mod_name(r) for r in order) + "\n").encode())
    c.file("etc/udhcpc/default.script", UDHCPC_SCRIPT.encode(), 0o755)
    c.file("init", INIT.encode(), 0o755)
    return gzip.compress(c.finish(), compresslevel=6, mtime=0)


def build(cache: str | None = None,
          progress: Callable[[str], None] | None = None) -> GuestImage:
    """Build (once) and return the guest image; idempotent and safe to call at every setup."""
    cache = cache or cache_dir()
    progress = progress or (lambda _m: None)
    os.makedirs(cache, exist_ok=True)
    tree = _fetch_kernel(cache, progress)
    kversion = sorted(os.listdir(os.path.join(tree, "lib", "modules")))[-1]
    kernel = os.path.join(cache, "vmlinux")
    if not os.path.exists(kernel):
        with open(os.path.join(tree, "boot", f"vmlinuz-{kversion}"), "rb") as fh:
            elf = extract_vmlinux(fh.read())
        _write(kernel, elf)
    initrd = os.path.join(cache, "initrd.gz")
    stamp = hashlib.sha256((INIT + UDHCPC_SCRIPT + kversion + ",".join(MODULES)).encode())
    stamp_file = initrd + ".stamp"
    if not os.path.exists(initrd) or _read(stamp_file) != stamp.hexdigest():
        progress("building the guest initramfs")
        _write(initrd, _initramfs(tree, kversion))
        _write(stamp_file, stamp.hexdigest().encode())
    return GuestImage(kernel=kernel, initrd=initrd, kernel_version=kversion,
                      bzimage=os.path.join(tree, "boot", f"vmlinuz-{kversion}"))


# -- a disk that boots by itself --------------------------------------------------------

MIB = 1024 * 1024
BOOT_DISK_MIB = 32          # whole image
BOOT_FS_MIB = 24            # FAT file system at sector 0 (no partition table: a "superfloppy")
PATTERN_OFFSET = 24 * MIB   # 1 MiB of known data
PATTERN_BYTES = MIB
TICK_OFFSET = 28 * MIB      # the guest's "tick N" sector
BOOT_TOOLS = {"mkfs.fat": "dosfstools", "syslinux": "syslinux", "mcopy": "mtools"}


@dataclass(frozen=True)
class BootDisk:
    path: str
    size: int
    pattern_offset: int
    pattern_sha256: str
    tick_offset: int


PING_REPLY = re.compile(r"bytes from (\S+): seq=(\d+) ")


def ping_replies(console: str) -> list[tuple[str, int]]:
    """(address, seq) of every ping reply a ``pingtarget=`` guest printed, in order (a
    restarted ping starts again at seq 0)."""
    return [(m.group(1), int(m.group(2))) for m in PING_REPLY.finditer(console)]


def pattern(seed: str, length: int = PATTERN_BYTES) -> bytes:
    """Deterministic pseudo-random bytes (SHA-256 in counter mode) for data checks."""
    out = bytearray()
    n = 0
    while len(out) < length:
        out += hashlib.sha256(f"{seed}:{n}".encode()).digest()
        n += 1
    return bytes(out[:length])


def boot_tools_problem() -> str | None:
    missing = [pkg for tool, pkg in BOOT_TOOLS.items() if shutil.which(tool) is None]
    return f"missing boot-disk tools (apt-get install {' '.join(missing)})" if missing else None


def boot_disk(path: str, image: GuestImage, seed: str = "pvc", cmdline: str = "") -> BootDisk:
    """Write a raw disk image at ``path`` that boots the lab guest through the BIOS.

    Layout: a FAT16 file system over the first ``BOOT_FS_MIB`` MiB holding SYSLINUX, the
    bzImage and the initramfs; ``pattern(seed)`` at ``PATTERN_OFFSET``; the guest writes its
    ticks at ``TICK_OFFSET``. Raises GuestError when a tool is missing or fails.
    """
    why = boot_tools_problem()
    if why:
        raise GuestError(why)
    if not image.bzimage or not os.path.exists(image.bzimage):
        raise GuestError(f"no bzImage for the boot disk: {image.bzimage or 'unknown'}")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.truncate(BOOT_DISK_MIB * MIB)
    _run(["mkfs.fat", "-F", "16", "-n", "PVCBOOT", tmp, str(BOOT_FS_MIB * 1024)])
    _run(["syslinux", "--install", tmp])
    append = (f"initrd=initrd.gz console=ttyS0 panic=-1 quiet nokaslr "
              f"ticksector={TICK_OFFSET // 512} {cmdline}").strip()
    cfg = f"DEFAULT pvc\nPROMPT 0\nTIMEOUT 0\nLABEL pvc\n  KERNEL vmlinuz\n  APPEND {append}\n"
    cfg_file = tmp + ".cfg"
    _write(cfg_file, cfg.encode())
    try:
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        for src, dst in ((image.bzimage, "vmlinuz"), (image.initrd, "initrd.gz"),
                         (cfg_file, "syslinux.cfg")):
            proc = subprocess.run(["mcopy", "-o", "-i", tmp, src, f"::{dst}"], env=env,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise GuestError(f"mcopy {dst}: {proc.stderr.strip() or 'failed'}")
    finally:
        os.unlink(cfg_file)
    data = pattern(seed)
    with open(tmp, "r+b") as fh:
        fh.seek(PATTERN_OFFSET)
        fh.write(data)
    os.replace(tmp, path)
    return BootDisk(path=path, size=BOOT_DISK_MIB * MIB, pattern_offset=PATTERN_OFFSET,
                    pattern_sha256=hashlib.sha256(data).hexdigest(), tick_offset=TICK_OFFSET)


def _write(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def domain_xml(name: str, image: GuestImage, console_log: str, memory_mib: int = 128,
               vcpus: int = 1, uuid: str | None = None, virt_type: str = "qemu",
               disk: str | None = None, disk_format: str = "raw", cmdline: str = "",
               tb_cache_mib: int = 32, boot_from_disk: bool = False,
               nics: tuple[tuple[str, str], ...] = ()) -> str:
    """A libvirt domain for the lab guest, its serial console appended to ``console_log``.

    ``boot_from_disk``: no kernel/initrd from the host; the BIOS boots the first disk (one
    made by ``boot_disk()``). ``nics``: (bridge, MAC) of each virtio NIC, in the guest
    ``eth0``, ``eth1``, ... (QEMU's own virtio backend: this kernel has no vhost-net).
    """
    tcg = (f"<tcg><tb-cache unit='MiB'>{tb_cache_mib}</tb-cache></tcg>"
           if virt_type == "qemu" and tb_cache_mib else "")
    boot = "<boot dev='hd'/>" if boot_from_disk else (
        f"<kernel>{escape(image.kernel)}</kernel>\n    <initrd>{escape(image.initrd)}</initrd>"
        f"\n    <cmdline>console=ttyS0 panic=-1 quiet nokaslr {escape(cmdline)}</cmdline>")
    disk_xml = (f"<disk type='file' device='disk'><driver name='qemu' type='{disk_format}' "
                f"cache='none'/><source file='{escape(disk)}'/>"
                "<target dev='vda' bus='virtio'/></disk>") if disk else ""
    nic_xml = "".join(f"<interface type='bridge'><source bridge='{escape(bridge)}'/>"
                      f"<mac address='{escape(mac)}'/><model type='virtio'/>"
                      "<driver name='qemu'/></interface>" for bridge, mac in nics)
    return f"""<domain type='{virt_type}'>
  <name>{escape(name)}</name>
  <uuid>{uuid or uuidlib.uuid4()}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    {boot}
  </os>
  <features><acpi/>{tcg}</features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {disk_xml}{nic_xml}
    <serial type='file'>
      <source path='{escape(console_log)}' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""
