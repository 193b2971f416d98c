"""pvcapid as a real process and waitress as a real server (TLS front, ZooKeeper loss)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from pvc_kernel.state import Store
from pvc_kernel.state.migrations import migrate
from tests.support import zookeeper
from tests.support.tls import TlsFront, make_certificates

pytestmark = pytest.mark.integration

KEY = "server-test-key"
PVCAPID = str(Path(sys.executable).with_name("pvcapid"))
PVC = str(Path(sys.executable).with_name("pvc"))
FORWARDED = ["x-forwarded-proto", "x-forwarded-for", "x-forwarded-host"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_pvcapid(tmp_path: Path, hosts: str, **api: object) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    config = tmp_path / "pvcnoded.yaml"
    config.write_text(yaml.safe_dump({
        "node": "hv1", "cluster": "lab",
        "zookeeper": {"hosts": [hosts], "session_timeout": 4},
        "api": {"enabled": True, "port": port, "keys": [KEY], **api}}))
    log = open(tmp_path / "pvcapid.log", "wb")
    proc = subprocess.Popen([PVCAPID, "--config", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    base = f"http://127.0.0.1:{port}/api/v1"
    _wait_for(lambda: requests.get(f"{base}/", timeout=5).status_code == 200)
    return proc, base


def _stop(proc: subprocess.Popen, tmp_path: Path) -> float:
    """SIGTERM; returns how long the exit took. The log must hold no traceback."""
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = (tmp_path / "pvcapid.log").read_text()
    assert "Traceback" not in text, text
    return time.monotonic() - started


def test_forwarded_https_from_the_trusted_front_gives_https_urls(tmp_path):
    # ZooKeeper is never reachable here: the daemon serves anyway (503 where it is needed)
    proc, base = _start_pvcapid(tmp_path, "127.0.0.1:9", trusted_proxy="127.0.0.1",
                                trusted_proxy_headers=["x-forwarded-proto"])
    try:
        plain = requests.get(base, allow_redirects=False, timeout=5)
        assert plain.status_code == 308 and plain.headers["Location"] == f"{base}/"
        tls = requests.get(base, allow_redirects=False, timeout=5,
                           headers={"X-Forwarded-Proto": "https"})
        assert tls.headers["Location"] == f"{base}/".replace("http://", "https://")
        doc = requests.get(f"{base}/openapi.json", timeout=5,
                           headers={"X-Forwarded-Proto": "https"}).json()
        assert doc["servers"][0]["url"].startswith("https://")
        assert requests.get(f"{base}/status", headers={"X-Api-Key": KEY},
                            timeout=5).status_code == 503
    finally:
        assert _stop(proc, tmp_path) < 5


@pytest.fixture
def own_zookeeper():
    """A ZooKeeper of this test only, so it can be stopped and started again."""
    if not zookeeper.available():
        pytest.skip("ZooKeeper is not installed")
    server = zookeeper.ZooKeeperServer()
    server.start()
    yield server
    server.cleanup()


def _wait_for(fn, timeout: float = 30.0, step: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except requests.RequestException as exc:
            last = exc
        time.sleep(step)
    raise AssertionError(f"timed out; last result {last!r}")


def test_pvcapid_serves_survives_zookeeper_loss_and_stops_on_sigterm(own_zookeeper, tmp_path):
    store = Store(own_zookeeper.hosts)
    store.start()
    migrate(store)
    store.set("node.daemon_state", "run", node="hv1")
    store.set("node.domain_state", "ready", node="hv1")
    store.stop()
    proc, base = _start_pvcapid(tmp_path, own_zookeeper.hosts, wait_timeout=120)
    auth = {"X-Api-Key": KEY}

    def status_code() -> int:
        return requests.get(f"{base}/status", headers=auth, timeout=10).status_code

    try:
        _wait_for(lambda: status_code() == 200)
        own_zookeeper.stop()
        _wait_for(lambda: status_code() == 503)
        r = requests.get(f"{base}/node", headers=auth, timeout=10)
        assert r.status_code == 503 and "unreachable" in r.json()["message"]
        assert requests.get(f"{base}/", timeout=5).status_code == 200  # needs no ZooKeeper
        own_zookeeper.start()
        _wait_for(lambda: status_code() == 200)
        # a request waiting for a flush task must not hold up the shutdown
        waiting = threading.Thread(target=lambda: requests.post(
            f"{base}/node/hv1/domain-state", params={"state": "flush", "wait": "true"},
            headers=auth, timeout=30), daemon=True)
        waiting.start()
        time.sleep(1.0)
    finally:
        assert _stop(proc, tmp_path) < 5


def test_pvcapid_rejects_a_bad_config(tmp_path):
    config = tmp_path / "pvcnoded.yaml"
    config.write_text(yaml.safe_dump({"node": "hv1", "cluster": "c",
                                      "zookeeper": {"hosts": ["127.0.0.1:2181"]},
                                      "api": {"port": "high", "threads": 0}}))
    done = subprocess.run([PVCAPID, "--config", str(config)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "key 'api.port'" in done.stderr and "key 'api.threads'" in done.stderr


# -- a real TLS front ------------------------------------------------------------------------

@pytest.fixture
def seeded_hosts(zk_hosts):
    """The test's ZooKeeper chroot, migrated, with one running node hv1 and a log."""
    store = Store(zk_hosts)
    store.start()
    migrate(store)
    for key, value in (("node.daemon_state", "run"), ("node.domain_state", "ready"),
                       ("node.coordinator_state", "primary"), ("node.log", "one\ntwo")):
        store.set(key, value, node="hv1")
    store.set("config.primary_node", "hv1")
    store.stop()
    return zk_hosts


