# PVC provisioner script: Debian installed with debootstrap from a package mirror.
#
# Needs, on the primary node: debootstrap, sfdisk (package fdisk) and the mkfs tools of
# the file systems the storage template names, and a reachable Debian mirror. Written
# against the provisioner script interface (docs/provisioner.md). The PVC lab has no
# mirror, so its tests use lab_boot.py instead; this script is exercised there only up to
# its checks and its XML.
#
# Storage template: every disk with a filesystem gets one partition with it; the disk whose
# mountpoint is "/" is the root (and gets GRUB), others are mounted at their mountpoints
# and listed in /etc/fstab.
#
# Script arguments:
#   deb_release   Debian release (default bookworm)
#   deb_mirror    mirror URL (default http://deb.debian.org/debian)
#   deb_packages  extra packages, comma-separated (default: none)

import os

import daemon_lib.ceph as pvc_ceph
import daemon_lib.common as pvc_common
import daemon_lib.libvirt_schema as libvirt_schema
from daemon_lib.vmbuilder import VMBuilder, chroot, open_zk
from pvcworkerd.Daemon import config

TARGET = "/tmp/target"
BASE_PACKAGES = ["linux-image-amd64", "grub-pc", "systemd-resolved", "openssh-server",
                 "cloud-init", "sudo"]


