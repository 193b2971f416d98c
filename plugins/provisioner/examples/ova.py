# PVC provisioner script for `ova` profiles: a VM from an uploaded OVA appliance.
#
# `pvc provisioner ova upload NAME FILE -p POOL` converted each of the appliance's disks
# into a volume; a create from an `ova` profile copies each of them into the VM's own
# volume (<vm>_<disk id>) before this script runs, so all that is left is the VM's XML:
# the OVF's vCPUs and memory (the OVA's system template), its disks and the network
# template's NICs. Written against the provisioner script interface (docs/provisioner.md).

import daemon_lib.libvirt_schema as libvirt_schema
from daemon_lib.vmbuilder import VMBuilder


class VMBuilderScript(VMBuilder):
    def setup(self):
        if not self.vm_data.get("ova_details"):
            self.fail("this script is for ova profiles (no OVA in vm_data)")
        self.log_info(f"OVA {self.vm_data['ova_details']['name']}: "
                      f"{len(self.vm_data['volumes'])} disk(s)")

    def create(self):
        system = self.vm_data["system_details"]
        xml = libvirt_schema.libvirt_header.format(
            vm_name=self.vm_name, vm_uuid=self.vm_uuid,
            vm_description=f"from OVA {self.vm_data['ova_details']['name']}",
            vm_memory=system["vram_mb"], vm_vcpus=system["vcpu_count"],
            vm_architecture=self.vm_data["system_architecture"])
        xml += libvirt_schema.devices_default
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
