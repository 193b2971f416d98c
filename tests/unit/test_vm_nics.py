"""VM NICs against the networks the network plugins describe (``vm_kvm.nics``, the
``pvc_network_devices`` / ``pvc_network_users`` hooks of net_bridged and vm_kvm), with a
real plugin host and a fake store."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pvc_kernel.plugins import PluginHost
from pvc_plugins.net_bridged import attach
from pvc_plugins.net_bridged.plugin import NetBridgedPlugin
from pvc_plugins.vm_kvm import domxml, nics
from pvc_plugins.vm_kvm.errors import VmError
from pvc_plugins.vm_kvm.plugin import VmKvmPlugin
from tests.unit.test_net_agent import FakeStore


def xml(name: str, *bridges: str) -> str:
    ifaces = "".join(f"<interface type='bridge'><source bridge='{b}'/>"
                     f"<mac address='52:54:00:00:00:0{i}'/></interface>"
                     for i, b in enumerate(bridges))
    return (f"<domain type='qemu'><name>{name}</name>"
            "<uuid>11111111-2222-3333-4444-555555555555</uuid><memory unit='MiB'>64</memory>"
            f"<vcpu>1</vcpu><os><type>hvm</type></os><devices>{ifaces}</devices></domain>")


@pytest.fixture
def host() -> PluginHost:
    h = PluginHost()
    h.register(NetBridgedPlugin, "net_bridged")
    h.register(VmKvmPlugin, "vm_kvm")
    return h


@pytest.fixture
def store() -> FakeStore:
    s = FakeStore()
    s.put("network", {"description": "office", "nettype": "managed"}, vni=100)
    s.put("network.node", {"state": "up"}, vni=100, node="hv1")
    s.put("network.node", {"state": "error", "error": "no cluster_device"}, vni=100,
          node="hv2")
    s.put("network.lease", {"mac": "52:54:00:00:00:00", "ip4": "10.100.0.150"}, vni=100,
          mac="52:54:00:00:00:00")
    return s


def test_a_network_bridge_is_described_and_other_bridges_are_left_alone(host, store):
    found = nics.describe(host, store, ["vmbr100", "vmbr7", "br-admin"])
    assert set(found) == {"vmbr100", "vmbr7"}
    assert found["vmbr100"]["network"] == "office" and found["vmbr100"]["nodes"] == ["hv1"]
    assert found["vmbr100"]["error"] is None
    assert found["vmbr100"]["leases"] == {"52:54:00:00:00:00": "10.100.0.150"}
    assert "no network has VNI 7" in found["vmbr7"]["error"]


def test_a_nic_on_a_missing_network_is_refused_naming_it(host, store):
    nics.refuse_unusable(host, store, domxml.parse(xml("web", "vmbr100", "br-admin")))
    with pytest.raises(VmError) as err:
        nics.refuse_unusable(host, store, domxml.parse(xml("web", "vmbr100", "vmbr7")))
    assert err.value.status == 400 and "vmbr7" in str(err.value)


def test_nodes_without_the_bridge_up_are_no_targets(host, store):
    devs = nics.devices(domxml.parse(xml("web", "vmbr100", "vmbr100", "br-admin")))
    assert devs == ["vmbr100", "br-admin"]
    assert nics.nodes_without(host, store, devs, ["hv1", "hv2", "hv3"]) == {"hv2", "hv3"}
    assert nics.nodes_without(host, store, ["br-admin"], ["hv1", "hv2"]) == set()
    assert nics.nodes_without(None, store, devs, ["hv2"]) == set()   # nothing to ask


def test_lookup_asks_once_per_device():
    calls = []

    class Host:
        def call_each(self, hook, obj="", **kw):
            calls.append(kw["devices"])
            return [("net", {d: {"nodes": [], "leases": {}} for d in kw["devices"]})]

    look = nics.Lookup(Host(), None)
    look(["vmbr1", "vmbr2"])
    look(["vmbr2", "vmbr3"])
    assert calls == [["vmbr1", "vmbr2"], ["vmbr3"]]


def test_users_name_the_vms_on_a_network():
    recs = [SimpleNamespace(name="a", xml=xml("a", "vmbr100")),
            SimpleNamespace(name="b", xml=xml("b", "vmbr200", "vmbr100")),
            SimpleNamespace(name="c", xml="not xml")]
    assert nics.users(recs, ["vmbr100"]) == {"vmbr100": ["a", "b"]}
    assert nics.users(recs, ["vmbr9"]) == {}


def test_network_users_reach_the_network_plugin_through_the_hook(store):
    class Users:
        from pvc_kernel.sdk import hookimpl

        @hookimpl
        def pvc_network_users(self, store, devices):
            return {"vmbr100": ["web"]} if "vmbr100" in devices else {}

    h = PluginHost()
    h.register(NetBridgedPlugin, "net_bridged")
    h.register(Users, "users")
    assert attach.users(h, store, 100) == ["web"]
    assert attach.users(h, store, 200) == []
