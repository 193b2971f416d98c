"""Fencing against real components: a real ZooKeeper, a real pvcnoded as the victim, a real
IPMI-over-LAN BMC (pyghmi, on a loopback address) whose power off SIGKILLs the victim, and the
fence monitor of a primary in this process with recording storage/recovery plugins. Cases
about who owns a fence use a registered-looking node without a daemon (and so without a BMC:
its power off fails; ``failed_fence: migrate`` and the recorder's storage cut recover it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from pvc_kernel import config as kconfig
from pvc_kernel.hookspecs import hookimpl
from pvc_kernel.plugins import PluginHost
from pvc_kernel.state import Store, migrations, schema
from pvc_plugins.fencing_ipmi import config as fencing_config
from pvc_plugins.fencing_ipmi import keys as fencing_keys
from pvc_plugins.fencing_ipmi.agent import rejoin_wait
from pvc_plugins.fencing_ipmi.fence import DONE, POWER, RECOVER, FenceLost
from pvc_plugins.fencing_ipmi.monitor import Monitor
from pvc_plugins.fencing_ipmi.plugin import FencingIpmiPlugin as fencing_plugin
from tests.support.daemons import DaemonProcess, wait_for

pytestmark = pytest.mark.integration
KA, FENCE, SUICIDE = 0.5, 4, 2
BMC_ADDRESS = "127.0.0.1"
for _key in fencing_keys.KEYS:      # what loading the plugin does in a daemon
    schema.register(_key)

BMC_CODE = """
import os, signal, sys
from pvc_lab.bmc import run_bmc
from pvc_lab.procs import alive
pid_file, secret_file, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
class Power:
    powered = True
    def pid(self):
        with open(pid_file) as fh:
            return int(fh.read())
    def state(self):
        return "on" if alive(self.pid()) or self.powered else "off"
    def off(self):
        self.powered = False
        try:
            os.kill(self.pid(), signal.SIGKILL)
        except ProcessLookupError:
            pass
    def on(self):
        self.powered = True
with open(secret_file) as fh:
    secret = fh.read().strip()
run_bmc("127.0.0.1", port, "admin", secret, Power())
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((BMC_ADDRESS, 0))
        return s.getsockname()[1]


