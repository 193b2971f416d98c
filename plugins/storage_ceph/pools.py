"""RBD pools: list with usage, add (PGs, copies/mincopies, tier), set PGs, remove.

PVC's pools are the pools with the ``rbd`` application enabled; Ceph's own pools
(``device_health_metrics``, ``.mgr``) are left out.
"""

from __future__ import annotations

from typing import Any

from pvc_plugins.storage_ceph import units
from pvc_plugins.storage_ceph.client import CephClient
from pvc_plugins.storage_ceph.errors import NotFound, StorageError

RBD_APP = "rbd"
STAT_KEYS = ("num_objects", "num_object_clones", "num_object_copies",
             "num_objects_missing_on_primary", "num_objects_unfound", "num_objects_degraded")


def pool_details(client: CephClient) -> list[dict[str, Any]]:
    """``osd pool ls detail`` of the RBD pools, sorted by name."""
    pools = client.mon("osd pool ls", detail="detail") or []
    return sorted((p for p in pools if RBD_APP in (p.get("application_metadata") or {})),
                  key=lambda p: p["pool_name"])


def rule_names(client: CephClient) -> dict[int, str]:
    return {r["rule_id"]: r["rule_name"] for r in client.mon("osd crush rule dump") or []}


def df(client: CephClient) -> dict[str, Any]:
    return client.mon("df", detail="detail") or {}


def avail_bytes(df_doc: dict[str, Any], name: str, size: int) -> int:
    """What ``name`` can still store: ``ceph df``'s max_avail; for a pool created seconds ago
    (not in the manager's statistics yet) the raw free space divided by its copies."""
    for p in df_doc.get("pools", []):
        if p["name"] == name:
            return int(p["stats"].get("max_avail", 0))
    return int(df_doc.get("stats", {}).get("total_avail_bytes", 0)) // max(int(size), 1)


def max_avail(client: CephClient, pool: str) -> int:
    """Bytes that can still be stored in ``pool``."""
    size = next((p["size"] for p in pool_details(client) if p["pool_name"] == pool), None)
    if size is None:
        raise StorageError(f'Pool "{pool}" not found.')
    return avail_bytes(df(client), pool, size)


def pool_stats(client: CephClient, pool: dict[str, Any], df_doc: dict[str, Any]) -> dict[str, Any]:
    name = pool["pool_name"]
    st = next((p["stats"] for p in df_doc.get("pools", []) if p["name"] == name), {})
    with client.ioctx(name) as ioctx:
        raw = ioctx.get_stats()
    stats: dict[str, Any] = {
        "id": pool["pool_id"],
        "stored_bytes": int(st.get("stored", 0)),
        "free_bytes": avail_bytes(df_doc, name, pool["size"]),
        "used_bytes": int(st.get("bytes_used", 0)),
        "used_percent": float(st.get("percent_used", 0.0)),
    }
    stats.update({k: int(raw.get(k, 0)) for k in STAT_KEYS})
    stats.update({"read_ops": int(raw.get("num_rd", 0)),
                  "read_bytes": int(raw.get("num_rd_kb", 0)) * 1024,
                  "write_ops": int(raw.get("num_wr", 0)),
                  "write_bytes": int(raw.get("num_wr_kb", 0)) * 1024})
    return stats


def list_pools(client: CephClient, match: Any = None) -> list[dict[str, Any]]:
    """Pool objects of the API (name, volume_count, tier, pgs, stats), sorted by name."""
    import rbd

    rules = rule_names(client)
    df_doc = df(client)
    out = []
    for pool in pool_details(client):
        name = pool["pool_name"]
        if match is not None and not match(name):
            continue
        with client.ioctx(name) as ioctx:
            count = len(rbd.RBD().list(ioctx))
        out.append({"name": name, "volume_count": count,
                    "tier": units.rule_tier(rules.get(pool.get("crush_rule"), "")),
                    "pgs": str(pool.get("pg_num_target") or pool["pg_num"]), "copies": pool["size"],
                    "mincopies": pool["min_size"], "stats": pool_stats(client, pool, df_doc)})
    return out


def require_pool(client: CephClient, name: str) -> None:
    if not client.pool_exists(name):
        raise StorageError(f'Pool "{name}" not found.')


def failure_domains(client: CephClient, kind: str) -> int:
    """How many CRUSH buckets of type ``kind`` (host, osd) hold at least one OSD."""
    tree = client.mon("osd tree") or {}
    nodes = tree.get("nodes", [])
    if kind == "osd":
        return sum(1 for n in nodes if n.get("type") == "osd")
    return sum(1 for n in nodes if n.get("type") == kind and n.get("children"))


def ensure_rule(client: CephClient, tier: str, failure_domain: str) -> str:
    rule = units.tier_rule(tier)
    if rule not in rule_names(client).values():
        if tier == "default":
            raise StorageError(f"The CRUSH rule {rule} does not exist")
        client.mon("osd crush rule create-replicated", name=rule, root="default",
                   type=failure_domain, **{"class": tier})
    return rule


def add_pool(client: CephClient, name: str, pgs: int, replcfg: str, tier: str | None,
             failure_domain: str = "host") -> str:
    import rbd

    units.check_name("pool", name)
    units.check_pgs(pgs)
    copies, mincopies = units.parse_replcfg(replcfg)
    tier = units.check_tier(tier)
    if client.pool_exists(name):
        raise StorageError(f'Pool "{name}" already exists.')
    domains = failure_domains(client, failure_domain)
    if copies > domains:
        raise StorageError(f"Cannot keep {copies} copies: the cluster has only {domains} "
                           f"failure domain(s) of type {failure_domain} with OSDs")
    rule = ensure_rule(client, tier, failure_domain)
    client.mon("osd pool create", pool=name, pg_num=pgs, pgp_num=pgs, pool_type="replicated",
               rule=rule)
    try:
        client.mon("osd pool set", pool=name, var="size", val=str(copies))
        client.mon("osd pool set", pool=name, var="min_size", val=str(mincopies))
        client.mon("osd pool application enable", pool=name, app=RBD_APP)
        with client.ioctx(name) as ioctx:
            rbd.RBD().pool_init(ioctx, True)
    except Exception:
        client.mon("osd pool rm", pool=name, pool2=name, yes_i_really_really_mean_it=True)
        raise
    return f'Created RBD pool "{name}" with {pgs} PGs'


def set_pgs(client: CephClient, name: str, pgs: int) -> str:
    units.check_pgs(pgs)
    require_pool(client, name)
    client.mon("osd pool set", pool=name, var="pg_num", val=str(pgs))
    client.mon("osd pool set", pool=name, var="pgp_num", val=str(pgs))
    return f'Set PGs count to {pgs} for RBD pool "{name}".'


def remove_pool(client: CephClient, name: str) -> str:
    if not client.pool_exists(name) or name not in {p["pool_name"]
                                                    for p in pool_details(client)}:
        raise StorageError(f'Pool "{name}" not found.')
    client.mon("osd pool rm", pool=name, pool2=name, yes_i_really_really_mean_it=True)
    return f"Removed RBD pool '{name}' and all volumes."


def get_pool(client: CephClient, name: str) -> dict[str, Any]:
    found = [p for p in list_pools(client, lambda n: n == name)]
    if not found:
        raise NotFound("Pool not found.")
    return found[0]
