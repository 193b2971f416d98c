"""Pure helpers: sizes, replication configs, PG counts, names (no Ceph needed)."""

from __future__ import annotations

import math
import re

from pvc_plugins.storage_ceph.errors import StorageError

UNITS = "BKMGTPEZY"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([BKMGTPEZY]?)(I?B)?\s*$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]{0,127}$")
TIERS = ("default", "hdd", "ssd", "nvme")


def parse_size(text: str | int) -> int:
    """Bytes from ``1073741824``, ``10G``, ``10GB``, ``10GiB``, ``512m`` (1024-based units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise StorageError(f"Invalid size {text!r}: must not be negative")
        return text
    m = _SIZE.match(str(text))
    if not m or (m.group(3) and not m.group(2) and m.group(3).upper() == "IB"):
        raise StorageError(f"Invalid size {text!r}: use bytes or a number with a unit "
                           "(B, K, M, G, T, P; 1024-based), e.g. 10G")
    number, unit = m.group(1), (m.group(2) or "B").upper()
    return int(float(number) * 1024 ** UNITS.index(unit)) if "." in number \
        else int(number) * 1024 ** UNITS.index(unit)


def format_size(num_bytes: int) -> str:
    """A short 1024-based size: exact in the largest unit that divides it (``10G``), else
    rounded up in the smallest unit that needs at most 4 digits (``1536M``)."""
    num_bytes = max(0, int(num_bytes))
    if num_bytes == 0:
        return "0B"
    for power in range(len(UNITS) - 1, -1, -1):
        unit = 1024 ** power
        if num_bytes % unit == 0:
            exact = num_bytes // unit
            if exact < 10000:
                return f"{exact}{UNITS[power]}"
            break
    for power in range(len(UNITS)):
        value = math.ceil(num_bytes / 1024 ** power)
        if value < 10000:
            return f"{value}{UNITS[power]}"
    return f"{num_bytes}B"


def parse_replcfg(text: str) -> tuple[int, int]:
    """``copies=N,mincopies=M`` → (N, M); copies must be at least mincopies, both ≥ 1."""
    found: dict[str, int] = {}
    for part in str(text or "").split(","):
        key, sep, value = part.strip().partition("=")
        key = key.strip().lower()
        if not sep or key not in ("copies", "mincopies") or not value.strip().isdigit():
            raise StorageError(f"Invalid replication configuration {text!r}: expected "
                               "'copies=N,mincopies=M', e.g. copies=3,mincopies=2")
        found[key] = int(value)
    if set(found) != {"copies", "mincopies"}:
        raise StorageError(f"Invalid replication configuration {text!r}: both copies and "
                           "mincopies are required, e.g. copies=3,mincopies=2")
    copies, mincopies = found["copies"], found["mincopies"]
    if mincopies < 1:
        raise StorageError("Invalid replication configuration: mincopies must be at least 1")
    if copies < mincopies:
        raise StorageError(f"Invalid replication configuration: copies ({copies}) must be at "
                           f"least mincopies ({mincopies})")
    return copies, mincopies


def check_pgs(pgs: int) -> int:
    """A PG count must be a non-zero power of 2."""
    if not isinstance(pgs, int) or pgs < 1 or pgs & (pgs - 1):
        raise StorageError(f"Invalid PG count {pgs!r}: must be a non-zero power of 2 "
                           "(e.g. 32, 64, 128)")
    return pgs


def check_name(kind: str, name: str) -> str:
    """Pool, volume and snapshot names: letters, digits and ``_ . + = -`` (≤128)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise StorageError(f"Invalid {kind} name {name!r}: use letters, digits and _ . + = - "
                           "(starting with a letter or digit, at most 128 characters)")
    return name


def check_tier(tier: str | None) -> str:
    tier = tier or "default"
    if tier not in TIERS:
        raise StorageError(f"Invalid tier {tier!r}: must be one of {', '.join(TIERS)}")
    return tier


def tier_rule(tier: str) -> str:
    """The CRUSH rule of a tier: ``replicated_rule`` for default, else ``<tier>_tier``."""
    return "replicated_rule" if tier == "default" else f"{tier}_tier"


def rule_tier(rule_name: str) -> str:
    return rule_name[:-5] if rule_name.endswith("_tier") and rule_name[:-5] in TIERS \
        else "default"


def parse_osd_status(text: str) -> dict[int, dict[str, str]]:
    """The rows of ``ceph osd status`` (a table only, in Pacific) by OSD id."""
    rows: dict[int, dict[str, str]] = {}
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].lstrip().startswith("ID"):
        return rows
    for line in lines[1:]:
        cols = line.split()
        if len(cols) < 8 or not cols[0].isdigit():
            continue
        # HOST may be empty for an OSD without stats: count from the right.
        state = cols[-1]
        used, avail, wr_ops, wr_data, rd_ops, rd_data = cols[-7:-1]
        rows[int(cols[0])] = {"used": used, "avail": avail, "wr_ops": wr_ops,
                              "wr_data": wr_data, "rd_ops": rd_ops, "rd_data": rd_data,
                              "state": state}
    return rows
