"""Pure helpers of the storage plugin: sizes, replication configs, PGs, names, tables."""

from __future__ import annotations

import pytest

from pvc_plugins.storage_ceph import units
from pvc_plugins.storage_ceph.errors import StorageError


@pytest.mark.parametrize("text, expected", [
    ("1073741824", 2**30), (4096, 4096), ("10G", 10 * 2**30), ("10g", 10 * 2**30),
    ("10GB", 10 * 2**30), ("10GiB", 10 * 2**30), ("512M", 512 * 2**20), ("1T", 2**40),
    ("100B", 100), ("1.5G", 3 * 2**29), (" 2K ", 2048),
])
def test_parse_size(text, expected):
    assert units.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "10X", "-1", "ten", "10 GiBs", "iB"])
def test_parse_size_rejects(text):
    with pytest.raises(StorageError, match="Invalid size"):
        units.parse_size(text)


@pytest.mark.parametrize("num, text", [
    (0, "0B"), (1, "1B"), (1023, "1023B"), (1024, "1K"), (2**30, "1G"), (10 * 2**30, "10G"),
    (3 * 2**29, "1536M"), (2**30 + 1, "1025M"), (5 * 2**40, "5T"), (12345678, "12M"),
])
def test_format_size(num, text):
    assert units.format_size(num) == text


def test_format_size_has_at_most_four_digits_and_rounds_up():
    for n in (1, 999, 10**6, 123456789, 10**12, 2**50 + 7):
        text = units.format_size(n)
        assert len(text.rstrip("BKMGTPEZY")) <= 4
        assert units.parse_size(text) >= n


@pytest.mark.parametrize("text, expected", [
    ("copies=3,mincopies=2", (3, 2)), ("mincopies=1, copies=2", (2, 1)),
    ("COPIES=1,MINCOPIES=1", (1, 1)),
])
def test_parse_replcfg(text, expected):
    assert units.parse_replcfg(text) == expected


@pytest.mark.parametrize("text, why", [
    ("copies=1,mincopies=2", "must be at least mincopies"), ("copies=3", "both"),
    ("copies=3,mincopies=0", "at least 1"), ("copies=x,mincopies=1", "expected"),
    ("", "expected"), ("size=3,min_size=2", "expected"),
])
def test_parse_replcfg_rejects(text, why):
    with pytest.raises(StorageError, match=why):
        units.parse_replcfg(text)


@pytest.mark.parametrize("pgs, ok", [(1, True), (8, True), (256, True), (0, False),
                                     (12, False), (-8, False)])
def test_check_pgs(pgs, ok):
    if ok:
        assert units.check_pgs(pgs) == pgs
    else:
        with pytest.raises(StorageError, match="power of 2"):
            units.check_pgs(pgs)


def test_names_tiers_and_rules():
    assert units.check_name("pool", "vms_01.a") == "vms_01.a"
    for bad in ("", "-x", "a/b", "a b", "x" * 129, "a@b"):
        with pytest.raises(StorageError):
            units.check_name("volume", bad)
    assert units.check_tier(None) == "default"
    with pytest.raises(StorageError, match="Invalid tier"):
        units.check_tier("tape")
    assert units.tier_rule("default") == "replicated_rule" and units.tier_rule("ssd") == "ssd_tier"
    assert units.rule_tier("ssd_tier") == "ssd" and units.rule_tier("replicated_rule") == "default"
    assert units.rule_tier("weird_tier") == "default"


def test_parse_osd_status_table():
    text = ("ID  HOST   USED  AVAIL  WR OPS  WR DATA  RD OPS  RD DATA  STATE      \n"
            " 0  vm     290M  3805M      0        0       0        0   exists,up  \n"
            " 1  vm    1234M  2861M      7     2.1M      3      103   exists,up  \n"
            " 2                  0      0        0        0       0        0   exists  \n")
    rows = units.parse_osd_status(text)
    assert rows[1] == {"used": "1234M", "avail": "2861M", "wr_ops": "7", "wr_data": "2.1M",
                       "rd_ops": "3", "rd_data": "103", "state": "exists,up"}
    assert rows[2]["state"] == "exists" and set(rows) == {0, 1, 2}
    assert units.parse_osd_status("") == {} and units.parse_osd_status("garbage\n1 2") == {}
