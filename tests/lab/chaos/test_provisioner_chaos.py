"""A create interrupted by the death of the primary running it: the primary is killed while
the script waits in ``install()`` with the VM's volume mapped; the next primary marks the
task failed at that stage and removes the VM and the volume it had made (the dead node's
mapping lets go of the volume once the node is fenced)."""

from __future__ import annotations

import json
import time

import pytest

from pvc_lab.chaos import as_json, ok, pvc
from tests.lab.chaos.conftest import POOL, wait_fence

pytestmark = pytest.mark.lab
HANGING = """import time

import daemon_lib.ceph as pvc_ceph
import daemon_lib.libvirt_schema as libvirt_schema
from daemon_lib.vmbuilder import VMBuilder, open_zk
from pvcworkerd.Daemon import config


class VMBuilderScript(VMBuilder):
    def create(self):
        return (libvirt_schema.libvirt_header.format(
                    vm_name=self.vm_name, vm_uuid=self.vm_uuid, vm_description="",
                    vm_memory=128, vm_vcpus=1, vm_architecture="x86_64")
                + libvirt_schema.devices_default + libvirt_schema.libvirt_footer)

    def prepare(self):
        volume = self.vm_data["volumes"][0]
        with open_zk(config) as zk:
            ok, device = pvc_ceph.map_volume(zk, volume["pool"],
                                             f"{self.vm_name}_{volume['disk_id']}")
        self.log_info(f"mapped at {device} ({ok})")

    def install(self):
        while True:                      # until the node dies
            time.sleep(1)
"""


def task(lab, task_id: str) -> dict:
    return json.loads(ok(lab, "task", "show", task_id, "-f", "json"))


def volumes(lab) -> set[str]:
    out = pvc(lab, "storage", "volume", "list", "-p", POOL, "-f", "json")
    return {v["name"] for v in json.loads(out.stdout or "[]")} if out.returncode == 0 else set()


def test_a_create_interrupted_by_the_primarys_death_is_undone(cluster, tmp_path):
    lab = cluster
    script = tmp_path / "hanging.py"
    script.write_text(HANGING)
    p = ("provisioner",)
    ok(lab, *p, "template", "system", "add", "chaos", "-u", "1", "-m", "128")
    ok(lab, *p, "template", "network", "add", "chaos")
    ok(lab, *p, "template", "storage", "add", "chaos")
    ok(lab, *p, "template", "storage", "disk", "add", "chaos", "sda", "-p", POOL, "-s", "1")
    ok(lab, *p, "script", "add", "hanging", str(script))
    ok(lab, *p, "profile", "add", "hanging", "-s", "chaos", "-n", "chaos", "-t", "chaos",
       "-x", "hanging")
    try:
        reply = ok(lab, *p, "create", "hang1", "hanging")
        task_id = reply.split("pvc task show ")[-1].strip()
        lab.wait_for(lambda: "install" in str(task(lab, task_id).get("status")), 120,
                     "the create to reach install()")
        assert "hang1_sda" in volumes(lab)
        assert as_json(lab, "vm", "info", "hang1")["state"] == "stop"
        primary = lab.primary()
        assert primary, "no primary"
        killed_at = time.time()
        lab.kill(primary)
        wait_fence(lab, primary, killed_at)
        final = lab.wait_for(lambda: (t := task(lab, task_id)).get("state") == "FAILURE" and t,
                             120, "the next primary to fail the create")
        assert "Interrupted at 'Script install()'" in final["status"], final
        lab.wait_for(lambda: pvc(lab, "vm", "info", "hang1").returncode != 0, 120,
                     "the interrupted create's VM to be removed")
        lab.wait_for(lambda: "hang1_sda" not in volumes(lab), 180,
                     "the interrupted create's volume to be removed")
        print(f"\ncreate undone {time.time() - killed_at:.1f} s after the primary was killed")
    finally:
        for args in (("profile", "remove", "hanging"), ("script", "remove", "hanging"),
                     ("template", "system", "remove", "chaos"),
                     ("template", "network", "remove", "chaos"),
                     ("template", "storage", "remove", "chaos")):
            pvc(lab, *p, *args)
