"""The lab's simulated BMCs, driven the way an administrator and the fencing plugin drive a
real one: ``ipmitool -I lanplus`` from the admin namespace and the plugin's in-process pyghmi
client from a coordinator's namespace. Power off really kills every process of the node;
power on starts them again.

A small lab of its own (``pvcbmc``: one coordinator hv1 + one client hv2, ZooKeeper and
pvcnoded only), so these checks stay cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from pvc_lab import netns
from pvc_lab.bmc import USER, BmcService, address, password
from pvc_plugins.fencing_ipmi.ipmi import BmcError

pytestmark = pytest.mark.lab
LAB_NAME = os.environ.get("PVC_TEST_BMC_LAB_NAME", "pvcbmc")


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab tests need root (they create network namespaces)")
    if shutil.which("ipmitool") is None:
        pytest.skip("ipmitool is missing (run scripts/bootstrap.sh)")
    from pvc_lab import Lab
    from pvc_lab.pvcnoded import NodeDaemon
    from pvc_lab.zookeeper import ZooKeeper
    from pvc_lab.zookeeper import available as zookeeper_problem

    if zookeeper_problem():
        pytest.skip(zookeeper_problem())
    the_lab = Lab(name=LAB_NAME, services=[ZooKeeper(), NodeDaemon(), BmcService()])
    the_lab.down(grace=0, quiet=True)
    try:
        the_lab.up(nodes=2, coordinators=1, timeout=90, options={"bmc": True})
        yield the_lab
    finally:
        the_lab.down(grace=2)


def ipmitool(lab, node: str, *args: str, secret: str | None = None) -> str:
    """ipmitool in the admin namespace; the password goes through the environment (-E)."""
    env = dict(os.environ, IPMI_PASSWORD=secret if secret is not None else password(lab.spec))
    out = subprocess.run(["ip", "netns", "exec", lab.admin_netns, "ipmitool", "-I", "lanplus",
                          "-C", "3", "-U", USER, "-E", "-N", "1", "-R", "2",
                          "-H", address(lab.spec, lab.node(node)), *args],
                         capture_output=True, text=True, env=env, timeout=30)
    return (out.stdout + out.stderr).strip()


PLUGIN_CALL = """
import json, os, sys
from pvc_plugins.fencing_ipmi.ipmi import BmcAccess, BmcError, IpmiClient
c = IpmiClient(BmcAccess(sys.argv[1], sys.argv[2], os.environ["IPMI_PASSWORD"]), timeout=8)
try:
    print(json.dumps({"value": getattr(c, sys.argv[3])()}))
except BmcError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def plugin_call(lab, node: str, method: str, via: str = "hv1", secret: str | None = None):
    """The fencing plugin's IpmiClient, run in a process of node ``via``'s namespace as
    pvcnoded runs it there. (Not in this test process: pyghmi keeps one global socket pool,
    whose sockets stay in whichever namespace first created them.)"""
    env = dict(os.environ, IPMI_PASSWORD=secret if secret is not None else password(lab.spec))
    out = subprocess.run(["ip", "netns", "exec", lab.node(via).netns, sys.executable, "-c",
                          PLUGIN_CALL, address(lab.spec, lab.node(node)), USER, method],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    if "error" in answer:
        raise BmcError(answer["error"])
    return answer["value"]


def test_bmc_power_cycle_kills_and_restarts_the_node(lab):
    victim, fencer = "hv2", "hv1"
    ns = lab.node(victim).netns
    assert ipmitool(lab, victim, "chassis", "power", "status") == "Chassis Power is on"
    assert plugin_call(lab, victim, "power_state", via=fencer) == "on"
    pids = netns.pids(ns)
    assert pids, "the node runs nothing?"

    t0 = time.monotonic()
    plugin_call(lab, victim, "power_off", via=fencer)    # the fencing plugin's way
    print(f"power off through pyghmi: {time.monotonic() - t0:.2f} s")
    assert netns.pids(ns) == []
    assert lab.service("pvcnoded").record(lab.spec, lab.node(victim)) is None
    assert plugin_call(lab, victim, "power_state", via=fencer) == "off"
    assert ipmitool(lab, victim, "chassis", "power", "status") == "Chassis Power is off"

    since = time.time()
    assert "Up/On" in ipmitool(lab, victim, "chassis", "power", "on")
    assert ipmitool(lab, victim, "chassis", "power", "status") == "Chassis Power is on"
    lab.wait_for(lambda: lab.node_state(victim)["daemon_state"] == "run"
                 and (lab.node_state(victim)["keepalive"] or 0) > since, 60,
                 f"{victim}'s pvcnoded to run again after power on")
    assert netns.pids(ns)
    with open(os.path.join(lab.spec.node_dir(victim), "bmc-actions.log")) as fh:
        actions = fh.read()
    assert " off " in actions and " on " in actions
    assert password(lab.spec) not in actions


def test_bmc_refuses_a_wrong_password(lab):
    out = ipmitool(lab, "hv2", "chassis", "power", "status", secret="wrong-password")
    assert "Chassis Power" not in out
    with pytest.raises(BmcError) as err:
        plugin_call(lab, "hv2", "power_state", secret="wrong-password")
    assert "wrong-password" not in str(err.value)


def test_node_kill_spares_the_bmc_and_a_cut_bmc_is_unreachable(lab):
    """``lab kill`` (a death the BMC did not cause) leaves the BMC answering: it reports the
    hung node powered on; a cut BMC does not answer; restore brings both back."""
    svc = lab.service("bmc")
    lab.kill("hv2")
    assert ipmitool(lab, "hv2", "chassis", "power", "status") == "Chassis Power is on"
    assert svc.cut(lab, "hv2") is not None
    check = plugin_call(lab, "hv2", "check")
    assert check["reachable"] is False and check["error"]
    lab.restore(timeout=60)
    assert ipmitool(lab, "hv2", "chassis", "power", "status") == "Chassis Power is on"
