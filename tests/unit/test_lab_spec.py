"""Pure logic of the lab: names, addresses, state files and generated configs."""

from __future__ import annotations

import os

import pytest

from pvc_kernel import config as node_config_mod
from pvc_lab import procs, spec
from pvc_lab.pvcnoded import node_config
from pvc_lab.services import log_tail
from pvc_lab.zookeeper import parse_mntr, parse_mode, zoo_cfg


def test_build_defaults():
    s = spec.build("pvc", state_dir="/tmp/x")
    assert [n.name for n in s.nodes] == ["hv1", "hv2", "hv3"]
    assert [n.address for n in s.nodes] == ["10.250.0.1", "10.250.0.2", "10.250.0.3"]
    assert all(n.coordinator for n in s.nodes)
    assert [n.netns for n in s.nodes] == ["pvc-hv1", "pvc-hv2", "pvc-hv3"]
    assert s.switch_netns == s.admin_netns == "pvc-sw"
    assert s.admin_address == "10.250.0.254" and s.prefixlen == 24
    assert s.zk_hosts == ["10.250.0.1:2181", "10.250.0.2:2181", "10.250.0.3:2181"]
    assert len(s.api_key) == 32


def test_build_clients_and_coordinators():
    s = spec.build("lab2", nodes=5, subnet="10.9.8.0/24")
    assert [n.name for n in s.coordinators] == ["hv1", "hv2", "hv3"]
    assert not s.node("hv5").coordinator and s.node("hv5").address == "10.9.8.5"
    assert spec.build("a", nodes=2).api_hosts == ["10.250.0.1:7370", "10.250.0.2:7370"]
    assert len(spec.build("a", nodes=4, coordinators=1).coordinators) == 1


@pytest.mark.parametrize("kwargs, text", [
    ({"nodes": 0}, "--nodes"), ({"nodes": 99}, "--nodes"),
    ({"nodes": 2, "coordinators": 3}, "--coordinators"),
    ({"coordinators": 0}, "--coordinators"),
    ({"subnet": "10.0.0.0/28"}, "/24"), ({"subnet": "nonsense"}, "invalid subnet"),
])
def test_build_rejects(kwargs, text):
    with pytest.raises(spec.SpecError, match=text):
        spec.build("pvc", **kwargs)


@pytest.mark.parametrize("name", ["", "Pvc", "pvc-x", "1abc", "a" * 13, "a b"])
def test_bad_lab_names(name):
    with pytest.raises(spec.SpecError):
        spec.check_name(name)


def test_namespace_ownership_does_not_leak_between_labs():
    assert spec.owns_netns("pvc", "pvc-sw") and spec.owns_netns("pvc", "pvc-hv12")
    assert not spec.owns_netns("pvc", "pvc_x-hv1")
    assert not spec.owns_netns("pvc", "pvc-hv1-sw")
    assert not spec.owns_netns("pvc", "pvcx-hv1")
    assert not spec.owns_netns("pvc", "other-hv1")


def test_state_file_round_trip():
    s = spec.build("pvc", nodes=4, state_dir="/tmp/pvc")
    back = spec.LabSpec.from_json(s.to_json(), "/tmp/pvc")
    assert back == s
    assert "state_dir" not in s.to_json()


@pytest.mark.parametrize("text", ["", "{}", "[1]", '{"name": "pvc", "nodes": []}',
                                  '{"name": "BAD", "nodes": [{"name": "hv1"}]}'])
def test_state_file_errors(text):
    with pytest.raises(spec.SpecError):
        spec.LabSpec.from_json(text)


def test_pvcnoded_config_is_valid_for_the_kernel():
    s = spec.build("pvc", nodes=4)
    coord = node_config_mod.parse(node_config(s, s.node("hv1")), "hv1.yaml")
    assert coord.coordinator and coord.api.enabled and coord.api.keys == [s.api_key]
    assert coord.api.listen_address == "0.0.0.0"        # its own address and the floating IP
    assert coord.plugin_sections["net_vxlan"]["floating_ips"] == ["10.250.0.253/24 eth0"]
    assert coord.zookeeper_hosts == s.zk_hosts
    assert coord.zookeeper_session_timeout == 4 and coord.keepalive_interval == 2
    other = spec.build("other", nodes=1, state_dir="/tmp/other")   # a second lab's hv1
    assert {node_config(x, x.node("hv1"))["plugins"]["net_vxlan"]["run_dir"]
            for x in (s, other)} == {s.node_dir("hv1") + "/net_vxlan", "/tmp/other/hv1/net_vxlan"}
    client = node_config_mod.parse(node_config(s, s.node("hv4")), "hv4.yaml")
    assert not client.coordinator and not client.api.enabled and client.cluster == "pvc"


def test_zoo_cfg():
    s = spec.build("pvc", nodes=4)
    text = zoo_cfg(s, s.node("hv2"), "/data")
    lines = text.splitlines()
    assert "clientPortAddress=10.250.0.2" in lines and "dataDir=/data" in lines
    assert "tickTime=1000" in lines and "admin.enableServer=false" in lines
    assert [ln for ln in lines if ln.startswith("server.")] == [
        "server.1=10.250.0.1:2888:3888", "server.2=10.250.0.2:2888:3888",
        "server.3=10.250.0.3:2888:3888"]
    single = spec.build("one", nodes=2, coordinators=1)
    assert "server." not in zoo_cfg(single, single.node("hv1"), "/d")


def test_four_letter_parsing():
    assert parse_mode("Zookeeper version: 3.8\nMode: follower\nNode count: 5\n") == "follower"
    assert parse_mode("This ZooKeeper instance is not currently serving requests\n") is None
    assert parse_mode("") is None
    assert parse_mntr("zk_version\t3.8.0\nzk_packets_received\t12\nnoise\n") == {
        "zk_version": "3.8.0", "zk_packets_received": "12"}


def test_proc_record_parsing_and_liveness():
    rec = procs.ProcRecord(pid=os.getpid(), start=procs.start_time(os.getpid()),
                           started_at=1.5, argv=("x", "y"))
    assert procs.ProcRecord.from_json(rec.to_json()) == rec
    assert procs.alive(rec.pid, rec.start)
    assert not procs.alive(rec.pid, rec.start + 1)     # a recycled PID is not ours
    for bad in ("", "{}", '{"pid": "x", "start": 1}', "[]"):
        assert procs.ProcRecord.from_json(bad) is None


def test_log_tail(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("one\n\ntwo\nthree\nfour\n")
    assert log_tail(str(log), 2) == "three | four"
    assert log_tail(str(tmp_path / "missing.log")) == ""
