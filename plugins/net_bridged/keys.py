"""The network model's ZooKeeper keys (registered through ``pvc_schema_keys``)::

    /networks                      one child per network, named by its VNI
    /networks/<vni>                JSON: the network as defined (``contracts.NetworkSpec``),
                                   written by the API only
    /networks/<vni>/nodes/<node>   JSON: what that node built (observed, written by that
                                   node only): {"bridge", "port", "mtu", "state": "up" |
                                   "error", "error"}
    /networks/<vni>/acls           JSON: the network's ACLs (``acl`` module), written by the
                                   API only: {"in": [NetworkAcl, ...], "out": [...]}; a
                                   rule's ``order`` is its list position, so an insert or a
                                   removal that renumbers the rest is one versioned write

Other network plugins read these keys by name (``network``, ``vni=``); they never write them.
"""

from __future__ import annotations

from pvc_kernel.sdk import Key

OWNER = "net_bridged"
UP, ERROR = "up", "error"

KEYS = [
    Key("networks", "/networks", OWNER),
    Key("network", "/networks/{vni}", OWNER),
    Key("network.nodes", "/networks/{vni}/nodes", OWNER),
    Key("network.node", "/networks/{vni}/nodes/{node}", OWNER),
    Key("network.acls", "/networks/{vni}/acls", OWNER),
]


def bridge_name(vni: int) -> str:
    """The bridge of a network on every node (the original's name)."""
    return f"vmbr{vni}"
