"""``pvc_vm_volumes`` against a real ZooKeeper: a VM's identity, states and network volumes
for the plugins that copy VMs (snapshots, backups)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pvc_plugins.vm_kvm import keys
from pvc_plugins.vm_kvm.plugin import VmKvmPlugin
from tests.integration.test_fencing_recovery import CDROM, RBD_DISK, add_node, add_vm

pytestmark = pytest.mark.integration


def test_a_vm_with_two_rbd_disks_and_a_cdrom(store):
    add_node(store, "hv1", 4096)
    extra = RBD_DISK.format(name="web1", dev="a") + CDROM + \
        RBD_DISK.format(name="web1_data", dev="b")
    uuid = add_vm(store, "web1", "hv1", running_on="hv1", extra=extra)
    daemon = SimpleNamespace(store=store)
    plugin = VmKvmPlugin()
    found = plugin.pvc_vm_volumes(daemon, "web1")
    assert found["uuid"] == uuid and found["name"] == "web1" and found["node"] == "hv1"
    assert found["state"] == keys.START and found["running_on"] == "hv1"
    assert found["volumes"] == ["vms/web1", "vms/web1_data"]
    assert "<name>web1</name>" in found["xml"]
    assert plugin.pvc_vm_volumes(daemon, uuid)["name"] == "web1"
    assert plugin.pvc_vm_volumes(daemon, "nothere") is None
    assert plugin.pvc_vm_volumes(daemon, "../bad") is None
