"""The managed networks' firewall: one nftables table, ``inet pvc``, rendered from the
networks and their ACLs and swapped in as one transaction (the original's model, in a table
of PVC's own: no other table is ever touched).

Contract (the caller runs it on the primary only, and drops it when leaving primary):

* ``render(networks, acls) -> str``: the whole nft script. ``networks``: the managed
  networks' ``contracts.NetworkSpec`` (``vni``, ``ip4_network``, ``ip6_network``; others are
  ignored); ``acls``: ``{vni: {"in": [NetworkAcl, ...], "out": [...]}}`` as stored under
  ``/networks/<vni>/acls`` (in order).
* ``apply(networks, acls, force=False) -> Applied``: loads it with ``nft -f`` in the calling
  thread's network namespace. Nothing happens when the table already holds this very ruleset
  (its comment carries a digest of the script), so counters and nothing else survive an
  unchanged reload; ``force`` reloads anyway. If nft refuses the script (a rule that was
  valid when the API stored it but not on this node), each rule is checked alone, the ones
  nft refuses are left out and reported in ``Applied.skipped``, and the rest is loaded: one
  bad rule never leaves the networks without a firewall. Raises FirewallError when even
  that fails (the table then stays as it was: a failed transaction changes nothing).
* ``remove() -> None``: deletes the table (no error when it is absent).

The ruleset, per managed network with bridge ``vmbr<vni>`` and chains ``vxlan<vni>-in`` /
``vxlan<vni>-out``:

* **input** (traffic to this node): from a network's bridge only ICMP/ICMPv6, DNS (53),
  DHCP (67), DHCPv6 (547), NTP (123), the metadata API (TCP 80) and replies to connections
  the node opened are accepted; everything else from the networks is dropped. Other
  interfaces are not touched (policy accept).
* **forward** (routed traffic; traffic bridged within one network, which passes here when
  the host has ``br_netfilter`` loaded, is accepted first): a packet from a network's
  addresses jumps to its ``-out``
  chain, then a packet to a network's addresses to its ``-in`` chain (``in``: traffic routed
  into the network, ``out``: traffic routed out of it). Each chain counts, then holds the
  network's ACLs in order, each as ``counter <rule>``: an ``accept`` lets the packet through
  at once, a ``drop`` drops it. What no ACL decided: replies of accepted connections pass
  (``ct state established ct direction reply``, and ``related`` ICMP errors); any other
  packet **between two managed networks is dropped** (PVC's default: networks are isolated
  unless an ACL lets traffic in or out). Packets of a flow in its own direction meet the
  ACLs every time, not only when it starts, so removing an ACL cuts the flows it let
  through at once (the original's ``established`` rule kept them going);
  anything else (to or from outside the managed networks) passes (policy accept), as in the
  original.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TABLE = "pvc"
FAMILY = "inet"
DIRECTIONS = ("in", "out")
ROUTER_TCP = (53, 80)                  # DNS, metadata API
ROUTER_UDP = (53, 67, 123, 547)        # DNS, DHCP, NTP, DHCPv6
NFT_TIMEOUT = 30.0
DIGEST = re.compile(r'comment "pvc ruleset ([0-9a-f]{64})"')
_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")

Acls = Mapping[Any, Mapping[str, Sequence[Mapping[str, str]]]]


class FirewallError(RuntimeError):
    """nft could not load the table (or is missing); the old table stays as it was."""


@dataclass
class Applied:
    """What ``apply`` did: ``changed`` (a new table was loaded) and ``skipped``: the ACLs
    left out, as (vni, direction, description, why)."""

    changed: bool
    skipped: list[tuple[int, str, str, str]] = field(default_factory=list)


def bridge(vni: int) -> str:
    """The network's bridge on every node (net_bridged's name, the original's)."""
    return f"vmbr{vni}"


def chain(vni: int, direction: str) -> str:
    return f"vxlan{vni}-{direction}"


