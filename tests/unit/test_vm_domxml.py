"""Domain XML validation and rewrites (pvc_plugins.vm_kvm.domxml)."""

from __future__ import annotations

import pytest

from pvc_plugins.vm_kvm import domxml

UUID = "8a7e0ad9-6cf4-4b55-b1c4-2f1d0d1b8d0e"


def xml(name="vm1", uuid=UUID, memory="<memory unit='MiB'>128</memory>", vcpu="<vcpu>1</vcpu>",
        vtype="qemu", extra=""):
    return (f"<domain type='{vtype}'><name>{name}</name><uuid>{uuid}</uuid>{memory}{vcpu}"
            "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
            f"<features><acpi/></features><devices>{extra}</devices></domain>")


def test_parse_reads_the_facts():
    disk = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            "<source file='/shared/a.qcow2'/><target dev='vda' bus='virtio'/></disk>"
            "<interface type='bridge'><source bridge='vmbr100'/><mac address='52:54:00:aa:bb:cc'/>"
            "<model type='virtio'/></interface>"
            "<serial type='file'><source path='/shared/console/vm1.log'/></serial>")
    d = domxml.parse(xml(extra=disk))
    assert (d.name, d.uuid, d.memory_mib, d.vcpus, d.virt_type) == ("vm1", UUID, 128, 1, "qemu")
    assert d.arch == "x86_64" and d.machine == "pc" and d.features == ["acpi"]
    assert d.disks == [{"type": "file", "device": "disk", "source": "/shared/a.qcow2",
                        "protocol": None, "format": "qcow2", "target": "vda", "bus": "virtio"}]
    assert d.nics[0]["source"] == "vmbr100" and d.nics[0]["mac"] == "52:54:00:aa:bb:cc"
    assert d.console_log == "/shared/console/vm1.log" and d.console_type == "file"


@pytest.mark.parametrize("memory,mib", [
    ("<memory>131072</memory>", 128),                      # default unit KiB
    ("<memory unit='GiB'>2</memory>", 2048),
    ("<memory unit='bytes'>268435456</memory>", 256),
    ("<memory unit='G'>1</memory>", 1024),
])
def test_memory_units(memory, mib):
    assert domxml.parse(xml(memory=memory)).memory_mib == mib


@pytest.mark.parametrize("doc,needle", [
    ("", "empty"),
    ("<domain", "not well-formed"),
    ("<vm/>", "root element"),
    (xml(name=""), "<name> is missing"),
    (xml(name="a/b"), "invalid VM name"),
    (xml(uuid="not-a-uuid"), "not a valid UUID"),
    (xml(memory=""), "<memory> is missing"),
    (xml(memory="<memory unit='parsec'>1</memory>"), "unknown unit"),
    (xml(memory="<memory>12</memory>"), "at least 1 MiB"),
    (xml(vcpu="<vcpu>zero</vcpu>"), "must be an integer"),
    (xml(vcpu="<vcpu>0</vcpu>"), "at least 1"),
    (xml(vtype="xen"), "must be one of kvm, qemu"),
    ("<!DOCTYPE x [<!ENTITY a 'b'>]><domain/>", "not allowed"),
])
def test_invalid_documents(doc, needle):
    with pytest.raises(domxml.XmlError) as err:
        domxml.parse(doc)
    assert needle in str(err.value)


def test_for_host_downgrades_kvm_to_tcg_only_when_needed():
    doc = xml(vtype="kvm").replace("</features>",
                                   "</features><cpu mode='host-passthrough'/>")
    tcg = domxml.parse_root(domxml.for_host(doc, "qemu"))
    assert tcg.get("type") == "qemu" and tcg.find("cpu") is None
    kvm = domxml.parse_root(domxml.for_host(doc, "kvm"))
    assert kvm.get("type") == "kvm" and kvm.find("cpu") is not None
    assert domxml.parse_root(domxml.for_host(xml(), "kvm")).get("type") == "qemu"


def test_rename_and_device():
    assert domxml.parse(domxml.rename(xml(), "vm2")).name == "vm2"
    assert domxml.device("<disk type='file'/>").tag == "disk"
    with pytest.raises(domxml.XmlError):
        domxml.device("<disk")


RBD_DOMAIN = """<domain type='qemu'><name>r</name><devices>
<disk type='network' device='disk'><driver name='qemu' type='raw'/>
<source protocol='rbd' name='vms/r_disk0'/><target dev='sda' bus='scsi'/></disk>
<disk type='network' device='disk'><source protocol='rbd' name='vms/r_disk1'>
<host name='192.0.2.9' port='6789'/></source><auth username='other'>
<secret type='ceph' uuid='11111111-2222-3333-4444-555555555555'/></auth>
<target dev='sdb' bus='scsi'/></disk>
<disk type='file' device='disk'><source file='/x.img'/><target dev='vda'/></disk>
</devices></domain>"""


def test_disk_access_fills_in_only_what_is_missing():
    access = {"hosts": [{"name": "10.0.0.1", "port": "6789"}, {"name": "10.0.0.2",
                                                               "port": "6789"}],
              "username": "admin", "secret": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}
    root = domxml.parse_root(domxml.with_disk_access(
        RBD_DOMAIN, {"sda": access, "sdb": access, "vda": access}))
    sda, sdb, vda = root.findall("devices/disk")
    assert [(h.get("name"), h.get("port")) for h in sda.findall("source/host")] == \
        [("10.0.0.1", "6789"), ("10.0.0.2", "6789")]
    auth = sda.find("source/auth")
    assert auth.get("username") == "admin"
    assert auth.find("secret").attrib == {"type": "ceph", "uuid": access["secret"]}
    # the XML's own hosts and auth win
    assert [h.get("name") for h in sdb.findall("source/host")] == ["192.0.2.9"]
    assert sdb.find("source/auth") is None and sdb.find("auth").get("username") == "other"
    assert vda.find("source/host") is None and vda.find("source/auth") is None


def test_disk_access_without_secret_adds_no_auth():
    out = domxml.with_disk_access(RBD_DOMAIN, {"sda": {"hosts": [{"name": "10.0.0.1"}],
                                                       "username": None, "secret": None}})
    sda = domxml.parse_root(out).find("devices/disk")
    assert sda.find("source/auth") is None
    assert sda.find("source/host").attrib == {"name": "10.0.0.1"}
    assert domxml.with_disk_access(RBD_DOMAIN, {}) == RBD_DOMAIN