class VMBuilderScript(VMBuilder):
    def run(self, argv, **kw):
        retcode, stdout, stderr = pvc_common.run_os_command(argv, **kw)
        if retcode != 0:
            self.fail(f"{argv[0] if isinstance(argv, list) else argv} failed: "
                      f"{stderr.strip() or stdout.strip()}")
        return stdout

    def setup(self):
        """Tools, a root disk, the release and mirror."""
        for tool in ("debootstrap", "sfdisk", "partx", "blkid"):
            if pvc_common.run_os_command(["which", tool])[0] != 0:
                self.fail(f"{tool} is not installed on the primary node")
        roots = [v for v in self.vm_data["volumes"] if v.get("mountpoint") == "/"]
        if len(roots) != 1:
            self.fail("the storage template needs exactly one disk with mountpoint /")
        args = self.vm_data["script_arguments"]
        self.release = args.get("deb_release", "bookworm")
        self.mirror = args.get("deb_mirror", "http://deb.debian.org/debian")
        self.packages = BASE_PACKAGES + [p for p in args.get("deb_packages", "").split(",")
                                         if p]
        self.mapped = {}

    def create(self):
        """The libvirt XML: serial console, optional VNC, RBD disks, bridged NICs."""
        system = self.vm_data["system_details"]
        xml = libvirt_schema.libvirt_header.format(
            vm_name=self.vm_name, vm_uuid=self.vm_uuid, vm_description=f"Debian {self.release}",
            vm_memory=system["vram_mb"], vm_vcpus=system["vcpu_count"],
            vm_architecture=self.vm_data["system_architecture"])
        xml += libvirt_schema.devices_default
        if system.get("serial"):
            xml += libvirt_schema.devices_serial.format(vm_name=self.vm_name)
        if system.get("vnc"):
            xml += libvirt_schema.devices_vnc.format(
                vm_vnc_port=-1, vm_vnc_bind=system.get("vnc_bind") or "127.0.0.1")
        xml += libvirt_schema.devices_scsi_controller
        for volume in self.vm_data["volumes"]:
            xml += libvirt_schema.devices_disk_header.format(
                ceph_storage_secret=self.vm_data["ceph_monitor_secret"],
                disk_pool=volume["pool"], vm_name=self.vm_name, disk_id=volume["disk_id"])
            for monitor in self.vm_data["ceph_monitor_list"]:
                xml += libvirt_schema.devices_disk_coordinator.format(
                    coordinator_name=monitor,
                    coordinator_ceph_mon_port=self.vm_data["ceph_monitor_port"])
            xml += libvirt_schema.devices_disk_footer
        for index, network in enumerate(self.vm_data["networks"]):
            high, low = (self.vm_id >> 8) & 0xFF, self.vm_id & 0xFF
            xml += libvirt_schema.devices_net_interface.format(
                eth_macaddr=f"52:54:00:{high:02x}:{low:02x}:{index:02x}",
                eth_bridge=network["eth_bridge"])
        xml += libvirt_schema.libvirt_footer
        return xml

    def prepare(self):
        """Map every disk; partition, format and mount those with a filesystem."""
        with open_zk(config) as zk:
            for volume in self.vm_data["volumes"]:
                name = f"{self.vm_name}_{volume['disk_id']}"
                ok, device = pvc_ceph.map_volume(zk, volume["pool"], name)
                if not ok:
                    self.fail(f"cannot map {volume['pool']}/{name}: {device}")
                self.mapped[volume["disk_id"]] = (volume["pool"], name, device)
        ordered = sorted((v for v in self.vm_data["volumes"] if v.get("filesystem")),
                         key=lambda v: len(v.get("mountpoint") or ""))
        self.fstab = []
        for volume in ordered:
            device = self.mapped[volume["disk_id"]][2]
            # one partition from 1 MiB (room for GRUB's core image on the root disk)
            self.run(["sh", "-c", f"printf 'label: dos\\n2048,,L,*\\n' | sfdisk --quiet {device}"])
            self.run(["partx", "--update", device])
            part = f"{device}p1"
            fs = volume["filesystem"]
            mkfs = ["mkswap"] if fs == "swap" else [f"mkfs.{fs}"]
            self.run(mkfs + volume.get("filesystem_args", "").split() + [part])
            uuid = self.run(["blkid", "-s", "UUID", "-o", "value", part]).strip()
            mount = volume.get("mountpoint")
            if fs == "swap":
                self.fstab.append(f"UUID={uuid} none swap sw 0 0")
            elif mount:
                os.makedirs(TARGET + mount, exist_ok=True)
                self.run(["mount", part, TARGET + mount])
                self.fstab.append(f"UUID={uuid} {mount} {fs} defaults 0 "
                                  f"{1 if mount == '/' else 2}")
        self.root_device = next(self.mapped[v["disk_id"]][2] for v in self.vm_data["volumes"]
                                if v.get("mountpoint") == "/")

    def install(self):
        """debootstrap, then fstab, hostname, DHCP on every NIC and GRUB, in a chroot."""
        self.log_info(f"debootstrap {self.release} from {self.mirror}")
        self.run(["debootstrap", "--include=" + ",".join(self.packages), self.release,
                  TARGET, self.mirror], timeout=3600)
        with open(f"{TARGET}/etc/fstab", "w") as fh:
            fh.write("\n".join(self.fstab) + "\n")
        with open(f"{TARGET}/etc/hostname", "w") as fh:
            fh.write(self.vm_name + "\n")
        os.makedirs(f"{TARGET}/etc/systemd/network", exist_ok=True)
        with open(f"{TARGET}/etc/systemd/network/10-dhcp.network", "w") as fh:
            fh.write("[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n")
        # cloud-init finds PVC's metadata service (EC2 paths at 169.254.169.254)
        os.makedirs(f"{TARGET}/etc/cloud/cloud.cfg.d", exist_ok=True)
        with open(f"{TARGET}/etc/cloud/cloud.cfg.d/10-pvc.cfg", "w") as fh:
            fh.write("datasource_list: [ Ec2, None ]\ndatasource:\n  Ec2:\n"
                     "    strict_id: false\n    metadata_urls: [ 'http://169.254.169.254' ]\n")
        for path in ("dev", "proc", "sys"):
            self.run(["mount", "--bind", f"/{path}", f"{TARGET}/{path}"])
        try:
            with chroot(TARGET):
                self.run(["systemctl", "enable", "systemd-networkd", "systemd-resolved"])
                self.run(["grub-install", "--target=i386-pc", self.root_device])
                self.run(["sh", "-c", "echo 'GRUB_CMDLINE_LINUX=\"console=ttyS0\"' >> "
                                      "/etc/default/grub && update-grub"])
        finally:
            for path in ("sys", "proc", "dev"):
                pvc_common.run_os_command(["umount", "-l", f"{TARGET}/{path}"])
        self.log_info("Debian installed")

    def cleanup(self):
        """Unmount (deepest first) and unmap, also after a failure."""
        mounts = []
        with open("/proc/self/mounts") as fh:
            for line in fh:
                point = line.split()[1]
                if point == TARGET or point.startswith(TARGET + "/"):
                    mounts.append(point)
        for point in sorted(mounts, key=len, reverse=True):
            pvc_common.run_os_command(["umount", point])
        with open_zk(config) as zk:
            for pool, name, _device in getattr(self, "mapped", {}).values():
                pvc_ceph.unmap_volume(zk, pool, name)
