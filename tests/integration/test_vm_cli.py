"""`pvc vm` end to end: the real CLI (in process) over HTTP to the real API (waitress, as
pvcapid serves it) against real libvirtd + pvcnoded nodes; effects are read from libvirt.

Each node namespace gets a bridge ``brvm`` for NIC hot-plug tests.
"""

from __future__ import annotations

import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner, Result

from pvc_api.app import create_app
from pvc_api.server import create_server
from pvc_cli.main import cli
from pvc_kernel.config import ApiConfig, NodeConfig
from pvc_kernel.plugins import PluginHost
from pvc_lab import netns
from pvc_plugins.vm_kvm import keys
from pvc_plugins.vm_kvm.plugin import VmKvmPlugin as vm_plugin
from tests.integration import test_vm_support as support
from tests.support import apiserver
from tests.support.daemons import wait_for
from tests.unit.test_cli_support import ENV_VARS

pytestmark = pytest.mark.integration
vmcluster = support.vmcluster

KEY = "test-vm-cli-key"
BRIDGE = "brvm"
Pvc = Callable[..., Result]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pvc(vmcluster, tmp_path_factory) -> Iterator[Pvc]:
    """``pvc(*args)`` runs the CLI against a real API server on 127.0.0.1."""
    for n in vmcluster.nodes.nodes:
        netns.ip("-n", n.netns, "link", "add", BRIDGE, "type", "bridge")
        netns.ip("-n", n.netns, "link", "set", BRIDGE, "up")
    host = PluginHost()
    host.register(vm_plugin, "vm_kvm")
    cfg = NodeConfig(node="hv1", cluster="vmtest", zookeeper_hosts=[vmcluster.store.hosts],
                     api=ApiConfig(keys=[KEY], wait_timeout=120, port=_free_port(),
                                   threads=4))
    api = create_app(vmcluster.store, cfg, host)
    server = create_server(api, cfg)
    thread = threading.Thread(target=server.run, name="pvcapid", daemon=True)
    thread.start()
    mp = pytest.MonkeyPatch()
    for var in ENV_VARS:
        mp.delenv(var, raising=False)
    mp.setenv("PVC_CLI_CONFIG", str(tmp_path_factory.mktemp("pvc") / "pvc.json"))
    mp.setenv("PVC_API_HOSTS", f"127.0.0.1:{cfg.api.port}")
    mp.setenv("PVC_API_KEY", KEY)

    def run(*args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(cli, list(args))
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
        return result

    try:
        wait_for(lambda: run("vm", "list", ok=False).exit_code == 0, 20, 0.2, "the API")
        yield run
    finally:
        mp.undo()
        api.stopping.set()
        apiserver.stop(server, thread)


def live(c, node: str, name: str) -> tuple[int, ET.Element]:
    """(libvirt domain id, live domain XML) of the running domain ``name`` on ``node``."""
    import libvirt

    conn = libvirt.open(c.nodes.uri(node))
    try:
        dom = conn.lookupByName(name)
        return dom.ID(), ET.fromstring(dom.XMLDesc(0))
    finally:
        conn.close()


def live_vcpus_mib(root: ET.Element) -> tuple[int, int]:
    mem = root.find("memory")
    assert mem is not None and mem.get("unit") == "KiB"
    return int(root.findtext("vcpu") or 0), int(mem.text or 0) // 1024


def nics(root: ET.Element) -> list[tuple[str | None, str | None]]:
    """(bridge, mac) of each <interface>."""
    return [(i.find("source").get("bridge"), i.find("mac").get("address"))  # type: ignore[union-attr]
            for i in root.findall("devices/interface")]


def define_and_start(c, pvc: Pvc, tmp_path, name: str, *extra: str) -> str:
    f = tmp_path / f"{name}.xml"
    f.write_text(c.xml(name))
    assert "Added new VM" in pvc("vm", "define", str(f), "-t", "hv1", *extra).stdout
    pvc("vm", "start", name, "--wait")
    c.wait_booted(name)
    return str(f)


def test_cold_edits_modify_restart_and_nic_hotplug(vmcluster, pvc, tmp_path):
    """vcpu/memory set change only the stored XML; modify --restart applies it; dump gives
    the stored XML; network add/remove --live change the running domain at once."""
    c = vmcluster
    define_and_start(c, pvc, tmp_path, "cli1")
    first_id, root = live(c, "hv1", "cli1")
    assert live_vcpus_mib(root) == (1, 128)

    assert "Modified VM 'cli1'." in pvc("vm", "vcpu", "set", "cli1", "2").stdout
    assert "Modified VM 'cli1'." in pvc("vm", "memory", "set", "cli1", "160").stdout
    assert pvc("vm", "vcpu", "get", "cli1").stdout.strip() == "2"
    assert pvc("vm", "memory", "get", "cli1").stdout.strip() == "160M"
    stored = ET.fromstring(pvc("vm", "dump", "cli1").stdout)
    assert stored.findtext("name") == "cli1" and stored.findtext("vcpu") == "2"
    assert stored.findtext("memory") == "160" and stored.find("memory").get("unit") == "MiB"
    assert stored.findtext("uuid") == c.record("cli1").uuid
    dom_id, root = live(c, "hv1", "cli1")
    assert dom_id == first_id and live_vcpus_mib(root) == (1, 128), "changed while running"

    ET.SubElement(stored, "description").text = "edited by pvc vm modify"
    edited = tmp_path / "cli1-edited.xml"
    edited.write_text(ET.tostring(stored, encoding="unicode"))
    out = pvc("vm", "modify", "cli1", str(edited), "--restart").stdout
    assert out.strip() == "Modified VM 'cli1'. Restarting it."
    c.wait_booted("cli1", count=2)
    wait_for(lambda: (r := c.record("cli1")).state == keys.START and r.running_on == "hv1",
             60, 0.2, "cli1 restarted")
    dom_id, root = live(c, "hv1", "cli1")
    assert dom_id != first_id and live_vcpus_mib(root) == (2, 160)
    assert root.findtext("description") == "edited by pvc vm modify"
    assert "GUEST-POWERBUTTON" in c.console_text("cli1")   # restart = ACPI shutdown + start

    out = pvc("vm", "network", "add", "cli1", BRIDGE, "--live").stdout
    assert "Modified VM 'cli1'." in out
    stored_nics = nics(ET.fromstring(pvc("vm", "dump", "cli1").stdout))
    assert len(stored_nics) == 1 and stored_nics[0][0] == BRIDGE
    mac = stored_nics[0][1]
    assert mac and mac.startswith("52:54:00:")
    assert nics(live(c, "hv1", "cli1")[1]) == [(BRIDGE, mac)], "not hot-plugged as stored"
    assert BRIDGE in pvc("vm", "network", "get", "cli1").stdout
    bad = pvc("vm", "network", "remove", "cli1", "52:54:00:00:00:00", ok=False)
    assert bad.exit_code != 0 and "has no NIC 52:54:00:00:00:00" in bad.output
    pvc("vm", "network", "remove", "cli1", mac, "--live")
    assert nics(ET.fromstring(pvc("vm", "dump", "cli1").stdout)) == []
    wait_for(lambda: nics(live(c, "hv1", "cli1")[1]) == [], 30, 0.3, "the NIC to be unplugged")
    assert live(c, "hv1", "cli1")[0] == dom_id, "the VM restarted for a hot-plug"
    assert c.console_text("cli1").count("GUEST-BOOTED") == 2
    pvc("vm", "remove", "cli1", "--yes")
    assert c.record("cli1") is None and "cli1" not in c.domains("hv1")


def test_tags_meta_move_wait_and_disable(vmcluster, pvc, tmp_path):
    """tag add/remove and the list filter, meta (a shutdown migration method takes effect),
    move --wait (permanent), disable --wait."""
    c = vmcluster
    define_and_start(c, pvc, tmp_path, "cli2", "-g", "base")

    pvc("vm", "tag", "add", "cli2", "web")
    pvc("vm", "tag", "add", "cli2", "prod", "--protected")
    assert pvc("vm", "list", "-g", "web").stdout.split("\n")[1].split()[0] == "cli2"
    assert "cli2" not in pvc("vm", "list", "-g", "web", "-n").stdout
    refused = pvc("vm", "tag", "remove", "cli2", "prod", ok=False)
    assert refused.exit_code != 0 and "Tag 'prod' is protected." in refused.output
    pvc("vm", "tag", "remove", "cli2", "web")
    assert "No VMs found." in pvc("vm", "list", "-g", "web").output
    assert {t["name"]: t["protected"] for t in c.record("cli2").tags} == {"base": False,
                                                                            "prod": True}

    out = pvc("vm", "meta", "cli2", "-l", "hv1,hv2", "-s", "vms", "--autostart", "-m",
              "shutdown", "-d", "500").stdout
    assert out.strip() == "Successfully modified PVC metadata of VM 'cli2'."
    meta = c.record("cli2").meta
    assert (meta["node_limit"], meta["node_selector"], meta["node_autostart"],
            meta["migration_method"], meta["migration_max_downtime"]) == (
        ["hv1", "hv2"], "vms", True, "shutdown", 500)
    assert pvc("vm", "meta", "cli2", ok=False).exit_code != 0      # nothing to change

    with support.Sampler(c):
        out = pvc("vm", "move", "cli2", "-t", "hv2", "--wait").stdout
        assert out.strip() == "Permanently migrating VM 'cli2' to node 'hv2'."
        rec = c.record("cli2")       # --wait returned: it runs on hv2 already
        assert (rec.node, rec.last_node, rec.state, rec.running_on) == ("hv2", "", keys.START,
                                                                       "hv2")
        assert "cli2" in c.domains("hv2") and "cli2" not in c.domains("hv1")
    c.wait_booted("cli2", count=2)     # shut down on hv1 and booted on hv2: meta applied
    assert c.console_text("cli2").count("GUEST-BOOTED") == 2

    presses = c.console_text("cli2").count("GUEST-POWERBUTTON")
    assert pvc("vm", "disable", "cli2", "--wait").stdout.strip() == "Disabled VM 'cli2'."
    rec = c.record("cli2")
    assert rec.state == keys.DISABLE and rec.running_on is None
    assert c.domains("hv1") == {} and c.domains("hv2") == {}
    assert c.console_text("cli2").count("GUEST-POWERBUTTON") > presses, "not an ACPI shutdown"
    info = pvc("vm", "list", "-s", "disable").stdout
    assert info.split("\n")[1].split()[:3] == ["cli2", "disable", "hv2"]
    pvc("vm", "remove", "cli2", "--yes")
    assert c.record("cli2") is None
