"""Prometheus metrics on the lab: a real Prometheus (Debian's), started in the admin
namespace with the shipped scrape config (deploy/prometheus/pvc.yml, its targets set to the
lab's coordinators), scrapes every coordinator's pvcapid; PromQL answers what the API and
CLI report. promtool checks the shipped config, the exposition and the dashboard's names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pvc_lab.spec import API_PORT
from tests.lab.vmtools import define, ok

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "prometheus" / "pvc.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "pvc-cluster.json"
PROM_PORT = 19090
WAIT = 90

QUERY = """
import json, sys, urllib.parse, urllib.request
url = f"http://127.0.0.1:{sys.argv[2]}/api/v1/query?" + urllib.parse.urlencode(
    {"query": sys.argv[1]})
print(json.dumps(json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]))
"""

FETCH = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode(), end="")
"""


@pytest.fixture
def prometheus(vmlab, tmp_path):
    """Prometheus scraping every coordinator every second; stopped by PID afterwards."""
    if not shutil.which("prometheus") or not shutil.which("promtool"):
        pytest.skip("prometheus is not installed (scripts/bootstrap.sh installs it)")
    lab = vmlab
    config = yaml.safe_load(SHIPPED.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (job,) = config["scrape_configs"]
    job["scrape_timeout"] = "1s"
    job["static_configs"][0]["targets"] = [f"{lab.spec.node(n).address}:{API_PORT}"
                                           for n in lab.coordinators]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    log = open(tmp_path / "prometheus.log", "wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.spec.admin_netns, "prometheus",
         f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{PROM_PORT}"], stdout=log, stderr=log)
    try:
        yield lab
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def promql(lab, expr: str) -> list[dict]:
    out = lab.admin_exec([sys.executable, "-c", QUERY, expr, str(PROM_PORT)],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return []
    return json.loads(out.stdout)


def scalar(lab, expr: str) -> float | None:
    found = promql(lab, expr)
    return float(found[0]["value"][1]) if len(found) == 1 else None


def as_json(lab, *args: str):
    return json.loads(ok(lab, *args, "-f", "json"))


def test_prometheus_scrapes_every_coordinator_and_answers_what_the_api_says(prometheus):
    lab = prometheus
    out = define(lab, "metricsvm", "hv2", memory=160)
    assert out.returncode == 0, out.stdout + out.stderr
    lab.wait_for(lambda: scalar(lab, 'count(up{job="pvc"} == 1)') == len(lab.coordinators),
                 WAIT, "Prometheus to scrape every coordinator")
    health = as_json(lab, "cluster", "status")["cluster_health"]["health"]
    lab.wait_for(lambda: scalar(lab, 'max(pvc_cluster_health{job="pvc"})') == health, WAIT,
                 f"pvc_cluster_health to read {health}")
    # every coordinator answers the same cluster-wide figure
    per = promql(lab, 'pvc_cluster_health{job="pvc"}')
    assert len(per) == len(lab.coordinators) and {float(r["value"][1]) for r in per} == {health}

    node = as_json(lab, "node", "info", "hv2")
    node = node[0] if isinstance(node, list) else node
    assert isinstance(node["health"], int)
    lab.wait_for(lambda: scalar(lab, 'max(pvc_node_health{node="hv2"})') == node["health"],
                 WAIT, f"pvc_node_health of hv2 to read {node['health']}")

    vm = as_json(lab, "vm", "info", "metricsvm")
    vm = vm[0] if isinstance(vm, list) else vm
    want = vm["memory"] * 2**20
    lab.wait_for(lambda: scalar(lab, 'max(pvc_vm_memory_bytes{vm="metricsvm"})') == want,
                 WAIT, "the VM's memory in Prometheus")
    assert want == 160 * 2**20
    state = promql(lab, 'max by (state) (pvc_vm_state{vm="metricsvm"})')
    assert [r["metric"]["state"] for r in state] == [vm["state"]]
    assert scalar(lab, 'count(pvc_zookeeper_up{job="pvc"} == 1) / count(pvc_zookeeper_up'
                       '{job="pvc"})') == 1.0


def test_promtool_accepts_the_exposition_and_the_shipped_config(prometheus):
    lab = prometheus
    for path in (SHIPPED,):
        check = subprocess.run(["promtool", "check", "config", str(path)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
    url = f"http://{lab.spec.node(lab.coordinators[0]).address}:{API_PORT}/api/v1/metrics"
    fetched = lab.admin_exec([sys.executable, "-c", FETCH, url], capture_output=True,
                             text=True, timeout=30)
    assert fetched.returncode == 0, fetched.stderr
    text = fetched.stdout
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    exposed = set(re.findall(r"^# TYPE (\S+) (\S+)", text, re.M))
    names = set()
    for name, kind in exposed:
        names.add(name)
        if kind == "counter":
            names.add(f"{name}_total")
        if kind == "info":
            names.add(f"{name}_info")
    # the dashboard asks only for what pvcapid exposes (Ceph pools: none in this lab)
    from pvc_plugins.storage_ceph.metrics import POOL_FIELDS

    names |= {f"pvc_ceph_pool_{f}" for f in POOL_FIELDS} | {"pvc_ceph_pool_volumes"}
    dashboard = json.loads(DASHBOARD.read_text())
    asked = {name for panel in dashboard["panels"] for t in panel["targets"]
             for name in re.findall(r"\b(pvc_[a-z0-9_]+)\b", t["expr"])}
    assert asked and asked <= names, asked - names
    assert os.path.getsize(DASHBOARD) > 0
