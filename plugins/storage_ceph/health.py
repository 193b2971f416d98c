"""Node health check ``ceph``: this node's Ceph daemons, as the monitors see them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc_kernel.sdk import CheckResult, HealthCheck
from pvc_plugins.storage_ceph import osds

OSD_DOWN_DELTA = 50      # an OSD of this node that is down
OSD_OUT_DELTA = 10       # ... up, but out of the data placement
MON_OUT_DELTA = 50       # this node's monitor outside the quorum


class CephCheck(HealthCheck):
    """The OSDs under this node's CRUSH host are up and in; a monitor named like the node is
    in the quorum. ``runtime()`` answers the plugin's node Runtime (None once stopped)."""

    name = "ceph"
    timeout = 15.0

    def __init__(self, runtime: Callable[[], Any]) -> None:
        self.runtime = runtime

    def setup(self, daemon: Any) -> str | None:
        rt = self.runtime()
        if rt is None or not rt.settings.enabled:
            return "no Ceph configuration on this node"
        return None

    def run(self, daemon: Any) -> CheckResult:
        rt = self.runtime()
        if rt is None:
            return CheckResult(0, "the Ceph plugin is stopping")
        client, cfg = rt.client, rt.settings
        tree = client.mon("osd tree") or {}
        mine = osds.host_osds(tree, cfg.crush_host)
        dump = {int(o["osd"]): o for o in (client.mon("osd dump") or {}).get("osds", [])}
        quorum = client.mon("quorum_status") or {}
        mons = [m.get("name") for m in (quorum.get("monmap") or {}).get("mons", [])]
        delta, problems, data = 0, [], {"osds": {}, "mon": None}
        for osd_id in mine:
            o = dump.get(osd_id, {})
            up, inn = bool(o.get("up")), bool(o.get("in"))
            data["osds"][str(osd_id)] = {"up": up, "in": inn}
            if not up:
                delta += OSD_DOWN_DELTA
                problems.append(f"osd.{osd_id} down")
            elif not inn:
                delta += OSD_OUT_DELTA
                problems.append(f"osd.{osd_id} out")
        if cfg.node in mons:
            in_quorum = cfg.node in (quorum.get("quorum_names") or [])
            data["mon"] = {"name": cfg.node, "in_quorum": in_quorum}
            if not in_quorum:
                delta += MON_OUT_DELTA
                problems.append(f"mon.{cfg.node} out of quorum")
        if problems:
            return CheckResult(delta, "; ".join(problems), data)
        parts = [f"{len(mine)} OSD(s) up and in"] if mine else ["no OSDs"]
        if data["mon"]:
            parts.append(f"mon.{cfg.node} in quorum")
        return CheckResult(0, ", ".join(parts), data)
