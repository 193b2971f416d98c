# PVC provisioner script: a small bootable Linux on the VM's first disk, from a kernel and
# an initramfs that exist on the primary node (the PVC lab's guest, or any pair you trust).
#
# It needs no network mirror: the disk gets a FAT file system, SYSLINUX, the kernel and the
# initramfs, and the BIOS boots it. It is written against the provisioner script interface
# (docs/provisioner.md), the same one scripts for the original PVC use.
#
# Script arguments (profile `-a key=value` or `pvc provisioner create -a key=value`):
#   kernel   path of a bzImage on the primary node            (required)
#   initrd   path of an initramfs on the primary node         (required)
#   cmdline  extra kernel command line (default "dhcp=1")
#
# The storage template needs one disk (sda or vda, any size >= 64 MB) with no filesystem:
# this script makes its own.

import os

import daemon_lib.ceph as pvc_ceph
import daemon_lib.common as pvc_common
import daemon_lib.libvirt_schema as libvirt_schema
from daemon_lib.vmbuilder import VMBuilder, open_zk
from pvcworkerd.Daemon import config


class VMBuilderScript(VMBuilder):
    def setup(self):
        """Check the arguments and the tools before anything is touched."""
        args = self.vm_data["script_arguments"]
        for key in ("kernel", "initrd"):
            if not os.path.isfile(args.get(key, "")):
                self.fail(f"script argument {key}= must name a file on the primary node")
        for tool in ("mkfs.fat", "syslinux", "mcopy"):
            retcode, _, _ = pvc_common.run_os_command(["which", tool])
            if retcode != 0:
                self.fail(f"{tool} is not installed on the primary node")
        if not self.vm_data["volumes"]:
            self.fail("the storage template has no disk to install on")

    def create(self):
        """The libvirt XML: memory, CPUs, a serial console, the disks and the NICs."""
        system = self.vm_data["system_details"]
        xml = libvirt_schema.libvirt_header.format(
            vm_name=self.vm_name, vm_uuid=self.vm_uuid, vm_description="lab boot disk",
            vm_memory=system["vram_mb"], vm_vcpus=system["vcpu_count"],
            vm_architecture=self.vm_data["system_architecture"])
        xml += libvirt_schema.devices_default
        xml += libvirt_schema.devices_serial.format(vm_name=self.vm_name)
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
            mac = f"52:54:00:{high:02x}:{low:02x}:{index:02x}"
            xml += libvirt_schema.devices_net_interface.format(
                eth_macaddr=mac, eth_bridge=network["eth_bridge"])
        xml += libvirt_schema.libvirt_footer
        return xml

    def prepare(self):
        """Map the first disk to a block device on this node."""
        first = self.vm_data["volumes"][0]
        self.volume = (first["pool"], f"{self.vm_name}_{first['disk_id']}")
        with open_zk(config) as zkhandler:
            ok, device = pvc_ceph.map_volume(zkhandler, *self.volume)
        if not ok:
            self.fail(f"cannot map {self.volume[0]}/{self.volume[1]}: {device}")
        self.device = device
        self.log_info(f"mapped {self.volume[0]}/{self.volume[1]} at {device}")

    def install(self):
        """FAT file system, SYSLINUX, kernel, initramfs and its configuration."""
        args = self.vm_data["script_arguments"]
        cmdline = args.get("cmdline", "dhcp=1")
        for argv in (["mkfs.fat", "-F", "16", "-n", "PVCBOOT", self.device],
                     ["syslinux", "--install", self.device]):
            retcode, stdout, stderr = pvc_common.run_os_command(argv)
            if retcode != 0:
                self.fail(f"{argv[0]} failed: {stderr.strip() or stdout.strip()}")
        cfg = "/tmp/syslinux.cfg"
        with open(cfg, "w") as fh:
            fh.write("DEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL vmlinuz\n"
                     f"  APPEND initrd=initrd.gz console=ttyS0 panic=-1 {cmdline}\n")
        for source, name in ((args["kernel"], "vmlinuz"), (args["initrd"], "initrd.gz"),
                             (cfg, "syslinux.cfg")):
            retcode, _, stderr = pvc_common.run_os_command(
                ["mcopy", "-o", "-i", self.device, source, f"::{name}"],
                environment={"MTOOLS_SKIP_CHECK": "1", "PATH": os.environ.get("PATH", "")})
            if retcode != 0:
                self.fail(f"copying {name} failed: {stderr.strip()}")
        self.log_info(f"installed a bootable disk ({cmdline})")

    def cleanup(self):
        """Unmap the disk (also after a failure)."""
        if getattr(self, "device", None):
            with open_zk(config) as zkhandler:
                pvc_ceph.unmap_volume(zkhandler, *self.volume)
            self.device = None
