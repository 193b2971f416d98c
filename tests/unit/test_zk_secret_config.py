"""``zookeeper.secret``: validated without ever showing it; secret schema keys; the lab's
nodes share one; a Store given it authenticates as pvcnoded."""

from __future__ import annotations

import pytest

from pvc_kernel import config
from pvc_kernel.state import Store, schema
from pvc_kernel.state.store import SECRET_USER
from pvc_lab import spec
from pvc_lab.pvcnoded import node_config

MINIMAL = {"node": "hv1", "cluster": "c1", "zookeeper": {"hosts": ["10.0.0.1:2181"]}}
GOOD = "0123456789abcdef-secret"


def with_secret(value: object) -> dict:
    return {**MINIMAL, "zookeeper": {"hosts": ["10.0.0.1:2181"], "secret": value}}


def problems(data: dict) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.parse(data)
    return info.value.problems


def test_secret_is_optional_and_kept_out_of_repr():
    assert config.parse(MINIMAL).zookeeper_secret is None
    assert config.parse(with_secret(None)).zookeeper_secret is None
    cfg = config.parse(with_secret(GOOD))
    assert cfg.zookeeper_secret == GOOD
    assert GOOD not in repr(cfg)


@pytest.mark.parametrize(("value", "expected"), [
    ("short-secret", "must be at least 16 characters long, not 12"),
    ("has a space in this secret", "must not hold spaces or control characters"),
    ("tab\there-0123456789", "must not hold spaces or control characters"),
    (12345678901234567890, "must be a string, not int (quote it)"),
    (["0123456789abcdef"], "must be a string, not list (quote it)"),
    ("", "must be at least 16 characters long, not 0"),
])
def test_bad_secrets_are_named_but_never_shown(value, expected):
    found = problems(with_secret(value))
    assert found == [f"key 'zookeeper.secret': {expected}"]
    text = str(value)
    if len(text) > 2:
        assert all(text not in p for p in found)


def test_secret_problem_does_not_hide_the_others():
    data = {**with_secret("tiny-secret"), "keepalive_interval": -1}
    found = problems(data)
    assert "key 'zookeeper.secret': must be at least 16 characters long, not 11" in found
    assert any(p.startswith("key 'keepalive_interval'") for p in found)


def test_secret_keys_must_live_alone():
    schema.register(schema.Key("t1.secret", "/t1/secrets/{node}", "t1", secret=True))
    schema.register(schema.Key("t1.secret2", "/t1/secrets/{node}/x", "t1", secret=True))
    assert schema.is_secret("t1.secret") and not schema.is_secret("node")
    assert not schema.is_secret("no.such.key")
    with pytest.raises(schema.SchemaError, match="lies under /t1/secrets"):
        schema.register(schema.Key("t1.plain", "/t1/secrets/list", "t1"))
    with pytest.raises(schema.SchemaError, match="lies under /t1/secrets"):
        schema.register(schema.Key("t1.parent", "/t1/secrets", "t1"))
    schema.register(schema.Key("t1.open", "/t1/open/{node}", "t1"))   # a sibling is fine
    with pytest.raises(schema.SchemaError, match="lies under /t1/open"):
        schema.register(schema.Key("t1.bad", "/t1/open/{node}/pw", "t1", secret=True))
    with pytest.raises(schema.SchemaError, match="needs a parent of its own"):
        schema.register(schema.Key("t1.root", "/t1pw", "t1", secret=True))
    assert schema.secret_parent("/fencing/secrets/hv1") == "/fencing/secrets"


def test_fencing_password_is_a_secret_key():
    from pvc_plugins.fencing_ipmi import keys

    marked = {k.name for k in keys.KEYS if k.secret}
    assert marked == {"fencing.secret"}


def test_store_with_a_secret_authenticates_as_pvcnoded():
    plain = Store("127.0.0.1:9")
    assert not plain.authenticated and not plain.client.auth_data
    node = Store("127.0.0.1:9", secret=GOOD)
    assert node.authenticated
    assert node.client.auth_data == {("digest", f"{SECRET_USER}:{GOOD}")}


def test_lab_nodes_share_one_valid_secret():
    s = spec.build("pvc", nodes=4, state_dir="/nonexistent/pvc-lab")
    found = {config.parse(node_config(s, n), n.name).zookeeper_secret for n in s.nodes}
    assert len(found) == 1 and None not in found
    other = spec.build("pvc", nodes=4, state_dir="/nonexistent/pvc-lab")
    assert config.parse(node_config(other, other.node("hv1"))).zookeeper_secret not in found
