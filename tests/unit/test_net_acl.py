"""Network ACLs: description and rule checks (injection into the ruleset included), ordering
and renumbering, the v1 wire shape. The nft check itself runs the real nft when it is
installed (check or throwaway-namespace load, never the host's ruleset)."""

from __future__ import annotations

import shutil

import pytest

from pvc_plugins.net_bridged import acl


def _acls(**lists: list[str]) -> dict[str, list[dict[str, str]]]:
    out = acl.empty()
    for direction, names in lists.items():
        out[direction] = [{"description": n, "rule": f"rule-{n}"} for n in names]
    return out


def _names(acls: dict, direction: str) -> list[str]:
    return [a["description"] for a in acls[direction]]


@pytest.mark.parametrize("order, expected", [
    (None, ["a", "b", "c", "new"]),
    (0, ["a", "b", "c", "new"]),       # the original: 0 appends
    (1, ["a", "new", "b", "c"]),
    (3, ["a", "b", "c", "new"]),
    (99, ["a", "b", "c", "new"]),
])
def test_insert_puts_the_rule_at_its_order_and_renumbers(order, expected):
    before = _acls(**{"in": ["a", "b", "c"], "out": ["x"]})
    after = acl.insert(before, "in", "new", "accept", order)
    assert _names(after, "in") == expected and _names(after, "out") == ["x"]
    assert _names(before, "in") == ["a", "b", "c"]             # the input is not changed
    wire = acl.wire(after, "in")
    assert [w["order"] for w in wire] == [0, 1, 2, 3]
    assert wire[expected.index("new")] == {"direction": "in", "order": expected.index("new"),
                                           "description": "new", "rule": "accept"}


def test_remove_renumbers_the_rest_and_refuses_an_unknown_description():
    after = acl.remove(_acls(**{"in": ["a"], "out": ["x", "y", "z"]}), "y")
    assert [(w["description"], w["order"]) for w in acl.wire(after, "out")] == [("x", 0),
                                                                                ("z", 1)]
    with pytest.raises(acl.AclError) as err:
        acl.remove(after, "y")
    assert err.value.field == "description" and "No firewall rule" in str(err.value)


def test_descriptions_are_unique_across_directions_and_bad_input_names_the_field():
    acls = _acls(**{"in": ["a"], "out": ["b"]})
    for direction in acl.DIRECTIONS:
        with pytest.raises(acl.AclError) as err:
            acl.insert(acls, direction, "b", "accept", None)
        assert err.value.field == "description" and "already exists" in str(err.value)
    with pytest.raises(acl.AclError) as err:
        acl.insert(acls, "sideways", "c", "accept", None)
    assert err.value.field == "direction"
    with pytest.raises(acl.AclError) as err:
        acl.insert(acls, "in", "c", "accept", -1)
    assert err.value.field == "order"
    for bad in ("two words", "", "a/b", "x" * 65, "qu\"ote", "tab\there", "é"):
        with pytest.raises(acl.AclError) as err:
            acl.check_description(bad)
        assert err.value.field == "description" and "'description'" in str(err.value)
    assert acl.check_description("allow-ssh_1.2:x@y+z=w,v") == "allow-ssh_1.2:x@y+z=w,v"


def test_wire_lists_in_then_out_and_filters_a_direction():
    acls = _acls(**{"out": ["o1"], "in": ["i1", "i2"]})
    assert [(w["direction"], w["description"]) for w in acl.wire(acls)] == [
        ("in", "i1"), ("in", "i2"), ("out", "o1")]
    assert [w["description"] for w in acl.wire(acls, "out")] == ["o1"]


def test_a_damaged_record_reads_as_what_is_usable():
    assert acl.normalise(None) == acl.empty()
    assert acl.normalise({"in": [{"description": "a", "rule": "accept"}, "junk",
                                 {"description": 1, "rule": "x"}], "out": None}) == {
        "in": [{"description": "a", "rule": "accept"}], "out": []}


@pytest.mark.parametrize("rule", [
    "accept; flush ruleset",
    "accept\nflush ruleset",
    "accept\r",
    "accept } chain evil { type filter hook input priority -500; policy drop;",
    "tcp dport { 22, 80 } accept }",
    "tcp dport { 22, 80 accept",
    'log prefix "open accept',
    "accept # hidden",
    "accept \\",
    "ip saddr 10.0.0.1 accept\x00",
    "",
    "   ",
    "x" * (acl.RULE_MAX + 1),
])
def test_text_that_could_escape_its_line_is_refused_before_nft(rule):
    assert acl.unsafe(rule)
    with pytest.raises(acl.AclError) as err:
        acl.check_rule(rule)
    assert err.value.field == "rule" and "'rule'" in str(err.value)


@pytest.mark.parametrize("rule", [
    "ip saddr 10.0.0.0/24 accept",
    "tcp dport { 22, 80 } drop",
    'log prefix "a}b; c#" drop',             # quoted text may hold anything printable
    "ip6 saddr fd00::/64 meta l4proto tcp th dport 443 accept",
])
def test_rules_that_stay_on_their_line_pass_the_lexical_check(rule):
    assert acl.unsafe(rule) is None


nft = pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed")


@nft
def test_nft_accepts_good_rules_and_names_its_first_error_for_bad_ones():
    assert acl.check_rule("  ip saddr 10.0.0.0/24 tcp dport { 22, 80 } accept ") == (
        "ip saddr 10.0.0.0/24 tcp dport { 22, 80 } accept")
    with pytest.raises(acl.AclError) as err:
        acl.check_rule("ip saddr 10.0.0.0/33 accept")
    assert err.value.field == "rule" and "nft refuses it" in str(err.value)
    with pytest.raises(acl.AclError) as err:
        acl.check_rule("tcp dport ssh-ish accept")
    assert "nft refuses it" in str(err.value)


@nft
def test_a_rule_the_kernel_refuses_in_a_forward_chain_is_refused():
    # nft -c alone accepts masquerade here; loading the chain for real refuses it
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    with pytest.raises(acl.AclError) as err:
        acl.check_rule("masquerade")
    assert "Operation not supported" in str(err.value)


def test_no_nft_is_a_check_that_cannot_run(monkeypatch):
    monkeypatch.setattr(acl.shutil, "which", lambda name: None)
    monkeypatch.setattr(acl.os.path, "exists", lambda path: False)
    with pytest.raises(acl.CheckUnavailable):
        acl.check_rule("accept")
