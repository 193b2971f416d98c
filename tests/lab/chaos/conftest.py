"""The chaos suite's one lab, shared by every module of this package (``pvcchaos``).

hv1-hv3 are coordinators with a ZooKeeper server and a Ceph monitor each, hv4 a
hypervisor-only node; every node has an OSD and a BMC. Cases that kill a node pick hv4 by
default, so a victim and a coordinator can die together without costing the ZooKeeper or
monitor quorum. The lab name and subnet can be changed (``PVC_TEST_CHAOS_LAB_NAME``,
``PVC_TEST_CHAOS_SUBNET``) to run beside another lab.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pvc_lab.chaos import as_json, fence_record, ok, pvc

LAB_NAME = os.environ.get("PVC_TEST_CHAOS_LAB_NAME", "pvcchaos")
SUBNET = os.environ.get("PVC_TEST_CHAOS_SUBNET", "10.250.0.0/24")
VICTIM = "hv4"
POOL = "chaos"
FENCE_TIMEOUT = 60
PATTERN = b"pvc-chaos-data " * 64            # written at 1 MiB into each volume before the kill
PATTERN_AT = 1 << 20


@pytest.fixture(scope="package")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab tests need root (they create network namespaces)")
    from pvc_lab import Lab
    from pvc_lab.ceph import available as ceph_problem
    from pvc_lab.libvirt import available as libvirt_problem
    from pvc_lab.zookeeper import available as zookeeper_problem

    why = zookeeper_problem() or ceph_problem() or libvirt_problem()
    if why:
        pytest.skip(why)
    the_lab = Lab(name=LAB_NAME)
    the_lab.down(grace=0, quiet=True)
    try:
        the_lab.up(nodes=4, coordinators=3, timeout=300, subnet=SUBNET,
                   options={"storage": True, "ceph_mons": "all", "bmc": True})
        the_lab.wait_for(lambda: "HEALTH_OK" in pvc(the_lab, "storage", "status").stdout, 120,
                         "Ceph to report to the primary")
        ok(the_lab, "storage", "pool", "add", POOL, "32", "--replcfg", "copies=3,mincopies=2")
        yield the_lab
    finally:
        if not os.environ.get("PVC_TEST_LAB_KEEP"):
            the_lab.down(grace=2)


@pytest.fixture
def cluster(lab, tmp_path):
    """A whole lab before and after each case: stray VMs removed, every node ready."""
    yield lab
    lab.restore(timeout=120)
    for vm in as_json(lab, "vm", "list") or []:
        pvc(lab, "vm", "undefine", vm["name"], "--yes")
    for node in lab.nodes:
        if lab.store().get("node.domain_state", node=node) != "ready":
            ok(lab, "node", "ready", node, "--wait", timeout=120)


def wait_fence(lab, node: str, since: float, step: str = "done") -> dict:
    """The fence record of ``node`` declared after ``since``, once it reached ``step``."""
    return lab.wait_for(lambda: (r := fence_record(lab, node)).get("declared", 0) > since
                        and (r["step"] == step or step == "any") and r,
                        FENCE_TIMEOUT, f"the fence of {node} to reach {step}")


def rbd(lab, node: str, *args: str, **kw) -> subprocess.CompletedProcess:
    from pvc_lab.ceph import lab_site

    conf = lab_site(lab.spec, lab.spec.node(node)).conf
    return lab.exec(node, ["rbd", "-c", conf, *args], capture_output=True, timeout=120, **kw)


def write_pattern(lab, volume: str) -> None:
    from pvc_lab.ceph import lab_site

    conf = lab_site(lab.spec, lab.spec.node("hv1")).conf
    code = ("import sys, rados, rbd\nc = rados.Rados(conffile=sys.argv[1]); c.connect()\n"
            "io = c.open_ioctx(sys.argv[2])\nwith rbd.Image(io, sys.argv[3]) as img:\n"
            f"    img.write({PATTERN!r}, {PATTERN_AT})\nio.close(); c.shutdown()\n")
    out = lab.exec("hv1", [sys.executable, "-c", code, conf, POOL, volume],
                   capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def read_back(lab, volume: str) -> tuple[bytes, bytes]:
    """(first sector, the pattern's place) of a volume."""
    data = rbd(lab, "hv1", "export", f"{POOL}/{volume}", "-").stdout
    return data[:512], data[PATTERN_AT:PATTERN_AT + len(PATTERN)]
