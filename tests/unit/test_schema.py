"""The schema registry resolves every path and refuses clashes and bad names."""

from __future__ import annotations

import pytest

from pvc_kernel.state import schema


def test_paths_resolve():
    assert schema.path("node.keepalive", node="hv1") == "/nodes/hv1/keepalive"
    assert schema.path("config.primary_node") == "/config/primary_node"
    assert schema.path("lock", lock="schema-migration") == "/locks/schema-migration"


def test_missing_and_bad_placeholders():
    with pytest.raises(schema.SchemaError, match="needs node"):
        schema.path("node.keepalive")
    for bad in ("a/b", "..", "", "x y"):
        with pytest.raises(schema.SchemaError, match="invalid value"):
            schema.path("node", node=bad)
    with pytest.raises(schema.SchemaError, match="unknown ZooKeeper key"):
        schema.path("no.such.key")


def test_plugin_keys_register_once():
    key = schema.Key("testplugin.thing", "/testplugin/{thing}", owner="testplugin")
    schema.register(key)
    schema.register(key)  # same definition again is harmless
    assert schema.path("testplugin.thing", thing="x") == "/testplugin/x"
    with pytest.raises(schema.SchemaError, match="already defined by testplugin"):
        schema.register(schema.Key("testplugin.thing", "/other", owner="intruder"))


def test_every_kernel_path_is_absolute_and_unique():
    templates = [k.template for k in schema.keys().values()]
    assert all(t.startswith("/") for t in templates)
    assert len(templates) == len(set(templates))
