"""The kernel against a real ZooKeeper: migrations, keepalives, election, outages, tasks."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kazoo.exceptions import NodeExistsError, NotEmptyError

from pvc_kernel import tasks
from pvc_kernel.state import LockBusy, Store, migrations, schema
from tests.support.daemons import wait_for

pytestmark = pytest.mark.integration


def test_schema_migrates_from_v0_to_current(store):
    assert migrations.current_version(store) == 0
    assert migrations.migrate(store, "test") == 0
    assert migrations.current_version(store) == schema.SCHEMA_VERSION
    assert store.get("config.primary_node") == "none"
    assert store.get("config.maintenance") == "false"
    assert store.exists("tasks") and store.exists("faults")
    # a second run is a no-op and keeps data
    store.set("config.maintenance", "true")
    assert migrations.migrate(store, "test") == schema.SCHEMA_VERSION
    assert store.get("config.maintenance") == "true"


def test_migration_resumes_from_an_intermediate_version(store):
    migrations.migrate(store, "test", target=1)
    assert migrations.current_version(store) == 1 and not store.exists("tasks")
    migrations.migrate(store, "test")
    assert migrations.current_version(store) == schema.SCHEMA_VERSION and store.exists("tasks")


def test_one_lock_helper_gives_up_clearly_and_always_releases(store, zk_hosts):
    other = Store(zk_hosts, timeout=5)
    other.start()
    try:
        with store.locked("job", "hv1", timeout=2):
            with pytest.raises(LockBusy, match="VM x: its lock stayed busy for 0.3 s"):
                with other.locked("job", "hv2", timeout=0.3, what="VM x"):
                    pass
        with pytest.raises(RuntimeError):
            with other.locked("job", "hv2", timeout=2):
                raise RuntimeError("the block failed")
        with store.locked("job", "hv1", timeout=2):      # released despite the failure
            assert store.client.get_children(schema.path("lock", lock="job"))
    finally:
        other.stop()


def test_try_lock_answers_a_held_lock_or_none(store, zk_hosts):
    other = Store(zk_hosts, timeout=5)
    other.start()
    try:
        held = store.try_lock("job", "hv1", timeout=2)
        assert held is not None and held.held and held.still_ours()
        assert other.try_lock("job", "hv2", timeout=0.3) is None      # busy: None
        held.release()
        assert not held.held and not held.still_ours()
        with other.try_lock("job", "hv2", timeout=2) as theirs:
            assert theirs.still_ours()
        assert not theirs.held
        again = store.try_lock("job", "hv1", timeout=2)               # released by the with
        assert again is not None
        again.release()
    finally:
        other.stop()


def test_the_pipelined_read_answers_every_kind_in_request_order(store):
    store.set("config.maintenance", "true")
    store.set("task", "{}", task_id="t1")
    changed = threading.Event()
    missing = {"task_id": "gone"}
    assert store.fetch([("get", "config.maintenance", {}), ("versioned", "task", {"task_id": "t1"}),
                        ("children", "tasks", {}), ("get", "task", missing),
                        ("versioned", "task", missing), ("children", "faults", {})], 5,
                       watch=[None, lambda _event: changed.set(), None, None, None, None]) \
        == ["true", ("{}", 0), ["t1"], None, (None, -1), []]
    assert store.fetch([("get", "task", missing), ("children", "faults", {})], 5,
                       missing_as_none=True) == [None, None]
    store.set("task", '{"a": 1}', task_id="t1")
    assert changed.wait(5)                                      # the one-shot watch fired
    assert store.get_many([("task", {"task_id": "t1"}), ("task", missing)]) \
        == [('{"a": 1}', 1), (None, -1)]
    with pytest.raises(ValueError):
        store.fetch([("stat", "tasks", {})], 5)


def test_create_and_delete_say_what_happened(store):
    assert store.create("task", "{}", task_id="t1") == schema.path("task", task_id="t1")
    with pytest.raises(NodeExistsError):
        store.create("task", "{}", task_id="t1")
    with pytest.raises(NotEmptyError):
        store.delete("tasks", recursive=False)
    assert store.delete("task", recursive=False, task_id="t1") is True
    assert store.delete("task", task_id="t1") is False
    store.create("task", "{}", task_id="t2")
    assert store.delete("tasks") is True and not store.exists("tasks")
    store.create("alive.node", "1", ephemeral=True, node="hv1")
    owner = store.client.exists(schema.path("alive.node", node="hv1")).ephemeralOwner
    assert owner == store.session_id


def test_orphaned_queue_entries_of_the_session_are_dropped(store, zk_hosts):
    other = Store(zk_hosts, timeout=5)
    other.start()
    try:
        lock = store.lock_at("election", "hv1")
        assert lock.acquire(timeout=2)
        base = schema.path("election")
        store.client.create(f"{base}/stray-", b"", ephemeral=True, sequence=True)
        other.client.create(f"{base}/theirs-", b"", ephemeral=True, sequence=True)
        (dropped,) = store.drop_session_children("election", store.session_id, keep=lock.node)
        assert dropped.startswith("stray-")
        left = store.children("election")
        assert lock.node in left and any(c.startswith("theirs-") for c in left)
        assert len(left) == 2
        lock.release()
    finally:
        other.stop()


def test_daemon_refuses_a_newer_schema(store, daemons):
    store.set("schema.version", str(schema.SCHEMA_VERSION + 1))
    d = daemons("hv1")
    d.proc.wait(30)
    assert d.proc.returncode == 4
    assert f"newer than version {schema.SCHEMA_VERSION}" in d.log()
    assert "Traceback" not in d.log()


def test_keepalive_is_one_multi_op_with_plugin_stats(store, daemons):
    daemons("hv1", coordinator=False)
    wait_for(lambda: store.get("node.daemon_state", node="hv1") == "run", what="run state")
    static = store.get_json("node.static", node="hv1")
    assert {"cpu_count", "memory_total", "kernel", "os", "arch", "pvc_version"} <= set(static)
    assert store.get("node.coordinator_state", node="hv1") == "client"
    first = float(store.get("node.keepalive", node="hv1"))
    wait_for(lambda: float(store.get("node.keepalive", node="hv1")) > first + 0.9,
             what="keepalive to advance")
    stats = store.get_json("node.stats", node="hv1")
    assert stats["sample"]["greeting"] == "hello"  # from the third-party sample plugin
    assert stats["sample"]["keepalives"] >= 2
    assert stats["host"]["memory_total"] > 0       # from the built-in hoststats plugin
    # keepalive and stats are written in the same transaction: same ZooKeeper zxid
    ka = store.client.exists(schema.path("node.keepalive", node="hv1"))
    st = store.client.exists(schema.path("node.stats", node="hv1"))
    assert ka.mzxid == st.mzxid


def test_node_log_lines_reach_zookeeper(store, daemons):
    daemons("hv1", coordinator=False)
    text = wait_for(lambda: store.get("node.log", node="hv1"), what="log lines")
    assert "node hv1 registered" in text


def test_election_two_daemons_takeover_and_handover(store, daemons):
    a, b = daemons("hv1"), daemons("hv2")
    primary = wait_for(lambda: (p := store.get("config.primary_node")) not in (None, "none")
                       and p, what="a primary")
    other = "hv2" if primary == "hv1" else "hv1"
    wait_for(lambda: store.get("node.coordinator_state", node=other) == "secondary")
    assert store.get("node.coordinator_state", node=primary) == "primary"

    # planned handover
    store.set("config.desired_primary", other)
    wait_for(lambda: store.get("config.primary_node") == other, what="planned handover")
    wait_for(lambda: store.get("node.coordinator_state", node=primary) == "secondary")
    assert store.get("node.coordinator_state", node=other) == "primary"
    wait_for(lambda: store.get("config.desired_primary") == "", what="request cleared")

    # hard kill of the primary's daemon: the other takes over once its session expires
    victim = a if other == "hv1" else b
    started = time.monotonic()
    victim.kill()
    wait_for(lambda: store.get("config.primary_node") == primary, timeout=15,
             what="takeover after SIGKILL")
    assert time.monotonic() - started < 10


def test_sigterm_hands_over_and_stops_quickly(store, daemons):
    a = daemons("hv1")
    wait_for(lambda: store.get("config.primary_node") == "hv1", what="hv1 primary")
    daemons("hv2")
    wait_for(lambda: store.get("node.daemon_state", node="hv2") == "run")
    took = a.terminate()
    assert took < 5
    assert a.proc.returncode == 0
    assert store.get("node.daemon_state", node="hv1") == "stop"
    assert store.get("node.coordinator_state", node="hv1") == "secondary"
    wait_for(lambda: store.get("config.primary_node") == "hv2", timeout=5,
             what="handover to hv2")


def test_zookeeper_outage_pauses_and_recovers(zk_server, store, daemons):
    d = daemons("hv1")
    wait_for(lambda: store.get("config.primary_node") == "hv1", what="hv1 primary")
    zk_server.stop()
    time.sleep(5)  # longer than the daemon's session timeout (3 s)
    assert d.running(), "the daemon must survive a ZooKeeper outage"
    zk_server.start()
    before = time.time()
    wait_for(lambda: float(store.get("node.keepalive", node="hv1")) > before, timeout=30,
             what="keepalives after the outage")
    wait_for(lambda: store.exists("alive.node", node="hv1"), timeout=10, what="alive key")
    wait_for(lambda: store.get("config.primary_node") == "hv1", timeout=15,
             what="primary again")
    assert d.running()
    assert "Traceback" not in d.log()


def test_flush_and_ready_run_as_tasks_on_the_node(store, daemons):
    daemons("hv1", coordinator=False)
    wait_for(lambda: store.get("node.daemon_state", node="hv1") == "run")
    txn = store.transaction()
    txn.set_data(schema.path("node.desired_domain_state", node="hv1"), b"flushed")
    record = tasks.create_task(store, "node.flush", "hv1", txn=txn)
    store.commit(txn)
    done = wait_for(lambda: (r := tasks.get_task(store, record["id"]))["state"] in
                    tasks.FINISHED and r, what="flush task")
    assert done["state"] == "SUCCESS", done
    assert done["status"] == "Removed node hv1 from active service."
    assert store.get("node.domain_state", node="hv1") == "flushed"
    record = tasks.create_task(store, "node.unflush", "hv1")
    wait_for(lambda: tasks.get_task(store, record["id"])["state"] == "SUCCESS")
    assert store.get("node.domain_state", node="hv1") == "ready"


def test_unknown_task_type_fails_with_a_reason(store, daemons):
    daemons("hv1", coordinator=False)
    wait_for(lambda: store.get("node.daemon_state", node="hv1") == "run")
    record = tasks.create_task(store, "no.such.work", "hv1")
    done = wait_for(lambda: (r := tasks.get_task(store, record["id"]))["state"] in
                    tasks.FINISHED and r)
    assert done["state"] == "FAILURE"
    assert "No handler for task type 'no.such.work'" in done["status"]


def test_finished_tasks_are_pruned_after_retention(store):
    migrations.migrate(store, "test")
    old = tasks.create_task(store, "x", "hv1")
    tasks.update_task(store, old["id"], state="SUCCESS", finished=time.time() - 100)
    fresh = tasks.create_task(store, "x", "hv1")
    assert tasks.prune(store, retention=60) == 1
    assert tasks.get_task(store, old["id"]) is None
    assert tasks.get_task(store, fresh["id"])["state"] == "PENDING"
    assert json.loads(json.dumps(tasks.list_tasks(store)))[0]["id"] == fresh["id"]
