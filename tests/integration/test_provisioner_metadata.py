"""The metadata service against a real ZooKeeper and real HTTP: a request is answered for
the VM its source address is leased (or reserved) to, from the profile it was made from; a
source no VM has gets 404, never another VM's data. (Its address on the managed networks'
gateways and a guest fetching and running its user data: tests/lab/test_provisioner_lab.py.)"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from pvc_kernel.plugins import PluginHost
from pvc_kernel.sdk import hookimpl
from pvc_plugins.net_bridged.plugin import NetBridgedPlugin
from pvc_plugins.provisioner import metadata
from pvc_plugins.provisioner.plugin import ProvisionerPlugin

pytestmark = pytest.mark.integration
MAC = "52:54:00:0a:0b:0c"


class Vms:
    """The VM plugin's answer for one NIC (the hook's own test runs on the lab)."""

    @hookimpl
    def pvc_vm_by_mac(self, mac: str) -> dict | None:
        return {"uuid": "1234-uuid", "name": "web1", "node": "hv1", "profile": "web"} \
            if mac == MAC else None


class Daemon:
    def __init__(self, store) -> None:
        host = PluginHost()
        host.register(ProvisionerPlugin, "provisioner")      # their ZooKeeper keys
        host.register(NetBridgedPlugin, "net_bridged")
        host.register(Vms(), "vms")
        self.store, self.plugins, self.node = store, host, "hv1"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def service(store):
    daemon = Daemon(store)
    store.set("provisioner.object", json.dumps({"id": 1, "name": "web", "type": "provisioner",
                                                "userdata": "init"}),
              kind="profile", obj="web")
    store.set("provisioner.object", json.dumps({"id": 1, "name": "init",
                                                "userdata": "#!/bin/sh\necho hi\n"}),
              kind="userdata", obj="init")
    port = _port()
    svc = metadata.MetadataService(daemon, "127.0.0.1", port)
    svc.start()
    yield port
    svc.stop()


def test_a_vm_gets_its_own_data_and_an_unknown_source_none(store, service):
    port = service
    assert get(port, "/latest/user-data")[0] == 404           # no lease for 127.0.0.1 yet
    store.set("network.lease", json.dumps({"mac": MAC, "ip4": "127.0.0.1", "expiry": 0}),
              vni="150", mac=MAC)
    assert get(port, "/latest/user-data") == (200, "#!/bin/sh\necho hi\n")
    assert get(port, "/latest/meta-data/instance-id") == (200, "1234-uuid")
    assert get(port, "/2009-04-04/meta-data/local-hostname") == (200, "web1")
    assert get(port, "/latest/meta-data/profile") == (200, "web")
    assert "instance-id" in get(port, "/latest/meta-data")[1]
    assert get(port, "/latest/meta-data/nope")[0] == 404
    assert get(port, "/latest/secrets")[0] == 404

    store.set("network.lease", json.dumps({"mac": "52:54:00:ff:ff:ff", "ip4": "127.0.0.1"}),
              vni="150", mac=MAC)                           # now leased to a NIC of no VM
    assert get(port, "/latest/user-data")[0] == 404
    store.delete("network.lease", vni="150", mac=MAC)
    store.set("network.reservation", json.dumps({"mac": MAC, "ip4": "127.0.0.1"}),
              vni="150", mac=MAC)                           # a DHCP reservation counts too
    assert get(port, "/latest/meta-data/name") == (200, "web1")
    store.set("provisioner.object", json.dumps({"id": 1, "name": "web", "type": "provisioner",
                                                "userdata": None}), kind="profile", obj="web")
    assert get(port, "/latest/user-data")[0] == 404         # a profile without user data
