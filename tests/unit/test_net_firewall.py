"""Rendering the managed networks' nft table: chains, router rules, ACL order, the
isolation between networks, the digest that makes an unchanged reload a no-op, and the
renderer's own guard against rule text that would leave its line. When nft and unshare are
installed the rendered script is also loaded in a throwaway network namespace."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pvc_plugins.net_vxlan import firewall

NETS = [
    {"vni": 200, "nettype": "managed", "ip4_network": "10.200.0.0/24", "ip6_network": None},
    {"vni": 100, "nettype": "managed", "ip4_network": "10.100.0.0/24",
     "ip6_network": "fd00:100::/64"},
    {"vni": 300, "nettype": "managed", "ip4_network": None, "ip6_network": None},
]
ACLS = {100: {"in": [{"description": "web", "rule": "tcp dport 80 accept"},
                     {"description": "ssh", "rule": "ip saddr 10.200.0.0/24 tcp dport 22 accept"}],
              "out": [{"description": "smtp", "rule": "tcp dport 25 drop"}]},
        "200": {"in": [], "out": [{"description": "any", "rule": "accept"}]}}


def _chain(script: str, name: str) -> list[str]:
    lines = script.splitlines()
    start = lines.index(f"  chain {name} {{")
    end = lines.index("  }", start)
    return [ln.strip() for ln in lines[start + 1:end]]


def test_the_script_replaces_only_pvcs_table_in_one_transaction():
    script = firewall.render(NETS, ACLS)
    head = script.splitlines()[:4]
    assert head[:3] == ["table inet pvc", "delete table inet pvc", "table inet pvc {"]
    assert head[3].startswith('  comment "pvc ruleset ')
    tables = [ln for ln in script.splitlines() if ln.startswith("table ") or " table " in ln]
    assert all(" inet pvc" in ln for ln in tables)
    assert "flush ruleset" not in script


def test_acls_are_in_their_network_chains_in_order_after_a_counter():
    script = firewall.render(NETS, ACLS)
    assert _chain(script, "vxlan100-in") == [
        "counter", "counter tcp dport 80 accept",
        "counter ip saddr 10.200.0.0/24 tcp dport 22 accept"]
    assert _chain(script, "vxlan100-out") == ["counter", "counter tcp dport 25 drop"]
    assert _chain(script, "vxlan200-out") == ["counter", "counter accept"]   # str VNI keys too
    assert _chain(script, "vxlan300-in") == ["counter"]


def test_forward_jumps_out_then_in_and_isolates_managed_networks():
    forward = _chain(firewall.render(NETS, ACLS), "forward")
    assert forward == [
        "type filter hook forward priority filter; policy accept;",
        'iifname . oifname { "vmbr100" . "vmbr100", "vmbr200" . "vmbr200", '
        '"vmbr300" . "vmbr300" } accept',
        "ip saddr 10.100.0.0/24 jump vxlan100-out",
        "ip saddr 10.200.0.0/24 jump vxlan200-out",
        "ip6 saddr fd00:100::/64 jump vxlan100-out",
        "ip daddr 10.100.0.0/24 jump vxlan100-in",
        "ip daddr 10.200.0.0/24 jump vxlan200-in",
        "ip6 daddr fd00:100::/64 jump vxlan100-in",
        "ct state established ct direction reply accept",
            "ct state related accept",
        "ip saddr @nets4 ip daddr @nets4 counter drop",
        "ip6 saddr @nets6 ip6 daddr @nets6 counter drop"]


def test_the_router_answers_the_networks_only_on_its_service_ports():
    script = firewall.render(NETS, ACLS)
    assert 'iifname { "vmbr100", "vmbr200", "vmbr300" } jump from-networks' in \
        _chain(script, "input")
    assert _chain(script, "from-networks") == [
        "ct state established,related accept", "meta l4proto { icmp, ipv6-icmp } accept",
        "tcp dport { 53, 80 } accept", "udp dport { 53, 67, 123, 547 } accept",
        "counter drop"]


def test_the_digest_follows_the_content_and_nothing_else():
    a = firewall.render(NETS, ACLS)
    assert firewall.render(list(reversed(NETS)), ACLS) == a
    changed = {**ACLS, 100: {**ACLS[100], "out": []}}
    assert firewall.DIGEST.search(firewall.render(NETS, changed)).group(1) != \
        firewall.DIGEST.search(a).group(1)


def test_adjacent_or_overlapping_prefixes_are_merged_in_the_sets():
    nets = [{"vni": 1, "ip4_network": "10.0.0.0/25"}, {"vni": 2, "ip4_network": "10.0.0.128/25"},
            {"vni": 3, "ip4_network": "10.0.0.0/24"}]
    assert "    elements = { 10.0.0.0/24 }" in firewall.render(nets, {}).splitlines()


@pytest.mark.parametrize("rule", ["accept; flush ruleset", "accept\nflush ruleset",
                                  "accept } chain x {", "tcp dport { 22 accept", 'log prefix "x',
                                  "accept # c", "", "ip saddr 10.0.0.1 accept\u00e9"])
def test_rule_text_that_would_leave_its_line_is_never_rendered(rule):
    acls = {100: {"in": [{"description": "bad", "rule": rule},
                         {"description": "good", "rule": "tcp dport 443 accept"}]}}
    assert firewall.escapes(rule)
    assert _chain(firewall.render(NETS, acls), "vxlan100-in") == [
        "counter", "counter tcp dport 443 accept"]


def test_left_out_rules_are_not_rendered():
    script = firewall.render(NETS, ACLS, leave_out=[(100, "in", "web")])
    assert _chain(script, "vxlan100-in") == [
        "counter", "counter ip saddr 10.200.0.0/24 tcp dport 22 accept"]


def test_no_networks_is_a_valid_empty_firewall():
    script = firewall.render([], {})
    assert "jump from-networks" not in script and "@nets4" not in script
    _loads(script)


def _loads(script: str) -> None:
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        pytest.skip("nft or unshare is not installed")
    proc = subprocess.run(["unshare", "--net", "nft", "-f", "-"], input=script, text=True,
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_the_rendered_script_loads_in_nft():
    _loads(firewall.render(NETS, ACLS))
