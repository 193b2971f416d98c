"""pvcapid as a real process and waitress as a real server (TLS front headers, ZooKeeper loss)."""

from __future__ import annotations

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

pytestmark = pytest.mark.integration

KEY = "server-test-key"
PVCAPID = str(Path(sys.executable).with_name("pvcapid"))


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