def _pvc(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the ``pvc`` CLI with a private config file and only the given PVC_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PVC_")}
    clean.update(PVC_CLI_CONFIG=str(tmp_path / "pvc.json"), NO_COLOR="1", **env)
    return subprocess.run([PVC, *args], capture_output=True, text=True, timeout=60, env=clean)


def test_cli_over_https_through_a_tls_front(seeded_hosts, tmp_path):
    certs = make_certificates(str(tmp_path))
    proc, base = _start_pvcapid(tmp_path, seeded_hosts, wait_timeout=1,
                                trusted_proxy="127.0.0.1", trusted_proxy_headers=FORWARDED)
    port = int(base.split(":")[2].split("/")[0])
    front = TlsFront(("127.0.0.1", port), certs)
    front.start()
    tls = f"{front.url}/api/v1"
    try:
        # URLs that pvcapid makes name the front, with https
        r = requests.get(tls, allow_redirects=False, verify=certs.ca, timeout=10)
        assert r.status_code == 308 and r.headers["Location"] == f"{tls}/"
        doc = requests.get(f"{tls}/openapi.json", verify=certs.ca, timeout=10).json()
        assert doc["servers"] == [{"url": tls}]
        r = requests.post(f"{tls}/node/hv1/domain-state", verify=certs.ca, timeout=30,
                          params={"state": "flush", "wait": "true"}, headers={"X-Api-Key": KEY})
        assert r.status_code == 202  # nobody runs the task; wait_timeout is 1 s
        assert r.headers["Location"] == f"{tls}/tasks/{r.json()['task_id']}"
        task = requests.get(r.headers["Location"], verify=certs.ca, timeout=10,
                            headers={"X-Api-Key": KEY})
        assert task.status_code == 200 and task.json()["type"] == "node.flush"
        with pytest.raises(requests.exceptions.SSLError):  # a real certificate check
            requests.get(tls, timeout=10)

        # the CLI: a saved connection with the CA file
        added = _pvc(tmp_path, "connection", "add", "tls", "-a", front.url, "--api-key", KEY,
                     "--ca-file", certs.ca, "--default")
        assert added.returncode == 0, added.stderr
        saved = json.loads((tmp_path / "pvc.json").read_text())["connections"]["tls"]
        assert saved["ca_file"] == certs.ca and saved["addresses"] == [front.url]
        listed = _pvc(tmp_path, "node", "list", "-f", "json")
        assert listed.returncode == 0, listed.stderr
        assert [n["name"] for n in json.loads(listed.stdout)] == ["hv1"]
        log = _pvc(tmp_path, "node", "log", "hv1", "--format", "json")
        assert json.loads(log.stdout) == {"name": "hv1", "data": "one\ntwo"}, log.stderr
        on = _pvc(tmp_path, "cluster", "maintenance", "on")
        assert on.returncode == 0 and "maintenance mode" in on.stdout, on.stderr

        # ad hoc (environment), with and without the CA
        env = {"PVC_API_HOSTS": front.url, "PVC_API_KEY": KEY}
        untrusted = _pvc(tmp_path, "node", "list", **env)
        assert untrusted.returncode == 3
        assert "TLS error" in untrusted.stderr and "certificate" in untrusted.stderr
        assert "Traceback" not in untrusted.stderr
        # the connection's CA file and --no-verify win over $REQUESTS_CA_BUNDLE
        env["REQUESTS_CA_BUNDLE"] = requests.certs.where()
        trusted = _pvc(tmp_path, "node", "list", "-f", "json", PVC_API_CA_FILE=certs.ca, **env)
        assert trusted.returncode == 0, trusted.stderr
        unverified = _pvc(tmp_path, "node", "list", "-f", "json", PVC_API_VERIFY="false", **env)
        assert unverified.returncode == 0, unverified.stderr
        missing = _pvc(tmp_path, "node", "list", PVC_API_CA_FILE=str(tmp_path / "nope.pem"),
                       **env)
        assert missing.returncode == 4 and "CA file" in missing.stderr
    finally:
        front.stop()
        assert _stop(proc, tmp_path) < 5


def _direct_get(port: int, source: str, headers: dict[str, str]) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    conn.request("GET", "/api/v1", headers=headers)
    reply = conn.getresponse()
    reply.read()
    conn.close()
    return reply


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(seeded_hosts, tmp_path):
    proc, base = _start_pvcapid(tmp_path, seeded_hosts, trusted_proxy="127.0.0.1",
                                trusted_proxy_headers=FORWARDED)
    port = int(base.split(":")[2].split("/")[0])
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example:443",
              "X-Forwarded-For": "192.0.2.9"}
    try:
        # 127.0.0.2 is not the trusted front: its forwarded headers are dropped
        reply = _direct_get(port, "127.0.0.2", forged)
        assert reply.status == 308
        assert reply.getheader("Location") == f"http://127.0.0.1:{port}/api/v1/"
        # the same headers from the trusted address are believed
        reply = _direct_get(port, "127.0.0.1", forged)
        assert reply.getheader("Location") == "https://evil.example:443/api/v1/"
    finally:
        assert _stop(proc, tmp_path) < 5


