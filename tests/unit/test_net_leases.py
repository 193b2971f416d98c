"""The reservation and lease model (net_bridged/leases.py): checks, wire shape, order and
matching."""

from __future__ import annotations

import pytest

from pvc_plugins.net_bridged import leases
from pvc_plugins.net_bridged.model import ModelError

NET = {"vni": 100, "nettype": "managed", "ip4_network": "10.100.0.0/24",
       "ip4_gateway": "10.100.0.1"}


def test_a_good_reservation_is_normalised():
    r = leases.reservation(NET, [], "52:54:00:AB:CD:EF", " 10.100.0.50 ", "web-1")
    assert r == {"mac": "52:54:00:ab:cd:ef", "ip4": "10.100.0.50", "hostname": "web-1"}
    assert leases.reservation(NET, [], "52:54:00:ab:cd:ef", "10.100.0.50", "")["hostname"] \
        is None


@pytest.mark.parametrize("network, mac, ip4, hostname, field", [
    ({**NET, "nettype": "bridged"}, "52:54:00:00:00:01", "10.100.0.5", None, "vni"),
    ({**NET, "ip4_network": None}, "52:54:00:00:00:01", "10.100.0.5", None, "vni"),
    (NET, "525400000001", "10.100.0.5", None, "macaddress"),
    (NET, "52-54-00-00-00-01", "10.100.0.5", None, "macaddress"),
    (NET, "52:54:00:00:00:0g", "10.100.0.5", None, "macaddress"),
    (NET, "52:54:00:00:00:01", "10.100.0.0", None, "ipaddress"),
    (NET, "52:54:00:00:00:01", "10.100.0.255", None, "ipaddress"),
    (NET, "52:54:00:00:00:01", "10.100.0.1", None, "ipaddress"),
    (NET, "52:54:00:00:00:01", "10.101.0.5", None, "ipaddress"),
    (NET, "52:54:00:00:00:01", None, None, "ipaddress"),
    (NET, "52:54:00:00:00:01", "10.100.0.5", "-bad", "hostname"),
    (NET, "52:54:00:00:00:01", "10.100.0.5", "a.b", "hostname"),
])
def test_bad_reservations_name_the_field(network, mac, ip4, hostname, field):
    with pytest.raises(ModelError) as err:
        leases.reservation(network, [], mac, ip4, hostname)
    assert err.value.field == field and f"'{field}'" in str(err.value)


def test_a_reserved_mac_or_address_is_refused():
    taken = [{"mac": "52:54:00:00:00:01", "ip4": "10.100.0.5", "hostname": None}]
    with pytest.raises(ModelError) as err:
        leases.reservation(NET, taken, "52:54:00:00:00:01", "10.100.0.6", None)
    assert err.value.field == "macaddress"
    with pytest.raises(ModelError) as err:
        leases.reservation(NET, taken, "52:54:00:00:00:02", "10.100.0.5", None)
    assert err.value.field == "ipaddress" and "52:54:00:00:00:01" in str(err.value)


def test_listing_puts_reservations_first_and_filters():
    res = [{"mac": "52:54:00:00:00:02", "ip4": "10.100.0.6", "hostname": "b"},
           {"mac": "52:54:00:00:00:01", "ip4": "10.100.0.5", "hostname": None}]
    live = [{"mac": "52:54:00:00:00:09", "ip4": "10.100.0.120", "hostname": "c",
             "expiry": 1900000000}, {"mac": "52:54:00:00:00:03", "ip4": "10.100.0.121"}]
    out = leases.listing(res, live)
    assert [(x["mac_address"][-2:], x["timestamp"]) for x in out] == [
        ("01", "static"), ("02", "static"), ("03", "0"), ("09", "1900000000")]
    assert out[0] == {"hostname": None, "ip4_address": "10.100.0.5",
                      "mac_address": "52:54:00:00:00:01", "timestamp": "static"}
    assert len(leases.listing(res, live, static_only=True)) == 2
    assert [x["mac_address"] for x in leases.listing(res, live, lambda m: m.endswith("9"))] \
        == ["52:54:00:00:00:09"]


def test_named_finds_by_mac_hostname_or_address():
    records = [{"mac": "52:54:00:00:00:01", "ip4": "10.100.0.5", "hostname": "web"},
               {"mac": "52:54:00:00:00:02", "ip4": "10.100.0.6", "hostname": None}]
    assert leases.named(records, "52:54:00:00:00:01".upper()) == records[:1]
    assert leases.named(records, "web") == records[:1]
    assert leases.named(records, "10.100.0.6") == records[1:]
    assert leases.named(records, "none") == []
