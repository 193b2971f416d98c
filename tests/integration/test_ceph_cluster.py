"""Milestone 1: a real Ceph (mon, mgr, 2 bluestore-on-file OSDs) inside a network namespace.

The shared environment (``tests.support.ceph``) is brought up once per session; its
bring-up timings and daemon memory are printed for the record (``-s``).
"""

from __future__ import annotations

import subprocess
import time

import pytest

from pvc_lab import ceph as labceph
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration


def test_cluster_reaches_health_ok_in_its_namespace(ceph):
    # other modules share this cluster (pools come and go): wait for it to settle
    try:
        wait_for(lambda: labceph.health_ok(ceph.cluster.site), 90, what="HEALTH_OK")
    except AssertionError:
        raise AssertionError(
            f"not HEALTH_OK: {ceph.cluster.site.ceph('health', 'detail')}") from None
    st = ceph.cluster.site.ceph("status")
    assert st["osdmap"]["num_up_osds"] == 2
    mons = ceph.cluster.site.ceph("mon", "dump")["mons"]
    assert mons[0]["public_addrs"]["addrvec"][0]["addr"].startswith(ceph.cluster.site.address)
    print(f"\nCeph bring-up (s): {ceph.bringup}")
    print(f"Ceph daemon RSS (KiB): {ceph.cluster.memory()}")


def test_daemons_listen_only_inside_the_namespace(ceph):
    inside = subprocess.run(["ip", "netns", "exec", ceph.ns, "ss", "-ltnH"],
                            capture_output=True, text=True, check=True).stdout
    assert f"{ceph.cluster.site.address}:3300" in inside
    root = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    assert f"{ceph.cluster.site.address}:3300" not in root


def test_every_daemon_is_tracked_by_pid_and_in_the_namespace(ceph):
    records = ceph.cluster.records()
    assert {"mon", "mgr"} <= set(records)
    assert sum(1 for n in records if n.startswith("osd.")) >= 2
    in_ns = set(labceph.netns.pids(ceph.ns))
    assert {r.pid for r in records.values()} <= in_ns


def test_killed_osd_is_marked_down_and_recovers(ceph):
    osd = ceph.cluster.osd_ids[-1]
    ceph.cluster.kill_osd(osd)
    labceph.wait_for(lambda: labceph.osds_up(ceph.cluster.site)[0] == 1, 60, "OSD down")
    ceph.cluster.start_osd(osd)
    started = time.monotonic()
    ceph.cluster.wait_healthy(120)
    print(f"\nOSD restart to HEALTH_OK: {time.monotonic() - started:.1f} s")