def escapes(rule: str) -> bool:
    """True when ``rule`` could leave its line of the script (the API refuses such rules;
    this is the renderer's own guard): not printable ASCII, or outside double quotes a
    ``;``, ``#`` or ``\\``, unbalanced braces or quotes."""
    if not rule.strip() or not _PRINTABLE.match(rule):
        return True
    depth, quoted = 0, False
    for char in rule:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in ";#\\":
            return True
        elif not quoted and char in "{}":
            depth += 1 if char == "{" else -1
            if depth < 0:
                return True
    return quoted or depth != 0


def _nets(networks: Iterable[Mapping[str, Any]], key: str) -> list[tuple[int, str]]:
    out = []
    for net in networks:
        if net.get(key):
            out.append((int(net["vni"]), str(ipaddress.ip_network(net[key], strict=False))))
    return out


def _set(name: str, kind: str, prefixes: list[str]) -> list[str]:
    merged = ipaddress.collapse_addresses(ipaddress.ip_network(p) for p in prefixes)
    return [f"  set {name} {{", f"    type {kind}; flags interval;",
            f"    elements = {{ {', '.join(str(n) for n in merged)} }}", "  }"]


def _lines(networks: Sequence[Mapping[str, Any]], acls: Acls,
           leave_out: set[tuple[int, str, str]]) -> list[str]:
    vnis = sorted({int(n["vni"]) for n in networks})
    v4, v6 = _nets(networks, "ip4_network"), _nets(networks, "ip6_network")
    body: list[str] = []
    if v4:
        body += _set("nets4", "ipv4_addr", [p for _, p in v4])
    if v6:
        body += _set("nets6", "ipv6_addr", [p for _, p in v6])
    body += ["  chain input {", "    type filter hook input priority filter; policy accept;"]
    if vnis:
        names = ", ".join(f'"{bridge(v)}"' for v in vnis)
        body.append(f"    iifname {{ {names} }} jump from-networks")
    body += ["  }", "  chain from-networks {",
             "    ct state established,related accept",
             "    meta l4proto { icmp, ipv6-icmp } accept",
             f"    tcp dport {{ {', '.join(map(str, ROUTER_TCP))} }} accept",
             f"    udp dport {{ {', '.join(map(str, ROUTER_UDP))} }} accept",
             "    counter drop", "  }",
             "  chain forward {", "    type filter hook forward priority filter; policy accept;"]
    if vnis:   # bridged within one network (seen here when br_netfilter is loaded): not ours
        pairs = ", ".join(f'"{bridge(v)}" . "{bridge(v)}"' for v in vnis)
        body.append(f"    iifname . oifname {{ {pairs} }} accept")
    for direction, match in (("out", "saddr"), ("in", "daddr")):
        for family, nets in (("ip", v4), ("ip6", v6)):
            body += [f"    {family} {match} {prefix} jump {chain(vni, direction)}"
                     for vni, prefix in sorted(nets)]
    body += ["    ct state established ct direction reply accept",
             "    ct state related accept"]
    if v4:
        body.append("    ip saddr @nets4 ip daddr @nets4 counter drop")
    if v6:
        body.append("    ip6 saddr @nets6 ip6 daddr @nets6 counter drop")
    body.append("  }")
    for vni in vnis:
        for direction in DIRECTIONS:
            body += [f"  chain {chain(vni, direction)} {{", "    counter"]
            for entry in _acl_list(acls, vni, direction):
                if (vni, direction, entry["description"]) not in leave_out:
                    body.append(f"    counter {entry['rule'].strip()}")
            body.append("  }")
    return body


def _acl_list(acls: Acls, vni: int, direction: str) -> list[Mapping[str, str]]:
    record = acls.get(vni) or acls.get(str(vni)) or {}
    return [a for a in record.get(direction) or []
            if isinstance(a, Mapping) and isinstance(a.get("rule"), str)]


def _unsafe(networks: Sequence[Mapping[str, Any]], acls: Acls) -> list[tuple[int, str, str]]:
    return [(int(n["vni"]), d, str(a.get("description"))) for n in networks
            for d in DIRECTIONS for a in _acl_list(acls, int(n["vni"]), d)
            if escapes(a["rule"])]


