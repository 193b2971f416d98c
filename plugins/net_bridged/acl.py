"""Network ACLs: checking and ordering the firewall rules of a network (API v1 ``acl``).

A network's ACLs are one record (``network.acls``, see ``keys``): ``{"in": [acl, ...],
"out": [acl, ...]}``, each ``acl`` a ``contracts.NetworkAcl`` ``{"description", "rule"}``
and its ``order`` its position in the list, so an insertion or removal that renumbers the
others is one versioned write of one key.

``in`` rules see traffic routed into the network, ``out`` rules traffic routed out of it
(net_vxlan's firewall jumps to them; see its module). A rule is nft rule text that the
firewall loads as the line ``counter <rule>`` of a regular chain jumped to from an ``inet``
filter chain on the forward hook. ``rule_problem`` refuses text that could leave that line
(see ``unsafe``) and then loads exactly that chain in a throwaway network namespace, so
what nft (or the kernel) would refuse at apply time is refused here.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from typing import Any

DIRECTIONS = ("in", "out")
RULE_MAX = 1024
NFT_TIMEOUT = 10.0
_DESCRIPTION = re.compile(r"^[A-Za-z0-9_.:@+=,-]{1,64}$")
_CONTROL = re.compile(r"[^\x20-\x7e]")


class AclError(ValueError):
    """A bad field (``field``) or a missing ACL; the text says why."""

    def __init__(self, field: str, text: str) -> None:
        super().__init__(text)
        self.field = field


class CheckUnavailable(RuntimeError):
    """nft cannot be run here, so a rule cannot be checked (the API answers 503)."""


def empty() -> dict[str, list[dict[str, str]]]:
    return {d: [] for d in DIRECTIONS}


def normalise(record: Any) -> dict[str, list[dict[str, str]]]:
    """The stored record in its full shape (a missing or damaged one reads as empty)."""
    out = empty()
    if isinstance(record, dict):
        for direction in DIRECTIONS:
            for acl in record.get(direction) or []:
                if isinstance(acl, dict) and isinstance(acl.get("description"), str) \
                        and isinstance(acl.get("rule"), str):
                    out[direction].append({"description": acl["description"],
                                           "rule": acl["rule"]})
    return out


def check_description(description: str) -> str:
    if not _DESCRIPTION.match(description):
        raise AclError("description", f"Invalid parameter 'description': {description!r} "
                                      "must be 1-64 letters, digits or _.:@+=,-")
    return description


def unsafe(rule: str) -> str | None:
    """Why ``rule`` could escape its line of the ruleset, or None.

    The rule is later embedded as one line of an nft script, so outside double quotes it may
    not end the statement (``;``, a newline), start a comment (``#``), continue a line
    (``\\``) or close a block it did not open (``}``); quotes and braces must be balanced
    (braces hold anonymous sets: ``tcp dport { 22, 80 }``). Only printable ASCII.
    """
    if not rule.strip():
        return "is empty"
    if len(rule) > RULE_MAX:
        return f"is longer than {RULE_MAX} characters"
    bad = _CONTROL.search(rule)
    if bad:
        return f"holds the character {bad.group()!r} (only printable ASCII on one line)"
    depth, quoted = 0, False
    for char in rule:
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in ";#\\":
            return f"holds {char!r} outside quotes: one rule, no statement separators"
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                return "closes a '}' it did not open"
    if quoted:
        return "has an unterminated quoted string"
    if depth:
        return "leaves a '{' open"
    return None


def check_script(rule: str, table: str) -> str:
    """The nft script that loads ``rule`` in the context the firewall gives it."""
    return (f"table inet {table} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            "    jump acl\n"
            "  }\n"
            "  chain acl {\n"
            f"    counter {rule}\n"
            "  }\n"
            "}\n")


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "Error:" in line:
            return line.split("Error:", 1)[1].strip()
    return text.strip().splitlines()[0] if text.strip() else "nft refused it"


def _run(argv: list[str], script: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=script, capture_output=True, text=True,
                              timeout=NFT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CheckUnavailable(f"nft did not answer within {NFT_TIMEOUT:g} s") from None


def nft_problem(rule: str) -> str | None:
    """nft's first error for ``rule`` in its chain, or None when it loads.

    The chain is loaded for real inside a network namespace of its own (``unshare --net``)
    that disappears with the process, so kernel-side refusals (e.g. ``masquerade`` outside a
    nat chain) count too; where that is not permitted, ``nft -c`` (check only) is used.
    Raises CheckUnavailable when nft is missing or not permitted.
    """
    nft = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
    if nft is None:
        raise CheckUnavailable("nft is not installed on the API's node")
    script = check_script(rule, f"pvc_check_{secrets.token_hex(4)}")
    unshare = shutil.which("unshare")
    if unshare is not None:
        proc = _run([unshare, "--net", nft, "-f", "-"], script)
        if proc.returncode == 0:
            return None
        if "unshare failed" not in proc.stderr:
            return _first_error(proc.stderr)
    proc = _run([nft, "-c", "-f", "-"], script)
    if proc.returncode == 0:
        return None
    if "Operation not permitted" in proc.stderr:
        raise CheckUnavailable("nft is not permitted to check rules on the API's node")
    return _first_error(proc.stderr)


def check_rule(rule: str) -> str:
    """``rule`` stripped, or AclError naming ``rule`` with the reason nft would refuse it."""
    why = unsafe(rule)
    if why:
        raise AclError("rule", f"Invalid parameter 'rule': {why}")
    rule = rule.strip()
    error = nft_problem(rule)
    if error:
        raise AclError("rule", f"Invalid parameter 'rule': nft refuses it: {error}")
    return rule


def find(acls: dict[str, list[dict[str, str]]], description: str) -> tuple[str, int] | None:
    """(direction, position) of the ACL ``description``, or None."""
    for direction in DIRECTIONS:
        for i, acl in enumerate(acls[direction]):
            if acl["description"] == description:
                return direction, i
    return None


def insert(acls: dict[str, list[dict[str, str]]], direction: str, description: str,
           rule: str, order: int | None) -> dict[str, list[dict[str, str]]]:
    """``acls`` with a new ACL at position ``order`` of ``direction`` (None, 0 or past the
    end: appended, as the original does); the others move down one. AclError when the
    description is in use in either direction."""
    if direction not in DIRECTIONS:
        raise AclError("direction", f"Invalid parameter 'direction': {direction!r} is not "
                                    "in or out")
    if find(acls, description) is not None:
        raise AclError("description", f"ERROR: A rule with description '{description}' "
                                      "already exists!")
    if order is not None and order < 0:
        raise AclError("order", f"Invalid parameter 'order': must be at least 0, not {order}")
    out = {d: list(acls[d]) for d in DIRECTIONS}
    rules = out[direction]
    position = len(rules) if not order or order > len(rules) else order
    rules.insert(position, {"description": description, "rule": rule})
    return out


def remove(acls: dict[str, list[dict[str, str]]],
           description: str) -> dict[str, list[dict[str, str]]]:
    """``acls`` without ACL ``description`` (the ones after it move up); AclError if absent."""
    where = find(acls, description)
    if where is None:
        raise AclError("description", "ERROR: No firewall rule exists matching description "
                                      f"'{description}'!")
    out = {d: list(acls[d]) for d in DIRECTIONS}
    del out[where[0]][where[1]]
    return out


def wire(acls: dict[str, list[dict[str, str]]], direction: str | None = None
         ) -> list[dict[str, Any]]:
    """The ACLs as API v1 answers them: ``in`` then ``out``, each by order."""
    return [{"direction": d, "order": i, "description": acl["description"], "rule": acl["rule"]}
            for d in DIRECTIONS if direction in (None, d)
            for i, acl in enumerate(acls[d])]
