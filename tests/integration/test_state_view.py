"""The watch-maintained view (pvc_kernel/state/view.py) on a real ZooKeeper: reads under the
viewed subtrees come from memory and still see every write completed before them, from the
same process or another, across a session loss and a server restart."""

from __future__ import annotations

import random
import threading
import time

import pytest
from kazoo.client import KazooClient
from kazoo.retry import KazooRetry

from pvc_kernel.state import Store, schema
from pvc_kernel.state.schema import Key
from tests.support.zookeeper import ZooKeeperServer, available, ensemble

pytestmark = pytest.mark.skipif(not available(), reason="ZooKeeper is not installed")

for _key in (Key("viewtest", "/viewtest", "test"), Key("viewtest.item", "/viewtest/{item}", "test"),
             Key("viewtest.field", "/viewtest/{item}/{field}", "test"),
             Key("unviewed", "/unviewed", "test")):
    schema.register(_key)


def viewed(hosts: str) -> Store:
    store = Store(hosts)
    view = store.use_view(["viewtest", "nodes"])
    store.start()
    wait_ready(store)
    assert view.roots == {"/viewtest": 2, "/nodes": 2}
    return store


def wait_ready(store: Store, loads: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not (store.view.ready and store.view.loads >= loads):
        assert time.monotonic() < deadline, "the view did not load"
        time.sleep(0.02)


def direct(store: Store, requests: list) -> list:
    """The same reads straight from ZooKeeper (a watch forces the direct path)."""
    return store.fetch(requests, watch=lambda _event: None)


def everything(store: Store) -> list:
    items = store.children("viewtest")
    reqs = [("children", "viewtest", {})]
    for item in items:
        reqs += [("versioned", "viewtest.item", {"item": item}),
                 ("children", "viewtest.item", {"item": item})]
        reqs += [("versioned", "viewtest.field", {"item": item, "field": f})
                 for f in store.children("viewtest.item", item=item)]
    return reqs


@pytest.fixture
def stores(zk_hosts):
    made = []

    def make(view: bool = True) -> Store:
        store = viewed(zk_hosts) if view else Store(zk_hosts)
        if not view:
            store.start()
        made.append(store)
        return store

    yield make
    for store in made:
        store.stop()


def test_load_and_reads_match_zookeeper(stores):
    writer = stores(view=False)
    for i in range(30):
        writer.set("viewtest.field", f"value {i}", item=f"i{i}", field="a")
        writer.set("viewtest.field", "", item=f"i{i}", field="empty")
    store = stores()
    assert store.view.exists("/viewtest/i7/a")
    reqs = everything(store)
    assert len(reqs) == 1 + 30 * 4
    assert store.fetch(reqs) == direct(store, reqs)
    assert store.get("viewtest.field", item="i3", field="a") == "value 3"
    assert store.get("viewtest.field", item="i3", field="empty") == ""
    assert store.get("viewtest.field", "dflt", item="nope", field="a") == "dflt"
    assert store.get_versioned("viewtest.field", item="nope", field="a") == (None, -1)
    assert store.children("viewtest.item", item="nope") == []
    assert not store.exists("viewtest.item", item="nope")
    assert store.fetch([("get", "viewtest.field", {"item": "nope", "field": "a"}),
                        ("children", "viewtest.item", {"item": "nope"})],
                       missing_as_none=True) == [None, None]
    # outside the view, and a read with a watch: straight to ZooKeeper, same answers
    writer.set("unviewed", "x")
    assert store.get("unviewed") == "x"


def test_read_your_writes_after_every_kind_of_write(stores):
    store = stores()
    rng = random.Random(7)
    for step in range(300):
        item, field = f"i{rng.randrange(8)}", f"f{rng.randrange(3)}"
        kind = rng.choice(["set", "set", "create", "delete_field", "delete_item", "txn",
                           "versioned"])
        if kind == "set":
            store.set("viewtest.field", f"s{step}", item=item, field=field)
        elif kind == "create" and not store.exists("viewtest.item", item=item):
            store.create("viewtest.item", f"c{step}", item=item)
        elif kind == "delete_field":
            store.delete("viewtest.field", item=item, field=field)
        elif kind == "delete_item":
            store.delete("viewtest.item", item=item)
        elif kind == "txn" and not store.exists("viewtest.item", item=item):
            txn = store.transaction()
            txn.create(schema.path("viewtest.item", item=item), b"t")
            txn.create(schema.path("viewtest.field", item=item, field="x"), f"t{step}".encode())
            store.commit(txn)
        elif kind == "versioned":
            _, version = store.get_versioned("viewtest.field", item=item, field=field)
            store.set_if_version("viewtest.field", f"v{step}", version, item=item, field=field)
        reqs = everything(store)
        assert store.fetch(reqs) == direct(store, reqs), f"step {step}: {kind}"


def test_writes_of_another_process_are_seen_by_the_next_read(stores):
    store, other = stores(), stores(view=False)
    for step in range(200):
        other.set("viewtest.field", str(step), item=f"i{step % 5}", field="n")
        if step % 7 == 0:
            other.delete("viewtest.item", item=f"i{(step + 1) % 5}")
        assert store.get("viewtest.field", item=f"i{step % 5}", field="n") == str(step)
        assert store.children("viewtest") == other.children("viewtest")


def test_two_viewed_processes_converge(stores):
    a, b = stores(), stores()
    done = threading.Event()
    seen: list[str] = []

    def read_b() -> None:
        while not done.is_set():
            seen.append(b.get("viewtest.field", "", item="shared", field="n"))

    reader = threading.Thread(target=read_b)
    reader.start()
    try:
        for step in range(100):
            a.set("viewtest.field", str(step), item="shared", field="n")
            assert b.get("viewtest.field", item="shared", field="n") == str(step)
    finally:
        done.set()
        reader.join()
    # the concurrent reader never went backwards
    numbers = [int(v) for v in seen if v]
    assert numbers == sorted(numbers)


def test_session_loss_reloads_and_reads_stay_right(stores, zk_hosts):
    store, other = stores(), stores(view=False)
    store.set("viewtest.field", "before", item="s", field="n")
    client_id = store.client.client_id
    # expire the session: a second client with the same session id closes it
    killer = KazooClient(hosts=zk_hosts, client_id=client_id)
    killer.start(timeout=10)
    killer.stop()
    killer.close()
    other.set("viewtest.field", "during", item="s", field="n")
    other.delete("viewtest.item", item="gone")
    other.set("viewtest.field", "new", item="fresh", field="n")
    wait_ready(store, loads=2)
    assert store.client.client_id != client_id
    assert store.get("viewtest.field", item="s", field="n") == "during"
    assert store.get("viewtest.field", item="fresh", field="n") == "new"
    reqs = everything(store)
    assert store.fetch(reqs) == direct(store, reqs)
    other.set("viewtest.field", "after", item="s", field="n")  # watches set again
    assert store.get("viewtest.field", item="s", field="n") == "after"


def test_server_restart_keeps_reads_right():
    server = ZooKeeperServer()
    server.start()
    try:
        store = viewed(server.hosts)
        other = Store(server.hosts, timeout=10.0)
        other.start()
        try:
            store.set("viewtest.field", "1", item="r", field="n")
            loads = store.view.loads
            server.stop()
            server.start()
            # written as soon as the server is back, maybe before the view's client is
            again = KazooRetry(max_tries=-1, delay=0.1, max_delay=0.5, deadline=60)
            again(other.set, "viewtest.field", "2", item="r", field="n")
            again(other.set, "viewtest.field", "x", item="added", field="n")
            # a slow restart may expire the view's session: that read fails (a 503 in the
            # API) and is tried again on the new session, which must answer right
            assert again(store.get, "viewtest.field", item="r", field="n") == "2"
            wait_ready(store, loads=loads + 1)
            assert store.get("viewtest.field", item="added", field="n") == "x"
            reqs = everything(store)
            assert store.fetch(reqs) == direct(store, reqs)
            other.set("viewtest.field", "3", item="r", field="n")
            assert store.get("viewtest.field", item="r", field="n") == "3"
        finally:
            other.stop()
            store.stop()
    finally:
        server.cleanup()


def test_leader_restart_of_an_ensemble_keeps_reads_right():
    """Three servers; the leader is killed and started again while another client writes
    through a follower: the view's answers match ZooKeeper's all along."""
    servers = ensemble(3)
    hosts = ",".join(server.hosts for server in servers)
    try:
        store = viewed(hosts)
        leader = next(server for server in servers if server.mode == "leader")
        followers = ",".join(server.hosts for server in servers if server is not leader)
        other = Store(followers, timeout=10.0)
        other.start()
        try:
            for i in range(20):
                other.set("viewtest.field", str(i), item=f"e{i % 4}", field="n")
            leader.stop()
            # a new leader is elected meanwhile; calls in flight then fail with
            # ConnectionLoss and are tried again (what the API answers is a 503)
            again = KazooRetry(max_tries=-1, delay=0.1, max_delay=0.5, deadline=60)
            for i in range(20, 40):
                again(other.set, "viewtest.field", str(i), item=f"e{i % 4}", field="n")
                assert again(store.get, "viewtest.field", item=f"e{i % 4}",
                             field="n") == str(i)
            leader.start()
            wait_ready(store, loads=2)  # the election dropped every client: loaded again
            other.delete("viewtest.item", item="e0")
            other.set("viewtest.field", "last", item="e5", field="n")
            assert not store.exists("viewtest.item", item="e0")
            assert store.get("viewtest.field", item="e5", field="n") == "last"
            reqs = everything(store)
            assert store.fetch(reqs) == direct(store, reqs)
        finally:
            other.stop()
            store.stop()
    finally:
        for server in servers:
            server.cleanup()


def test_a_volatile_key_is_read_again_only_when_a_read_needs_it(stores):
    """node.stats is volatile: its rewrites are not read by a view nobody reads, and a read
    still sees the last one."""
    writer = stores(view=False)
    writer.set("node.stats", "0", node="hv1")
    store = stores()
    view = store.view
    path = schema.path("node.stats", node="hv1")
    assert store.get("node.stats", node="hv1") == "0"
    for i in range(1, 51):
        writer.set("node.stats", str(i), node="hv1")
    deadline = time.monotonic() + 10
    while path not in view._stale:          # the watch fired once and was not re-armed
        assert time.monotonic() < deadline, "the stats' watch did not fire"
        time.sleep(0.02)
    assert view.versioned(path) == ("0", 0)  # not read again by itself
    assert store.get("node.stats", node="hv1") == "50"
    assert not view._stale
    writer.delete("node.stats", node="hv1")
    assert store.get("node.stats", node="hv1") is None
