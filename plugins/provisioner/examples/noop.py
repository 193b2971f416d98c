# PVC provisioner script: define a VM and install nothing on it.
#
# A starting point for your own scripts, and a way to get a VM whose disks you fill some
# other way (a network installer, an image you copy in later). Every stage only logs.
#
# How a provisioner script works
# ------------------------------
# The script defines a class VMBuilderScript, a subclass of VMBuilder. PVC creates the
# volumes of the profile's storage template, then calls, in this order:
#
#   setup()    check what the script needs before anything else happens
#   create()   return the VM's complete libvirt XML as a string; PVC defines the VM from it
#   prepare()  get the disks ready: map them (daemon_lib.ceph), partition, mount them
#   install()  install the guest; here the node's / is read-only and /tmp is a private,
#              empty tmpfs (mount your disks under a directory in /tmp in prepare())
#   cleanup()  undo prepare(): unmount, unmap. It also runs when an earlier stage failed.
#
# What a stage can use:
#   self.vm_name, self.vm_id (the digits the name ends in, 0 if none), self.vm_uuid (a
#   uuid.UUID), self.vm_profile, and self.vm_data, a dict with:
#     system_details      vcpu_count, vram_mb, serial, vnc, vnc_bind, node_limit, ...
#     volumes             one dict per disk: disk_id (sda...), pool, disk_size_gb,
#                         filesystem, filesystem_args, mountpoint, source_volume
#     networks            one dict per NIC: vni, eth_bridge (vmbr<vni>)
#     mac_template        the network template's MAC template, or None
#     ceph_monitor_list, ceph_monitor_port, ceph_monitor_secret   for the disks' XML
#     system_architecture (e.g. x86_64), script_arguments ({key: value} from the profile
#                         and from 'pvc provisioner create -a key=value')
#   self.log_info(msg), self.log_warn(msg), self.log_err(msg): lines in the create's log
#   self.fail(msg): log msg as an error and stop; the create fails with msg
#
# Anything the script prints is logged too. To stop with an error, call self.fail() or
# raise an exception: its text becomes the reason the create failed.

import daemon_lib.libvirt_schema as libvirt_schema
from daemon_lib.vmbuilder import VMBuilder


class VMBuilderScript(VMBuilder):
    def setup(self):
        """Nothing to check but that there is memory and a CPU to give."""
        system = self.vm_data["system_details"]
        if int(system["vcpu_count"]) < 1 or int(system["vram_mb"]) < 1:
            self.fail("the system template gives the VM no CPU or no memory")
        self.log_info(f"setup: VM {self.vm_name} (id {self.vm_id}) from profile "
                      f"{self.vm_profile}")

    def create(self):
        """The libvirt XML, put together from the templates in daemon_lib.libvirt_schema."""
        self.log_info("create: writing the VM's XML")
        data = self.vm_data
        system = data["system_details"]

        xml = libvirt_schema.libvirt_header.format(
            vm_name=self.vm_name,
            vm_uuid=self.vm_uuid,
            vm_description=f"PVC provisioner @ {self.vm_profile}, no install",
            vm_memory=system["vram_mb"],
            vm_vcpus=system["vcpu_count"],
            vm_architecture=data["system_architecture"],
        )
        xml += libvirt_schema.devices_default

        # a serial console (logged for 'pvc vm log') and/or a VNC screen
        if system.get("serial"):
            xml += libvirt_schema.devices_serial.format(vm_name=self.vm_name)
        if system.get("vnc"):
            xml += libvirt_schema.devices_vnc.format(
                vm_vnc_port="-1", vm_vnc_bind=system.get("vnc_bind") or "127.0.0.1")

        # one SCSI disk per volume, reached through every Ceph monitor
        xml += libvirt_schema.devices_scsi_controller
        for volume in data["volumes"]:
            xml += libvirt_schema.devices_disk_header.format(
                ceph_storage_secret=data["ceph_monitor_secret"],
                disk_pool=volume["pool"],
                vm_name=self.vm_name,
                disk_id=volume["disk_id"],
            )
            for monitor in data["ceph_monitor_list"]:
                xml += libvirt_schema.devices_disk_coordinator.format(
                    coordinator_name=monitor,
                    coordinator_ceph_mon_port=data["ceph_monitor_port"],
                )
            xml += libvirt_schema.devices_disk_footer

        # one virtio NIC per network, on the network's bridge. The MAC is made from the
        # VM's UUID and the NIC's place, so it is the same every time the XML is made
        # (a script that wants the network template's mac_template can use it here).
        for index, network in enumerate(data["networks"]):
            tail = self.vm_uuid.bytes[-2:]
            mac = f"52:54:00:{tail[0]:02x}:{tail[1]:02x}:{index & 0xFF:02x}"
            xml += libvirt_schema.devices_net_interface.format(
                eth_macaddr=mac, eth_bridge=network["eth_bridge"])

        xml += libvirt_schema.libvirt_footer
        return xml

    def prepare(self):
        """Nothing to map or mount."""
        self.log_info(f"prepare: {len(self.vm_data['volumes'])} volume(s), left as they are")

    def install(self):
        """Nothing to install."""
        self.log_info("install: nothing to install")

    def cleanup(self):
        """Nothing to undo."""
        self.log_info("cleanup: nothing to undo")
