"""The lab tool itself: the ``pvc-lab`` CLI an administrator uses, isolation, namespaces."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from pvc_lab import admin_namespace, enter_admin_namespace
from pvc_lab.spec import ZK_CLIENT_PORT

pytestmark = pytest.mark.lab

PVC_LAB = os.path.join(os.path.dirname(sys.executable), "pvc-lab")


def pvc_lab(lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PVC_LAB, "--name", lab.name, *args], capture_output=True, text=True,
                          timeout=60)


def test_status_json_shows_every_node(healthy):
    proc = pvc_lab(healthy, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout)
    assert [n["name"] for n in st["nodes"]] == healthy.nodes
    assert st["primary"] in healthy.coordinators
    assert st["zookeeper"]["leader"] in healthy.coordinators
    for n in st["nodes"]:
        assert n["daemon_state"] == "run" and n["link"] == "up"
        assert n["services"]["pvcnoded"]["running"]
        if n["coordinator"]:
            assert n["services"]["zookeeper"]["mode"] in ("leader", "follower")


def test_cli_commands(healthy):
    leader = pvc_lab(healthy, "zk-leader")
    assert leader.returncode == 0 and leader.stdout.split()[0] == healthy.zk_leader()
    addr = pvc_lab(healthy, "exec", "hv2", "ip", "-br", "addr", "show", "eth0")
    assert addr.returncode == 0 and healthy.addresses["hv2"] + "/24" in addr.stdout
    env = pvc_lab(healthy, "env")
    assert f"export PVC_API_KEY={healthy.api_key}" in env.stdout
    assert "PVC_API_HOSTS=" + ",".join(healthy.api_hosts) in env.stdout
    admin = pvc_lab(healthy, "admin", "sh", "-c", "echo $PVC_API_HOSTS; ip -br addr show br0")
    assert admin.returncode == 0 and healthy.admin_address in admin.stdout


def test_cli_errors_are_one_line(healthy):
    proc = subprocess.run([PVC_LAB, "--name", "nosuchlab", "status"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr == "pvc-lab: no lab named nosuchlab is up\n"
    proc = pvc_lab(healthy, "kill", "hv99")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"pvc-lab: lab {healthy.name} has no node 'hv99'")
    proc = pvc_lab(healthy, "up")
    assert proc.returncode == 1 and "already up" in proc.stderr


def test_nothing_in_the_root_namespace(healthy):
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    for a in [*healthy.addresses.values(), healthy.admin_address]:
        assert f" {a}/" not in addrs
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "br0" not in links
    listening = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    for a in healthy.addresses.values():
        assert f"{a}:" not in listening


def test_a_thread_can_enter_the_admin_namespace(healthy):
    before = os.stat("/proc/thread-self/ns/net").st_ino
    result = {}

    def work():
        restore = enter_admin_namespace(healthy)
        try:
            with socket.create_connection((healthy.addresses["hv3"], ZK_CLIENT_PORT), 2) as s:
                s.sendall(b"ruok")
                result["reply"] = s.recv(16)
        finally:
            restore()
        result["after"] = os.stat("/proc/thread-self/ns/net").st_ino

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert result == {"reply": b"imok", "after": before}
    with admin_namespace(healthy):
        assert os.stat("/proc/thread-self/ns/net").st_ino != before
    assert os.stat("/proc/thread-self/ns/net").st_ino == before


def test_down_cleans_up_after_the_lab_tool_crashed():
    """`pvc-lab up` SIGKILLed half-way: a later `down` finds everything from the state
    directory alone and removes every namespace and process."""
    import signal
    import time

    from pvc_lab import Lab, netns, procs
    from pvc_lab.spec import owns_netns

    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = "pvccrash"
    lab = Lab(name=name)
    lab.down(grace=0, quiet=True)
    up = subprocess.Popen([PVC_LAB, "--name", name, "up", "--nodes", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(
                os.path.basename(p).startswith("pvcnoded") for p, _ in lab._pid_files()):
            time.sleep(0.2)
        records = lab._pid_files()
        assert records, "pvc-lab up started nothing within 90 s"
    finally:
        up.send_signal(signal.SIGKILL)    # the lab tool crashes; its children live on
        up.wait()
    owned = [ns for ns in netns.names() if owns_netns(name, ns)]
    assert owned and any(procs.alive(r.pid, r.start) for _, r in records)
    proc = subprocess.run([PVC_LAB, "--name", name, "down"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not [ns for ns in netns.names() if owns_netns(name, ns)]
    assert not [r.pid for _, r in records if procs.alive(r.pid, r.start)]
    assert not Lab(name=name)._pid_files()
