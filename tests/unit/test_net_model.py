"""The network model: every field checked and completed, the v1 wire shape."""

from __future__ import annotations

import pytest

from pvc_plugins.net_bridged import model

TYPES = ["bridged", "managed"]


def managed(**fields):
    base = {"description": "office", "ip4_network": "10.1.0.0/24", "ip4_gateway": "10.1.0.1"}
    return model.build(100, "managed", {**base, **fields}, TYPES)


def test_a_managed_network_gets_its_defaults():
    spec = managed(ip6_network="fd00:1::/64", name_servers=["10.0.0.53,10.0.0.54"])
    assert spec["domain"] == "office.local" and spec["mtu"] is None
    assert spec["ip6_gateway"] == "fd00:1::1"
    assert spec["name_servers"] == ["10.0.0.53", "10.0.0.54"]
    wire = model.wire(spec)
    assert wire["vni"] == 100 and wire["type"] == "managed" and wire["mtu"] == ""
    assert wire["ip4"]["dhcp_flag"] == "False" and wire["ip6"]["dhcp_flag"] == "True"


def test_a_bridged_network_has_no_services():
    spec = model.build(200, "bridged", {"description": "uplink", "mtu": "9000"}, TYPES)
    assert spec["mtu"] == 9000 and spec["domain"] == ""
    assert model.wire(spec)["name_servers"] == [""]
    with pytest.raises(model.ModelError, match="'ip4_network': a bridged network has no"):
        model.build(200, "bridged", {"description": "u", "ip4_network": "10.0.0.0/24"}, TYPES)


@pytest.mark.parametrize("vni, nettype, fields, field", [
    (0, "managed", {"description": "x"}, "vni"),
    (16777216, "managed", {"description": "x"}, "vni"),
    (5, "vlan", {"description": "x"}, "nettype"),
    (5, "managed", {}, "description"),
    (5, "managed", {"description": "has space"}, "description"),
    (5, "managed", {"description": "200"}, "description"),
    (5, "managed", {"description": "caf\u00e9"}, "description"),
    (5, "managed", {"description": "x", "mtu": "500"}, "mtu"),
    (5, "managed", {"description": "x", "mtu": "big"}, "mtu"),
    (5, "managed", {"description": "x", "domain": "bad_domain!"}, "domain"),
    (5, "managed", {"description": "x", "name_servers": ["1.2.3"]}, "name_servers"),
    (5, "managed", {"description": "x", "ip4_network": "10.0.0.1/24"}, "ip4_network"),
    (5, "managed", {"description": "x", "ip4_network": "fd00::/64"}, "ip4_network"),
    (5, "managed", {"description": "x", "ip4_network": "10.0.0.0/24"}, "ip4_gateway"),
    (5, "managed", {"description": "x", "ip4_network": "10.0.0.0/24",
                    "ip4_gateway": "10.0.1.1"}, "ip4_gateway"),
    (5, "managed", {"description": "x", "ip4_network": "10.0.0.0/24",
                    "ip4_gateway": "10.0.0.255"}, "ip4_gateway"),
    (5, "managed", {"description": "x", "ip4_gateway": "10.0.0.1"}, "ip4_gateway"),
    (5, "managed", {"description": "x", "dhcp4": True}, "dhcp4"),
    (5, "managed", {"description": "x", "ip4_network": "10.0.0.0/24",
                    "ip4_gateway": "10.0.0.1", "dhcp4": True}, "dhcp4_start"),
    (5, "managed", {"description": "x", "ip4_network": "10.0.0.0/24",
                    "ip4_gateway": "10.0.0.1", "dhcp4": True, "dhcp4_start": "10.0.0.50",
                    "dhcp4_end": "10.0.0.10"}, "dhcp4_end"),
    (5, "managed", {"description": "x", "ip4_network": "10.0.0.0/24",
                    "ip4_gateway": "10.0.0.20", "dhcp4": True, "dhcp4_start": "10.0.0.10",
                    "dhcp4_end": "10.0.0.50"}, "ip4_gateway"),
    (5, "managed", {"description": "x", "ip4_network": "10.0.0.0/24",
                    "ip4_gateway": "10.0.0.1", "dhcp4": True, "dhcp4_start": "10.0.1.10",
                    "dhcp4_end": "10.0.1.50"}, "dhcp4_start"),
    (5, "managed", {"description": "x", "ip6_gateway": "fd00::1"}, "ip6_gateway"),
    (5, "managed", {"description": "x", "ip6_network": "fd00::/64",
                    "ip6_gateway": "fd01::1"}, "ip6_gateway"),
])
def test_every_bad_field_is_named(vni, nettype, fields, field):
    with pytest.raises(model.ModelError) as err:
        model.build(vni, nettype, fields, TYPES)
    assert err.value.field == field and f"Invalid parameter '{field}'" in str(err.value)


def test_change_keeps_what_is_not_given_and_clears_what_is_emptied():
    spec = managed(dhcp4=True, dhcp4_start="10.1.0.100", dhcp4_end="10.1.0.199", mtu="1400")
    changed = model.change(spec, {"mtu": "", "dhcp4": False})
    assert changed["mtu"] is None and changed["dhcp4"] is False
    assert changed["dhcp4_start"] is None and changed["ip4_gateway"] == "10.1.0.1"
    assert model.change(spec, {}) == spec
    with pytest.raises(model.ModelError, match="'ip4_gateway'"):
        model.change(spec, {"ip4_network": "10.2.0.0/24"})      # the gateway is outside
