"""Secret keys (the BMC passwords) behind ZooKeeper digest ACLs, on a real ZooKeeper: only a
client holding pvcnoded's identity (``zookeeper.secret``) reads them; an unauthenticated
client and the API's client get NoAuth, and the API answers without them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import falcon.testing
import pytest
from kazoo.exceptions import NoAuthError
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

from pvc_api.app import create_app
from pvc_kernel import faults
from pvc_kernel.config import ApiConfig, NodeConfig
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store, schema
from pvc_kernel.state.store import SECRET_USER
from pvc_plugins.fencing_ipmi.agent import publish_secret, secret_fault_id
from pvc_plugins.fencing_ipmi.plugin import FencingIpmiPlugin as fencing_plugin

pytestmark = pytest.mark.integration

SECRET = "s3cret-" + "x" * 20
PASSWORD = "bmc-pw-not-shown"
KEY = "test-api-key-secrets"
ACL = [make_digest_acl(SECRET_USER, SECRET, all=True)]


@pytest.fixture
def stores(zk_hosts: str) -> Iterator[dict[str, Store]]:
    """Connected clients: two pvcnoded (same secret), one with another secret, one without."""
    PluginHost().register(fencing_plugin, "fencing_ipmi")   # the plugin's schema keys
    made = {"node": Store(zk_hosts, timeout=5, secret=SECRET),
            "peer": Store(zk_hosts, timeout=5, secret=SECRET),
            "other": Store(zk_hosts, timeout=5, secret="another-secret-0123456789"),
            "anon": Store(zk_hosts, timeout=5)}
    for s in made.values():
        s.start()
    yield made
    for s in made.values():
        s.stop()


def secrets_path(node: str = "hv1") -> tuple[str, str]:
    path = schema.path("fencing.secret", node=node)
    return path, schema.secret_parent(path)


def test_only_pvcnoded_reads_a_secret(stores):
    node, peer, other, anon = (stores[k] for k in ("node", "peer", "other", "anon"))
    assert publish_secret(node, "hv1", PASSWORD)
    path, parent = secrets_path()
    assert node.client.get_acls(path)[0] == ACL
    assert node.client.get_acls(parent)[0] == ACL
    assert node.client.get_acls(schema.path("fencing"))[0] == OPEN_ACL_UNSAFE   # only these
    assert peer.get("fencing.secret", node="hv1") == PASSWORD   # the fencing coordinator
    for stranger in (anon, other):
        with pytest.raises(NoAuthError):
            stranger.get("fencing.secret", node="hv1")
        with pytest.raises(NoAuthError):
            stranger.client.get_children(parent)          # cannot even list the nodes
        with pytest.raises(NoAuthError):
            stranger.set("fencing.secret", "overwritten", node="hv1")
        with pytest.raises(NoAuthError):
            stranger.delete("fencing.secret", node="hv1")
    assert peer.get("fencing.secret", node="hv1") == PASSWORD
    assert publish_secret(peer, "hv2", "pw2-not-shown")        # a new key under the parent
    assert node.client.get_acls(secrets_path("hv2")[0])[0] == ACL
    assert publish_secret(node, "hv1", None)                    # BMC removed from the config
    assert not node.exists("fencing.secret", node="hv1")


def test_an_open_secret_is_protected_on_the_next_publish(stores, caplog):
    node, anon = stores["node"], stores["anon"]
    with caplog.at_level("WARNING", logger="pvc_kernel.state.store"):
        assert publish_secret(anon, "hv1", "old-password")     # before a secret was configured
        assert publish_secret(anon, "hv1", "old-password")
    warned = [r for r in caplog.records if "no zookeeper.secret" in r.getMessage()]
    assert len(warned) == 1                                     # once per client
    assert "old-password" not in caplog.text
    path, parent = secrets_path()
    assert anon.client.get_acls(path)[0] == OPEN_ACL_UNSAFE
    assert anon.get("fencing.secret", node="hv1") == "old-password"
    assert publish_secret(node, "hv1", PASSWORD)
    assert node.client.get_acls(path)[0] == ACL and node.client.get_acls(parent)[0] == ACL
    with pytest.raises(NoAuthError):
        anon.get("fencing.secret", node="hv1")
    assert node.get("fencing.secret", node="hv1") == PASSWORD


def test_a_node_that_cannot_publish_raises_a_fault(stores):
    node, other = stores["node"], stores["other"]
    assert publish_secret(node, "hv1", PASSWORD)
    assert not publish_secret(other, "hv1", "new-password")
    fault = faults.get(node, secret_fault_id("hv1"))
    assert fault and "a different zookeeper.secret" in fault["message"]
    assert PASSWORD not in json.dumps(fault) and "new-password" not in json.dumps(fault)
    assert node.get("fencing.secret", node="hv1") == PASSWORD  # unchanged
    assert not publish_secret(stores["anon"], "hv1", "new-password")
    assert "has no zookeeper.secret" in faults.get(node, secret_fault_id("hv1"))["message"]
    assert publish_secret(node, "hv1", PASSWORD)
    assert faults.get(node, secret_fault_id("hv1")) is None   # cleared once it can


def test_the_api_client_gets_noauth_and_answers_without_the_secret(stores, zk_hosts):
    node = stores["node"]
    now = time.time()
    for key, value in (("node.static", {"cpu_count": 2, "memory_total": 2048}),
                       ("node.daemon_state", "run"), ("node.coordinator_state", "primary"),
                       ("node.domain_state", "ready"), ("node.keepalive", str(now)),
                       ("node.stats", {"bmc": {"host": "10.0.1.1", "port": 623,
                                               "user": "admin", "reachable": True}})):
        node.set(key, value, node="hv1")
    node.set("config.primary_node", "hv1")
    assert publish_secret(node, "hv1", PASSWORD)
    # pvcapid reads the same file (secret included) but connects as api/server.py does
    cfg = NodeConfig(node="hv1", cluster="test", zookeeper_hosts=[zk_hosts],
                     zookeeper_secret=SECRET, api=ApiConfig(keys=[KEY]))
    api_store = Store(cfg.zookeeper_hosts, timeout=cfg.zookeeper_session_timeout)
    api_store.start()
    try:
        assert not api_store.authenticated
        with pytest.raises(NoAuthError):
            api_store.get("fencing.secret", node="hv1")
        plugins = PluginHost()
        plugins.register(fencing_plugin, "fencing_ipmi")
        client = falcon.testing.TestClient(create_app(api_store, cfg, plugins).app,
                                           headers={"X-Api-Key": KEY})
        for url in ("/api/v1/node", "/api/v1/node/hv1", "/api/v1/status", "/api/v1/faults"):
            r = client.simulate_get(url)
            assert r.status_code == 200, (url, r.text)
            assert PASSWORD not in r.text and SECRET not in r.text
        assert client.simulate_get("/api/v1/node/hv1").json[0]["bmc"]["host"] == "10.0.1.1"
    finally:
        api_store.stop()


def test_a_coordinator_without_the_secret_gets_a_bmc_error(stores):
    from pvc_plugins.fencing_ipmi.ipmi import BmcError
    from pvc_plugins.fencing_ipmi.monitor import bmc_access

    node = stores["node"]
    node.set("fencing.bmc", {"host": "10.0.1.1", "port": 623, "user": "admin"}, node="hv1")
    assert publish_secret(node, "hv1", PASSWORD)
    assert bmc_access(stores["peer"], "hv1").password == PASSWORD
    with pytest.raises(BmcError, match="zookeeper.secret"):
        bmc_access(stores["anon"], "hv1")


def test_a_real_pvcnoded_protects_its_bmc_password(stores, daemons, zk_hosts):
    from pvc_kernel.plugins import available
    from tests.integration.test_fencing_monitor import BMC_ADDRESS, _free_udp_port
    from tests.support.daemons import wait_for

    others = [p for p in available() if p not in ("hoststats", "sample", "fencing_ipmi")]
    d = daemons("hv5", coordinator=False,
                zookeeper={"hosts": zk_hosts.split(","), "session_timeout": 3,
                           "secret": SECRET},
                plugins={"disabled": others, "fencing_ipmi": {"ipmi_timeout": 2, "bmc": {
                    "host": BMC_ADDRESS, "port": _free_udp_port(), "user": "admin",
                    "password": PASSWORD}}})
    wait_for(lambda: stores["node"].get_json("fencing.bmc", None, node="hv5"), timeout=30,
             what="the published BMC")
    path, parent = secrets_path("hv5")
    assert stores["node"].client.get_acls(path)[0] == ACL
    assert stores["node"].client.get_acls(parent)[0] == ACL
    assert stores["peer"].get("fencing.secret", node="hv5") == PASSWORD
    with pytest.raises(NoAuthError):
        stores["anon"].get("fencing.secret", node="hv5")
    text = d.log()
    assert "no zookeeper.secret" not in text
    assert PASSWORD not in text and SECRET not in text
