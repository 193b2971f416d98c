"""The network model's ZooKeeper keys (registered through ``pvc_schema_keys``)::

    /networks                      one child per network, named by its VNI
    /networks/<vni>                JSON: the network as defined (``contracts.NetworkSpec``),
                                   written by the API only
    /networks/<vni>/nodes/<node>   JSON: what that node built (observed, written by that
                                   node only): {"bridge", "port", "mtu", "state": "up" |
                                   "error", "error"}
    /networks/<vni>/reservations   DHCP reservations (desired, written by the API only under
                                   the ``networks`` lock); its value changes with every
                                   change of a child, so one data watch sees them all
    /networks/<vni>/reservations/<mac>
                                   JSON {"mac", "ip4", "hostname"}
    /networks/<vni>/leases/<mac>   JSON {"mac", "ip4", "hostname", "expiry" (epoch; 0 =
                                   never), "client_id", "node"}: a live DHCP lease (observed,
                                   written by the node serving DHCP, the managed type's
                                   plugin on the primary; the API only deletes one)
    /networks/<vni>/acls           JSON: the network's ACLs (``acl`` module), written by the
                                   API only: {"in": [NetworkAcl, ...], "out": [...]}; a
                                   rule's ``order`` is its list position, so an insert or a
                                   removal that renumbers the rest is one versioned write

Other network plugins read these keys by name (``network``, ``vni=``); they never write them,
except ``network.lease`` (see above).
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
    Key("network.reservations", "/networks/{vni}/reservations", OWNER),
    Key("network.reservation", "/networks/{vni}/reservations/{mac}", OWNER),
    Key("network.leases", "/networks/{vni}/leases", OWNER),
    Key("network.lease", "/networks/{vni}/leases/{mac}", OWNER),
    Key("network.acls", "/networks/{vni}/acls", OWNER),
]


def bridge_name(vni: int) -> str:
    """The bridge of a network on every node (the original's name)."""
    return f"vmbr{vni}"
