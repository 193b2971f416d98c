"""The `pvc` CLI against the real lab, driven the way an administrator would.

The CLI runs in the lab's admin namespace with only PVC_API_HOSTS / PVC_API_KEY
(``lab.admin_exec`` sets them), so no config file is involved.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

pytestmark = pytest.mark.lab

PVC = [sys.executable, "-m", "pvc_cli"]
API_UP_TIMEOUT = 60.0


def pvc(lab, *args: str, timeout: float = 180.0):
    env = dict(os.environ, NO_COLOR="1", PVC_CLI_CONFIG="/nonexistent/pvc.json")
    return lab.admin_exec([*PVC, *args], env=env, capture_output=True, text=True, timeout=timeout)


def pvc_json(lab, *args: str):
    out = pvc(lab, *args, "-f", "json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def cli_lab(healthy):
    """The healthy lab once its API answers the CLI."""
    healthy.wait_for(
        lambda: pvc(healthy, "node", "list", "-f", "json").returncode == 0,
        API_UP_TIMEOUT,
        "the API to answer `pvc node list`",
    )
    return healthy


def test_node_list_matches_the_lab(cli_lab):
    lab = cli_lab
    nodes = {n["name"]: n for n in pvc_json(lab, "node", "list")}
    assert sorted(nodes) == sorted(lab.nodes)
    assert all(n["daemon_state"] == "run" for n in nodes.values()), nodes
    primaries = [n for n, d in nodes.items() if d["coordinator_state"] == "primary"]
    assert primaries == [lab.primary()]
    pretty = pvc(lab, "node", "list")
    assert pretty.returncode == 0 and all(name in pretty.stdout for name in lab.nodes)


def test_cluster_status_and_node_info(cli_lab):
    lab = cli_lab
    status = pvc_json(lab, "cluster", "status")
    assert status["primary_node"] == lab.primary()
    assert status["nodes"]["total"] == len(lab.nodes)
    node = lab.coordinators[0]
    info = pvc_json(lab, "node", "info", node)  # the node object, not the API's 1-element array
    assert info["name"] == node and info["daemon_state"] == "run"


def test_unknown_node_is_one_error_line(cli_lab):
    out = pvc(cli_lab, "node", "info", "no-such-node")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pvc: "), lines
    assert "not found" in lines[0].lower()


def test_primary_handover_with_wait(cli_lab):
    lab = cli_lab
    old = lab.primary()
    target = next(n for n in lab.coordinators if n != old)
    out = pvc(lab, "node", "primary", target, "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == f"Primary coordinator is now {target}."
    lab.wait_for(lambda: lab.primary() == target, 30, f"{target} to be primary")


def test_flush_and_ready_with_wait(cli_lab):
    lab = cli_lab
    node = next(n for n in lab.nodes if n != lab.primary())
    out = pvc(lab, "node", "flush", node, "--wait")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("SUCCESS")
    assert pvc_json(lab, "node", "info", node)["domain_state"] == "flushed"
    out = pvc(lab, "node", "ready", node, "--wait")
    assert out.returncode == 0, out.stderr
    assert pvc_json(lab, "node", "info", node)["domain_state"] == "ready"
    tasks = pvc_json(lab, "task", "list")
    assert any(t.get("owner") == node for t in tasks), tasks


def test_failover_when_the_first_coordinator_is_cut_off(cli_lab):
    lab = cli_lab
    first = lab.coordinators[0]
    if first == lab.primary():  # keep the cluster's primary; cut a secondary off instead
        pvc(lab, "node", "primary", lab.coordinators[1], "--wait")
    lab.partition(first)
    try:
        out = pvc(lab, "--timeout", "10", "node", "list", "-f", "json")
        assert out.returncode == 0, out.stderr
    finally:
        lab.heal(first)


def test_api_answers_on_every_coordinator_and_wants_a_key(cli_lab):
    """Any coordinator serves the API (state is in ZooKeeper), not only the primary."""
    import requests

    from pvc_lab import admin_namespace

    lab = cli_lab
    hosts = lab.env_vars()["PVC_API_HOSTS"].split(",")
    key = lab.env_vars()["PVC_API_KEY"]
    assert len(hosts) == len(lab.coordinators)
    with admin_namespace(lab):
        for host in hosts:
            url = f"http://{host}/api/v1/node"
            # 401 comes before ZooKeeper is asked; wait for the keyed answer to stop being 503
            # (pvcapid answers 503 while its ZooKeeper session is still being established).
            lab.wait_for(lambda u=url: requests.get(u, headers={"X-Api-Key": key},
                                                     timeout=5).status_code == 200, 60,
                         f"{url} to answer with ZooKeeper connected")
            refused = requests.get(url, timeout=5)
            assert refused.status_code == 401
            assert refused.json() == {"message": "X-Api-Key Authentication required."}
            wrong = requests.get(url, headers={"X-Api-Key": "not-the-key"}, timeout=5)
            assert wrong.status_code == 401
            assert wrong.json() == {"message": "X-Api-Key Authentication failed."}
            nodes = requests.get(url, headers={"X-Api-Key": key}, timeout=5)
            assert nodes.status_code == 200
            assert sorted(n["name"] for n in nodes.json()) == sorted(lab.nodes)
            assert requests.get(f"http://{host}/api/v1/", timeout=5).status_code == 200


def test_next_command_works_after_the_coordinator_in_use_dies(cli_lab):
    """Pull the plug on the node at the first address the CLI uses; it fails over."""
    lab = cli_lab
    first = lab.coordinators[0]
    assert lab.env_vars()["PVC_API_HOSTS"].split(",")[0].startswith(lab.node(first).address)
    assert pvc(lab, "node", "list").returncode == 0
    lab.kill(first)
    out = pvc(lab, "--timeout", "10", "node", "list", "-f", "json")
    assert out.returncode == 0, out.stderr
    states = {n["name"]: n for n in json.loads(out.stdout)}
    assert first in states  # the dead node is still listed, by the surviving coordinators
