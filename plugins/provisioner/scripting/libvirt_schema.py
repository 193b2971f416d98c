"""Pieces of a libvirt domain XML that provisioner scripts fill with ``str.format`` and join.

Inside the script runner this is ``daemon_lib.libvirt_schema``. The usual order::

    libvirt_header, devices_default, [devices_serial], [devices_vnc],
    devices_scsi_controller,
    per disk: devices_disk_header, one devices_disk_coordinator per Ceph monitor,
              devices_disk_footer,
    [devices_vhostmd], per NIC: devices_net_interface, libvirt_footer

The header opens ``<domain>`` and ``<devices>``; the footer closes both. Values are put in
as given: a script that puts user text in them escapes it itself.
"""

__all__ = ["libvirt_header", "devices_default", "devices_serial", "devices_vnc",
           "devices_scsi_controller", "devices_disk_header", "devices_disk_coordinator",
           "devices_disk_footer", "devices_vhostmd", "devices_net_interface",
           "libvirt_footer"]

# {vm_name} {vm_uuid} {vm_description} {vm_memory} (MiB) {vm_vcpus} {vm_architecture}
libvirt_header = """<domain type="kvm">
  <name>{vm_name}</name>
  <uuid>{vm_uuid}</uuid>
  <description>{vm_description}</description>
  <memory unit="MiB">{vm_memory}</memory>
  <currentMemory unit="MiB">{vm_memory}</currentMemory>
  <vcpu placement="static">{vm_vcpus}</vcpu>
  <os>
    <type arch="{vm_architecture}">hvm</type>
    <boot dev="hd"/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <cpu mode="host-passthrough"/>
  <clock offset="utc"/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>restart</on_crash>
  <devices>
"""

# devices every VM gets: balloon, entropy and a tablet for the VNC pointer
devices_default = """    <memballoon model="virtio"/>
    <rng model="virtio">
      <backend model="random">/dev/urandom</backend>
    </rng>
    <controller type="usb" index="0"/>
    <input type="tablet" bus="usb"/>
"""

# {vm_name}: the serial console, logged to a file the node reads for 'pvc vm log'
devices_serial = """    <serial type="pty">
      <log file="/var/log/libvirt/{vm_name}.log" append="on"/>
    </serial>
    <console type="pty"/>
"""

# {vm_vnc_port} (-1 for a free one) {vm_vnc_bind} (the listen address)
devices_vnc = (
    '    <graphics type="vnc" port="{vm_vnc_port}" autoport="yes" listen="{vm_vnc_bind}"/>\n'
    """    <video>
      <model type="virtio"/>
    </video>
""")

devices_scsi_controller = """    <controller type="scsi" index="0" model="virtio-scsi"/>
"""

# {ceph_storage_secret} (libvirt secret UUID) {disk_pool} {vm_name} {disk_id} (sda, sdb...)
# opens the disk's <source>: the coordinator lines and the footer follow. No <auth>: PVC's
# storage plugin adds its own Ceph user and secret to a disk that has none when the VM
# starts (the secret is still accepted here, for scripts written for the original).
devices_disk_header = """    <disk type="network" device="disk">
      <driver name="qemu" type="raw" cache="writeback" discard="unmap"/>
      <target dev="{disk_id}" bus="scsi"/>
      <source protocol="rbd" name="{disk_pool}/{vm_name}_{disk_id}">
"""

# {coordinator_name} {coordinator_ceph_mon_port}: one Ceph monitor
devices_disk_coordinator = (
    '        <host name="{coordinator_name}" port="{coordinator_ceph_mon_port}"/>\n')

devices_disk_footer = """      </source>
    </disk>
"""

# the host metrics disk vhostmd publishes (only where vhostmd runs)
devices_vhostmd = """    <disk type="file" device="disk">
      <driver name="qemu" type="raw"/>
      <source file="/dev/shm/vhostmd0"/>
      <target dev="vdz" bus="virtio"/>
      <readonly/>
    </disk>
"""

# {eth_macaddr} {eth_bridge} (vmbr<vni>)
devices_net_interface = """    <interface type="bridge">
      <mac address="{eth_macaddr}"/>
      <source bridge="{eth_bridge}"/>
      <model type="virtio"/>
    </interface>
"""

libvirt_footer = """  </devices>
</domain>
"""