# -- pvcnoded supervises pvcapid ---------------------------------------------------------------

def _api_children(daemon) -> list:
    """The live pvcapid processes the node daemon started."""
    import psutil

    try:
        children = psutil.Process(daemon.proc.pid).children()
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if "pvc_api.server" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
def noded_api(daemons):
    """A coordinator pvcnoded with the API enabled; (daemon, base URL) once the API answers."""
    port = _free_port()
    daemon = daemons("hv1", api={"enabled": True, "port": port, "keys": [KEY]})
    base = f"http://127.0.0.1:{port}/api/v1"
    _wait_for(lambda: requests.get(f"{base}/node", headers={"X-Api-Key": KEY},
                                   timeout=5).status_code == 200, 60)
    return daemon, base


def _kill_api_and_wait_for_restart(daemon, base: str) -> None:
    (old,) = _api_children(daemon)
    os.kill(old.pid, signal.SIGKILL)
    old.wait(10)
    new = _wait_for(lambda: [p for p in _api_children(daemon) if p.pid != old.pid], 30)
    assert len(new) == 1
    _wait_for(lambda: requests.get(f"{base}/node", headers={"X-Api-Key": KEY},
                                   timeout=5).status_code == 200, 60)
    assert daemon.running()
    assert f"pvcapid exited with -{int(signal.SIGKILL)}; restarting" in daemon.log()


def test_pvcnoded_restarts_a_killed_pvcapid(noded_api):
    daemon, base = noded_api
    _kill_api_and_wait_for_restart(daemon, base)
    nodes = requests.get(f"{base}/node", headers={"X-Api-Key": KEY}, timeout=5).json()
    assert [n["name"] for n in nodes] == ["hv1"]
    _kill_api_and_wait_for_restart(daemon, base)  # and again (backoff, not give-up)


def test_a_task_record_survives_a_pvcapid_restart(noded_api):
    daemon, base = noded_api
    auth = {"X-Api-Key": KEY}
    r = requests.post(f"{base}/node/hv1/domain-state", params={"state": "flush"}, headers=auth,
                      timeout=10)
    assert r.status_code == 200, r.text
    task_id = r.json()["task_id"]
    before = requests.get(f"{base}/tasks/{task_id}", headers=auth, timeout=5).json()
    assert (before["id"], before["type"], before["owner"]) == (task_id, "node.flush", "hv1")
    _kill_api_and_wait_for_restart(daemon, base)
    after = requests.get(f"{base}/tasks/{task_id}", headers=auth, timeout=5)
    assert after.status_code == 200
    assert {k: after.json()[k] for k in ("id", "type", "owner")} == {
        "id": task_id, "type": "node.flush", "owner": "hv1"}
    listed = requests.get(f"{base}/tasks", params={"detail": "true"}, headers=auth,
                          timeout=5).json()
    assert task_id in [t["id"] for t in listed]


def test_pvcapid_dies_with_its_pvcnoded(noded_api):
    """SIGKILL of pvcnoded leaves no orphaned pvcapid: it asked for SIGTERM on its parent's
    death itself (no preexec_fn, which can deadlock a fork of the multi-threaded daemon)."""
    import psutil

    daemon, _base = noded_api
    (api,) = _api_children(daemon)
    assert f"--parent-pid {daemon.proc.pid}" in " ".join(api.cmdline())
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(10)
    try:
        api.wait(15)
    except psutil.TimeoutExpired:
        api.kill()
        raise AssertionError("pvcapid outlived its pvcnoded") from None


def test_pvcapid_with_a_dead_parent_exits_at_once(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pvc_api.server", "--parent-pid", "1",
                           "--config", str(tmp_path / "none.yaml")], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0 and proc.stderr == ""


def test_two_sigterms_at_once_still_stop_pvcapid(zk_hosts, tmp_path):
    """The parent's death signal and a supervisor's SIGTERM can arrive together; a handler
    that took a lock once deadlocked in its own second run and pvcapid never exited."""
    proc, _base = _start_pvcapid(tmp_path, zk_hosts)
    try:
        for _ in range(20):
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert "Traceback" not in (tmp_path / "pvcapid.log").read_text()
