"""A plugin's own schema migrations on a real ZooKeeper: run under the schema lock after the
kernel's, one step at a time with the plugin's version recorded after each; a re-run is a
no-op, a crash half-way resumes at the step that failed, and a cluster ahead of the plugin
stops the daemon."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pvc_kernel import config as kconfig
from pvc_kernel.daemon import NodeDaemon, StartupError
from pvc_kernel.hookspecs import hookimpl
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import migrations, schema
from pvc_kernel.state.store import Store

pytestmark = pytest.mark.integration

PLUGIN = "migrating_sample"
KEYS = [schema.Key("migsample.old", "/migsample/old", PLUGIN),
        schema.Key("migsample.items", "/migsample/items", PLUGIN),
        schema.Key("migsample.item", "/migsample/items/{item}", PLUGIN)]


class Sample:
    """v0 → v1: the old comma-separated key becomes one key per item; v1 → v2: each item
    gains a ``size`` field. ``fail_once`` makes step 2 raise after its first item."""

    def __init__(self, fail_once: bool = False) -> None:
        self.fail_once = fail_once
        self.calls: list[int] = []

    def split(self, store: Store) -> None:
        self.calls.append(1)
        old = store.get("migsample.old")
        for name in (old or "").split(","):
            if name:
                store.ensure("migsample.item", json.dumps({"name": name}), item=name)
        store.delete("migsample.old")

    def add_size(self, store: Store) -> None:
        self.calls.append(2)
        for n, name in enumerate(sorted(store.children("migsample.items"))):
            item = store.get_json("migsample.item", {}, item=name)
            item.setdefault("size", 0)
            store.set("migsample.item", json.dumps(item), item=name)
            if self.fail_once and n == 0:
                self.fail_once = False
                raise RuntimeError("crash half-way")

    @hookimpl
    def pvc_schema_keys(self) -> list[Any]:
        return KEYS

    @hookimpl
    def pvc_schema_migrations(self) -> list[Any]:
        return [self.split, self.add_size]


def items(store: Store) -> dict[str, dict[str, Any]]:
    return {n: store.get_json("migsample.item", {}, item=n)
            for n in sorted(store.children("migsample.items"))}


@pytest.fixture
def seeded(store: Store) -> Store:
    """A cluster at the kernel's newest schema whose plugin keys are still at version 0."""
    for key in KEYS:
        if key.name not in schema.keys():
            schema.register(key)
    migrations.migrate(store, "test")
    store.set("migsample.old", "a,b")
    return store


def test_old_data_in_new_data_out_and_a_rerun_is_a_noop(seeded: Store):
    sample = Sample()
    steps = {PLUGIN: sample.pvc_schema_migrations()}
    migrations.migrate(seeded, "hv1", plugins=steps)
    assert sample.calls == [1, 2]
    assert items(seeded) == {"a": {"name": "a", "size": 0}, "b": {"name": "b", "size": 0}}
    assert not seeded.exists("migsample.old")
    assert migrations.plugin_version(seeded, PLUGIN) == 2
    lock_dir = schema.path("lock", lock="schema-migration")
    before = seeded.client.exists(lock_dir).cversion
    migrations.migrate(seeded, "hv1", plugins=steps)
    assert sample.calls == [1, 2]                                    # nothing ran again
    assert seeded.client.exists(lock_dir).cversion == before         # not even the lock


def test_a_crash_half_way_resumes_at_the_step_that_failed(seeded: Store):
    sample = Sample(fail_once=True)
    steps = {PLUGIN: sample.pvc_schema_migrations()}
    with pytest.raises(RuntimeError, match="crash half-way"):
        migrations.migrate(seeded, "hv1", plugins=steps)
    assert migrations.plugin_version(seeded, PLUGIN) == 1            # step 1 is recorded
    assert migrations.current_version(seeded) == schema.SCHEMA_VERSION
    migrations.migrate(seeded, "hv1", plugins=steps)
    assert sample.calls == [1, 2, 2]                                 # step 2 only, again
    assert items(seeded) == {"a": {"name": "a", "size": 0}, "b": {"name": "b", "size": 0}}
    assert migrations.plugin_version(seeded, PLUGIN) == 2


def _daemon(zk_hosts: str, plugin: Sample) -> NodeDaemon:
    cfg = kconfig.parse({"node": "hv1", "cluster": "test",
                         "zookeeper": {"hosts": zk_hosts.split(",")}})
    host = PluginHost()
    host.register(plugin, PLUGIN)
    daemon = NodeDaemon(cfg, host)
    daemon.store.start()
    return daemon


def test_pvcnoded_runs_a_plugins_migrations_and_refuses_a_newer_cluster(seeded: Store,
                                                                        zk_hosts: str):
    sample = Sample()
    daemon = _daemon(zk_hosts, sample)
    try:
        daemon.migrate_schema()
        assert sample.calls == [1, 2] and migrations.plugin_version(seeded, PLUGIN) == 2
        seeded.set("schema.plugin_version", "3", plugin=PLUGIN)     # a newer plugin ran here
        with pytest.raises(StartupError, match=f"plugin '{PLUGIN}'.*version 3.*upgrade"):
            daemon.migrate_schema()
        assert sample.calls == [1, 2]
    finally:
        daemon.store.stop()
