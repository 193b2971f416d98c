"""The plugin's section of ``pvcnoded.yaml`` (``plugins.storage_ceph``)::

    plugins:
      storage_ceph:
        ceph_conf: /etc/ceph/ceph.conf   # the cluster's ceph.conf on this node
        client_name: client.admin        # the Ceph user of pvcnoded/pvcapid (its keyring via
                                         # ceph.conf)
        crush_host: null                 # this node's CRUSH host (default: the node name)
        failure_domain: host             # CRUSH failure domain of tier rules (host | osd)
        osd_launcher: systemd            # how OSD daemons start/stop: systemd (ceph-osd@ID)
                                         # or spawn (pvcnoded starts them; the lab)
        stats_interval: 10               # seconds between Ceph stats collections
        benchmark:
          volume_size: 8G                # the temporary benchmark volume
          runtime: 30                    # seconds per fio test
        libvirt_secret: null             # UUID of the libvirt secret of client_name (cephx)

Without a readable ``ceph_conf`` the plugin stays idle on that node (no stats, storage routes
answer 503), so a cluster without Ceph pays nothing for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pvc_plugins.storage_ceph.errors import StorageError
from pvc_plugins.storage_ceph.units import parse_size

NAME = "storage_ceph"
_KEYS = {"ceph_conf", "client_name", "crush_host", "failure_domain", "osd_launcher",
         "stats_interval", "benchmark", "libvirt_secret"}
_BENCH_KEYS = {"volume_size", "runtime"}


@dataclass(frozen=True)
class Settings:
    node: str
    ceph_conf: str = "/etc/ceph/ceph.conf"
    client_name: str = "client.admin"
    crush_host: str = ""
    failure_domain: str = "host"
    osd_launcher: str = "systemd"
    stats_interval: float = 10.0
    benchmark_volume_size: int = 8 * 2**30
    benchmark_runtime: int = 30
    libvirt_secret: str | None = None

    @property
    def enabled(self) -> bool:
        return os.access(self.ceph_conf, os.R_OK)

    @property
    def rados_id(self) -> str:
        return self.client_name.split(".", 1)[1] if "." in self.client_name else self.client_name


def problems(section: dict[str, Any]) -> list[str]:
    """Every problem in the section, each naming its key."""
    out = []
    key = f"plugins.{NAME}"
    for k in section:
        if k not in _KEYS:
            out.append(f"key '{key}.{k}': is not a known setting")
    for k in ("ceph_conf", "client_name", "crush_host", "libvirt_secret"):
        v = section.get(k)
        if v is not None and not isinstance(v, str):
            out.append(f"key '{key}.{k}': must be a string, not {type(v).__name__}")
    if section.get("failure_domain", "host") not in ("host", "osd"):
        out.append(f"key '{key}.failure_domain': must be host or osd")
    if section.get("osd_launcher", "systemd") not in ("systemd", "spawn"):
        out.append(f"key '{key}.osd_launcher': must be systemd or spawn")
    interval = section.get("stats_interval", 10)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 1:
        out.append(f"key '{key}.stats_interval': must be a number of seconds ≥ 1")
    bench = section.get("benchmark") or {}
    if not isinstance(bench, dict):
        out.append(f"key '{key}.benchmark': must be a mapping")
        bench = {}
    for k in bench:
        if k not in _BENCH_KEYS:
            out.append(f"key '{key}.benchmark.{k}': is not a known setting")
    try:
        parse_size(bench.get("volume_size", "8G"))
    except StorageError as exc:
        out.append(f"key '{key}.benchmark.volume_size': {exc}")
    runtime = bench.get("runtime", 30)
    if isinstance(runtime, bool) or not isinstance(runtime, int) or runtime < 1:
        out.append(f"key '{key}.benchmark.runtime': must be an integer number of seconds ≥ 1")
    return out


def from_config(config: Any) -> Settings:
    """Settings from a ``pvc_kernel.config.NodeConfig`` (validated before)."""
    section = config.plugin_section(NAME) if config is not None else {}
    bench = section.get("benchmark") or {}
    node = getattr(config, "node", "") or ""
    return Settings(
        node=node,
        ceph_conf=section.get("ceph_conf") or os.environ.get("CEPH_CONF")
        or "/etc/ceph/ceph.conf",
        client_name=section.get("client_name") or "client.admin",
        crush_host=section.get("crush_host") or node,
        failure_domain=section.get("failure_domain", "host"),
        osd_launcher=section.get("osd_launcher", "systemd"),
        stats_interval=float(section.get("stats_interval", 10)),
        benchmark_volume_size=parse_size(bench.get("volume_size", "8G")),
        benchmark_runtime=int(bench.get("runtime", 30)),
        libvirt_secret=section.get("libvirt_secret"),
    )