def render(networks: Sequence[Mapping[str, Any]], acls: Acls,
           leave_out: Iterable[tuple[int, str, str]] = ()) -> str:
    """The nft script that replaces table ``inet pvc`` with the ruleset of ``networks``
    and ``acls`` in one transaction (create if missing, delete, define). Rules that could
    leave their line (``escapes``) and the (vni, direction, description) in ``leave_out``
    are not rendered."""
    skip = set(leave_out) | set(_unsafe(networks, acls))
    body = _lines(networks, acls, skip)
    digest = hashlib.sha256("\n".join(body).encode()).hexdigest()
    return "\n".join([f"table {FAMILY} {TABLE}", f"delete table {FAMILY} {TABLE}",
                      f"table {FAMILY} {TABLE} {{", f'  comment "pvc ruleset {digest}"',
                      *body, "}", ""])


def _nft() -> str:
    path = shutil.which("nft") or "/usr/sbin/nft"
    if not shutil.which(path):
        raise FirewallError("nft is not installed")
    return path


def _run(args: list[str], script: str = "") -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, input=script, capture_output=True, text=True,
                              timeout=NFT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise FirewallError(f"{' '.join(args)} did not finish within {NFT_TIMEOUT:g} s") \
            from None


def _error(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if "Error:" in ln]
    return (lines[0].split("Error:", 1)[1].strip() if lines
            else proc.stderr.strip() or f"nft exited {proc.returncode}")


def loaded_digest() -> str | None:
    """The digest in the comment of the live table, or None when there is no table."""
    proc = _run([_nft(), "-t", "list", "table", FAMILY, TABLE])
    found = DIGEST.search(proc.stdout) if proc.returncode == 0 else None
    return found.group(1) if found else None


def _rule_error(rule: str) -> str | None:
    """nft's error for one rule alone in a chain like the firewall's, or None. Loaded in a
    throwaway network namespace (``unshare --net``) when permitted, else checked (-c)."""
    script = (f"table {FAMILY} pvc_rule_check {{\n  chain forward {{\n"
              "    type filter hook forward priority 0; policy accept;\n    jump acl\n  }\n"
              f"  chain acl {{\n    counter {rule.strip()}\n  }}\n}}\n")
    unshare = shutil.which("unshare")
    if unshare:
        proc = _run([unshare, "--net", _nft(), "-f", "-"], script)
        if proc.returncode == 0 or "unshare failed" not in proc.stderr:
            return None if proc.returncode == 0 else _error(proc)
    proc = _run([_nft(), "-c", "-f", "-"], script)
    return None if proc.returncode == 0 else _error(proc)


def apply(networks: Sequence[Mapping[str, Any]], acls: Acls, force: bool = False) -> Applied:
    """Make table ``inet pvc`` the ruleset of ``networks`` and ``acls`` (see the module)."""
    unsafe = _unsafe(networks, acls)
    skipped = [(v, d, n, "could leave its line of the ruleset") for v, d, n in unsafe]
    script = render(networks, acls)
    digest = DIGEST.search(script).group(1)
    if not force and loaded_digest() == digest:
        return Applied(False, skipped)
    proc = _run([_nft(), "-f", "-"], script)
    if proc.returncode == 0:
        return Applied(True, skipped)
    first = _error(proc)
    bad = []
    for net in networks:
        vni = int(net["vni"])
        for direction in DIRECTIONS:
            for entry in _acl_list(acls, vni, direction):
                key = (vni, direction, str(entry.get("description")))
                if key in unsafe:
                    continue
                why = _rule_error(entry["rule"])
                if why:
                    bad.append(key)
                    skipped.append((*key, why))
    if not bad:
        raise FirewallError(f"nft refused the ruleset: {first}")
    proc = _run([_nft(), "-f", "-"], render(networks, acls, bad))
    if proc.returncode != 0:
        raise FirewallError(f"nft refused the ruleset: {_error(proc)}")
    return Applied(True, skipped)


def remove() -> None:
    """Delete table ``inet pvc`` (in one transaction that first creates it if missing)."""
    proc = _run([_nft(), "-f", "-"], f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n")
    if proc.returncode != 0:
        raise FirewallError(f"nft could not remove table {FAMILY} {TABLE}: {_error(proc)}")