class Bmc:
    """A BMC process for one victim; the password travels through a 0600 file."""

    def __init__(self, tmp_path: Any, victim: DaemonProcess) -> None:
        self.port = _free_udp_port()
        self.secret = "pw-" + os.urandom(4).hex()
        self.pid_file = str(tmp_path / "victim.pid")
        self.secret_file = str(tmp_path / "bmc.secret")
        with open(self.pid_file, "w") as fh:
            fh.write(str(victim.proc.pid))
        fd = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.secret)
        self.proc = subprocess.Popen([sys.executable, "-c", BMC_CODE, self.pid_file,
                                      self.secret_file, str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert b"listening" in self.proc.stdout.readline()

    def publish(self, store: Store, node: str) -> None:
        """What the victim's plugin publishes at start (the victim runs no BMC plugin)."""
        store.set("fencing.bmc", {"host": BMC_ADDRESS, "port": self.port, "user": "admin",
                                  "reachable": True}, node=node)
        store.set("fencing.secret", self.secret, node=node)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class Recorder:
    """Storage and workload plugins that record when they were called."""

    def __init__(self, storage_ok: bool = True) -> None:
        self.calls: list[tuple[float, str, str]] = []
        self.storage_ok = storage_ok
        self.recover_gate = threading.Event()
        self.recover_gate.set()
        self.fences: list[dict[str, Any]] = []
        self.progress_answers: list[Any] = []

    @hookimpl
    def pvc_storage_fence(self, daemon, node, addresses):
        self.calls.append((time.time(), "cut", node))
        return {"ok": self.storage_ok, "reason": "" if self.storage_ok else "mon down",
                "addresses": ["192.0.2.2"] if self.storage_ok else []}

    @hookimpl
    def pvc_storage_unfence(self, daemon, node, addresses):
        self.calls.append((time.time(), "uncut", node))
        return {"ok": True, "reason": "", "addresses": addresses}

    @hookimpl
    def pvc_node_recover(self, daemon, node, progress, fence):
        self.calls.append((time.time(), "recover", node))
        self.fences.append(fence)
        self.recover_gate.wait(30)
        self.progress_answers.append(progress(1, 1, "vm1 restarted on hv1"))
        return {"recovered": ["vm1"], "stopped": [], "failed": []}

    def names(self) -> list[str]:
        return [c[1] for c in self.calls]


class Primary:
    """What the fence monitor needs of a daemon: config, store, node, plugins."""

    def __init__(self, zk_hosts: str, recorder: Recorder, node: str = "hv1",
                 **section: Any) -> None:
        self.node = node
        self.config = kconfig.parse({
            "node": node, "cluster": "test", "zookeeper": {"hosts": zk_hosts.split(",")},
            "keepalive_interval": KA, "fence_intervals": FENCE, "suicide_intervals": SUICIDE,
            "plugins": {"fencing_ipmi": {"power_timeout": 5, "ipmi_timeout": 6, **section}}})
        self.store = Store(zk_hosts, timeout=5)
        self.store.start()
        self.plugins = PluginHost()
        self.plugins.register(fencing_plugin, "fencing_ipmi")
        self.plugins.register(recorder, "recorder")
        self.monitor = Monitor(self, fencing_config.load(self.config))

    def close(self) -> None:
        self.monitor.stop()
        self.store.stop()


@pytest.fixture
def cluster(store, daemons, tmp_path, zk_hosts):
    migrations.migrate(store, "test")
    made: list[Any] = []

    def victim(name: str = "hv2") -> DaemonProcess:
        d = daemons(name, coordinator=False, keepalive_interval=KA, fence_intervals=FENCE,
                    suicide_intervals=SUICIDE)
        wait_for(lambda: store.get("node.daemon_state", node=name) == "run", what="victim runs")
        return d

    def bmc(v: DaemonProcess) -> Bmc:
        b = Bmc(tmp_path, v)
        made.append(b)
        return b

    def primary(recorder: Recorder, **kw: Any) -> Primary:
        p = Primary(zk_hosts, recorder, **kw)
        made.append(p)
        return p

    yield victim, bmc, primary
    for thing in made:
        try:
            thing.close() if isinstance(thing, Primary) else thing.stop()
        except Exception:
            pass


def record(store: Store, node: str) -> dict[str, Any]:
    return store.get_json("fencing.fence", {}, node=node) or {}


def test_hung_node_is_powered_off_then_storage_cut_then_recovered(store, cluster):
    victim, bmc, primary = cluster
    v = victim()
    b = bmc(v)
    b.publish(store, "hv2")
    rec = Recorder()
    p = primary(rec)
    p.monitor.start()
    os.kill(v.proc.pid, signal.SIGSTOP)           # hung: no keepalive, the process is there
    stopped_at = time.time()
    wait_for(lambda: record(store, "hv2").get("step") == DONE, timeout=40, what="fence done")
    v.proc.wait(5)                                 # the BMC's power off SIGKILLed it
    assert v.proc.returncode == -signal.SIGKILL
    r = record(store, "hv2")
    assert r["outcome"] == "fenced,recovered"
    assert r["declared"] - stopped_at >= KA * FENCE - KA    # not before the fence delay
    assert [h[1] for h in r["history"]] == ["dead", "power", "storage", "recover", "done"]
    power_at = r["history"][1][0]
    assert rec.names() == ["cut", "recover"] and rec.calls[0][0] >= power_at
    assert store.get("node.daemon_state", node="hv2") == "fenced"
    assert store.get("node.domain_state", node="hv2") == "flushed"
    assert store.get("node.desired_domain_state", node="hv2") == "flushed"
    assert rec.fences == [{"powered_off": True, "storage_cut": ["recorder"]}]
    # the victim's kernel published its liveness settings, which detection honours
    assert store.get_json("node.static", node="hv2")["liveness"] == {
        "keepalive_interval": KA, "fence_intervals": FENCE, "suicide_intervals": SUICIDE}
    fault = store.get_json("fault", fault_id=f"fence-hv2-{r['id']}")
    assert fault["status"] == "new" and fault["health_delta"] == 10
    assert "powered off" in fault["message"] and b.secret not in json.dumps(r)

    # the node comes back: its fencing plugin (played here: the victim runs only the kernel
    # test plugins) asks for its storage, the primary gives it back, then it may rejoin
    node_side = SimpleNamespace(store=store, node="hv2")
    assert "storage access" in rejoin_wait(node_side)
    wait_for(lambda: record(store, "hv2").get("unfenced"), timeout=20, what="storage back")
    assert rec.names() == ["cut", "recover", "uncut"]
    assert rejoin_wait(node_side) is None
    v.start()                                     # fenced -> init -> run
    wait_for(lambda: store.get("node.daemon_state", node="hv2") == "run", timeout=20,
             what="the fenced node to rejoin")
    assert store.get("node.domain_state", node="hv2") == "flushed"   # until `node ready`
    assert "rejoining the cluster" in v.log()


def test_unreachable_bmc_leaves_vms_and_a_live_node_rejoins(store, cluster):
    """Default policy after a failed fence: no recovery, a fault; the node (alive, only
    frozen) stops its workloads, finds itself declared dead and rejoins."""
    victim, _bmc, primary = cluster
    v = victim()
    store.set("fencing.bmc", {"host": BMC_ADDRESS, "port": _free_udp_port(), "user": "admin"},
              node="hv2")
    store.set("fencing.secret", "nobody-listens", node="hv2")
    rec = Recorder()
    p = primary(rec)
    p.monitor.start()
    os.kill(v.proc.pid, signal.SIGSTOP)
    wait_for(lambda: record(store, "hv2").get("step") == DONE, timeout=40, what="fence done")
    r = record(store, "hv2")
    assert r["outcome"] == "fence-failed,not-recovered" and r["power"]["ok"] is False
    assert rec.names() == ["cut"]
    assert store.get("node.daemon_state", node="hv2") == "dead"
    fault = store.get_json("fault", fault_id=f"fence-hv2-{r['id']}")
    assert fault["health_delta"] == 50 and "NOT recovered" in fault["message"]
    assert "nobody-listens" not in fault["message"]

    os.kill(v.proc.pid, signal.SIGCONT)
    wait_for(lambda: store.get("node.daemon_state", node="hv2") == "run", timeout=20,
             what="the live node to rejoin")
    log = v.log()
    # it notices either way first: its own silence (self-fence) or the state `dead`
    assert "self-fence" in log and "rejoining the cluster" in log and "rejoined" in log
    assert "nobody-listens" not in log


def test_next_primary_resumes_an_interrupted_recovery(store, cluster, zk_hosts):
    victim, bmc, primary = cluster
    v = victim()
    bmc(v).publish(store, "hv2")
    slow = Recorder()
    slow.recover_gate.clear()                     # the first primary hangs in recovery
    first = primary(slow)
    first.monitor.start()
    os.kill(v.proc.pid, signal.SIGSTOP)
    wait_for(lambda: record(store, "hv2").get("step") == RECOVER and "recover" in
             slow.names(), timeout=40, what="the first primary to be recovering")
    first.store.stop()          # it dies: its session, and the fence lock, go with it
    second_rec = Recorder()
    second = primary(second_rec, node="hv3")
    second.monitor.start()
    wait_for(lambda: record(store, "hv2").get("step") == DONE, timeout=30,
             what="the next primary to finish")
    slow.recover_gate.set()
    r = record(store, "hv2")
    assert second_rec.names() == ["recover"]      # resumed at its step: no second cut
    assert r["outcome"] == "fenced,recovered" and r["by"] == "hv1"
    assert r["resumed_by"] == "hv3" and ["resumed by hv3"] == [h[2] for h in r["history"]
                                                              if h[2].startswith("resumed")]
    assert v.proc.wait(5) == -signal.SIGKILL


def test_self_fence_after_losing_zookeeper(tmp_path):
    """A node that cannot write a keepalive for keepalive_interval × suicide_intervals
    fences itself, holds plugin events, and rejoins when ZooKeeper is back."""
    from tests.support.zookeeper import ZooKeeperServer, available

    if not available():
        pytest.skip("ZooKeeper is not installed")
    server = ZooKeeperServer()
    server.start()
    d = DaemonProcess(str(tmp_path), "hv9", server.hosts, coordinator=False,
                      keepalive_interval=KA, fence_intervals=FENCE, suicide_intervals=SUICIDE)
    try:
        d.start()
        wait_for(lambda: "is running" in d.log(), timeout=30, what="the node to run")
        server.stop()
        lost_at = time.monotonic()
        wait_for(lambda: "self-fence" in d.log(), timeout=10, what="a self-fence")
        assert time.monotonic() - lost_at < KA * FENCE   # before anyone could fence it
        server.start()
        wait_for(lambda: "rejoined the cluster" in d.log(), timeout=30, what="a rejoin")
    finally:
        d.kill()
        server.cleanup()


def test_start_up_self_check_raises_a_fault_for_an_unreachable_bmc(store, daemons):
    from pvc_kernel.plugins import available

    migrations.migrate(store, "test")
    others = [p for p in available() if p not in ("hoststats", "sample", "fencing_ipmi")]
    port = _free_udp_port()
    daemons("hv5", coordinator=False, keepalive_interval=KA, fence_intervals=FENCE,
            suicide_intervals=SUICIDE, plugins={
                "disabled": others,
                "fencing_ipmi": {"ipmi_timeout": 2, "bmc": {
                    "host": BMC_ADDRESS, "port": port, "user": "admin",
                    "password": "pw-not-shown"}}})
    fault = wait_for(lambda: store.get_json("fault", None, fault_id="bmc-hv5"), timeout=30,
                     what="the BMC fault")
    assert f"{BMC_ADDRESS}:{port} does not answer" in fault["message"]
    assert fault["health_delta"] == 10 and "pw-not-shown" not in json.dumps(fault)
    info = store.get_json("fencing.bmc", node="hv5")
    assert info["reachable"] is False and "password" not in info
    assert store.get("fencing.secret", node="hv5") == "pw-not-shown"   # for the fencer only
    stats = wait_for(lambda: store.get_json("node.stats", {}, node="hv5").get("bmc"),
                     timeout=10, what="the BMC in the keepalive stats")
    assert stats["reachable"] is False and "pw-not-shown" not in json.dumps(stats)


# -- who owns a fence -----------------------------------------------------------------------

def fake_node(store: Store, name: str, keepalive: float,
              liveness: dict[str, Any] | None = None) -> None:
    """A node that looks registered and running (no daemon behind it)."""
    static: dict[str, Any] = {"cpu_count": 1, "memory_total": 1024}
    if liveness is not None:
        static["liveness"] = liveness
    store.set("node.static", static, node=name)
    store.set("node.domain_state", "ready", node=name)
    store.set("node.desired_domain_state", "ready", node=name)
    store.set("node.keepalive", f"{keepalive:.3f}", node=name)
    store.set("node.daemon_state", "run", node=name)


def expire_session(store: Store, hosts: str) -> None:
    """Expire ``store``'s ZooKeeper session (its client gets a new one), as a partition
    longer than the session timeout would: a second client takes the session over and
    closes it."""
    from kazoo.client import KazooClient

    old = store.session_id
    sid, password = store.client.client_id
    other = KazooClient(hosts=hosts, client_id=(sid, password))
    other.start(timeout=10)
    other.stop()
    other.close()
    wait_for(lambda: store.connected and store.session_id not in (None, old), timeout=30,
             what="a new ZooKeeper session")


def test_an_old_primary_that_lost_its_session_touches_the_fence_no_more(store, cluster,
                                                                        zk_hosts, caplog):
    """The primary recovering hv2 loses its session (its fence lock goes with it) and the
    next primary finishes the fence; when the old one's recovery returns, it stops: no
    overwritten record, no second storage cut, no fault."""
    _victim, _bmc, primary = cluster
    fake_node(store, "hv2", time.time() - 60)
    slow = Recorder()
    slow.recover_gate.clear()
    first = primary(slow, failed_fence="migrate")
    first.monitor.start()
    wait_for(lambda: record(store, "hv2").get("step") == RECOVER and "recover" in
             slow.names(), timeout=30, what="the first primary to be recovering")
    assert slow.fences == [{"powered_off": False, "storage_cut": ["recorder"]}]
    expire_session(first.store, zk_hosts)
    second_rec = Recorder()
    second = primary(second_rec, node="hv3", failed_fence="migrate")
    second.monitor.start()
    final = wait_for(lambda: (r := record(store, "hv2")).get("step") == DONE and r,
                     timeout=30, what="the next primary to finish")
    assert final["resumed_by"] == "hv3" and second_rec.names() == ["recover"]

    slow.recover_gate.set()                   # the old primary's recovery returns
    wait_for(lambda: slow.progress_answers, timeout=10, what="the old recovery's progress")
    assert slow.progress_answers == [True]    # told to stop
    wait_for(lambda: "lost with the ZooKeeper session" in caplog.text, timeout=10,
             what="the old primary to stop fencing")
    time.sleep(3 * first.monitor.interval)    # it ticks on (a stand-in keeps no role)
    assert record(store, "hv2") == final
    assert slow.names() == ["cut", "recover"]
    assert len(store.children("faults")) == 1


@pytest.mark.parametrize("how", ["monitor stopped", "role lost"])
def test_a_fence_stops_when_its_monitor_stops_or_the_role_is_lost(store, cluster, how):
    _victim, _bmc, primary = cluster
    fake_node(store, "hv2", time.time() - 60)
    slow = Recorder()
    slow.recover_gate.clear()
    first = primary(slow, failed_fence="migrate")
    first.election = SimpleNamespace(role="primary")
    first.monitor.start()
    wait_for(lambda: "recover" in slow.names(), timeout=30, what="the recovery")
    if how == "monitor stopped":
        first.monitor.stop()                  # what pvc_become_secondary does
    else:
        first.election.role = "relinquish"    # the election gives the role up
    slow.recover_gate.set()
    wait_for(lambda: slow.progress_answers, timeout=10, what="the recovery's progress")
    assert slow.progress_answers == [True]
    time.sleep(3 * first.monitor.interval)
    r = record(store, "hv2")
    assert r["step"] == RECOVER and not r.get("outcome")      # the partial result unsaved
    assert store.get("node.domain_state", node="hv2") == "fence-flush"
    assert store.children("faults") == []

    second_rec = Recorder()
    second = primary(second_rec, node="hv3", failed_fence="migrate")
    second.monitor.start()
    r = wait_for(lambda: (x := record(store, "hv2")).get("step") == DONE and x, timeout=30,
                 what="the next primary to finish")
    assert r["resumed_by"] == "hv3" and second_rec.names() == ["recover"]
    assert slow.names() == ["cut", "recover"]
    assert store.get("node.domain_state", node="hv2") == "flushed"


def test_fence_record_writes_are_version_checked(store, cluster):
    _victim, _bmc, primary = cluster
    env = primary(Recorder()).monitor.env
    store.set("fencing.fence", json.dumps({"node": "hv8", "step": POWER, "by": "hv1"}),
              node="hv8")
    rec = env.load("hv8")
    rec["step"] = "storage"
    env.save(rec)                                           # ours: written
    assert record(store, "hv8")["step"] == "storage"
    store.set("fencing.fence", json.dumps({"node": "hv8", "step": DONE, "by": "hv3"}),
              node="hv8")                                   # someone else took it over
    rec["step"] = RECOVER
    with pytest.raises(FenceLost, match="changed by someone else"):
        env.save(rec)
    assert record(store, "hv8") == {"node": "hv8", "step": DONE, "by": "hv3"}
    # the daemon state moves dead -> fenced only, never over a node that rejoined
    store.set("node.daemon_state", "init", node="hv8")
    env.set_daemon_state("hv8", "fenced")
    assert store.get("node.daemon_state", node="hv8") == "init"
    store.set("node.daemon_state", "dead", node="hv8")
    env.set_daemon_state("hv8", "fenced")
    assert store.get("node.daemon_state", node="hv8") == "fenced"


def test_the_dead_declaration_is_conditional_on_the_judged_keepalive(store, cluster):
    _victim, _bmc, primary = cluster
    mon = primary(Recorder()).monitor
    fake_node(store, "hv2", time.time() - 60)
    _state, _ka, state_version, ka_version, _delay = mon.node_views()["hv2"]
    store.set("node.keepalive", f"{time.time():.3f}", node="hv2")    # it spoke meanwhile
    assert mon.declare("hv2", 60.0, state_version, ka_version) is False
    assert store.get("node.daemon_state", node="hv2") == "run" and record(store, "hv2") == {}
    _state, _ka, state_version, ka_version, _delay = mon.node_views()["hv2"]
    assert mon.declare("hv2", 60.0, state_version, ka_version) is True
    assert store.get("node.daemon_state", node="hv2") == "dead"


def test_detection_waits_for_each_nodes_own_self_fence(store, cluster):
    """The primary's fence delay is 0.5 s × 4 = 2 s; hv2 published keepalive 1 s × suicide 3:
    it stops its VMs after 3 s, so it is not declared dead before 3 s + 1 s."""
    _victim, _bmc, primary = cluster
    mon = primary(Recorder()).monitor
    mon.watching_since = 0
    fake_node(store, "hv2", time.time() - 3.0,
              liveness={"keepalive_interval": 1.0, "fence_intervals": 4,
                        "suicide_intervals": 3})
    fake_node(store, "hv3", time.time() - 3.0)              # published nothing: 2 s
    assert mon.node_views()["hv2"][4] == 4.0
    mon.detect()
    assert store.get("node.daemon_state", node="hv2") == "run"
    assert store.get("node.daemon_state", node="hv3") == "dead"
    store.set("node.keepalive", f"{time.time() - 4.2:.3f}", node="hv2")
    mon.detect()
    assert store.get("node.daemon_state", node="hv2") == "dead"
    assert record(store, "hv2")["silence"] >= 4.0


def test_an_idle_monitor_takes_no_fence_lock(store, cluster):
    """With every node alive and no fence open, a round is reads only: no lock znode is
    created (each acquire/release would be two ZooKeeper writes every half interval)."""
    victim, _bmc, primary = cluster
    victim()
    mon = primary(Recorder()).monitor
    store.client.ensure_path(schema.path("lock", lock=fencing_keys.FENCE_LOCK))
    before = store.client.exists(schema.path("lock", lock=fencing_keys.FENCE_LOCK)).cversion
    for _ in range(5):
        mon.tick()
    assert store.client.exists(schema.path("lock", lock=fencing_keys.FENCE_LOCK)).cversion == before
    mon.watching_since = time.time() - 60     # as if it had watched for a minute
    fake_node(store, "hv3", time.time() - 60)                 # now there is work
    mon.tick()
    assert store.client.exists(schema.path("lock", lock=fencing_keys.FENCE_LOCK)).cversion > before
    assert store.get("node.daemon_state", node="hv3") == "dead"


def test_a_new_primary_counts_silence_from_its_connection_not_its_takeover(store, cluster):
    """A coordinator connected for a while that becomes primary judges a node silent since
    before the takeover at once: a dead primary gets no second fence delay on top of the
    election."""
    _victim, _bmc, primary = cluster
    p = primary(Recorder())
    assert 0 < p.store.connected_since <= time.time()     # set by the real connection
    connected = p.store.connected_since = time.time() - 30  # as if connected for 30 s
    fake_node(store, "hv3", time.time() - 60)
    p.monitor.start()
    assert p.monitor.watching_since == connected
    p.monitor.stop()
    p.monitor.detect()
    assert store.get("node.daemon_state", node="hv3") == "dead"
