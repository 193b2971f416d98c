"""The plugin's section of ``pvcnoded.yaml`` (``plugins.storage_ceph``), declared in
``SETTINGS`` (``pvcnoded --help-config``, docs/config.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pvc_kernel.sdk import Setting, Settings
from pvc_plugins.storage_ceph.errors import StorageError
from pvc_plugins.storage_ceph.units import parse_size

NAME = "storage_ceph"


def _size(value: Any) -> str | None:
    try:
        parse_size(value)
    except StorageError as exc:
        return str(exc)
    return None


SETTINGS = Settings(
    about="Ceph RBD storage. Without a readable ceph_conf the plugin stays idle on that node\n"
          "(no stats, storage routes answer 503).",
    groups={"benchmark": "pvc storage benchmark"},
    keys=(
        Setting("ceph_conf", str, "/etc/ceph/ceph.conf",
                "the cluster's ceph.conf on this node (default: $CEPH_CONF, else this)"),
        Setting("client_name", str, "client.admin",
                "the Ceph user of pvcnoded/pvcapid (its keyring via ceph.conf)"),
        Setting("crush_host", str, None, "this node's CRUSH host (default: the node name)"),
        Setting("failure_domain", str, "host", "CRUSH failure domain of tier rules",
                choices=("host", "osd")),
        Setting("osd_launcher", str, "systemd",
                "how OSD daemons start and stop: systemd (ceph-osd@ID) or spawn (pvcnoded "
                "starts them; the lab)", choices=("systemd", "spawn")),
        Setting("stats_interval", float, 10.0, "seconds between Ceph stats collections",
                minimum=1),
        Setting("benchmark.volume_size", (str, int), "8G", "the temporary benchmark volume",
                check=_size),
        Setting("benchmark.runtime", int, 30, "seconds per fio test", minimum=1),
        Setting("libvirt_secret", str, None,
                "UUID of the libvirt secret of client_name (cephx)"),
    ))


@dataclass(frozen=True)
class CephConfig:
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
    return SETTINGS.validate(section, f"plugins.{NAME}")[1]


def from_config(config: Any) -> CephConfig:
    """The plugin's settings from a ``pvc_kernel.config.NodeConfig`` (validated before)."""
    node = getattr(config, "node", "") or ""
    section = config.plugin_section(NAME) if config is not None else {}
    v = SETTINGS.validate(section, f"plugins.{NAME}")[0]
    return CephConfig(
        node=node,
        ceph_conf=section.get("ceph_conf") or os.environ.get("CEPH_CONF") or v["ceph_conf"],
        client_name=v["client_name"] or "client.admin",
        crush_host=v["crush_host"] or node,
        failure_domain=v["failure_domain"],
        osd_launcher=v["osd_launcher"],
        stats_interval=float(v["stats_interval"]),
        benchmark_volume_size=parse_size(v["benchmark.volume_size"]),
        benchmark_runtime=int(v["benchmark.runtime"]),
        libvirt_secret=v["libvirt_secret"],
    )
