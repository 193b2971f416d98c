"""The fencing plugin's small pieces: what the API and CLI show of a BMC, the plugin's place
among the installed plugins, and the password never leaving its config."""

from __future__ import annotations

import pytest

from pvc_cli.commands.node import bmc_text
from pvc_kernel.plugins import PluginHost
from pvc_plugins.fencing_ipmi.ipmi import BmcAccess, BmcError, IpmiClient, _run_bounded
from pvc_plugins.fencing_ipmi.plugin import FencingIpmiPlugin


def test_api_node_field_comes_from_the_keepalive_stats():
    bmc = {"host": "10.0.1.4", "port": 623, "user": "admin", "reachable": True,
           "power": "on", "error": "", "checked": 1.0}
    plugin = FencingIpmiPlugin()
    assert plugin.pvc_api_node({"bmc": bmc, "host": {}}) == {"bmc": bmc}
    assert plugin.pvc_api_node({"host": {}}) == {}


@pytest.mark.parametrize("bmc, expected", [
    ({"host": "10.0.1.4", "port": 623, "user": "admin", "reachable": True, "power": "on"},
     "10.0.1.4:623 as admin: reachable, power on"),
    ({"host": "10.0.1.4", "port": 623, "user": "admin", "reachable": False,
      "error": "BMC 10.0.1.4:623 power status: IpmiException"},
     "10.0.1.4:623 as admin: UNREACHABLE (BMC 10.0.1.4:623 power status: IpmiException)"),
    ({"host": None, "error": "no BMC configured (plugins.fencing_ipmi.bmc)"},
     "none (no BMC configured (plugins.fencing_ipmi.bmc))"),
])
def test_cli_shows_the_bmc(bmc, expected):
    assert bmc_text(bmc) == expected


def test_the_plugin_fits_the_hook_contracts():
    host = PluginHost()
    host.register(FencingIpmiPlugin, "fencing_ipmi")
    assert "fencing_ipmi" in host.names
    assert isinstance(host.plugin("fencing_ipmi"), FencingIpmiPlugin)


def test_keepalive_stats_never_carry_the_password():
    plugin = FencingIpmiPlugin()
    plugin.last_check = {**BmcAccess("h", "u", "topsecret").public(), "reachable": True}
    assert "topsecret" not in repr(plugin.pvc_keepalive_stats(object()))


def test_bounded_calls_turn_errors_and_hangs_into_bmc_errors():
    def boom():
        raise ValueError("wrong")

    with pytest.raises(BmcError, match="x: wrong"):
        _run_bounded(boom, 1.0, "x")
    import threading

    gate = threading.Event()
    with pytest.raises(BmcError, match="no answer within 0.2 s"):
        _run_bounded(lambda: gate.wait(5), 0.2, "y")
    gate.set()


def test_unreachable_bmc_is_reported_without_the_password():
    client = IpmiClient(BmcAccess("127.0.0.1", "admin", "hidden-pw", 9), timeout=0.5)
    check = client.check()
    assert check["reachable"] is False and check["power"] is None
    assert "hidden-pw" not in check["error"] and "127.0.0.1:9" in check["error"]
